"""What the training loop decides at each epoch's end from one validation
metric (train.early_stopping.metric): stop early (train.early_stopping), keep
the best epoch's weights (train.keep_best) and reduce the learning rate on a
plateau (optimizer.reduce_on_plateau), as Keras's EarlyStopping,
ModelCheckpoint(save_best_only=True) and ReduceLROnPlateau callbacks do.

Keras's callbacks keep their state in memory, so a resumed fit forgets it.
Here the state (the best value and its epoch, the epochs since, whether the
run stopped) is a small JSON object written to `loop_state/step-N.json`
before the checkpoint of step N, with any engine: a resumed run restores
the state of the step it restores, and a run killed inside the patience
window stops at the same epoch as an uninterrupted one. The best weights go
to `best/epoch-N.weights.h5`, written atomically before the state that
names them. The learning rate a plateau lowers is the optimizer's, in the
checkpoint itself.
"""

import dataclasses
import json
import pathlib

from absl import logging

from tfpipeline import atomic_files
from tfpipeline import config_checks
from tfpipeline.errors import UserError

STATE_DIR = 'loop_state'
BEST_DIR = 'best'


@dataclasses.dataclass
class State:
  """The policies' state after an epoch's end.

  Attributes:
    best: the best value of the metric so far (None before the first epoch).
    best_epoch: the epoch that reached it.
    epochs_without_improvement: since the best (early stopping's count).
    plateau_epochs: since the best or the last reduction of the rate.
    reductions: how many times a plateau lowered the rate.
    stopped_epoch: the epoch early stopping ended the run at; 0: it did not.
  """
  best: float | None = None
  best_epoch: int = 0
  epochs_without_improvement: int = 0
  plateau_epochs: int = 0
  reductions: int = 0
  stopped_epoch: int = 0


class EpochEnd:
  """The epoch-end policies of one run over its engine.

  Args:
    run: the `RunContext`; state is read from its model_dir (a non-chief's
      resume reads the chief's) and written to its output_dir.
    engine: the run's engine (its learning rate, weights and checkpoints).
  """

  def __init__(self, run, engine):
    config = run.config
    stopping = config.train.early_stopping
    plateau = config.optimizer.reduce_on_plateau
    self.metric = stopping.metric
    self.mode = config_checks.monitor_mode(stopping.metric, stopping.mode)
    self._patience, self._min_delta = stopping.patience, stopping.min_delta
    self._keep_best = config.train.keep_best
    self._plateau = plateau
    self.active = bool(self._patience or self._keep_best or plateau.patience)
    self._engine = engine
    self._read_from, self._write_to = run.model_dir, run.output_dir
    self.state = State()

  @property
  def stopped(self) -> bool:
    return bool(self.state.stopped_epoch)

  def restore(self, step: int) -> None:
    """The state saved with the checkpoint of `step` (fresh at step 0)."""
    self.state = State()
    if not (self.active and step):
      return
    path = self._read_from / STATE_DIR / f'step-{step}.json'
    if not path.is_file():
      logging.warning('%s is missing (a checkpoint written before the run '
                      'had epoch-end policies); they start afresh from step '
                      '%d', path, step)
      return
    self.state = _read(path)

  def save(self, step: int) -> None:
    """Writes the state for the checkpoint of `step`: call it just before
    the engine saves that checkpoint."""
    if self.active:
      directory = self._write_to / STATE_DIR
      directory.mkdir(exist_ok=True)
      atomic_files.write_text(directory / f'step-{step}.json',
                              json.dumps(dataclasses.asdict(self.state)) +
                              '\n')

  def prune(self, kept_steps: list[int]) -> None:
    """Deletes the states of checkpoints no longer kept, and the best
    weights that no kept state names (those of later epochs stay: a resume
    redoes those epochs and writes them again)."""
    named, newest_epoch = set(), 0
    for path in (self._write_to / STATE_DIR).glob('step-*.json'):
      if int(path.stem.split('-')[1]) not in kept_steps:
        path.unlink()
        continue
      state = _read(path)
      named.add(state.best_epoch)
      newest_epoch = max(newest_epoch, state.best_epoch)
    for path in (self._write_to / BEST_DIR).glob('epoch-*.weights.h5'):
      epoch = int(path.name.split('.')[0].split('-')[1])
      if epoch not in named and epoch < newest_epoch:
        path.unlink()

  def __call__(self, epoch: int, validation: dict[str, float]) -> None:
    """Applies the policies after `epoch`'s validation."""
    if not self.active:
      return
    state, value = self.state, validation[self.metric]
    if self._improved(value):
      state.best, state.best_epoch = value, epoch
      state.epochs_without_improvement = state.plateau_epochs = 0
      if self._keep_best:
        path = self._best_path(self._write_to, epoch)
        path.parent.mkdir(exist_ok=True)
        with atomic_files.replacing(path) as tmp:
          self._engine.trained_model().save_weights(tmp)
    else:
      state.epochs_without_improvement += 1
      state.plateau_epochs += 1
    if self._patience and state.epochs_without_improvement >= self._patience:
      state.stopped_epoch = epoch
      logging.info('early stopping after epoch %d: %s has not improved on '
                   '%.6g (epoch %d) for %d epochs', epoch, self.metric,
                   state.best, state.best_epoch, self._patience)
    elif self._plateau.patience and (state.plateau_epochs >=
                                     self._plateau.patience):
      self._reduce_rate(epoch)

  def _improved(self, value: float) -> bool:
    best = self.state.best
    if best is None:
      return True
    if self.mode == 'min':
      return value < best - self._min_delta
    return value > best + self._min_delta

  def _reduce_rate(self, epoch: int) -> None:
    rate = self._engine.learning_rate
    lowered = max(rate * self._plateau.factor,
                  self._plateau.min_learning_rate)
    self.state.plateau_epochs = 0
    if lowered < rate:
      self._engine.learning_rate = lowered
      self.state.reductions += 1
      logging.info('after epoch %d: %s has not improved for %d epochs; '
                   'learning rate %.4g -> %.4g', epoch, self.metric,
                   self._plateau.patience, rate, lowered)

  @staticmethod
  def _best_path(directory: pathlib.Path, epoch: int) -> pathlib.Path:
    return directory / BEST_DIR / f'epoch-{epoch}.weights.h5'

  def best_weights(self) -> pathlib.Path | None:
    """With train.keep_best, the best epoch's weights file (this process's
    own, or one an earlier attempt wrote); else None."""
    if not (self._keep_best and self.state.best_epoch):
      return None
    own = self._best_path(self._write_to, self.state.best_epoch)
    return own if own.is_file() else self._best_path(self._read_from,
                                                      self.state.best_epoch)

  def summary(self, end_step: int, steps_per_epoch: int) -> dict:
    """What the report says of the run's end and its exported weights."""
    state = self.state
    return {
        'metric': self.metric, 'mode': self.mode,
        'epochs_trained': end_step // steps_per_epoch,
        'stopped_early': self.stopped,
        'stopped_epoch': state.stopped_epoch or None,
        'stop_reason': (
            f'{self.metric} did not improve on {state.best:.6g} (epoch '
            f'{state.best_epoch}) by more than {self._min_delta:g} for '
            f'{self._patience} epochs' if self.stopped else None),
        'best_epoch': state.best_epoch or None,
        'best_value': state.best,
        'exported_weights': ('best epoch' if self.best_weights() else
                             'last step'),
        'learning_rate_reductions': state.reductions,
    }


def _read(path: pathlib.Path) -> State:
  """The state in `path`; raises UserError if it is not one (the files are
  written whole, so only a hand edit or another tool makes that)."""
  try:
    return State(**json.loads(path.read_text()))
  except (ValueError, TypeError) as e:
    raise UserError(f'{path} is not an epoch-end state ({e}); restore it, '
                    f'or delete it with its checkpoint to resume from the '
                    f'one before') from None
