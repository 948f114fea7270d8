"""The console of a command: tfpipeline's own lines, the libraries' held back.

A command run prints the package's INFO lines, plain (their message alone),
and everyone's warnings and errors with absl's prefix (level, time, thread,
file and line), TensorFlow's C++ ones included; on a terminal, training adds
a live bar (`progress_bar`), which the lines are written above. It holds back
TensorFlow's C++ INFO lines (oneDNN, CUDA stubs, XLA) and LiteRT's, C++ lines
every healthy run prints (below), TF's C++ echoes of a tfpipeline UserError
raised inside tf.data
(the command's last line says it), TensorFlow's and TFDS's INFO lines (SavedModel's "Assets written",
dataset generation), TFDS's progress bars and codecarbon's INFO and WARNING
lines. `--verbosity=1` (absl's flag) shows them all, every line in absl's
format, and no bar; a TF_CPP_MIN_LOG_LEVEL set by the user decides
TensorFlow's C++ lines.

Run as `python -m tfpipeline.console`, it is the filter itself: standard
input to standard error, less the lines held back, until end of file; a
live bar's frames (a carriage return, no line end) pass at once.
"""

import atexit
import contextlib
import io
import logging as python_logging
import os
import pathlib
import re
import subprocess
import sys
import warnings

from absl import logging

_PACKAGE = str(pathlib.Path(__file__).resolve().parent)


def _cpp_log_prefix(levels: bytes) -> bytes:
  """A TF C++ log line's prefix at `levels` (b'I', b'EW'): absl's format
  before it is initialised (a zero date: tfpipeline's own absl lines carry a
  real one), or TF's older own format (TF 2.20 logs some lines in it)."""
  return (rb'(?:[' + levels + rb']0000 00:00:[\d.]+ +\d+ [\w.]+:\d+\] |'
          rb'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [' + levels +
          rb'] [\w/.]+:\d+\] )')


# A line TensorFlow's C++ code logs at INFO, or LiteRT's interpreter (its
# XNNPACK delegate); absl's notice that it logs to stderr before being
# initialised; the second line of the CPU feature guard's INFO line. Then
# lines of healthy runs: cuInit failing with CUDA's "shared object init
# failed" (no driver: TF's CUDA build on a CPU machine), XLA dropping a
# tf.debugging assert it compiles, tf.data unable to optimise
# tf.distribute's input generator, oneDNN falling back to Eigen for int64 on
# a CPU without AVX-512, the TFLite converter ignoring two options of its
# own on every conversion.
_HELD_BACK_LINE = re.compile(
    _cpp_log_prefix(b'I') + rb'|INFO: |'
    rb'WARNING: All log messages before absl::InitializeLog\(\) is called are '
    rb'written to STDERR|To enable the following instructions: |' +
    _cpp_log_prefix(b'EW') + rb'(failed call to cuInit: .*'
    rb'UNKNOWN ERROR \(303\)|Ignoring Assert operator |Input of '
    rb'GeneratorDatasetOp::Dataset will not be optimized|'
    rb'oneDNN supports DT_INT64 only on platforms with AVX-512|'
    rb'Ignored (output_format|drop_control_dependency)\.)')
# TF's C++ warnings echoing a UserError raised inside tf.data (a streamed
# label the loss cannot take), with their traceback and node lines: the
# command's last line gives the error.
_USER_ERROR_ECHO = re.compile(_cpp_log_prefix(b'EW') + rb'.*\bUserError: ')
_ECHO_CONTINUED = re.compile(rb'(\s|$|Traceback \(most recent call last\):|'
                             rb'[A-Za-z_][\w.]*(Error|Exception): )')
# The first frame of a traceback TF prints for an error raised in a
# tf.numpy_function or tf.py_function.
_TF_CALLBACK_FRAME = re.compile(
    rb'\s+File ".*[/\\]tensorflow[/\\]python[/\\]ops[/\\]script_ops\.py", '
    rb'line \d+, in __call__')
_quiet = False
# With a quiet console on a terminal: a descriptor of the terminal (its
# width), taken before the filter's pipe replaces file descriptor 2.
_terminal = None
_filtering = False  # fd 2 goes through the child that filters it.
_said_last_line = False


def _own_info(record: python_logging.LogRecord) -> bool:
  """Whether `record` is an INFO (or DEBUG) line of this package's code."""
  return (record.levelno < python_logging.WARNING and
          record.pathname.startswith(_PACKAGE))


class _OwnInfoOnly(python_logging.Filter):
  """Passes warnings and errors, and INFO lines logged by this package."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or _own_info(record)


class _PlainOwnLines(python_logging.Formatter):
  """The package's INFO lines as their message alone; any other line (a
  warning, an error, a library's line) after absl's prefix."""

  def format(self, record: python_logging.LogRecord) -> str:
    prefix = '' if _own_info(record) else logging.get_absl_log_prefix(record)
    return prefix + super().format(record)


def quiet() -> None:
  """Holds the libraries' lines back and prints the package's plain
  (`plain_lines`), unless --verbosity is 1 or more. On a terminal, log lines
  and Python's warnings are written above a live bar.

  Call it once flags are parsed and before TensorFlow is imported.
  """
  global _quiet, _terminal
  if logging.get_verbosity() >= logging.DEBUG:
    return
  _quiet = True
  if sys.stderr.isatty():
    _terminal = os.dup(sys.stderr.fileno())
    from tfpipeline import progress_bar  # pylint: disable=g-import-not-at-top
    logging.get_absl_handler().python_handler.stream = (
        progress_bar.LinesAboveTheBar())
    warnings.showwarning = progress_bar.show_warning
  if 'TF_CPP_MIN_LOG_LEVEL' not in os.environ:
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '1'  # Warnings and errors.
    _filter_stderr()
  os.environ.setdefault('CODECARBON_LOG_LEVEL', 'error')  # Read on import.
  plain_lines()
  logging.get_absl_handler().addFilter(_OwnInfoOnly())


def plain_lines() -> None:
  """The package's INFO lines without absl's prefix, unless --verbosity is
  1 or more. Call it once flags are parsed."""
  if logging.get_verbosity() < logging.DEBUG:
    logging.get_absl_handler().setFormatter(_PlainOwnLines())


def is_quiet() -> bool:
  """Whether `quiet()` holds the libraries' lines back (progress bars)."""
  return _quiet


def live_bar_columns() -> int | None:
  """The terminal's width where `quiet()` found stderr a terminal (a live
  bar may be drawn); None elsewhere."""
  if _terminal is None:
    return None
  try:
    return os.get_terminal_size(_terminal).columns
  except OSError:  # The terminal closed.
    return None


@contextlib.contextmanager
def library_chatter_held_back():
  """When quiet: the block's stdout and its log lines below ERROR (TFDS
  preparing a dataset prints both) are dropped."""
  if not _quiet:
    yield
    return
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    logging.set_verbosity(verbosity)


@contextlib.contextmanager
def output_held_back():
  """When quiet: all the block writes to stdout and stderr, C++ code's and
  log lines included, is dropped (a model converter that fails prints its
  whole program; the caller says why in one line)."""
  if not _quiet:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  _point_stderr_at(os.devnull)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def last_line(text: str) -> None:
  """Prints the command's last line (its error) to stderr. Where stderr
  goes through the filter, in one write (a C++ line cannot land inside it),
  and what library threads still log as the process ends (tf.data's echo of
  the error, a reader failing at interpreter shutdown) then goes nowhere, so
  the line stays the last."""
  global _said_last_line
  if not _filtering:
    print(text, file=sys.stderr, flush=True)
    return
  sys.stderr.flush()
  os.write(2, f'{text}\n'.encode(sys.stderr.encoding or 'utf-8',
                                  'backslashreplace'))
  _said_last_line = True
  _point_stderr_at(os.devnull)


def _point_stderr_at(path: str) -> None:
  descriptor = os.open(path, os.O_WRONLY)
  os.dup2(descriptor, 2)
  os.close(descriptor)


def _filter_stderr() -> None:
  """For the rest of the process, file descriptor 2 (C++ and Python writes
  alike) goes through a pipe to a child process that passes every line to the
  real stderr but those held back, which TF prints before and beside its log
  level (TF 2.20: "Compiled cluster using XLA!", grappler's device count).

  A child, not a thread: when the command dies by a signal or a C++ abort
  (CHECK failure, LOG(FATAL), faulthandler's dump), the child still reads
  the pipe to its end, so the last lines reach the terminal. It has its own
  session, so Ctrl-C stops the command, not its stderr. At exit the command
  waits for it, keeping its own later lines in order.
  """
  global _filtering
  sys.stderr.flush()
  read_end, write_end = os.pipe()
  package_parent = str(pathlib.Path(_PACKAGE).parent)
  forwarder = subprocess.Popen(
      [sys.executable, '-m', __name__], cwd=package_parent,
      stdin=read_end, stdout=subprocess.DEVNULL, start_new_session=True)
  os.close(read_end)
  real = os.dup(2)
  os.dup2(write_end, 2)
  os.close(write_end)
  _filtering = True

  def drain():
    sys.stderr.flush()
    # The pipe's last writer closes: the child sees EOF. After the command's
    # last line, threads still logging keep writing nowhere.
    if _said_last_line:
      _point_stderr_at(os.devnull)
    else:
      os.dup2(real, 2)
    with contextlib.suppress(subprocess.TimeoutExpired):
      forwarder.wait(timeout=5)

  atexit.register(drain)


def _forward_lines() -> None:
  """Standard input to standard error but the lines held back, to its end.

  A Python traceback whose first frame is TensorFlow's py_function caller is
  TF echoing an error raised in tf.data: held back, however its first log
  line got separated from it (another thread's line, the command's own
  error line, written in between).
  """
  echo, traceback = False, []
  for line in _lines_passing_frames():
    if traceback:  # Held until its first frame says whose it is.
      traceback.append(line)
      if not line.strip():
        continue
      echo = bool(_TF_CALLBACK_FRAME.match(line))
      shown, traceback = ([] if echo else traceback), []
    elif not echo and line == b'Traceback (most recent call last):\n':
      traceback = [line]
      continue
    else:
      echo = bool(_USER_ERROR_ECHO.match(line) or
                  echo and _ECHO_CONTINUED.match(line))
      shown = [] if echo or _HELD_BACK_LINE.match(line) else [line]
    _write(shown)
  _write(traceback)


def _lines_passing_frames():
  """Standard input's lines, each from its last carriage return on: what
  comes before it (a live bar's frame, its clearing) is written at once,
  as is a partial line holding one (the bar redrawn in place)."""
  pending = b''
  while chunk := os.read(0, 1 << 16):
    *lines, pending = (pending + chunk).split(b'\n')
    for line in lines:
      frame, carriage_return, line = line.rpartition(b'\r')
      if carriage_return:
        _write([frame + carriage_return])
      yield line + b'\n'
    if b'\r' in pending:
      _write([pending])
      pending = b''
  if pending:
    yield pending


def _write(lines: list[bytes]) -> None:
  for line in lines:
    with contextlib.suppress(OSError):  # A closed terminal: drain anyway.
      os.write(2, line)


if __name__ == '__main__':
  _forward_lines()
