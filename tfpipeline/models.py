"""Keras Sequential models from the config, and what they are compiled with.

The model takes raw features: a `Normalization` layer holding the training
split's mean and variance comes first, and for regression a `Rescaling`
layer maps standardised outputs back to label units. Build it inside
`strategy.scope()`.
"""

import keras
import numpy as np

from tfpipeline.data.sources import Split

_OUTPUT_ACTIVATIONS = {
    'binary_crossentropy': 'sigmoid',
    'categorical_crossentropy': 'softmax',
    'sparse_categorical_crossentropy': 'softmax',
}
_LOSSES = {
    'mse': keras.losses.mean_squared_error,
    'mae': keras.losses.mean_absolute_error,
    'huber': keras.losses.huber,
    'binary_crossentropy': keras.losses.binary_crossentropy,
    'categorical_crossentropy': keras.losses.categorical_crossentropy,
    'sparse_categorical_crossentropy':
        keras.losses.sparse_categorical_crossentropy,
}


def is_classification(loss: str) -> bool:
  return loss in _OUTPUT_ACTIVATIONS


def build(config, train: Split) -> keras.Sequential:
  """The configured Sequential model, its statistics from `train`."""
  model_config = config.model
  layers = [keras.Input(shape=(train.features.shape[1],), name='features')]
  if model_config.normalize_inputs:
    layers.append(keras.layers.Normalization(
        mean=train.features.mean(axis=0), variance=train.features.var(axis=0),
        name='normalize'))
  for i, units in enumerate(model_config.hidden_units):
    layers.append(keras.layers.Dense(units, model_config.activation,
                                     name=f'hidden_{i}'))
  activation = model_config.output_activation
  if activation == 'auto':
    activation = _OUTPUT_ACTIVATIONS.get(config.loss, 'linear')
  # The output layer computes in float32 under mixed precision, for a stable loss.
  layers.append(keras.layers.Dense(model_config.output_units, activation,
                                   dtype='float32', name='output'))
  if model_config.standardize_targets and not is_classification(config.loss):
    mean, std = train.labels.mean(axis=0), train.labels.std(axis=0)
    layers.append(keras.layers.Rescaling(
        scale=np.where(std > 0, std, 1.0).tolist(), offset=mean.tolist(),
        dtype='float32', name='unstandardize'))
  return keras.Sequential(layers, name=config.data.name or 'model')


def loss_fn(loss: str):
  """Per-example loss function `(y_true, y_pred) -> (batch,)`."""
  return _LOSSES[loss]


def learning_rate(optimizer_config):
  """A float, or a Keras schedule of the training step."""
  rate = optimizer_config.learning_rate
  if optimizer_config.schedule == 'exponential_decay':
    return keras.optimizers.schedules.ExponentialDecay(
        rate, optimizer_config.decay_steps, optimizer_config.decay_rate)
  if optimizer_config.schedule == 'cosine_decay':
    return keras.optimizers.schedules.CosineDecay(rate,
                                                  optimizer_config.decay_steps)
  return rate


def optimizer(optimizer_config,
              mixed_precision: str = 'float32') -> keras.optimizers.Optimizer:
  """The configured optimizer with its learning-rate schedule.

  Under mixed_float16 it is wrapped in a LossScaleOptimizer (float16
  gradients underflow without loss scaling; bfloat16 needs none).
  """
  rate = learning_rate(optimizer_config)
  name = optimizer_config.name
  if name == 'sgd':
    result = keras.optimizers.SGD(rate, momentum=optimizer_config.momentum)
  elif name == 'rmsprop':
    result = keras.optimizers.RMSprop(rate, momentum=optimizer_config.momentum)
  elif name == 'adamw':
    result = keras.optimizers.AdamW(rate,
                                    weight_decay=optimizer_config.weight_decay)
  else:
    result = keras.optimizers.Adam(rate)
  if mixed_precision == 'mixed_float16':
    result = keras.optimizers.LossScaleOptimizer(result)
  return result


def metrics(loss: str, output_units: int) -> dict[str, keras.metrics.Metric]:
  """Evaluation metrics by name, for the task the loss implies."""
  if loss == 'binary_crossentropy':
    return {'accuracy': keras.metrics.BinaryAccuracy(),
            'auc': keras.metrics.AUC()}
  if loss == 'categorical_crossentropy':
    return {'accuracy': keras.metrics.CategoricalAccuracy()}
  if loss == 'sparse_categorical_crossentropy':
    return {'accuracy': keras.metrics.SparseCategoricalAccuracy()}
  result = {'mae': keras.metrics.MeanAbsoluteError(),
            'rmse': keras.metrics.RootMeanSquaredError()}
  if output_units == 1:
    result['r2'] = keras.metrics.R2Score()
  return result
