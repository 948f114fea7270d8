"""The console of a command: tfpipeline's own lines, the libraries' held back.

A command run prints the package's INFO lines and everyone's warnings and
errors. It holds back TensorFlow's C++ start-up lines (oneDNN, CUDA stubs,
cuInit), TensorFlow's and TFDS's INFO lines (SavedModel's "Assets written",
dataset generation), TFDS's progress bars and codecarbon's INFO and WARNING
lines. `--verbosity=1` (absl's flag) shows them all; a TF_CPP_MIN_LOG_LEVEL
set by the user decides TensorFlow's C++ lines.
"""

import atexit
import contextlib
import io
import logging as python_logging
import os
import pathlib
import re
import sys
import threading

from absl import logging

_PACKAGE = str(pathlib.Path(__file__).resolve().parent)
# A line of TensorFlow's C++ logging (absl's format), or absl's notice
# that it logs to stderr before being initialised.
_CPP_LINE = re.compile(
    rb'([IW]0000 00:00:[\d.]+ +\d+ [\w.]+:\d+\] |WARNING: All log messages '
    rb'before absl::InitializeLog\(\) is called are written to STDERR|'
    rb'To enable the following instructions: )')
_quiet = False


class _OwnInfoOnly(python_logging.Filter):
  """Passes warnings and errors, and INFO lines logged by this package."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return (record.levelno >= python_logging.WARNING or
            record.pathname.startswith(_PACKAGE))


def quiet() -> None:
  """Holds the libraries' lines back, unless --verbosity is 1 or more.

  Call it once flags are parsed and before TensorFlow is imported.
  """
  global _quiet
  if logging.get_verbosity() >= logging.DEBUG:
    return
  _quiet = True
  if 'TF_CPP_MIN_LOG_LEVEL' not in os.environ:
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
    _drop_cpp_info_lines()
  os.environ.setdefault('CODECARBON_LOG_LEVEL', 'error')  # Read on import.
  logging.get_absl_handler().addFilter(_OwnInfoOnly())


def is_quiet() -> bool:
  """Whether `quiet()` holds the libraries' lines back (progress bars)."""
  return _quiet


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


def _drop_cpp_info_lines() -> None:
  """For the rest of the process, file descriptor 2 (C++ and Python writes
  alike) goes through a pipe to a thread that passes every line to the real
  stderr but TensorFlow's C++ INFO and WARNING lines, which TF prints before
  and beside its log level (TF 2.20: "Compiled cluster using XLA!",
  grappler's device count). At exit the pipe is drained before Python ends.
  """
  sys.stderr.flush()
  real = os.dup(2)
  read_end, write_end = os.pipe()
  os.dup2(write_end, 2)
  os.close(write_end)

  def forward():
    with os.fdopen(read_end, 'rb') as lines:
      for line in lines:
        if not _CPP_LINE.match(line):
          os.write(real, line)

  thread = threading.Thread(target=forward, name='stderr-filter', daemon=True)
  thread.start()

  def drain():
    sys.stderr.flush()
    os.dup2(real, 2)  # The pipe's last writer closes: the thread sees EOF.
    thread.join(timeout=5)

  atexit.register(drain)
