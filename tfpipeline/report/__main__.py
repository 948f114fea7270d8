"""`python -m tfpipeline.report MODEL_DIR`: render a finished run's report.

Rewrites report.md, report.html and the plots from report/report.json and
metrics.jsonl. Rendering is deterministic, so an untouched run renders to
the bytes MANIFEST.json lists (`python -m tfpipeline.verify` still passes).
"""

import json
import pathlib
import sys

USAGE = 'usage: python -m tfpipeline.report MODEL_DIR'


def main(argv: list[str]) -> int:
  if len(argv) != 1 or argv[0].startswith('-'):
    print(USAGE, file=sys.stderr)
    return 2
  model_dir = pathlib.Path(argv[0])
  source = model_dir / 'report' / 'report.json'
  if not source.is_file():
    print(f'error: {source} does not exist; give the --model_dir of a '
          f'finished run', file=sys.stderr)
    return 2
  from tfpipeline.report import render  # pylint: disable=g-import-not-at-top
  try:
    paths = render.render(model_dir)
  except (ValueError, KeyError) as e:  # Not JSON, or not our schema.
    print(f'error: {source} is not a tfpipeline report ({type(e).__name__}: '
          f'{e}); rerun the training to write it again', file=sys.stderr)
    return 2
  for path in paths:
    print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
