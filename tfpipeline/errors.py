"""The exceptions that end a run with an exit code, and their one-line form."""

import contextlib
import re
import signal
import sys


class UserError(Exception):
  """Bad flags, config or data.

  The message is one line that names the flag, key, file or row at fault and
  says what to do. The command line turns it into exit code 2 with no
  traceback; raising it before anything is written keeps `--model_dir` intact.
  """


class Preempted(Exception):
  """The run was asked to stop (SIGTERM, SIGINT, a preemption notice) and
  saved a checkpoint; the same command resumes it. Exit code 3."""


class CheckpointError(RuntimeError):
  """A checkpoint could not be written (disk full, permissions...). Exit
  code 1."""


class WorkersFailed(RuntimeError):
  """A launcher's workers failed beyond its retries, not by bad input or
  preemption. Exit code 1."""


class Interrupted(BaseException):
  """SIGTERM or SIGINT outside the training loop (start-up, data loading,
  export, report), where there is nothing to save: the same command starts
  or resumes the run. Exit code 3. A BaseException, like KeyboardInterrupt,
  so that no `except Exception` on the way turns it into another error."""


def stop_on_signals(
    message: str = 'stopped before training started; rerun the same command'
) -> None:
  """From now on SIGTERM and SIGINT raise Interrupted('SIGNAL: message');
  the training loop installs its own handler, which saves a checkpoint
  first."""
  def interrupt(signum, frame):
    del frame
    raise Interrupted(f'{signal.Signals(signum).name}: {message}')

  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, interrupt)


@contextlib.contextmanager
def user_errors_through_tensorflow():
  """A UserError raised by Python code that TensorFlow runs (a
  tf.numpy_function in tf.data: a streamed label the loss cannot take)
  reaches the caller as a tf.errors.OpError quoting it, traceback and all:
  this raises it as a UserError again, its one line. Also a decorator."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    tf = sys.modules.get('tensorflow')
    quoted = re.search(r'\bUserError: (.*)', str(e))
    if not (tf and isinstance(e, tf.errors.OpError) and quoted):
      raise
    raise UserError(quoted.group(1)) from None


def first_line(error: BaseException) -> str:
  """An exception's message cut to one line (its type when it has none), to
  quote inside a UserError's one-line message."""
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
