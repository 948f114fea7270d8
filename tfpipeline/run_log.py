"""What a run reports as it trains: console, metrics.jsonl and TensorBoard."""

import json
import math
import pathlib
import time

from absl import logging
import tensorflow as tf

from tfpipeline import atomic_files
from tfpipeline.progress_bar import EpochBar


# A console line at least this often within a long epoch (without a live
# bar: on a terminal, the bar shows the epoch's progress).
PROGRESS_EVERY_S = 30.0
# The input stall is shown for device calls at least this long: in shorter
# ones, fetching the next block's fixed cost dominates the share.
STALL_SHOWN_FROM_S = 1.0


class RunLog:
  """Logs one record per training loop (device call) and per epoch end.

  Records go to `metrics.jsonl` (one JSON object a line, flushed at once),
  to TensorBoard scalars under `tensorboard/`, and as one console line per
  epoch; within an epoch, to a live bar if given, else as a console line
  per PROGRESS_EVERY_S.
  """

  def __init__(self, model_dir: pathlib.Path, epochs: int,
               start_step: int = 0, bar: EpochBar | None = None):
    """Appends to `model_dir`'s logs; on a resume from `start_step`, drops
    the records written after that checkpoint (they will be redone).
    `bar`: the live bar of a terminal's console."""
    self._epochs = epochs
    self._path = model_dir / 'metrics.jsonl'
    self._tensorboard = model_dir / 'tensorboard'
    self._bar = bar
    self._truncate(start_step)
    self._open()
    self._start = self._last_line = time.perf_counter()
    self._start_bar(start_step)

  def _open(self) -> None:
    self._jsonl = open(self._path, 'a', encoding='utf-8')
    self._writer = tf.summary.create_file_writer(str(self._tensorboard))

  def _truncate(self, step: int) -> None:
    """Keeps the records of steps up to `step`, in both logs."""
    if self._path.exists():
      atomic_files.write_text(self._path, ''.join(
          line + '\n' for line in self._path.read_text().splitlines()
          if _step_of(line) is not None and _step_of(line) <= step))
    _truncate_events(self._tensorboard, step)

  def rollback(self, step: int) -> None:
    """Forgets the records after `step`, which the run will redo, so that
    every curve keeps one value per step."""
    self.close()
    self._truncate(step)
    self._open()
    self._start_bar(step)

  def record(self, *, step: int, epoch: int, console: bool,
             call_s: float | None = None, **values) -> dict:
    """Writes one record; `console` also prints it as an epoch line (and
    a record PROGRESS_EVERY_S after the last line, as a progress line).
    `call_s` is how long the device call it measures took: the console
    shows its input stall only from STALL_SHOWN_FROM_S."""
    now = time.perf_counter()
    row = {'step': step, 'epoch': epoch, **values,
           'wall_s': round(now - self._start, 3)}
    self._jsonl.write(json.dumps(row) + '\n')
    self._jsonl.flush()
    if 'event' not in values:  # Events (rollbacks) are not curves.
      with self._writer.as_default(step=step):
        for name, value in values.items():
          if isinstance(value, (int, float)) and math.isfinite(value):
            tf.summary.scalar(name, value)
    if call_s is None or call_s < STALL_SHOWN_FROM_S:
      values = {k: v for k, v in values.items() if k != 'input_stall_pct'}
    if console:
      if self._bar:
        self._bar.close()
      self._line(step, epoch, values)
      self._start_bar(step)
    elif 'event' not in values:  # Events (rollbacks) are not progress.
      self.progress(step=step, epoch=epoch, **values)
    return row

  def progress(self, *, step: int, epoch: int, **values) -> None:
    """Shows an epoch's progress on the live bar, or without one prints
    it if PROGRESS_EVERY_S passed since the last console line."""
    if self._bar:
      self._bar.show(step, values['loss'])
    elif time.perf_counter() - self._last_line >= PROGRESS_EVERY_S:
      self._line(step, epoch, values, ' (in progress)')

  def _line(self, step: int, epoch: int, values: dict, note: str = '') -> None:
    logging.info('epoch %d/%d  step %d%s  %s', epoch, self._epochs, step,
                 note, '  '.join(_format(k, v) for k, v in values.items()))
    self._last_line = time.perf_counter()

  def _start_bar(self, step: int) -> None:
    if self._bar:
      self._bar.start(step)

  def close(self) -> None:
    if self._bar:
      self._bar.close()
    self._writer.flush()
    self._writer.close()
    self._jsonl.close()


def _truncate_events(directory: pathlib.Path, step: int) -> None:
  """Rewrites TensorBoard's event files as one, without events after
  `step`. Event files are TFRecord files of `Event` protos; a record torn by
  a kill ends its file."""
  files = sorted(directory.glob('events.out.tfevents.*'))
  if not files:
    return
  kept = []
  for index, path in enumerate(files):
    try:
      for record in tf.data.TFRecordDataset(str(path)):
        event = tf.compat.v1.Event.FromString(record.numpy())
        if event.step <= step and (index == 0 or
                                   not event.HasField('file_version')):
          kept.append(record.numpy())
    except tf.errors.DataLossError:
      pass
  with atomic_files.replacing(files[0]) as tmp:
    with tf.io.TFRecordWriter(str(tmp)) as writer:
      for record in kept:
        writer.write(record)
  for path in files[1:]:
    path.unlink()


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
