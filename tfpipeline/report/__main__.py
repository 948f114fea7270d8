"""`python -m tfpipeline.report MODEL_DIR`: render a finished run's report.

Rewrites report.md, report.html and the plots from report/report.json and
metrics.jsonl. Rendering is deterministic, so an untouched run renders to
the bytes MANIFEST.json lists (`python -m tfpipeline.verify` still passes).
"""

from tfpipeline import commands
from tfpipeline.errors import UserError

REPORT_JSON = 'report/report.json'


def main(argv: list[str]) -> int:
  model_dir = commands.finished_run(argv, 'report', REPORT_JSON)
  from tfpipeline.report import render  # pylint: disable=g-import-not-at-top
  try:
    paths = render.render(model_dir)
  except (ValueError, KeyError) as e:  # Not JSON, or not our schema.
    raise UserError(f'{model_dir / REPORT_JSON} is not a tfpipeline report '
                    f'({type(e).__name__}: {e}); rerun the training to write '
                    f'it again') from None
  for path in paths:
    print(path)
  return 0


def cli() -> None:
  """Console script `tfpipeline-report`."""
  commands.run(main)


if __name__ == '__main__':
  cli()
