"""engines.tf_loop: the own loop against Keras fit, XLA on and off."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_weights_close
from tfpipeline import config, models
from tfpipeline.data import pipeline, sources
from tfpipeline.engines import keras_fit
from tfpipeline.engines import tf_loop

pytestmark = pytest.mark.smoke  # Also run on TF 2.20 in CI.

STEPS = 20


def _setup(steps_per_block=None):
  """Seeds' model and data: 320 rows, so 10 steps of 32 per epoch."""
  c = config.load('seed_keras_mlp')
  c.data.num_examples = 320
  splits = sources.load(c.data, loss=c.loss)
  keras.utils.set_random_seed(0)
  model = models.build(c, splits.train)
  dataset_fn = pipeline.training_dataset_fn(splits.train, 32, seed=0,
                                            steps_per_block=steps_per_block)
  return c, model, dataset_fn


def _run_blocks(loop, dataset_fn):
  """Blocks of 7 steps over 10-step epochs: calls of 7, 3, 7 and 3 steps."""
  strategy = tf.distribute.get_strategy()
  iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
  calls = [loop.multi_step_on_iterator(iterator) for _ in range(4)]
  assert [len(call.losses) for call in calls] == [7, 3, 7, 3]
  assert all(call.waited_s >= 0 and call.weights_finite for call in calls)
  return np.concatenate([call.losses for call in calls])


def _own_loop_losses(jit_compile):
  c, model, dataset_fn = _setup(steps_per_block=7)
  loop = tf_loop.StepLoop(model, models.optimizer(c.optimizer),
                          models.loss_fn(c.loss),
                          tf.distribute.get_strategy(), step_batch_size=32,
                          jit_compile=jit_compile)
  return _run_blocks(loop, dataset_fn), model.get_weights()


class _StepLosses(keras.callbacks.Callback):
  """Per-step losses from fit's running epoch mean."""

  def on_train_begin(self, logs=None):
    self.means = []

  def on_train_batch_end(self, batch, logs=None):
    self.means.append(float(logs['loss']))


def test_own_loop_equals_keras_fit_step_by_step():
  own_losses, own_weights = _own_loop_losses(jit_compile=True)
  c, model, dataset_fn = _setup()
  model.compile(optimizer=models.optimizer(c.optimizer),
                loss=models.loss_fn(c.loss), jit_compile=True)
  record = _StepLosses()
  model.fit(dataset_fn(tf.distribute.InputContext()), epochs=1,
            steps_per_epoch=STEPS, verbose=0, callbacks=[record])
  means = np.array(record.means, np.float64)
  counts = np.arange(1, STEPS + 1)
  fit_losses = means * counts - np.concatenate([[0], means[:-1] * counts[:-1]])
  np.testing.assert_allclose(own_losses, fit_losses, atol=1e-5)
  assert_weights_close(own_weights, model.get_weights(), atol=1e-5)
  assert own_losses[-5:].mean() < own_losses[:5].mean()


def test_xla_on_and_off_agree():
  with_xla, _ = _own_loop_losses(jit_compile=True)
  without_xla, _ = _own_loop_losses(jit_compile=False)
  np.testing.assert_allclose(with_xla, without_xla, atol=1e-4)


def test_mixed_precision_computes_in_half_and_tracks_float32():
  reference, _ = _own_loop_losses(jit_compile=True)
  for policy, dtype in (('mixed_bfloat16', 'bfloat16'),
                        ('mixed_float16', 'float16')):
    keras.mixed_precision.set_global_policy(policy)
    try:
      c, model, dataset_fn = _setup(steps_per_block=7)
      assert model.get_layer('hidden_0').compute_dtype == dtype
      assert model.get_layer('output').compute_dtype == 'float32'
      optimizer = models.optimizer(c.optimizer, policy)
      assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == (
          policy == 'mixed_float16')
      loop = tf_loop.StepLoop(model, optimizer, models.loss_fn(c.loss),
                              tf.distribute.get_strategy(),
                              step_batch_size=32, jit_compile=True)
      losses = _run_blocks(loop, dataset_fn)
    finally:
      keras.mixed_precision.set_global_policy('float32')
    assert not np.allclose(losses, reference, rtol=1e-6, atol=0)
    np.testing.assert_allclose(losses, reference, rtol=0.05)


@pytest.mark.parametrize('jit_compile', [True, False])
def test_a_block_reports_non_finite_weights(jit_compile):
  """Checked on the device in the same call: one scalar comes back."""
  c, model, dataset_fn = _setup(steps_per_block=7)
  loop = tf_loop.StepLoop(model, models.optimizer(c.optimizer),
                          models.loss_fn(c.loss),
                          tf.distribute.get_strategy(), step_batch_size=32,
                          jit_compile=jit_compile)
  iterator = iter(tf.distribute.get_strategy(
  ).distribute_datasets_from_function(dataset_fn))
  assert loop.multi_step_on_iterator(iterator).weights_finite
  kernel = model.get_layer('output').kernel
  kernel.assign(np.full(kernel.shape, np.inf, np.float32))
  assert not loop.multi_step_on_iterator(iterator).weights_finite


@pytest.mark.parametrize('jit_compile', [True, False])
def test_one_trace_serves_epoch_ends_and_restarts(jit_compile):
  """Blocks of 7 over 10-step epochs (7 real steps, then 3 and 4 padding),
  then a restart mid-epoch: one shape, so one trace (one XLA program)."""
  c, model, dataset_fn = _setup(steps_per_block=7)
  strategy = tf.distribute.get_strategy()
  loop = tf_loop.StepLoop(model, models.optimizer(c.optimizer),
                          models.loss_fn(c.loss),
                          strategy, step_batch_size=32,
                          jit_compile=jit_compile)
  _run_blocks(loop, dataset_fn)
  restarted = pipeline.training_dataset_fn(
      sources.load(c.data, loss=c.loss).train, 32, seed=0, steps_per_block=7,
      start_step=15)
  iterator = iter(strategy.distribute_datasets_from_function(restarted))
  assert [len(loop.multi_step_on_iterator(iterator).losses)
          for _ in range(3)] == [5, 7, 3]
  assert loop._compiled_block.experimental_get_tracing_count() == 1
  assert loop._next.experimental_get_tracing_count() == 1
  if jit_compile:
    assert loop._compiled_fused_steps.experimental_get_tracing_count() == 1


def _sgd_loop(micro_batches: int, jit_compile: bool):
  """20 SGD steps of the own loop, each over 32 rows in `micro_batches`
  passes: the losses and the weights."""
  c, model, dataset_fn = _setup(steps_per_block=7)
  c.optimizer.name, c.optimizer.learning_rate = 'sgd', 0.01
  loop = tf_loop.StepLoop(model, models.optimizer(c.optimizer),
                          models.loss_fn(c.loss),
                          tf.distribute.get_strategy(), step_batch_size=32,
                          jit_compile=jit_compile, micro_batches=micro_batches)
  return _run_blocks(loop, dataset_fn), model.get_weights()


@pytest.mark.parametrize('way', ['fused XLA block', 'step by step',
                                 'keras_fit'])
def test_micro_batches_sum_to_the_whole_batchs_step(way):
  """Gradient accumulation's core: each step over its 32 rows as 4 passes
  of 8, gradients summed, equals the step over the whole batch (SGD;
  float32 sums in another order)."""
  whole_losses, whole = _sgd_loop(1, jit_compile=True)
  if way == 'keras_fit':
    c, model, dataset_fn = _setup()
    c.optimizer.name, c.optimizer.learning_rate = 'sgd', 0.01
    optimizer = models.optimizer(c.optimizer)
    fitted = keras_fit.OwnStep(model, keras_fit.micro_batch_step(
        model, models.loss_fn(c.loss), optimizer, 32, 4))
    fitted.compile(optimizer=optimizer, jit_compile=True)
    history = fitted.fit(dataset_fn(tf.distribute.InputContext()), epochs=2,
                         steps_per_epoch=10, verbose=0)
    np.testing.assert_allclose(
        history.history['loss'],
        [whole_losses[:10].mean(), whole_losses[10:].mean()], rtol=1e-5)
    micro = model.get_weights()
  else:
    micro_losses, micro = _sgd_loop(4, jit_compile=way == 'fused XLA block')
    np.testing.assert_allclose(micro_losses, whole_losses, rtol=1e-5)
  assert_weights_close(micro, whole, atol=1e-6)
  assert not np.allclose(micro[0], _setup()[1].get_weights()[0], atol=1e-3)
