"""What the MODEL_DIR commands (`verify`, `report`, `predict`) share: the
argument, and exit code 2 with one line for bad input."""

import pathlib
import sys

from tfpipeline.errors import Interrupted
from tfpipeline.errors import UserError
from tfpipeline.errors import first_line


def finished_run(argv: list[str], command: str, needs: str) -> pathlib.Path:
  """The one MODEL_DIR argument, a directory holding the file `needs`."""
  if len(argv) != 1 or argv[0].startswith('-'):
    raise UserError(f'usage: python -m tfpipeline.{command} MODEL_DIR'
                    f'{" [flags]; see --help" if command == "predict" else ""}')
  model_dir = pathlib.Path(argv[0])
  if not (model_dir / needs).is_file():
    raise UserError(f'{model_dir} has no {needs}; give the --model_dir of a '
                    f'finished run')
  return model_dir


def run(main) -> None:
  """Exits with `main(sys.argv[1:])`; a UserError exits 2 with one line."""
  try:
    code = main(sys.argv[1:])
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    code = 2
  sys.exit(code)


def run_absl(main, parse_flags=None) -> None:
  """`app.run(main)` for a command with absl flags: a bad flag or a
  UserError exits 2 with one line, Interrupted (a signal) exits 3.
  `parse_flags(argv)` parses the flags (absl's parsing by default); it
  may raise UserError."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  def parse(argv: list[str]) -> list[str]:
    try:
      return (parse_flags or flags.FLAGS)(argv)
    except (flags.Error, UserError) as e:
      print(f'error: {first_line(e)}', file=sys.stderr)
      sys.exit(2)

  def checked(argv: list[str]) -> int:
    try:
      return main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2

  try:
    app.run(checked, flags_parser=parse)
  except Interrupted as e:
    print(e, file=sys.stderr)
    sys.exit(3)
