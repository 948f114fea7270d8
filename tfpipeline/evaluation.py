"""Predictions and metrics on a whole split."""

import keras
import numpy as np
import tensorflow as tf

from tfpipeline import models
from tfpipeline.data import pipeline
from tfpipeline.data.sources import Split


class Evaluator:
  """Computes loss and the task's metrics of `model` on a split.

  Predictions run in a compiled function (XLA when `jit_compile`) over the
  model's current weights; metrics are Keras metrics over all predictions.
  """

  def __init__(self, model: keras.Model, loss: str, *, batch_size: int,
               jit_compile: bool):
    self._loss_fn = models.loss_fn(loss)
    self._metrics = models.metrics(loss, model.output_shape[-1])
    self._batch_size = batch_size
    self._predict = tf.function(lambda x: model(x, training=False),
                                jit_compile=jit_compile, reduce_retracing=True)

  def predict(self, split: Split) -> np.ndarray:
    batches = [self._predict(x).numpy() for x in
               pipeline.evaluation_dataset(split, self._batch_size)]
    return np.concatenate(batches).astype(np.float32)

  def evaluate(self, split: Split) -> dict[str, float]:
    """{'loss': ..., metric: ...} as Python floats."""
    return self.metrics(split, self.predict(split))

  def metrics(self, split: Split, predictions: np.ndarray) -> dict[str, float]:
    """`evaluate`'s result from predictions already made on `split`."""
    result = {'loss': float(np.mean(self._loss_fn(split.labels, predictions)))}
    for name, metric in self._metrics.items():
      metric.reset_state()
      metric.update_state(split.labels, predictions)
      result[name] = float(metric.result())
    return result
