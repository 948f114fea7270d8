"""The own TensorFlow loop (--engine=tfpipeline): many steps per device call.

The loop runs `train.steps_per_loop` steps in one `tf.function` call.
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
import time

import keras
import numpy as np
import tensorflow as tf

from tfpipeline import config as config_lib
from tfpipeline import dp_sgd
from tfpipeline import models
from tfpipeline.config_checks import CLIPPING
from tfpipeline.data import pipeline
from tfpipeline.engines import engine
from tfpipeline.engines import tf_engine


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
  see `dp_sgd`). With `micro_batches` k, each replica's batch of a step runs
  as k passes whose gradients are summed (gradient accumulation).
  """

  def __init__(self, model: keras.Model, optimizer, loss_fn,
               strategy: tf.distribute.Strategy, *, step_batch_size: int,
               jit_compile: bool, dp: dp_sgd.DpSgd | None = None,
               micro_batches: int = 1):
    self._model = model
    self._micro_batches = micro_batches
    self._optimizer = optimizer
    self._loss_fn = loss_fn
    self._strategy = strategy
    self._step_batch_size = step_batch_size
    self._dp = dp
    # Slot variables made here, not lazily inside the compiled loop: creating
    # variables in a tf.function under MirroredStrategy fails ("You must feed
    # a value for placeholder tensor ... cond/Placeholder").
    if not optimizer.built:
      with strategy.scope():
        optimizer.build(model.trainable_variables)
    self._fused = jit_compile and strategy.num_replicas_in_sync == 1
    self._clips_the_sum = (strategy.num_replicas_in_sync > 1 and
                           _clipping(optimizer) is not None)
    if self._fused:
      self._compiled_fused_steps = tf.function(self._fused_steps_on_block,
                                               jit_compile=True)
    else:
      self._compiled_gradients = tf.function(
          self._loss_and_gradients_on_data, jit_compile=jit_compile)
    self._next = tf.function(lambda iterator: next(iterator))
    self._compiled_block = tf.function(self._multi_step_on_block)

  def _loss_and_gradients_on_data(self, features, labels):
    """This replica's part of the step's loss and its gradients (see
    `tf_engine.loss_and_gradients`; DP-SGD's with `dp`)."""
    if self._dp:
      losses, penalty, gradients = dp_sgd.gradients(
          self._model, self._loss_fn, features, labels, self._dp,
          global_batch_size=self._step_batch_size,
          step=self._optimizer.iterations, micro_batches=self._micro_batches)
      return (tf.reduce_sum(losses) / self._step_batch_size +
              tf.nn.scale_regularization_loss(penalty)), gradients
    return tf_engine.loss_and_gradients(
        self._model, self._loss_fn, self._optimizer, features, labels,
        step_batch_size=self._step_batch_size,
        micro_batches=self._micro_batches)

  def _one_step_on_data(self, features, labels):
    loss, gradients = self._compiled_gradients(features, labels)
    if self._clips_the_sum:
      gradients = self._share_of_the_clipped_sum(gradients)
    self._optimizer.apply_gradients(
        zip(gradients, self._model.trainable_variables))
    return loss

  def _share_of_the_clipped_sum(self, gradients):
    """Keras's optimizer clips the gradients it is given before it sums the
    replicas' (Keras 3.15), so with several replicas it would clip each
    replica's part. The whole batch's gradient is summed and clipped here;
    each replica passes 1/n of it, which Keras's clipping leaves as it is
    (its norm and values are 1/n of the clipped ones)."""
    replicas = self._strategy.num_replicas_in_sync
    total = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, gradients)
    # Under loss scaling the gradients are scaled: clip them unscaled.
    scale = getattr(self._optimizer, 'dynamic_scale', None)
    if scale is not None:
      total = [g / scale for g in total]
    clipped = _clipped(total, _clipping(self._optimizer))
    if scale is not None:
      clipped = [g * scale for g in clipped]
    return [g / replicas for g in clipped]

  def _fused_steps_on_block(self, features, labels, num_steps):
    """The first `num_steps` steps of one replica's block (the rest is
    padding); the loss of each step, zeros for the padding."""
    losses = tf.zeros([tf.shape(features)[0]])
    for i in tf.range(num_steps):
      loss, gradients = self._loss_and_gradients_on_data(features[i],
                                                         labels[i])
      self._optimizer.apply_gradients(
          zip(gradients, self._model.trainable_variables))
      losses = tf.tensor_scatter_nd_update(losses, [[i]], [loss])
    return losses

  def _multi_step_on_block(self, features, labels, steps):
    """Runs the real steps of one block: the loss of each (padded to the
    block's length), how many there were, and whether the weights are all
    finite after them (one scalar, computed on the device)."""
    num_steps = self._strategy.experimental_local_results(steps)[0]
    if self._fused:
      losses = self._strategy.experimental_local_results(self._strategy.run(
          self._compiled_fused_steps, (features, labels, steps)))[0]
    else:
      losses = self._mirrored_steps_on_block(features, labels, num_steps)
    return losses, num_steps, tf_engine.finite_weights(self._model)

  def _mirrored_steps_on_block(self, features, labels, num_steps):
    """Each step a `strategy.run`; the losses summed across replicas once
    per block: per step only over this worker's replicas (no collective),
    then one all-reduce of the block's vector across workers."""
    num_local = len(self._strategy.experimental_local_results(features))
    losses = tf.TensorArray(tf.float32, size=num_steps)
    for i in tf.range(num_steps):
      per_replica = self._strategy.run(
          lambda x, y: self._one_step_on_data(x[i], y[i]), (features, labels))
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

  def multi_step_on_iterator(self, iterator) -> Block:
    """Reads the next block and runs its steps on the device.

    Args:
      iterator: over `strategy.distribute_datasets_from_function` of a
        `pipeline.training_dataset_fn(..., steps_per_block=k)`.
    """
    start = time.perf_counter()
    features, labels, steps = self._next(iterator)
    waited = time.perf_counter() - start
    losses, num_steps, finite = self._compiled_block(features, labels, steps)
    return Block(losses.numpy()[:int(num_steps)], bool(finite), waited)


def _clipping(optimizer) -> tuple[str, float] | None:
  """The optimizer's clipping (Keras's argument and value), or None."""
  inner = getattr(optimizer, 'inner_optimizer', optimizer)  # Loss scaling.
  for name in CLIPPING:
    if getattr(inner, name):
      return name, getattr(inner, name)
  return None


def _clipped(gradients: list, clipping: tuple[str, float]) -> list:
  """`gradients` clipped as Keras's optimizer argument `clipping` would."""
  name, value = clipping
  if name == 'clipnorm':
    return [tf.clip_by_norm(g, value) for g in gradients]
  if name == 'global_clipnorm':
    return tf.clip_by_global_norm(gradients, value)[0]
  return [tf.clip_by_value(g, -value, value) for g in gradients]


class TfLoop(tf_engine.TfEngine):
  """The own loop's engine: a block is one `StepLoop` device call, whose
  length `pipeline.steps_per_block` chooses (at most train.steps_per_loop,
  ending at epoch ends)."""

  def __init__(self, run, model):
    super().__init__(run, model)
    train = run.config.train
    batch = config_lib.step_batch_size(run.config)
    self._loop = StepLoop(
        model, self.optimizer,
        models.training_loss_fn(run.config, run.class_weights), run.strategy,
        step_batch_size=batch, jit_compile=train.jit_compile, dp=self.dp,
        micro_batches=run.config.optimizer.gradient_accumulation_steps)
    self._steps_per_block = pipeline.steps_per_block(
        train.steps_per_loop, run.steps_per_epoch,
        batch * run.inputs.bytes_per_example())
    self._iterator = None  # Made at the first block, and after a restore.

  def restore(self) -> int:
    self._iterator = None
    return super().restore()

  def run_block(self, progress: engine.Progress) -> engine.BlockResult:
    del progress  # A block is one device call: the loop logs each.
    if self._iterator is None:
      self._iterator = self._batches_from(self._step)
    block = self._loop.multi_step_on_iterator(self._iterator)
    losses = block.losses
    self._step += len(losses)
    finite = np.isfinite(losses)
    if not finite.all():
      return engine.BlockResult(len(losses), float('nan'),
                                non_finite_at=int(np.argmin(finite)) + 1)
    if not block.weights_finite:
      return engine.BlockResult(len(losses), float('nan'),
                                non_finite_at=len(losses))
    return engine.BlockResult(len(losses), float(np.mean(losses)),
                              waited_s=block.waited_s)

  def _batches_from(self, step: int):
    """An iterator over the blocks of batches from global step `step`."""
    run = self.run
    train = run.config.train
    dataset_fn = pipeline.training_dataset_fn(
        run.inputs.train, config_lib.step_batch_size(run.config),
        seed=train.seed, steps_per_block=self._steps_per_block,
        start_step=step)
    return iter(run.strategy.distribute_datasets_from_function(dataset_fn))
