"""`python -m tfpipeline.verify MODEL_DIR`: are these the files the run wrote?

Checks every file against MANIFEST.json (sha256) and the audit log's hash
chain. Prints one line per file changed, missing or added; exit 0 when all
match, 1 when any differs, 2 when MODEL_DIR holds no finished run.
"""

from tfpipeline import commands
from tfpipeline import integrity


def main(argv: list[str]) -> int:
  model_dir = commands.finished_run(argv, 'verify', integrity.MANIFEST)
  try:
    count, problems = integrity.verify(model_dir)
  except (ValueError, KeyError, TypeError) as e:  # Not a manifest any more.
    print(f'{model_dir}: changed: {integrity.MANIFEST} (unreadable: '
          f'{type(e).__name__}: {e})')
    return 1
  for problem in problems:
    print(f'{model_dir}: {problem}')
  if problems:
    print(f'FAILED: {len(problems)} problem(s) in {model_dir}')
    return 1
  print(f'OK: {count} files in {model_dir} match {integrity.MANIFEST}')
  return 0


def cli() -> None:
  """Console script `tfpipeline-verify`."""
  commands.run(main)


if __name__ == '__main__':
  cli()
