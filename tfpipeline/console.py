"""The console of a command: tfpipeline's own lines, the libraries' held back.

A command run prints the package's INFO lines and everyone's warnings and
errors. It holds back TensorFlow's C++ start-up lines (oneDNN, CUDA stubs,
cuInit), TensorFlow's and TFDS's INFO lines (SavedModel's "Assets written",
dataset generation), TFDS's progress bars and codecarbon's INFO and WARNING
lines. `--verbosity=1` (absl's flag) shows them all; a TF_CPP_MIN_LOG_LEVEL
set by the user decides TensorFlow's C++ lines.
"""

import contextlib
import importlib
import io
import logging as python_logging
import os
import pathlib
import re
import sys
import tempfile

from absl import logging

_PACKAGE = str(pathlib.Path(__file__).resolve().parent)
# A line of TensorFlow's C++ logging (absl's format), or absl's notice
# that it logs to stderr before being initialised.
_CPP_LINE = re.compile(
    r'([IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] |WARNING: All log messages '
    r'before absl::InitializeLog\(\) is called are written to STDERR)')
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
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
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


def import_tensorflow() -> None:
  """Imports TensorFlow. With TF_CPP_MIN_LOG_LEVEL=3, the C++ lines it
  prints while loading, before its log level applies, are dropped; any
  other output of the import is passed on."""
  hold_back = ('tensorflow' not in sys.modules and
               os.environ.get('TF_CPP_MIN_LOG_LEVEL') == '3')
  with _cpp_lines_dropped() if hold_back else contextlib.nullcontext():
    importlib.import_module('tensorflow')


@contextlib.contextmanager
def _cpp_lines_dropped():
  """Redirects file descriptor 2 (C++ and Python writes alike) to a file
  for the block, then writes what it caught to stderr, C++ log lines
  excepted (also when the block raises)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      sys.stderr.writelines(
          line for line in capture.read().decode(errors='replace').splitlines(
              keepends=True) if not _CPP_LINE.match(line))
