"""What a run reports as it trains: console, metrics.jsonl and TensorBoard."""

import json
import math
import pathlib
import time

from absl import logging
import tensorflow as tf

from tfpipeline import artifacts


class RunLog:
  """Logs one record per training loop (device call) and per epoch end.

  Records go to `metrics.jsonl` (one JSON object a line, flushed at once),
  to TensorBoard scalars under `tensorboard/`, and as one console line per
  epoch.
  """

  def __init__(self, model_dir: pathlib.Path, epochs: int,
               start_step: int = 0):
    """Appends to `model_dir`'s logs; on a resume from `start_step`, drops
    the records written after that checkpoint (they will be redone)."""
    self._epochs = epochs
    path = model_dir / 'metrics.jsonl'
    if path.exists():
      artifacts.write_text(path, ''.join(
          line + '\n' for line in path.read_text().splitlines()
          if _step_of(line) is not None and _step_of(line) <= start_step))
    self._jsonl = open(path, 'a', encoding='utf-8')
    self._writer = tf.summary.create_file_writer(str(model_dir / 'tensorboard'))
    self._start = time.perf_counter()

  def record(self, *, step: int, epoch: int, console: bool, **values) -> dict:
    """Writes one record; `console` also prints it as an epoch line."""
    row = {'step': step, 'epoch': epoch, **values,
           'wall_s': round(time.perf_counter() - self._start, 3)}
    self._jsonl.write(json.dumps(row) + '\n')
    self._jsonl.flush()
    with self._writer.as_default(step=step):
      for name, value in values.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
          tf.summary.scalar(name, value)
    if console:
      logging.info('epoch %d/%d  step %d  %s', epoch, self._epochs, step,
                   '  '.join(_format(k, v) for k, v in values.items()))
    return row

  def close(self) -> None:
    self._writer.flush()
    self._writer.close()
    self._jsonl.close()


def _step_of(line: str) -> int | None:
  """The step of a metrics.jsonl line; None for a torn or foreign line."""
  try:
    return int(json.loads(line)['step'])
  except (ValueError, KeyError, TypeError):
    return None


def _format(name: str, value) -> str:
  if value is None:
    return f'{name} -'
  if name == 'examples_per_sec':
    return f'{value:,.0f} ex/s'
  if name == 'input_stall_pct':
    return f'stall {value:.1f}%'
  return f'{name} {value:.4g}'
