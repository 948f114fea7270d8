"""The training loop, written once over any engine (see `engines`).

As Orbit's `Controller.train` with `train_actions`: the engine runs a block
of steps and reports it; after every finite block the loop runs the same
named actions in order: log it (validation at epoch ends), save by the
checkpoint cadence, and stop if preempted. A block whose loss or weights
became NaN or Inf stops the run, or with train.nan_policy=rollback restores
the last checkpoint at half the learning rate, up to `MAX_ROLLBACKS` times.
The loop imports no TensorFlow: it sees blocks and their results only.
"""

import dataclasses
import time
from typing import Callable

from absl import logging

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


def train(engine: engine_lib.Engine, run, *, run_log, evaluator) -> None:
  """Trains from `engine.start_step` to the run's last step.

  Args:
    engine: the run's engine, its state restored.
    run: the `RunContext`.
    run_log: the `RunLog` the blocks are recorded to.
    evaluator: validates at epoch ends.
  """
  step = engine.start_step
  if not engine.has_checkpoint():
    engine.save(step)  # The initial weights: a state to roll back to.
  cadence = SaveByCadence(engine, run, last_saved=step)
  rollback = Rollback(engine, run, run_log)
  with engine.preemption_watch() as watch:
    actions = (LogBlock(run, run_log, evaluator), cadence,
               StopIfPreempted(engine, watch))
    progress = _progress_line(run, run_log)
    while step < run.total_steps:
      start = time.perf_counter()
      result = engine.run_block(progress)
      seconds = time.perf_counter() - start
      if result.non_finite_at is not None:
        step = cadence.last_saved = rollback(step + result.non_finite_at)
        continue
      step += result.steps
      done = BlockDone(step, result, seconds)
      for action in actions:
        action(done)


class LogBlock:
  """Records the block to the run log; at an epoch's end, with the
  validation split's metrics, as a console line."""

  def __init__(self, run, run_log, evaluator):
    self._run, self._run_log, self._evaluator = run, run_log, evaluator

  def __call__(self, done: BlockDone) -> None:
    epoch, into_epoch = divmod(done.step, self._run.steps_per_epoch)
    epoch_end = into_epoch == 0
    result, seconds = done.result, done.seconds
    timed = result.waited_s is not None
    self._run_log.record(
        step=done.step, epoch=epoch if epoch_end else epoch + 1,
        console=epoch_end, loss=result.loss,
        **(self._validation() if epoch_end else {}),
        examples_per_sec=(result.steps *
                          self._run.config.train.global_batch_size / seconds),
        input_stall_pct=100.0 * result.waited_s / seconds if timed else None,
        call_s=seconds if timed else None)

  def _validation(self) -> dict[str, float]:
    return {f'val_{k}': v for k, v in self._evaluator.evaluate(
        self._run.inputs.validation).items()}


class SaveByCadence:
  """Saves every train.checkpoint_every_steps steps (at a block's end), at
  the last step, and after every block of an engine that asks for it."""

  def __init__(self, engine: engine_lib.Engine, run, *, last_saved: int):
    self._engine = engine
    self._every = run.config.train.checkpoint_every_steps
    self._total = run.total_steps
    self.last_saved = last_saved

  def __call__(self, done: BlockDone) -> None:
    if (self._engine.checkpoint_every_block or
        done.step - self.last_saved >= self._every or
        done.step == self._total):
      self._engine.save(done.step)
      self.last_saved = done.step


class StopIfPreempted:
  """Saves and raises Preempted once the run is asked to stop."""

  def __init__(self, engine: engine_lib.Engine, watch):
    self._engine, self._watch = engine, watch

  def __call__(self, done: BlockDone) -> None:
    self._watch.check(self._engine.save, done.step)


class Rollback:
  """With train.nan_policy=rollback, restores the last checkpoint at half
  the learning rate; otherwise, or after MAX_ROLLBACKS, raises."""

  def __init__(self, engine: engine_lib.Engine, run, run_log):
    self._engine, self._run, self._run_log = engine, run, run_log
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
