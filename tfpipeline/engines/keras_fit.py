"""Keras `model.fit` as an engine (--engine=keras_fit), the reference.

Fit runs with its best working settings under the run's strategy: under a
tf.distribute strategy with several replicas, fit fails with
steps_per_execution > 1 and with jit_compile=True (TF 2.21, Keras 3.15), so
those run with one step per call and without XLA. A block is one epoch, one
`fit` call: fit resumes only at epoch ends, so it checkpoints after every
block, and preemption stops it at the next epoch end. Each epoch reads the
same per-replica batches as the own loop, from its first step.
"""

import math

import keras
import tensorflow as tf

from tfpipeline import checkpointing
from tfpipeline import config as config_lib
from tfpipeline import dp_sgd
from tfpipeline import models
from tfpipeline.data import pipeline
from tfpipeline.engines import engine
from tfpipeline.engines import tf_engine


class KerasFit(tf_engine.TfEngine):
  """Compiles the model for fit: with Keras's train step, or wrapped in
  `OwnStep` for DP-SGD's (privacy.dp) or gradient accumulation's."""

  checkpoint_every_block = True

  def __init__(self, run, model):
    super().__init__(run, model)
    config = run.config
    single = run.strategy.num_replicas_in_sync == 1
    loss_fn = models.training_loss_fn(config, run.class_weights)
    batch = config_lib.step_batch_size(config)
    micro_batches = config.optimizer.gradient_accumulation_steps
    with run.strategy.scope():
      if self.dp:
        self._fitted = OwnStep(model, dp_sgd_step(
            model, loss_fn, self.dp, batch, micro_batches))
      elif micro_batches > 1:
        self._fitted = OwnStep(model, micro_batch_step(
            model, loss_fn, self.optimizer, batch, micro_batches))
      else:
        self._fitted = model
      self._fitted.compile(
          optimizer=self.optimizer,
          loss=None if self._fitted is not model else loss_fn,
          jit_compile=bool(config.train.jit_compile and single),
          steps_per_execution=(
              _steps_per_execution(config.train.steps_per_loop,
                                   run.steps_per_epoch) if single else 1))

  def preemption_watch(self):
    # Fit has no hook for TensorFlow's PreemptionCheckpointHandler: a
    # signalled worker stops alone (README, "Fault tolerance").
    return checkpointing.PreemptionWatch()

  def run_block(self, progress: engine.Progress) -> engine.BlockResult:
    """One epoch, from the epoch the state stands at."""
    run = self.run
    train = run.config.train
    steps = run.steps_per_epoch
    epoch = self._step // steps
    dataset = run.strategy.distribute_datasets_from_function(
        pipeline.training_dataset_fn(
            run.inputs.train, config_lib.step_batch_size(run.config),
            seed=train.seed, start_step=epoch * steps))
    watch = _EpochWatch(epoch * steps, progress)
    try:
      self._fitted.fit(dataset, initial_epoch=epoch, epochs=epoch + 1,
                       steps_per_epoch=steps, verbose=0, callbacks=[watch])
    except _NonFinite as e:
      return engine.BlockResult(e.steps, float('nan'), non_finite_at=e.steps)
    self._step += steps
    if not (math.isfinite(watch.loss) and
            bool(tf_engine.finite_weights(self._fitted))):
      return engine.BlockResult(steps, float('nan'), non_finite_at=steps)
    return engine.BlockResult(steps, watch.loss)


def _steps_per_execution(steps_per_loop: int, steps_per_epoch: int) -> int:
  """The most steps per device call, up to `steps_per_loop`, that divide an
  epoch: fit runs whole calls, and a call past the epoch's end would take
  steps of the next epoch's batches."""
  return max(steps for steps in range(1, min(steps_per_loop,
                                             steps_per_epoch) + 1)
             if steps_per_epoch % steps == 0)


class _NonFinite(Exception):
  """Fit's loss became NaN or Inf after `steps` steps of the epoch."""

  def __init__(self, steps: int):
    super().__init__(steps)
    self.steps = steps


class _EpochWatch(keras.callbacks.Callback):
  """Reports progress within fit's epoch and stops it at the first
  non-finite loss; `loss` is the epoch's."""

  def __init__(self, first_step: int, progress: engine.Progress):
    super().__init__()
    self._first_step, self._progress = first_step, progress
    self.loss = float('nan')

  def on_train_batch_end(self, batch, logs=None):
    # Once per device call (steps_per_execution batches).
    loss = float(logs['loss'])
    if not math.isfinite(loss):
      raise _NonFinite(batch + 1)
    self._progress(self._first_step + batch + 1, loss)

  def on_epoch_end(self, epoch, logs=None):
    self.loss = float(logs['loss'])


def dp_sgd_step(model, loss_fn, dp: dp_sgd.DpSgd, step_batch_size: int,
                micro_batches: int = 1):
  """`OwnStep`'s step for DP-SGD (see `dp_sgd.gradients`)."""

  def step(features, labels, iteration):
    losses, penalty, gradients = dp_sgd.gradients(
        model, loss_fn, features, labels, dp,
        global_batch_size=step_batch_size, step=iteration,
        micro_batches=micro_batches)
    return losses + penalty, gradients

  return step


def micro_batch_step(model, loss_fn, optimizer, step_batch_size: int,
                     micro_batches: int):
  """`OwnStep`'s step over `micro_batches` passes, gradients summed (see
  `tf_engine.loss_and_gradients`)."""

  def step(features, labels, iteration):
    del iteration
    loss, gradients = tf_engine.loss_and_gradients(
        model, loss_fn, optimizer, features, labels,
        step_batch_size=step_batch_size, micro_batches=micro_batches)
    # This replica's part of the step's loss: fit's mean over the replicas
    # of n times it is the step's loss.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss * replicas, gradients

  return step


class OwnStep(keras.Model):
  """`model` whose fit step takes its losses and gradients from
  `step(features, labels, optimizer iteration)`; fit's loss is the mean of
  the losses."""

  def __init__(self, model: keras.Model, step):
    super().__init__(name=f'{model.name}_own_step')
    self.inner = model
    self._step = step
    self._loss_mean = keras.metrics.Mean(name='loss')

  def call(self, inputs, training=False):
    return self.inner(inputs, training=training)

  def train_step(self, data):
    features, labels = data
    losses, gradients = self._step(features, labels, self.optimizer.iterations)
    self.optimizer.apply_gradients(
        zip(gradients, self.inner.trainable_variables))
    self._loss_mean.update_state(losses)
    return {'loss': self._loss_mean.result()}

  @property
  def metrics(self):
    return [self._loss_mean]
