"""The live bar of the epoch in training, on a terminal (tqdm).

One line, redrawn in place, as Keras's fit shows one: the epoch, its steps
done, examples/s and the epoch's ETA (both over the steps this bar counted),
the latest loss. The run log moves it (`run_log.RunLog`): a bar for each
epoch, the step and loss of each training block (a Keras fit call) shown,
the bar cleared before the epoch's line. Log lines and Python warnings
written meanwhile go above it (`console.quiet` gives absl's handler
`LinesAboveTheBar` and Python's warnings `show_warning`).
"""

import sys
import time
import warnings

import tqdm

from tfpipeline import console

# A bar is redrawn at most this often (the first values of an epoch at
# once): a block of steps can take a millisecond, a redraw is a write.
REDRAW_EVERY_S = 0.25


class EpochBar:
  """The bar of the epoch in training; none after the run's last."""

  def __init__(self, epochs: int, steps_per_epoch: int,
               step_batch_size: int):
    self._epochs, self._steps_per_epoch = epochs, steps_per_epoch
    self._step_batch_size = step_batch_size
    self._bar = None
    self._epoch_start = 0
    self._next_draw = 0.0

  def start(self, step: int) -> None:
    """A new bar for the epoch after global `step`: where a run starts or
    resumes, an epoch ended, a rollback restored."""
    self.close()
    epoch, done = divmod(step, self._steps_per_epoch)
    if epoch >= self._epochs:
      return
    self._epoch_start, self._next_draw = step - done, 0.0
    self._bar = _Bar(
        self._step_batch_size, total=self._steps_per_epoch, initial=done,
        desc=f'epoch {epoch + 1}/{self._epochs}', file=sys.stderr,
        ncols=console.live_bar_columns(), leave=False,
        bar_format='{desc} {bar} {n}/{total} steps{figures}')

  def show(self, step: int, loss: float) -> None:
    """The run stands at global `step` with `loss`."""
    bar = self._bar
    if bar is None:
      return
    bar.n, bar.loss = step - self._epoch_start, loss
    now = time.monotonic()
    if now >= self._next_draw:
      self._next_draw = now + REDRAW_EVERY_S
      bar.refresh()

  def close(self) -> None:
    """Clears the bar from the terminal."""
    if self._bar is not None:
      self._bar.close()
      self._bar = None


class _Bar(tqdm.tqdm):
  """tqdm with the training's figures after the steps: examples/s, the
  loss and the ETA, once a step is counted."""

  monitor_interval = 0  # No monitor thread: `EpochBar.show` redraws.

  def __init__(self, step_batch_size: int, **kwargs):
    self.loss = None
    self._step_batch_size = step_batch_size
    super().__init__(**kwargs)

  @property
  def format_dict(self):
    fields = super().format_dict
    done, seconds = fields['n'] - fields['initial'], fields['elapsed']
    fields['figures'] = ''
    if self.loss is not None and done > 0 and seconds > 0:
      rate = done / seconds
      fields['figures'] = (
          f'  {rate * self._step_batch_size:,.0f} ex/s  loss '
          f'{self.loss:.4g}  ETA '
          f'{self.format_interval((fields["total"] - fields["n"]) / rate)}')
    return fields


def _write_above_the_bar(text: str) -> None:
  """Writes `text` to standard error, a live bar cleared before it and
  drawn again after it."""
  _Bar.write(text, file=sys.stderr, end='')


def show_warning(message, category, filename, lineno, file=None,
                 line=None) -> None:
  """`warnings.showwarning` on a terminal: Python's warning text, written
  above a live bar."""
  del file  # Standard error, as by default.
  _write_above_the_bar(warnings.formatwarning(message, category, filename,
                                              lineno, line))


class LinesAboveTheBar:
  """A stream for absl's handler on a terminal: standard error, lines
  written above a live bar."""

  def write(self, text: str) -> None:
    _write_above_the_bar(text)

  def flush(self) -> None:
    sys.stderr.flush()

  def isatty(self) -> bool:
    return True  # absl's handler leaves a terminal open at exit.
