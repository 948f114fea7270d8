"""tfpipeline.trainer: the loop over any engine, driven by a fake one."""

import contextlib
import pathlib
import types

import pytest

from tfpipeline import config as config_lib
from tfpipeline import trainer
from tfpipeline.engines import engine as engine_lib


class _Engine(engine_lib.Engine):
  """Blocks of the given sizes; a size of -k is a block non-finite by
  its k-th step. Restores go back to the last save."""

  def __init__(self, blocks, every_block=False):
    self.blocks, self.checkpoint_every_block = list(blocks), every_block
    self.start_step = self._step = 0
    self.saved, self.checks, self._rate = [], [], 1.0

  @classmethod
  def saved_steps(cls, directory):  # The loop never asks (the runner does).
    raise NotImplementedError

  @classmethod
  def check_checkpoint_fits(cls, directory, config, splits, inputs):
    raise NotImplementedError

  def run_block(self, progress):
    size = self.blocks.pop(0)
    if size < 0:
      return engine_lib.BlockResult(-size, float('nan'), non_finite_at=-size)
    self._step += size
    return engine_lib.BlockResult(size, 0.5, waited_s=0.0)

  def save(self, step):
    self.saved.append(step)

  def restore(self):
    self._step = self.saved[-1]
    return self._step

  def has_checkpoint(self):
    return bool(self.saved)

  @property
  def learning_rate(self):
    return self._rate

  @learning_rate.setter
  def learning_rate(self, rate):
    self._rate = rate

  @contextlib.contextmanager
  def preemption_watch(self):
    yield types.SimpleNamespace(
        check=lambda save, step: self.checks.append(step))

  def evaluator(self):
    return types.SimpleNamespace(evaluate=lambda split: {'loss': 0.25})


class _RunLog:

  def __init__(self):
    self.records, self.rollbacks = [], []

  def record(self, **row):
    self.records.append(row)

  def rollback(self, step):
    self.rollbacks.append(step)

  def progress(self, **row):
    pass


# Nothing is written there: the policies and the profiler are off.
_NOWHERE = pathlib.Path('/nonexistent-run')


def _run(nan_policy='stop', every=8):
  """10-step epochs, 20 steps, batch 4; the epoch-end policies off."""
  config = config_lib.get_config()
  config.train.checkpoint_every_steps, config.train.global_batch_size = every, 4
  config.train.nan_policy = nan_policy
  return types.SimpleNamespace(
      config=config, steps_per_epoch=10, total_steps=20, chief=True,
      model_dir=_NOWHERE, output_dir=_NOWHERE,
      inputs=types.SimpleNamespace(validation=None))


def _train(engine, run):
  run_log = _RunLog()
  trainer.train(engine, run, run_log=run_log,
                evaluator=engine.evaluator())
  return run_log


def test_actions_log_save_by_cadence_and_check_preemption_after_blocks():
  engine = _Engine([4, 4, 2, 4, 4, 2])
  run_log = _train(engine, _run())
  assert [r['step'] for r in run_log.records] == [4, 8, 10, 14, 18, 20]
  assert [r['epoch'] for r in run_log.records] == [1, 1, 1, 2, 2, 2]
  epoch_ends = [r for r in run_log.records if r['console']]
  assert [r['step'] for r in epoch_ends] == [10, 20]
  assert all(r['val_loss'] == 0.25 for r in epoch_ends)
  assert engine.saved == [0, 8, 18, 20]  # The start, cadence, the end.
  assert engine.checks == [4, 8, 10, 14, 18, 20]


def test_an_engine_that_resumes_at_block_ends_saves_after_each():
  engine = _Engine([10, 10], every_block=True)
  _train(engine, _run(every=1000))
  assert engine.saved == [0, 10, 20]


def test_a_non_finite_block_stops_with_its_step():
  engine = _Engine([4, -3])
  with pytest.raises(FloatingPointError, match='NaN or Inf by step 7;'):
    _train(engine, _run())
  assert engine.saved == [0]


def test_rollback_restores_at_half_the_rate_and_redoes_the_steps():
  engine = _Engine([4, 4, -1, 2, 4, 4, 2])
  run_log = _train(engine, _run(nan_policy='rollback'))
  assert run_log.rollbacks == [8]
  event = [r for r in run_log.records if r.get('event')]
  assert event == [{'step': 8, 'epoch': 0, 'console': False,
                    'event': 'rollback', 'learning_rate': 0.5}]
  assert engine.learning_rate == 0.5
  assert [r['step'] for r in run_log.records if 'loss' in r] == [
      4, 8, 10, 14, 18, 20]


def test_rollback_gives_up_after_three():
  engine = _Engine([4, -1, -1, -1, -1])
  with pytest.raises(FloatingPointError, match='by step 1;'):
    _train(engine, _run(nan_policy='rollback'))
  assert engine.learning_rate == 0.125
