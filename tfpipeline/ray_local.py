"""What the commands that run tfpipeline under Ray share: the install
check, joining or starting a quiet Ray cluster, and the training command as
a child process that dies with its Ray worker.

Run as `python -m tfpipeline.ray_local PARENT_PID SIGNAL ARGS`, it is that
child: `python -m tfpipeline.train ARGS`, which gets SIGNAL when the process
PARENT_PID (its Ray worker) dies (Linux's parent-death signal).
"""

import contextlib
import logging as python_logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile

from tfpipeline.errors import UserError

INSTALL = "pip install 'tfpipeline[ray]'"
_PR_SET_PDEATHSIG = 1


def check_installed(what: str) -> None:
  """Raises UserError (`what` needs Ray, and how to install it) unless Ray
  is importable."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec('ray') is None:
    raise UserError(f'{what} needs Ray: {INSTALL}')


def own_token() -> None:
  """Gives the local cluster this process starts a token of its own,
  unless RAY_AUTH_MODE says otherwise. Ray reads it when it is imported:
  call this before anything imports Ray."""
  if 'RAY_AUTH_MODE' not in os.environ:
    os.environ.update(RAY_AUTH_MODE='token',
                      RAY_AUTH_TOKEN=secrets.token_hex(32))


@contextlib.contextmanager
def connected(address: str | None, num_cpus: int | None = None):
  """Ray initialised for this process, logging warnings only; yields a
  scratch directory, removed after. Without `address`, a local cluster of
  `num_cpus` CPUs that keeps its files there, with no dashboard or job API
  and a token of its own (unless RAY_AUTH_MODE says otherwise); else the
  cluster at `address` ('auto', host:port)."""
  if not address:
    own_token()
  import ray  # pylint: disable=g-import-not-at-top
  scratch = tempfile.mkdtemp(prefix='tfpipeline-ray-')
  try:
    # Ray's own workers log errors only: without the dashboard, Ray
    # Train's placement-group cleaner warns every few seconds that it cannot
    # ask the state API.
    quiet = dict(logging_level='WARNING',
                 logging_config=ray.LoggingConfig(log_level='ERROR'))
    with _root_logger_kept():  # Which the logging config also sets.
      if address:
        ray.init(address=address, **quiet)
      else:
        ray.init(num_cpus=num_cpus, include_dashboard=False,
                 _temp_dir=scratch, **quiet)
    yield scratch
  finally:
    ray.shutdown()
    shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _root_logger_kept():
  """Python's root logger's level and handlers (absl's) as they were."""
  root = python_logging.getLogger()
  level, handlers = root.level, list(root.handlers)
  try:
    yield
  finally:
    root.setLevel(level)
    root.handlers[:] = handlers


def start_train(argv: list[str], *, cwd: str, dies_by: signal.Signals,
                stderr) -> subprocess.Popen:
  """Starts `python -m tfpipeline.train ARGV` in `cwd` (when it exists) as
  a child that gets `dies_by` when this process dies; `stderr` as
  subprocess.Popen takes it."""
  return subprocess.Popen(
      [sys.executable, '-m', __name__, str(os.getpid()), dies_by.name,
       *argv], stderr=stderr, text=True,
      cwd=cwd if os.path.isdir(cwd) else None)


def _die_with_parent(parent: int, dies_by: signal.Signals) -> None:
  """This process gets `dies_by` when `parent` (its Ray worker) dies; Linux
  only. Exits at once if the parent is already gone."""
  if sys.platform.startswith('linux'):
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, dies_by)
  if os.getppid() != parent:
    os._exit(1)  # pylint: disable=protected-access


if __name__ == '__main__':
  _die_with_parent(int(sys.argv.pop(1)), signal.Signals[sys.argv.pop(1)])
  import runpy  # pylint: disable=g-import-not-at-top
  runpy.run_module('tfpipeline.train', run_name='__main__', alter_sys=True)
