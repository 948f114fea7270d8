"""The training loop, written once over any engine (see `engines`).

As Orbit's `Controller.train` with `train_actions`: the engine runs a block
of steps and reports it; after every finite block the loop runs the same
named actions in order: log it (at epoch ends, validation and the
`epoch_end` policies: early stopping, the best weights, a plateau's lower
learning rate), save by the checkpoint cadence, and stop if preempted. A
block whose loss or weights became NaN or Inf stops the run, or with
train.nan_policy=rollback restores the last checkpoint at half the learning
rate, up to `MAX_ROLLBACKS` times. Every checkpoint is saved with the
policies' state. The loop imports no TensorFlow: it sees blocks and their
results only.
"""

import dataclasses
import time
from typing import Callable

from absl import logging

from tfpipeline import config as config_lib
from tfpipeline import epoch_end as epoch_end_lib
from tfpipeline import profiling
from tfpipeline.engines import engine as engine_lib

MAX_ROLLBACKS = 3


@dataclasses.dataclass(frozen=True)
class BlockDone:
  """A finite block, as the actions after it see it.

  Attributes:
    step: the global step after the block.
    result: what the engine reported.
    seconds: the block's wall time, input included.
  """
  step: int
  result: engine_lib.BlockResult
  seconds: float


Action = Callable[[BlockDone], None]


@dataclasses.dataclass(frozen=True)
class Finished:
  """Where training ended.

  Attributes:
    step: the last step trained: the run's last, or the end of the epoch
      early stopping ended it at.
    epoch_end: the epoch-end policies in their final state (the best
      epoch, whether and why the run stopped early).
  """
  step: int
  epoch_end: epoch_end_lib.EpochEnd


def train(engine: engine_lib.Engine, run, *, run_log, evaluator) -> Finished:
  """Trains from `engine.start_step` to the run's last step, or to the
  epoch early stopping ends it at.

  Args:
    engine: the run's engine, its state restored.
    run: the `RunContext`.
    run_log: the `RunLog` the blocks are recorded to.
    evaluator: validates at epoch ends.

  Returns:
    Where training ended.
  """
  step = engine.start_step
  epoch_end = epoch_end_lib.EpochEnd(run, engine)
  epoch_end.restore(step)
  saver = Saver(engine, run, epoch_end)
  if not engine.has_checkpoint():
    saver(step)  # The initial weights: a state to roll back to.
  cadence = SaveByCadence(saver, engine, run, epoch_end, last_saved=step)
  rollback = Rollback(engine, run, run_log, epoch_end)
  profiler = profiling.Profiler(run)
  with engine.preemption_watch() as watch:
    actions = (LogBlock(run, run_log, evaluator, engine, epoch_end), cadence,
               StopIfPreempted(saver, watch))
    progress = _progress_line(run, run_log)
    try:
      while step < run.total_steps and not epoch_end.stopped:
        profiler.before_block(step)
        start = time.perf_counter()
        result = engine.run_block(progress)
        seconds = time.perf_counter() - start
        if result.non_finite_at is not None:
          step = cadence.last_saved = rollback(step + result.non_finite_at)
          continue
        step += result.steps
        profiler.after_block(step)
        done = BlockDone(step, result, seconds)
        for action in actions:
          action(done)
    finally:
      profiler.after_block(step, last=True)
  return Finished(step, epoch_end)


class Saver:
  """Saves the policies' state, then the engine's checkpoint of the same
  step, then forgets the states of checkpoints the engine no longer keeps."""

  def __init__(self, engine: engine_lib.Engine, run, epoch_end):
    self._engine, self._epoch_end = engine, epoch_end
    self._directory = run.output_dir / 'checkpoints'

  def __call__(self, step: int) -> None:
    self._epoch_end.save(step)
    self._engine.save(step)
    if self._epoch_end.active:
      self._epoch_end.prune(type(self._engine).saved_steps(self._directory))


class LogBlock:
  """Records the block to the run log, with the learning rate; at an
  epoch's end, with the validation split's metrics, as a console line, and
  applies the epoch-end policies to them."""

  def __init__(self, run, run_log, evaluator, engine, epoch_end):
    self._run, self._run_log, self._evaluator = run, run_log, evaluator
    self._engine, self._epoch_end = engine, epoch_end

  def __call__(self, done: BlockDone) -> None:
    epoch, into_epoch = divmod(done.step, self._run.steps_per_epoch)
    at_epoch_end = into_epoch == 0
    result, seconds = done.result, done.seconds
    timed = result.waited_s is not None
    # The rate of the next step, read before a plateau may lower it.
    learning_rate = self._engine.learning_rate
    validation = self._validation() if at_epoch_end else {}
    self._run_log.record(
        step=done.step, epoch=epoch if at_epoch_end else epoch + 1,
        console=at_epoch_end, loss=result.loss, **validation,
        learning_rate=learning_rate,
        examples_per_sec=(result.steps * config_lib.step_batch_size(
            self._run.config) / seconds),
        input_stall_pct=100.0 * result.waited_s / seconds if timed else None,
        call_s=seconds if timed else None)
    if at_epoch_end:
      self._epoch_end(epoch, validation)

  def _validation(self) -> dict[str, float]:
    return {f'val_{k}': v for k, v in self._evaluator.evaluate(
        self._run.inputs.validation).items()}


class SaveByCadence:
  """Saves every train.checkpoint_every_steps steps (at a block's end), at
  the last step or where early stopping ends the run, and after every block
  of an engine that asks for it."""

  def __init__(self, saver: Saver, engine: engine_lib.Engine, run, epoch_end,
               *, last_saved: int):
    self._saver, self._epoch_end = saver, epoch_end
    self._every_block = engine.checkpoint_every_block
    self._every = run.config.train.checkpoint_every_steps
    self._total = run.total_steps
    self.last_saved = last_saved

  def __call__(self, done: BlockDone) -> None:
    if (self._every_block or done.step - self.last_saved >= self._every or
        done.step == self._total or self._epoch_end.stopped):
      self._saver(done.step)
      self.last_saved = done.step


class StopIfPreempted:
  """Saves and raises Preempted once the run is asked to stop."""

  def __init__(self, saver: Saver, watch):
    self._saver, self._watch = saver, watch

  def __call__(self, done: BlockDone) -> None:
    self._watch.check(self._saver, done.step)


class Rollback:
  """With train.nan_policy=rollback, restores the last checkpoint (and the
  epoch-end policies' state) at half the learning rate; otherwise, or after
  MAX_ROLLBACKS, raises."""

  def __init__(self, engine: engine_lib.Engine, run, run_log, epoch_end):
    self._engine, self._run, self._run_log = engine, run, run_log
    self._epoch_end = epoch_end
    self._count = 0

  def __call__(self, bad_step: int) -> int:
    """The step restored, for a block non-finite by `bad_step`."""
    engine = self._engine
    if (self._run.config.train.nan_policy != 'rollback' or
        self._count == MAX_ROLLBACKS or not engine.has_checkpoint()):
      raise _non_finite(bad_step)
    self._count += 1
    # The rate before restoring: the checkpoint holds an older one.
    rate = engine.learning_rate / 2
    step = engine.restore()
    self._epoch_end.restore(step)
    engine.learning_rate = rate
    logging.warning('non-finite loss by step %d: rolled back to step %d, '
                    'learning rate now %g', bad_step, step, rate)
    self._run_log.rollback(step)
    self._run_log.record(step=step, epoch=step // self._run.steps_per_epoch,
                         console=False, event='rollback', learning_rate=rate)
    return step


def _progress_line(run, run_log) -> engine_lib.Progress:
  """What an engine calls within a long block (Keras fit's epoch)."""
  steps_per_epoch = run.steps_per_epoch

  def progress(step: int, loss: float) -> None:
    run_log.progress(step=step, epoch=-(-step // steps_per_epoch), loss=loss)

  return progress


def _non_finite(step: int) -> FloatingPointError:
  return FloatingPointError(
      f'loss or weights became NaN or Inf by step {step}; lower '
      f'optimizer.learning_rate or check the data (no checkpoint was '
      f'written from these weights)')
