"""The exceptions that end a run with an exit code, and their one-line form."""


class UserError(Exception):
  """Bad flags, config or data.

  The message is one line that names the flag, key, file or row at fault and
  says what to do. The command line turns it into exit code 2 with no
  traceback; raising it before anything is written keeps `--model_dir` intact.
  """


class Preempted(Exception):
  """The run was asked to stop (SIGTERM, SIGINT, a preemption notice) and
  saved a checkpoint; the same command resumes it. Exit code 3."""


def first_line(error: BaseException) -> str:
  """An exception's message cut to one line (its type when it has none), to
  quote inside a UserError's one-line message."""
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
