"""The one exception type that means "the user's input is wrong"."""


class UserError(Exception):
  """Bad flags, config or data.

  The message is one line that names the flag, key, file or row at fault and
  says what to do. The command line turns it into exit code 2 with no
  traceback; raising it before anything is written keeps `--model_dir` intact.
  """


class Preempted(Exception):
  """The run was asked to stop (SIGTERM, SIGINT, a preemption notice) and
  saved a checkpoint; the same command resumes it. Exit code 3."""
