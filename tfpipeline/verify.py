"""`python -m tfpipeline.verify MODEL_DIR`: are these the files the run wrote?

Checks every file against MANIFEST.json (sha256) and the audit log's hash
chain. Prints one line per file changed, missing or added; exit 0 when all
match, 1 when any differs, 2 when MODEL_DIR holds no finished run.
"""

import pathlib
import sys

from tfpipeline import integrity

USAGE = 'usage: python -m tfpipeline.verify MODEL_DIR'


def main(argv: list[str]) -> int:
  if len(argv) != 1 or argv[0].startswith('-'):
    print(USAGE, file=sys.stderr)
    return 2
  model_dir = pathlib.Path(argv[0])
  if not (model_dir / integrity.MANIFEST).is_file():
    print(f'error: {model_dir} has no {integrity.MANIFEST}; give the '
          f'--model_dir of a finished run', file=sys.stderr)
    return 2
  try:
    count, problems = integrity.verify(model_dir)
  except ValueError as e:  # A MANIFEST.json that is not JSON.
    print(f'{model_dir}: changed: {integrity.MANIFEST} ({e})')
    return 1
  for problem in problems:
    print(f'{model_dir}: {problem}')
  if problems:
    print(f'FAILED: {len(problems)} problem(s) in {model_dir}')
    return 1
  print(f'OK: {count} files in {model_dir} match {integrity.MANIFEST}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
