"""Training: the package's own multi-step loop, and Keras `fit` for reference.

The own loop runs `train.steps_per_loop` steps in one `tf.function` call.
On one replica with XLA the whole block of steps (forward, backward and the
optimizer) is one XLA computation. With several replicas each step is a
`strategy.run` inside a `tf.range` loop, with XLA on each replica's forward
and backward pass and the optimizer (and its all-reduce) applied outside
XLA. Losses are scaled by the global batch and gradients summed across
replicas, so every strategy takes the same step. Measured on TF 2.21 (see
BUILD_NOTES.md), this is what lets it beat `model.fit`, which under
tf.distribute runs without XLA and one step per call.
"""

import dataclasses
import math
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfpipeline import checkpointing
from tfpipeline import config as config_lib
from tfpipeline import dp_sgd
from tfpipeline import models
from tfpipeline.data import pipeline
from tfpipeline.evaluation import Evaluator
from tfpipeline.run_log import RunLog

@dataclasses.dataclass(frozen=True)
class Block:
  """One device call's outcome.

  Attributes:
    losses: the loss of each step.
    weights_finite: no trainable weight is NaN or Inf after the block.
    waited_s: seconds blocked on the input iterator (timed on the host:
      `tf.timestamp` is refused under op determinism).
  """
  losses: np.ndarray
  weights_finite: bool
  waited_s: float


class StepLoop:
  """Compiled training steps of one model under one strategy.

  Each call reads one block of k batches from the iterator (one input read
  per device call, in its own small function so the wait is timed) and runs
  its real steps (k, fewer in a padded block at an epoch's end): every block
  has one shape, so the loop is traced and compiled once. With one replica
  and XLA, the whole block (forward, backward and optimizer for every step)
  is one XLA computation. With several replicas, each step is a
  `strategy.run` with XLA on the forward and backward pass and the
  optimizer, whose gradient all-reduce runs across devices, applied outside
  XLA. With `dp`, the gradients are DP-SGD's (clipped per example, noised;
  see `dp_sgd`).
  """

  def __init__(self, model: keras.Model, optimizer, loss: str,
               strategy: tf.distribute.Strategy, *, global_batch_size: int,
               jit_compile: bool, dp: dp_sgd.DpSgd | None = None):
    self._model = model
    self._optimizer = optimizer
    self._loss_fn = models.loss_fn(loss)
    self._strategy = strategy
    self._global_batch_size = global_batch_size
    self._dp = dp
    # Slot variables made here, not lazily inside the compiled loop: creating
    # variables in a tf.function under MirroredStrategy fails ("You must feed
    # a value for placeholder tensor ... cond/Placeholder").
    if not optimizer.built:
      with strategy.scope():
        optimizer.build(model.trainable_variables)
    self._fused = jit_compile and strategy.num_replicas_in_sync == 1
    if self._fused:
      self._replica_block = tf.function(self._steps_of_block,
                                        jit_compile=True)
    else:
      self._gradients = tf.function(self._replica_gradients,
                                    jit_compile=jit_compile)
    self._next = tf.function(lambda iterator: next(iterator))
    self._loop = tf.function(self._call)

  def _replica_gradients(self, features, labels):
    if self._dp:
      losses, penalty, gradients = dp_sgd.gradients(
          self._model, self._loss_fn, features, labels, self._dp,
          global_batch_size=self._global_batch_size,
          step=self._optimizer.iterations)
      return (tf.reduce_sum(losses) / self._global_batch_size +
              tf.nn.scale_regularization_loss(penalty)), gradients
    variables = self._model.trainable_variables
    with tf.GradientTape() as tape:
      predictions = self._model(features, training=True)
      per_example = self._loss_fn(labels, predictions)
      loss = tf.nn.compute_average_loss(
          per_example, global_batch_size=self._global_batch_size)
      if self._model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(self._model.losses))
      scaled = self._optimizer.scale_loss(loss)  # LossScaleOptimizer: x scale
    return loss, tape.gradient(scaled, variables)

  def _replica_step(self, features, labels):
    loss, gradients = self._gradients(features, labels)
    self._optimizer.apply_gradients(
        zip(gradients, self._model.trainable_variables))
    return loss

  def _steps_of_block(self, features, labels, num_steps):
    """The first `num_steps` steps of one replica's block (the rest is
    padding); the loss of each step, zeros for the padding."""
    losses = tf.zeros([tf.shape(features)[0]])
    for i in tf.range(num_steps):
      loss, gradients = self._replica_gradients(features[i], labels[i])
      self._optimizer.apply_gradients(
          zip(gradients, self._model.trainable_variables))
      losses = tf.tensor_scatter_nd_update(losses, [[i]], [loss])
    return losses

  def _call(self, features, labels, steps):
    """Runs the real steps of one block: the loss of each (padded to the
    block's length), how many there were, and whether the weights are all
    finite after them (one scalar, computed on the device)."""
    num_steps = self._strategy.experimental_local_results(steps)[0]
    if self._fused:
      losses = self._strategy.experimental_local_results(self._strategy.run(
          self._replica_block, (features, labels, steps)))[0]
    else:
      losses = self._replicated_block(features, labels, num_steps)
    return losses, num_steps, _finite_weights(self._model)

  def _replicated_block(self, features, labels, num_steps):
    """Each step a `strategy.run`; the losses summed across replicas once
    per block: per step only over this worker's replicas (no collective),
    then one all-reduce of the block's vector across workers."""
    num_local = len(self._strategy.experimental_local_results(features))
    losses = tf.TensorArray(tf.float32, size=num_steps)
    for i in tf.range(num_steps):
      per_replica = self._strategy.run(
          lambda x, y: self._replica_step(x[i], y[i]), (features, labels))
      losses = losses.write(i, tf.add_n(
          self._strategy.experimental_local_results(per_replica)))
    worker_sums = losses.stack()
    # This worker's sums on its first replica, zeros on the others.
    per_replica = self._strategy.experimental_distribute_values_from_function(
        lambda context: worker_sums
        if context.replica_id_in_sync_group % num_local == 0
        else tf.zeros_like(worker_sums))
    return self._strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                 axis=None)

  def run(self, iterator) -> Block:
    """Reads the next block and runs its steps on the device.

    Args:
      iterator: over `strategy.distribute_datasets_from_function` of a
        `pipeline.training_dataset_fn(..., steps_per_block=k)`.
    """
    start = time.perf_counter()
    features, labels, steps = self._next(iterator)
    waited = time.perf_counter() - start
    losses, num_steps, finite = self._loop(features, labels, steps)
    return Block(losses.numpy()[:int(num_steps)], bool(finite), waited)


def train(model: keras.Model, optimizer, inputs: pipeline.Inputs, config,
          strategy: tf.distribute.Strategy, run_log: RunLog,
          checkpoints: checkpointing.Checkpoints, evaluator: Evaluator, *,
          start_step: int = 0, engine: str = 'tfpipeline',
          dp: dp_sgd.DpSgd | None = None) -> None:
  """Trains `model` (built in `strategy.scope()`) to `train.epochs`.

  Starts at `start_step` (a restored checkpoint's), logs and may checkpoint
  after every device call, and stops cleanly on SIGTERM/SIGINT (Preempted).
  With `dp`, every step is a DP-SGD step.
  """
  train_config = config.train
  batch = train_config.global_batch_size
  steps_per_epoch = config_lib.steps_per_epoch(config, len(inputs.train))
  total_steps = config_lib.total_steps(config, len(inputs.train))
  if engine == 'keras_fit':
    _fit(model, optimizer, config, strategy, steps_per_epoch, evaluator,
         inputs, run_log, checkpoints, start_step, dp)
    return

  loop = StepLoop(model, optimizer, config.loss, strategy,
                  global_batch_size=batch,
                  jit_compile=train_config.jit_compile,
                  dp=dp)

  block = pipeline.steps_per_block(train_config.steps_per_loop,
                                   steps_per_epoch,
                                   batch * inputs.bytes_per_example())

  def batches_from(step: int):
    dataset_fn = pipeline.training_dataset_fn(
        inputs.train, batch, seed=train_config.seed, steps_per_block=block,
        start_step=step)
    return iter(strategy.distribute_datasets_from_function(dataset_fn))

  step, saved, rollbacks = start_step, start_step, 0
  if not checkpoints.manager.checkpoints:
    checkpoints.save(step)  # The initial weights: a state to roll back to.
  iterator = batches_from(step)
  with checkpointing.preemption_watch(strategy, checkpoints) as watch:
    while step < total_steps:
      start = time.perf_counter()
      outcome = loop.run(iterator)
      losses, waited = outcome.losses, outcome.waited_s
      seconds = time.perf_counter() - start
      finite = np.isfinite(losses)
      if not (finite.all() and outcome.weights_finite):
        bad = step + (int(np.argmin(finite)) + 1 if not finite.all()
                      else len(losses))
        if (train_config.nan_policy != 'rollback' or rollbacks == 3 or
            not checkpoints.manager.checkpoints):
          raise _non_finite(bad)
        rollbacks += 1
        # The rate before restoring: the checkpoint holds an older one.
        rate = float(optimizer.learning_rate) / 2
        step = saved = checkpoints.restore()
        optimizer.learning_rate.assign(rate)
        logging.warning('non-finite loss by step %d: rolled back to step %d, '
                        'learning rate now %g', bad, step, rate)
        run_log.rollback(step)
        run_log.record(step=step, epoch=step // steps_per_epoch,
                       console=False, event='rollback', learning_rate=rate)
        iterator = batches_from(step)
        continue
      step += len(losses)
      epoch, into_epoch = divmod(step, steps_per_epoch)
      epoch_end = into_epoch == 0
      run_log.record(
          step=step, epoch=epoch if epoch_end else epoch + 1,
          console=epoch_end, loss=float(np.mean(losses)),
          **(_validation(evaluator, inputs) if epoch_end else {}),
          examples_per_sec=len(losses) * batch / seconds,
          input_stall_pct=100.0 * waited / seconds, call_s=seconds)
      if (step - saved >= train_config.checkpoint_every_steps or
          step == total_steps):
        checkpoints.save(step)
        saved = step
      watch.check(checkpoints.save, step)


def _finite_weights(model: keras.Model) -> tf.Tensor:
  """A boolean scalar: no trainable weight is NaN or Inf."""
  return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(v))
                                 for v in model.trainable_variables]))


def _non_finite(step: int) -> FloatingPointError:
  return FloatingPointError(
      f'loss or weights became NaN or Inf by step {step}; lower '
      f'optimizer.learning_rate or check the data (no checkpoint was '
      f'written from these weights)')


def _validation(evaluator: Evaluator,
                inputs: pipeline.Inputs) -> dict[str, float]:
  return {f'val_{k}': v
          for k, v in evaluator.evaluate(inputs.validation).items()}


def _fit(model, optimizer, config, strategy, steps_per_epoch, evaluator,
         inputs, run_log, checkpoints, start_step, dp) -> None:
  """Keras `model.fit` with its best working settings under `strategy`.

  Under a tf.distribute strategy with several replicas, fit fails with
  steps_per_execution > 1 and with jit_compile=True (TF 2.21, Keras 3.15),
  so those run with one step per call and without XLA. Checkpoints and
  preemption act at epoch ends; a resume starts at the checkpoint's epoch.
  """
  single = strategy.num_replicas_in_sync == 1
  with strategy.scope():
    if dp:
      model = _DpSgdModel(model, config.loss, dp,
                          config.train.global_batch_size)
    model.compile(
        optimizer=optimizer, loss=None if dp else models.loss_fn(config.loss),
        jit_compile=bool(config.train.jit_compile and single),
        steps_per_execution=(min(config.train.steps_per_loop, steps_per_epoch)
                             if single else 1))
  first_epoch = start_step // steps_per_epoch
  # The same per-replica batches as the own loop, under any strategy.
  dataset = strategy.distribute_datasets_from_function(
      pipeline.training_dataset_fn(
          inputs.train, config.train.global_batch_size,
          seed=config.train.seed, start_step=first_epoch * steps_per_epoch))
  with checkpointing.PreemptionWatch() as watch:
    model.fit(dataset, initial_epoch=first_epoch, epochs=config.train.epochs,
              steps_per_epoch=steps_per_epoch, verbose=0,
              callbacks=[_FitLog(run_log, evaluator, inputs, steps_per_epoch,
                                 config.train.global_batch_size, checkpoints,
                                 watch)])


class _DpSgdModel(keras.Model):
  """`model` with a DP-SGD train step, for Keras fit (see `dp_sgd`)."""

  def __init__(self, model: keras.Model, loss: str, dp: dp_sgd.DpSgd,
               global_batch_size: int):
    super().__init__(name=f'{model.name}_dp_sgd')
    self.inner = model
    self._loss_fn = models.loss_fn(loss)
    self._dp, self._global_batch_size = dp, global_batch_size
    self._loss_mean = keras.metrics.Mean(name='loss')

  def call(self, inputs, training=False):
    return self.inner(inputs, training=training)

  def train_step(self, data):
    features, labels = data
    losses, penalty, gradients = dp_sgd.gradients(
        self.inner, self._loss_fn, features, labels, self._dp,
        global_batch_size=self._global_batch_size,
        step=self.optimizer.iterations)
    self.optimizer.apply_gradients(
        zip(gradients, self.inner.trainable_variables))
    self._loss_mean.update_state(losses + penalty)
    return {'loss': self._loss_mean.result()}

  @property
  def metrics(self):
    return [self._loss_mean]


class _FitLog(keras.callbacks.Callback):
  """Writes fit's epochs to the same RunLog as the own loop; checkpoints
  finite weights only, stopping at the first non-finite loss."""

  def __init__(self, run_log, evaluator, inputs, steps_per_epoch, batch,
               checkpoints, watch):
    super().__init__()
    self._run_log, self._evaluator, self._inputs = run_log, evaluator, inputs
    self._steps_per_epoch, self._batch = steps_per_epoch, batch
    self._checkpoints, self._watch = checkpoints, watch

  def on_epoch_begin(self, epoch, logs=None):
    self._start, self._epoch = time.perf_counter(), epoch

  def on_train_batch_end(self, batch, logs=None):
    # Once per device call (steps_per_execution batches).
    step = self._epoch * self._steps_per_epoch + batch + 1
    loss = float(logs['loss'])
    if not math.isfinite(loss):
      raise _non_finite(step)
    self._run_log.progress(step=step, epoch=self._epoch + 1, loss=loss)

  def on_epoch_end(self, epoch, logs=None):
    seconds = time.perf_counter() - self._start
    step = (epoch + 1) * self._steps_per_epoch
    if not (math.isfinite(float(logs['loss'])) and
            bool(_finite_weights(self.model))):
      raise _non_finite(step)
    self._run_log.record(
        step=step, epoch=epoch + 1, console=True, loss=float(logs['loss']),
        **_validation(self._evaluator, self._inputs),
        examples_per_sec=self._steps_per_epoch * self._batch / seconds,
        input_stall_pct=None)
    self._checkpoints.save(step)
    self._watch.check(self._checkpoints.save, step)
