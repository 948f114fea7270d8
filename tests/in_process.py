"""`python -m tfpipeline.COMMAND ARGS` run in the test's own process.

For the cases whose new process proves nothing more: bad flags, config or
data (exit 2 and its one line), and predict scoring a trained run. Each
costs a fraction of a second here, not a process's TensorFlow start-up (~7 s
on CI's two cores). Whatever the console, signals or start-up decide stays
with `conftest.run_cli`: this result has no TensorFlow C++ line and no
stderr filter, and training runs keep their own process.
"""

import contextlib
import importlib
import io
import logging as python_logging
import os
import signal
import subprocess
import sys
import traceback

from absl import flags
from absl import logging

from conftest import CliResult

FLAGS = flags.FLAGS


def run_main(*args: str, command: str = 'train') -> CliResult:
  """What `run_cli(*args, command=command)` returns, from the command's own
  `cli()` in this process: the exit code, stdout, and stderr (printed and
  logged lines alike)."""
  module = importlib.import_module(f'tfpipeline.{command}')
  _check_own_flags(module.__name__, args)
  stdout, stderr = io.StringIO(), io.StringIO()
  with _isolated(stderr), _tensorflow_settings_restored():
    sys.argv = [module.__file__, *args]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(
        stderr):
      code = _exit_code(module.cli)
  return CliResult(subprocess.CompletedProcess(
      [sys.executable, '-m', module.__name__, *args], code,
      stdout.getvalue(), stderr.getvalue()))


def _check_own_flags(module_name: str, args) -> None:
  """Every command's flags live in one FlagValues here: a flag of another
  command, which its own process would refuse, is a test's mistake."""
  for arg in args:
    name = arg.lstrip('-').split('=', 1)[0]
    if not arg.startswith('-') or name not in FLAGS:
      continue
    owner = FLAGS.find_module_defining_flag(name) or ''
    if owner.startswith('tfpipeline.') and owner not in (
        module_name, 'tfpipeline.config_flag'):  # Shared by the commands.
      raise ValueError(f'{arg} is a flag of {owner}, not of {module_name}')


def _exit_code(cli) -> int:
  """`cli()`'s exit status as its process would have it."""
  try:
    cli()
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      return e.code or 0
    print(e.code, file=sys.stderr)
    return 1
  except Exception:  # pylint: disable=broad-except
    traceback.print_exc()  # As Python does for an uncaught exception.
    return 1
  return 0


@contextlib.contextmanager
def _isolated(stderr):
  """Flags at their defaults; absl's handler on the root logger (as app.run
  sets it up, once a process) writing to `stderr`. After: sys.argv, the
  environment, signal handlers, logging (its lines' format too) and the
  console as they were."""
  from tfpipeline import console  # pylint: disable=g-import-not-at-top
  root, handler = python_logging.getLogger(), logging.get_absl_handler()
  saved = dict(
      argv=sys.argv, environ=dict(os.environ),
      quiet=console._quiet,  # pylint: disable=protected-access
      signals={s: signal.getsignal(s) for s in (signal.SIGTERM,
                                                signal.SIGINT)},
      handlers=list(root.handlers), filters=list(handler.filters),
      stream=handler.python_handler.stream,
      formatter=handler.python_handler.formatter,
      levels=(root.level, logging.get_absl_logger().level))
  # With TensorFlow's C++ log level set, the console filters no file
  # descriptor (that is run_cli's to test).
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  _reset_flags()
  logging.use_absl_handler()
  handler.python_handler.stream = stderr
  # app.run raises the verbosity to INFO once flags are parsed, but only in
  # its first run in a process: every run here starts from there.
  FLAGS['verbosity'].value = logging.INFO
  try:
    yield
  finally:
    handler.python_handler.stream = saved['stream']
    handler.setFormatter(saved['formatter'])
    root.handlers[:] = saved['handlers']
    handler.filters[:] = saved['filters']
    _reset_flags()
    root.setLevel(saved['levels'][0])
    logging.get_absl_logger().setLevel(saved['levels'][1])
    sys.argv = saved['argv']
    os.environ.clear()
    os.environ.update(saved['environ'])
    for signum, previous in saved['signals'].items():
      signal.signal(signum, previous)
    console._quiet = saved['quiet']  # pylint: disable=protected-access


def _reset_flags() -> None:
  """Every flag unparsed, and the config overrides' flags (which
  ml_collections defines while parsing --config) gone."""
  for name in [name for name in FLAGS if name.startswith('config.')]:
    delattr(FLAGS, name)
  FLAGS.unparse_flags()


@contextlib.contextmanager
def _tensorflow_settings_restored():
  """The process-wide settings a run makes before it fails (Keras's dtype
  policy, op determinism) as they were, for the tests that run here next."""
  policy = (sys.modules['keras'].mixed_precision.global_policy().name
            if 'keras' in sys.modules else 'float32')
  deterministic = _tf_config() and _tf_config().is_op_determinism_enabled()
  try:
    yield
  finally:
    if 'keras' in sys.modules:
      sys.modules['keras'].mixed_precision.set_global_policy(policy)
    if _tf_config() and not deterministic:
      _tf_config().disable_op_determinism()


def _tf_config():
  """TensorFlow's config module once TensorFlow is imported (its public API
  can turn op determinism on, not read or reset it)."""
  if 'tensorflow' not in sys.modules:
    return None
  from tensorflow.python.framework import config  # pylint: disable=g-import-not-at-top
  return config
