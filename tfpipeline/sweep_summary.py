"""A sweep's summary: its trials ranked by the metric, as summary.csv and
summary.html (the table and one plot of the metric against each searched
key), both written atomically. Every figure is read from the trials'
model_dirs (metrics.jsonl), not from Ray Tune's records."""

import base64
import csv
import dataclasses
import html
import io
import json
import math
import pathlib

from tfpipeline import atomic_files
from tfpipeline import search_space
from tfpipeline.report import plots

# How a trial ended, as the sweep driver saw it (Ray Tune's trial status).
FINISHED, STOPPED, FAILED, UNFINISHED = ('finished', 'stopped', 'failed',
                                         'unfinished')


@dataclasses.dataclass(frozen=True)
class Trial:
  """One trial's row.

  Attributes:
    name: its stable name, e.g. trial_00003.
    model_dir: the run's directory.
    values: the searched keys' values.
    status: done, stopped by ASHA at epoch E, failed: LINE, interrupted at
      epoch E, or not started.
    epochs: epoch-end records in its metrics.jsonl.
    best, last: the metric's best and last epoch value (None without one).
  """
  name: str
  model_dir: pathlib.Path
  values: dict
  status: str
  epochs: int
  best: float | None
  last: float | None


def epoch_metrics(model_dir: pathlib.Path) -> list[dict]:
  """The run's epoch-end records (those with validation metrics), one per
  epoch, in order; [] before its first."""
  path = model_dir / 'metrics.jsonl'
  by_epoch = {}
  if path.is_file():
    for line in path.read_text().splitlines():
      try:
        record = json.loads(line)
      except ValueError:  # A line being written.
        continue
      if 'val_loss' in record:
        by_epoch[record['epoch']] = record
  return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def trial(name: str, model_dir: pathlib.Path, values: dict, ended: str,
          reported: int, metric: str, mode: str, log: pathlib.Path) -> Trial:
  """A trial's row from its model_dir; `ended` is one of FINISHED, STOPPED,
  FAILED, UNFINISHED, `reported` the last epoch Tune had from it, `log` its
  command's output. (A stopped trial's command may have run on a little:
  `epochs` counts its records.)"""
  records = epoch_metrics(model_dir)
  series = [r[metric] for r in records
            if isinstance(r.get(metric), (int, float)) and
            math.isfinite(r[metric])]
  epochs = records[-1]['epoch'] if records else 0
  if ended == FINISHED:
    status = 'done'
  elif ended == STOPPED:
    status = f'stopped by ASHA at epoch {reported}'
  elif ended == FAILED:
    lines = log.read_text().strip().splitlines() if log.is_file() else []
    status = f'failed: {lines[-1] if lines else "no output"}'
  else:
    status = f'interrupted at epoch {epochs}' if records else 'not started'
  pick = min if mode == 'min' else max
  return Trial(name, model_dir, values, status, epochs,
               pick(series) if series else None,
               series[-1] if series else None)


def ranked(trials: list[Trial], mode: str) -> list[Trial]:
  """By the metric's last value (what the trial's checkpoint holds), best
  first; trials without one last, by name."""
  sign = 1 if mode == 'min' else -1
  return sorted(trials, key=lambda t: (t.last is None,
                                       sign * (t.last or 0), t.name))


def write(sweep_dir: pathlib.Path, trials: list[Trial], dimensions: list,
          metric: str, mode: str) -> list[Trial]:
  """Writes summary.csv and summary.html; returns the trials ranked."""
  trials = ranked(trials, mode)
  keys = [d.key for d in dimensions]
  header = ['rank', 'trial', 'model_dir', 'status', 'epochs',
            f'best {metric}', f'last {metric}', *keys]
  rows = [[rank, t.name, str(t.model_dir), t.status, t.epochs,
           _number(t.best), _number(t.last),
           *(_value(t.values.get(key)) for key in keys)]
          for rank, t in enumerate(trials, 1)]
  table = io.StringIO()
  csv.writer(table, lineterminator='\n').writerows([header, *rows])
  atomic_files.write_text(sweep_dir / 'summary.csv', table.getvalue())
  plotted = [t for t in trials if t.last is not None]
  images = {d.key: plots.metric_against(
      [t.values[d.key] for t in plotted], [t.last for t in plotted], d.key,
      f'last {metric}', log_scale=d.log_scale) for d in dimensions}
  atomic_files.write_text(sweep_dir / 'summary.html',
                          _html(sweep_dir, header, rows, images, metric, mode))
  return trials


def _number(value: float | None) -> str:
  return '' if value is None else f'{value:.6g}'


def _value(value) -> str:
  return '' if value is None else search_space.format_value(value)


_STYLE = ('body{font-family:sans-serif;margin:2em;max-width:70em}'
          'table{border-collapse:collapse}td,th{border:1px solid #ccc;'
          'padding:.2em .5em;text-align:left}img{max-width:100%}')


def _html(sweep_dir: pathlib.Path, header: list, rows: list, images: dict,
          metric: str, mode: str) -> str:
  e = html.escape
  out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
         f'<title>Sweep: {e(str(sweep_dir))}</title>',
         f'<style>{_STYLE}</style></head><body>',
         f'<h1>Sweep {e(str(sweep_dir))}</h1>',
         f'<p>{len(rows)} trials ranked by their last {e(metric)} '
         f'({"lowest" if mode == "min" else "highest"} first).</p>',
         '<table><tr>' + ''.join(f'<th>{e(h)}</th>' for h in header) +
         '</tr>']
  out.extend('<tr>' + ''.join(f'<td>{e(str(c))}</td>' for c in row) +
             '</tr>' for row in rows)
  out.append('</table>')
  for key, png in images.items():
    out.append(f'<h2>{e(metric)} against {e(key)}</h2>')
    out.append(f'<p><img alt="{e(metric)} against {e(key)}" src="data:image/'
               f'png;base64,{base64.b64encode(png).decode()}"></p>')
  out.append('</body></html>')
  return '\n'.join(out) + '\n'
