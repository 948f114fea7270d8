"""What the MODEL_DIR commands (`verify`, `report`) share: the argument,
and exit code 2 with one line for bad input."""

import pathlib
import sys

from tfpipeline.errors import UserError


def finished_run(argv: list[str], command: str, needs: str) -> pathlib.Path:
  """The one MODEL_DIR argument, a directory holding the file `needs`."""
  if len(argv) != 1 or argv[0].startswith('-'):
    raise UserError(f'usage: python -m tfpipeline.{command} MODEL_DIR')
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
