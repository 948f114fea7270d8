"""Predictions and metrics on a whole split, streamed batch by batch."""

import dataclasses
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfpipeline import models
from tfpipeline.data import pipeline


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """A model's outputs on every example of a split, in order.

  `labels` are as the loss takes them; `groups` is None without data.group;
  `index` is each example's row in the split.
  """
  predictions: np.ndarray
  labels: np.ndarray
  groups: np.ndarray | None
  index: np.ndarray

  def __len__(self) -> int:
    return len(self.predictions)


class Evaluator:
  """Computes loss and the task's metrics of `model` on a split.

  Predictions run in a compiled function over the model's current weights,
  batch by batch as the split is read: `predict`, an engine's own (the JAX
  engine's), or else a `tf.function` (XLA when `jit_compile`). Metrics are
  Keras metrics over all predictions. Under a strategy with several
  replicas, each batch is spread over this worker's replicas with
  `strategy.run` (on a TPU: its cores, not the host).
  """

  def __init__(self, model: keras.Model, loss: str, *, batch_size: int,
               jit_compile: bool = True,
               strategy: tf.distribute.Strategy | None = None,
               predict: Callable | None = None):
    self._loss_fn = models.loss_fn(loss)
    self._metrics = models.metrics(loss, model.output_shape[-1])
    self._batch_size = batch_size
    self._predict = predict or tf.function(
        lambda x: model(x, training=False), jit_compile=jit_compile,
        reduce_retracing=True)
    self._strategy = strategy
    self._replicated = None
    if strategy is not None and strategy.num_replicas_in_sync > 1:
      self._replicated = tf.function(lambda x: strategy.run(
          lambda x: model(x, training=False), (x,)))
    # Each split's dataset, built once: building one traces its functions,
    # which cost more than reading a small validation split every epoch.
    self._datasets = {}  # id(examples): (examples, dataset)

  def run(self, examples) -> Evaluation:
    """The model's predictions on `examples` (pipeline.Examples or Split)."""
    parts = {'predictions': [], 'labels': [], 'groups': [], 'index': [],
             'valid': []}
    for batch, predictions in self._batches(examples):
      parts['predictions'] += predictions
      for key in ('labels', 'groups', 'index', 'valid'):
        if key in batch:
          parts[key] += batch[key]
    arrays = {key: np.concatenate([np.asarray(v) for v in values])
              if values else None for key, values in parts.items()}
    valid = arrays.pop('valid')
    if valid is not None:  # Drop the padding of the last batch.
      arrays = {key: None if value is None else value[valid]
                for key, value in arrays.items()}
    if arrays['groups'] is not None and arrays['groups'].dtype == object:
      arrays['groups'] = np.char.decode(arrays['groups'].astype(bytes))
    arrays['predictions'] = arrays['predictions'].astype(np.float32)
    return Evaluation(**arrays)

  def _batches(self, examples):
    """(batch, predictions) pairs, each a dict of lists of tensors in row
    order: one batch, or this worker's replicas' parts of one."""
    if self._replicated is None:
      for batch in self._dataset(examples):
        yield ({key: [value] for key, value in batch.items()},
               [self._predict(batch['features'])])
      return
    local = self._strategy.experimental_local_results
    for batch in self._dataset(examples):
      yield ({key: list(local(value)) for key, value in batch.items()},
             list(local(self._replicated(batch['features']))))

  def _dataset(self, examples):
    """`examples`' evaluation dataset (spread over this worker's replicas
    under a strategy with several), built on the first call."""
    if id(examples) not in self._datasets:
      if self._replicated is None:
        dataset = pipeline.evaluation_dataset(examples, self._batch_size)
      else:
        replicas = len(self._strategy.extended.worker_devices)
        dataset = self._strategy.distribute_datasets_from_function(
            pipeline.evaluation_dataset_fn(examples,
                                           -(-self._batch_size // replicas)))
      self._datasets[id(examples)] = (examples, dataset)
    return self._datasets[id(examples)][1]

  def evaluate(self, examples) -> dict[str, float]:
    """{'loss': ..., metric: ...} as Python floats."""
    return self.metrics(self.run(examples))

  def metrics(self, evaluation: Evaluation) -> dict[str, float]:
    """`evaluate`'s result from an evaluation already made."""
    labels, predictions = evaluation.labels, evaluation.predictions
    result = {'loss': float(np.mean(self._loss_fn(labels, predictions)))}
    for name, metric in self._metrics.items():
      metric.reset_state()
      metric.update_state(labels, predictions)
      result[name] = float(metric.result())
    return result
