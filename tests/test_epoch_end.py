"""Epoch-end policies: early stopping, the best weights, a plateau's lower
learning rate and the warm-up, resumed exactly on every engine."""

import json
import signal
import time
import types

import keras
import numpy as np
import pytest

from conftest import read_jsonl, run_cli, start_cli

from tfpipeline import config as config_lib
from tfpipeline import epoch_end as epoch_end_lib
from tfpipeline.errors import UserError


class _Engine:
  """What the policies use of an engine."""

  def __init__(self):
    self.learning_rate = 0.1
    self.saved = []

  def trained_model(self):
    engine = self

    class Model:
      def save_weights(self, path):
        engine.saved.append(path.name)
        path.write_text('weights')

    return Model()


def _policies(tmp_path, **settings):
  config = config_lib.get_config()
  for key, value in settings.items():
    *sections, name = key.split('.')
    node = config
    for section in sections:
      node = node[section]
    node[name] = value
  run = types.SimpleNamespace(config=config, model_dir=tmp_path,
                              output_dir=tmp_path)
  engine = _Engine()
  return epoch_end_lib.EpochEnd(run, engine), engine


def test_stops_after_patience_epochs_without_an_improvement(tmp_path):
  policies, _ = _policies(tmp_path, **{
      'train.early_stopping.patience': 2,
      'train.early_stopping.min_delta': 0.5})
  for epoch, loss in enumerate([10.0, 9.0, 8.7, 8.6], start=1):
    assert not policies.stopped
    policies(epoch, {'val_loss': loss})
  # 8.7 and 8.6 improve on 9.0 by less than min_delta.
  assert policies.stopped and policies.state.stopped_epoch == 4
  assert (policies.state.best, policies.state.best_epoch) == (9.0, 2)
  summary = policies.summary(end_step=40, steps_per_epoch=10)
  assert summary['stop_reason'] == (
      'val_loss did not improve on 9 (epoch 2) by more than 0.5 for 2 epochs')
  assert summary['epochs_trained'] == 4


def test_mode_auto_maximises_accuracy(tmp_path):
  policies, _ = _policies(tmp_path, **{
      'loss': 'sparse_categorical_crossentropy', 'model.output_units': 3,
      'train.early_stopping.metric': 'val_accuracy',
      'train.early_stopping.patience': 1})
  assert policies.mode == 'max'
  policies(1, {'val_accuracy': 0.5})
  policies(2, {'val_accuracy': 0.7})
  assert not policies.stopped and policies.state.best_epoch == 2
  policies(3, {'val_accuracy': 0.6})
  assert policies.stopped


def test_a_plateau_lowers_the_rate_down_to_its_floor(tmp_path):
  policies, engine = _policies(tmp_path, **{
      'optimizer.reduce_on_plateau.patience': 2,
      'optimizer.reduce_on_plateau.factor': 0.5,
      'optimizer.reduce_on_plateau.min_learning_rate': 0.03})
  rates = []
  for epoch, loss in enumerate([5.0, 6.0, 6.0, 6.0, 6.0, 4.0, 6.0, 6.0, 6.0,
                                6.0], start=1):
    policies(epoch, {'val_loss': loss})
    rates.append(engine.learning_rate)
  np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.05, 0.03, 0.03, 0.03,
                                     0.03, 0.03, 0.03])
  assert policies.state.reductions == 2 and not policies.stopped


def test_state_is_saved_per_checkpoint_and_pruned_with_it(tmp_path):
  policies, engine = _policies(tmp_path, **{'train.keep_best': True})
  policies(1, {'val_loss': 3.0})
  policies.save(10)
  policies(2, {'val_loss': 2.0})
  policies.save(20)
  policies(3, {'val_loss': 1.0})  # Best weights written, no checkpoint yet.
  assert engine.saved == ['epoch-1.weights.h5', 'epoch-2.weights.h5',
                          'epoch-3.weights.h5']
  policies.prune([20])
  assert sorted(p.name for p in (tmp_path / 'loop_state').iterdir()) == [
      'step-20.json']
  # Epoch 1's weights are named by no kept state; epoch 3's are newer than
  # every kept state (a resume redoes epoch 3 and writes them again).
  assert sorted(p.name for p in (tmp_path / 'best').iterdir()) == [
      'epoch-2.weights.h5', 'epoch-3.weights.h5']
  restored, _ = _policies(tmp_path, **{'train.keep_best': True})
  restored.restore(20)
  assert (restored.state.best, restored.state.best_epoch) == (2.0, 2)
  assert restored.best_weights() == tmp_path / 'best' / 'epoch-2.weights.h5'
  (tmp_path / 'loop_state' / 'step-20.json').write_text('{"best": 2.0, "bst')
  with pytest.raises(UserError, match=r'loop_state/step-20.json is not an '
                     r'epoch-end state \(.*\); restore it, or delete it'):
    restored.restore(20)


def test_inactive_policies_write_nothing(tmp_path):
  policies, _ = _policies(tmp_path)
  assert not policies.active
  policies(1, {'val_loss': 1.0})
  policies.save(10)
  assert list(tmp_path.iterdir()) == []


# The embedded default (diabetes: 9 steps an epoch) at a rate that reaches
# its best validation loss within about ten epochs; a checkpoint and the
# policies' state at every epoch's end, three device calls an epoch; early
# stopping with patience 5 and the best epoch's weights exported.
RUN = ('--strategy=cpu', '--config.optimizer.learning_rate=0.01',
       '--config.train.steps_per_loop=3',
       '--config.train.checkpoint_every_steps=9',
       '--config.train.deterministic=True',
       '--config.train.early_stopping.patience=5',
       '--config.train.keep_best=True')
PATIENCE = 5
WARMUP = ('--config.optimizer.warmup_epochs=5.0',)  # 45 steps
PLATEAU = ('--config.optimizer.reduce_on_plateau.patience=2',
           '--config.optimizer.reduce_on_plateau.factor=0.5')
STEPS_PER_EPOCH = 9
# Steps of 32 rows in 2 passes of 16: a kill lands between steps, never
# between the passes of one.
ACCUMULATED = ('--config.train.global_batch_size=16',
               '--config.optimizer.gradient_accumulation_steps=2')
# Each engine: its flags, the rate policy (a plateau needs a constant rate,
# so it goes without the warm-up) and where its run is killed. The policies
# are the engines' shared loop: one kill a run keeps CI's time.
ENGINES = {'tfpipeline': (('--engine=tfpipeline', *ACCUMULATED), PLATEAU,
                          'patience'),
           'keras_fit': (('--engine=keras_fit',), WARMUP, 'patience'),
           'jax': (('--backend=jax', *ACCUMULATED), WARMUP, 'warm-up')}


def _epochs(model_dir) -> list[dict]:
  return [record for record in read_jsonl(model_dir / 'metrics.jsonl')
          if 'val_loss' in record]


def _killed_once_saved(args, model_dir, step: int) -> None:
  """SIGKILLs a run once its policies' state for `step` is written: the
  checkpoint of the epoch before is complete (the state comes first)."""
  process = start_cli(f'--model_dir={model_dir}', *args)
  state = model_dir / epoch_end_lib.STATE_DIR / f'step-{step}.json'
  while process.poll() is None and not state.exists():
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.communicate(timeout=300)
  assert process.returncode == -signal.SIGKILL, 'the run ended before'


def _model_weights(path) -> list:
  return keras.saving.load_model(path, safe_mode=True).get_weights()


def _curves(model_dir) -> list[dict]:
  """metrics.jsonl without its timings: steps, losses, validation, rates."""
  return [{k: v for k, v in record.items()
           if k in ('step', 'epoch', 'loss', 'learning_rate') or
           k.startswith('val_')}
          for record in read_jsonl(model_dir / 'metrics.jsonl')]


def _assert_rates_follow_the_plateau_rule(epochs: list[dict]) -> None:
  """Halved after 2 epochs without a lower val_loss, not at the last."""
  rate, best, waited, reductions = 0.01, float('inf'), 0, 0
  for epoch, record in enumerate(epochs, start=1):
    assert record['learning_rate'] == pytest.approx(rate, rel=1e-6)
    if record['val_loss'] < best:
      best, waited = record['val_loss'], 0
    else:
      waited += 1
    if waited == 2 and epoch < len(epochs):
      rate, waited, reductions = rate / 2, 0, reductions + 1
  assert reductions >= 1


@pytest.mark.parametrize('engine', sorted(ENGINES))
def test_killed_and_rerun_ends_as_the_uninterrupted_run(tmp_path, tfds_dir,
                                                        engine):
  """Early stopping, the best weights and a warm-up or a plateau on each
  engine (with gradient accumulation on the own loops): a run killed
  inside the patience window (or the warm-up) and rerun ends as the
  uninterrupted run does, record by record, at the same epoch, exporting
  the same best epoch's weights."""
  flags, rate_policy, killed_in = ENGINES[engine]
  args = (f'--config.data.data_dir={tfds_dir}', *RUN, *flags, *rate_policy)
  reference = tmp_path / 'reference'
  result = run_cli(f'--model_dir={reference}', *args)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((reference / 'report' / 'report.json').read_text())
  training = report['training']
  best, stopped = training['best_epoch'], training['stopped_epoch']
  assert training['stopped_early'] and stopped == best + PATIENCE < 50
  assert training['exported_weights'] == 'best epoch'
  accumulated = ACCUMULATED[0] in flags
  assert (training['global_batch_size'],
          training['gradient_accumulation_steps']) == (
              (16, 2) if accumulated else (32, 1))
  assert ('epochs of batch 32 (2 passes of 16, gradients accumulated)' in
          report['model_card']['model_details']['training']) == accumulated
  epochs = _epochs(reference)
  assert [r['epoch'] for r in epochs] == list(range(1, stopped + 1))
  if rate_policy == WARMUP:  # The rate of the next step, to 0.01 in 45.
    np.testing.assert_allclose(
        [r['learning_rate'] for r in epochs[:6]],
        [0.01 * (9 * epoch + 1) / 45 for epoch in range(1, 5)] + [0.01] * 2,
        rtol=1e-6)
  else:
    _assert_rates_follow_the_plateau_rule(epochs)
    assert training['learning_rate_reductions'] >= 1
  # The exported model holds the best epoch's weights.
  model = keras.saving.load_model(reference / 'model.keras')
  model.load_weights(reference / 'best' / f'epoch-{best}.weights.h5')
  for a, b in zip(model.get_weights(),
                  _model_weights(reference / 'model.keras')):
    np.testing.assert_array_equal(a, b)

  model_dir = tmp_path / 'run'
  # The checkpoint of epoch 1 (warm-up: epochs 1 to 5), or of the epoch
  # after the best, is complete once the next epoch's state is written; the
  # kill lands well before the warm-up's or the patience's end.
  kill_epoch = 2 if killed_in == 'warm-up' else best + 2
  _killed_once_saved(args, model_dir, kill_epoch * STEPS_PER_EPOCH)
  result = run_cli(f'--model_dir={model_dir}', *args)
  assert result.returncode == 0, result.stderr[-3000:]
  resumed_at = int(result.stderr.split('resuming from the checkpoint at '
                                       'step ')[1].split()[0])
  if killed_in == 'warm-up':
    assert 0 < resumed_at < 45
  else:
    assert best * STEPS_PER_EPOCH < resumed_at < stopped * STEPS_PER_EPOCH
  assert _curves(model_dir) == _curves(reference)
  for a, b in zip(_model_weights(model_dir / 'model.keras'),
                  _model_weights(reference / 'model.keras')):
    np.testing.assert_array_equal(a, b)
  assert json.loads((model_dir / 'report' / 'report.json').read_text())[
      'training'] == training
