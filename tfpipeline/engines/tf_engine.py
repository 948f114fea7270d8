"""What the TensorFlow engines share: the state of a Keras model under a
tf.distribute strategy.

A Keras optimizer built under the strategy, `checkpointing.Checkpoints`
(tf.train checkpoints), DP-SGD settings with the run's secret noise key,
and an `evaluation.Evaluator` (a tf.function over the model). The engines
add how a block of steps runs: `tf_loop` and `keras_fit`.
"""

import gc
import logging as python_logging
import pathlib

import tensorflow as tf

from tfpipeline import checkpointing
from tfpipeline import dp_sgd
from tfpipeline import models
from tfpipeline import passes
from tfpipeline.engines import engine
from tfpipeline.errors import UserError
from tfpipeline.evaluation import Evaluator


class TfEngine(engine.Engine):
  """Builds the optimizer, restores the newest checkpoint, reads (or draws)
  the DP-SGD noise key; `dp` is None without privacy.dp."""

  def __init__(self, run, model):
    config = run.config
    self.run, self.model = run, model
    with run.strategy.scope():
      self.optimizer = models.optimizer(config.optimizer,
                                        config.train.mixed_precision)
      self.optimizer.build(model.trainable_variables)
    restore_from = run.model_dir / 'checkpoints'
    self._checkpoints = checkpointing.Checkpoints(
        run.output_dir / 'checkpoints', model, self.optimizer,
        keep=config.train.keep_checkpoints, restore_from=restore_from)
    self.start_step = self.restore()
    self.dp = dp_sgd.DpSgd.for_run(run)

  @classmethod
  def saved_steps(cls, directory: pathlib.Path) -> list[int]:
    state = tf.train.get_checkpoint_state(str(directory))
    return [int(path.rsplit('-', 1)[-1])
            for path in (state.all_model_checkpoint_paths if state else ())]

  @classmethod
  def check_checkpoint_fits(cls, directory: pathlib.Path, config, splits,
                            inputs) -> None:
    """Restores the newest readable checkpoint into a throwaway model and
    optimizer."""

    def mismatch() -> str | None:
      model = models.build(config, splits.train, input_shape=inputs.shape,
                           input_dtype=inputs.dtype)
      optimizer = models.optimizer(config.optimizer,
                                   config.train.mixed_precision)
      optimizer.build(model.trainable_variables)
      try:
        checkpointing.Checkpoints(directory, model, optimizer,
                                  keep=config.train.keep_checkpoints).restore()
      except UserError as e:
        return str(e)
      return None

    # A failed restore leaves values pending on the throwaway objects, which
    # TensorFlow lists as warnings when they are collected: collect them
    # now, with those warnings off, so the error stays the last line.
    tf_logger = python_logging.getLogger('tensorflow')
    level = tf_logger.level
    tf_logger.setLevel(python_logging.ERROR)
    try:
      error = mismatch()
      gc.collect()
    finally:
      tf_logger.setLevel(level)
    if error:
      raise UserError(error)

  def save(self, step: int) -> None:
    self._checkpoints.save(step)

  def restore(self) -> int:
    self._step = self._checkpoints.restore()
    _check_workers_agree(self.run.strategy, self._step,
                         self.run.model_dir / 'checkpoints')
    return self._step

  def has_checkpoint(self) -> bool:
    return bool(self._checkpoints.manager.checkpoints)

  @property
  def learning_rate(self) -> float:
    # A variable (mirrored under a strategy), or a schedule's tensor.
    return float(tf.convert_to_tensor(self.optimizer.learning_rate))

  @learning_rate.setter
  def learning_rate(self, rate: float) -> None:
    self.optimizer.learning_rate.assign(rate)

  def preemption_watch(self):
    return checkpointing.preemption_watch(self.run.strategy,
                                          self._checkpoints)

  def evaluator(self) -> Evaluator:
    """One evaluator (one compiled predict function) for validation and
    test."""
    config = self.run.config
    return Evaluator(
        self.model, config.loss,
        batch_size=max(config.train.global_batch_size, 256),
        jit_compile=config.train.jit_compile, strategy=self.run.strategy)


def _check_workers_agree(strategy, step: int, directory: pathlib.Path) -> None:
  """`checkpointing.check_same_restored_step` over a multi-worker run's
  workers."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return
  steps = strategy.gather(
      strategy.experimental_distribute_values_from_function(
          lambda _: tf.constant([step], tf.int64)), axis=0).numpy().tolist()
  checkpointing.check_same_restored_step(steps, directory,
                                         processes='workers', each='replica')


def finite_weights(model) -> tf.Tensor:
  """A boolean scalar: no trainable weight is NaN or Inf."""
  return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(v))
                                 for v in model.trainable_variables]))


def loss_and_gradients(model, loss_fn, optimizer, features, labels, *,
                       step_batch_size: int, micro_batches: int = 1):
  """This replica's part of a step: its loss, in float32 (a float64
  model's too), and the gradients of it (scaled under loss scaling).

  Each example counts 1 / `step_batch_size` (the step's examples over all
  replicas) and the layers' regularization losses once a step, scaled for
  the replicas. With `micro_batches` k > 1, the batch runs as k forward
  and backward passes in a loop, one after another, whose gradients are
  summed: gradient accumulation, with one pass's activations in memory.
  """
  variables = model.trainable_variables

  def on_part(features, labels):
    with tf.GradientTape() as tape:
      predictions = model(features, training=True)
      loss = tf.nn.compute_average_loss(loss_fn(labels, predictions),
                                        global_batch_size=step_batch_size)
      if model.losses:
        loss += tf.nn.scale_regularization_loss(
            tf.add_n(model.losses)) / micro_batches
      scaled = optimizer.scale_loss(loss)  # LossScaleOptimizer: x scale
    return tf.cast(loss, tf.float32), tape.gradient(scaled, variables)

  if micro_batches == 1:
    return on_part(features, labels)
  features, labels = passes.split((features, labels), micro_batches)

  def one_pass(i, loss, gradients):
    part_loss, part_gradients = on_part(
        *tf.nest.map_structure(lambda part: part[i], (features, labels)))
    # Embeddings' gradients come as IndexedSlices: summed dense.
    return i + 1, loss + part_loss, [
        total + tf.convert_to_tensor(part)
        for total, part in zip(gradients, part_gradients)]

  # One pass at a time (a while loop may otherwise run passes side by
  # side); a loop that Keras fit's train step, traced without AutoGraph,
  # can hold too.
  _, loss, gradients = tf.while_loop(
      lambda i, loss, gradients: i < micro_batches, one_pass,
      (tf.constant(0), tf.zeros([]),
       [tf.zeros_like(variable) for variable in variables]),
      parallel_iterations=1)
  return loss, gradients
