"""Keras Sequential models from the config, and what they are compiled with.

The model takes raw features as stored: uint8 pixels, token ids, or a
table's columns, which a `Normalization` layer holding the training split's
mean and variance standardises first (`model.normalize_inputs`). Between the
input and the output layer come `model.layers`, any built-in Keras layers,
or else the MLP of `model.hidden_units`. For regression a `Rescaling` layer
maps standardised outputs back to label units. Build it inside
`strategy.scope()`. For text, `serving_model` puts the TextVectorization
layer that tokenized the training data in front, so the exported model
takes raw strings.
"""

import functools
import inspect
import re

import keras
import numpy as np

from tfpipeline import config_checks
from tfpipeline import schedules
from tfpipeline.data.sources import Split
from tfpipeline.errors import UserError
from tfpipeline.errors import first_line

# Built-in layers that cannot be one of model.layers: Lambda holds code that
# Keras safe mode refuses to load; the input and tokenization are the
# pipeline's.
_REFUSED_LAYERS = ('Lambda', 'InputLayer', 'TextVectorization')

# Preprocessing layers compute in float32 under any mixed-precision policy:
# bfloat16 keeps 8 bits of mantissa, so raw-unit inputs (10,000.5), their
# mean and their variance would be rounded before they are standardised.
_FLOAT32_LAYERS = ('Normalization', 'Rescaling')

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


def build(config, train: Split, *, input_shape: tuple | None = None,
          input_dtype: str = 'float32') -> keras.Sequential:
  """The configured Sequential model, its statistics from `train`.

  Args:
    config: the run's config.
    train: the training split; a table's (in memory or memory-mapped) when
      the model normalizes inputs or standardizes targets.
    input_shape: one example's input; default: the table's features'.
    input_dtype: the input's dtype ('uint8' pixels, 'int64' token ids...).

  Raises:
    UserError: a bad entry of model.layers (named by its index), or a model
      whose output cannot meet the labels.
  """
  model_config = config.model
  if input_shape is None:
    input_shape = train.table.features.shape[1:]
  # Keras names allow no '/', which TFDS names with a config have.
  name = re.sub(r'[^A-Za-z0-9_.-]', '_', config.data.name or 'model')
  model = keras.Sequential(name=name)
  model.add(keras.Input(shape=tuple(input_shape), dtype=input_dtype,
                        name='features'))
  if model_config.normalize_inputs:
    mean, variance = train.moments('features')
    model.add(keras.layers.Normalization(
        mean=mean.astype(np.float32), variance=variance.astype(np.float32),
        dtype='float32', name='normalize'))
  if model_config.layers:
    hidden = [(f'model.layers[{i}]', configured_layer(
        spec, f'model.layers[{i}]')) for i, spec in enumerate(
            model_config.layers)]
  else:
    hidden = [('model.hidden_units', _made('model.activation', lambda i=i, u=u: (
        keras.layers.Dense(u, model_config.activation, name=f'hidden_{i}'))))
              for i, u in enumerate(model_config.hidden_units)]
  for key, layer in hidden:
    _add(model, key, layer)
  if len(model.output_shape) != 2:
    where = (f'model.layers[{len(model_config.layers) - 1}]'
             if model_config.layers else 'model.layers')
    raise UserError(f'{where}: the layers output shape {model.output_shape}, '
                    f'but the output layer needs (batch, features) to meet '
                    f'the labels; end model.layers with Flatten or a global '
                    f'pooling layer')
  activation = model_config.output_activation
  if activation == 'auto':
    activation = _OUTPUT_ACTIVATIONS.get(config.loss, 'linear')
  # The output layer computes in float32 under mixed precision, for a stable loss.
  _add(model, 'model.output_units', _made(
      'model.output_activation', lambda: keras.layers.Dense(
          model_config.output_units, activation, dtype='float32',
          name='output')))
  if model_config.standardize_targets and not is_classification(config.loss):
    mean, variance = train.moments('labels')
    std = np.sqrt(variance)
    model.add(keras.layers.Rescaling(
        scale=np.where(std > 0, std, 1.0).tolist(), offset=mean.tolist(),
        dtype='float32', name='unstandardize'))
  return model


def configured_layer(spec, key: str) -> keras.layers.Layer:
  """A `(class name, kwargs)` pair of model.layers -> a built-in Keras layer."""
  if isinstance(spec, str) and spec.lstrip().startswith('('):
    raise UserError(f'{key} is the text {spec[:40]!r}...: --config.model.layers '
                    f'must be a Python literal, so write numbers as such '
                    f'(0.00392156862745098, not 1 / 255)')
  if not (isinstance(spec, (tuple, list)) and len(spec) == 2 and
          isinstance(spec[0], str) and isinstance(spec[1], dict)):
    raise UserError(f'{key}={spec!r} is invalid: expected a (Keras layer '
                    f'class name, kwargs dict) pair, e.g. (\'Dense\', '
                    f'{{\'units\': 64}})')
  name, kwargs = spec
  if name in _FLOAT32_LAYERS and 'dtype' not in kwargs:
    kwargs = {**kwargs, 'dtype': 'float32'}
  layer_class = getattr(keras.layers, name, None)
  if (name in _REFUSED_LAYERS or not inspect.isclass(layer_class) or
      not issubclass(layer_class, keras.layers.Layer)):
    raise UserError(f'{key}: {name!r} is not a built-in Keras layer that '
                    f'model.layers accepts; use a class of keras.layers such '
                    f'as Conv2D, Dense or Dropout (not Lambda or '
                    f'TextVectorization)')
  return _made(key, lambda: layer_class(**kwargs))


def _made(key: str, make_layer) -> keras.layers.Layer:
  """`make_layer()`, or a UserError naming `key` when its arguments fail."""
  try:
    return make_layer()
  except (TypeError, ValueError) as e:
    raise UserError(f'{key}: {first_line(e)}; fix its value') from None


def _add(model: keras.Sequential, key: str, layer) -> None:
  """Adds `layer`, naming `key` if it cannot take the model's output."""
  shape = model.output_shape if model.layers else model.get_config()[
      'layers'][0]['config']['batch_shape']
  try:
    model.add(layer)
  except Exception as e:  # Keras raises several kinds for a shape misfit.
    raise UserError(f'{key}: {type(layer).__name__} cannot take the input of '
                    f'shape {tuple(shape)}: {first_line(e)}') from None


def nondeterministic_under_xla(model: keras.Model) -> str | None:
  """The first layer whose gradient XLA refuses under op determinism.

  TF 2.21's XLA bridge has no deterministic MaxPoolGrad (measured: it
  refuses to compile max pooling after a trainable layer once
  `enable_op_determinism()` is on, on CPU as well as GPU).
  """
  for index, layer in enumerate(model.layers):
    if isinstance(layer, (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
                          keras.layers.MaxPooling3D)):
      return f'{type(layer).__name__} (layer {index} of the model)'
  return None


def serving_model(model: keras.Model, vectorizer=None) -> keras.Model:
  """The model to export, its layers and weights without the training's
  compile state (Keras fit's optimizer, whose schedule may be tfpipeline's
  own class): for text, tokenization first, taking strings."""
  if vectorizer is None:
    head = [keras.Input(shape=model.input_shape[1:],
                        dtype=model.inputs[0].dtype, name='features')]
  else:
    head = [keras.Input(shape=(), dtype='string', name='text'), vectorizer]
  return keras.Sequential([*head, *model.layers], name=model.name)


def loss_fn(loss: str):
  """Per-example loss function `(y_true, y_pred) -> (batch,)`."""
  return _LOSSES[loss]


def training_loss_fn(config, class_weights: tuple[float, ...] | None):
  """The per-example loss training minimises: `loss_fn(config.loss)` with
  train.label_smoothing, times each example's class weight (the
  classification losses), as Keras's loss argument. Validation and test
  metrics keep the plain loss.

  Args:
    config: the run's config.
    class_weights: one weight per class id (`class_weights.resolve`), or
      None. Example i's loss becomes w[label_i] * l_i, its class from its
      label before smoothing (a one-hot row's argmax); a step's loss stays
      sum(w_i * l_i) / the step's batch size, as Keras's sample_weight
      with its sum_over_batch_size reduction.
  """
  smoothed = _smoothed_loss_fn(config)
  if class_weights is None:
    return smoothed
  weights = np.asarray(class_weights, np.float32)
  one_hot = config.loss == 'categorical_crossentropy'

  def weighted(labels, predictions):
    losses = smoothed(labels, predictions)
    classes = (keras.ops.argmax(labels, axis=-1) if one_hot else
               keras.ops.reshape(labels, (-1,)))
    return losses * keras.ops.cast(keras.ops.take(
        weights, keras.ops.cast(classes, 'int32')), losses.dtype)

  return weighted


def _smoothed_loss_fn(config):
  """`loss_fn(config.loss)` with train.label_smoothing, if any."""
  smoothing = config.train.label_smoothing
  if not smoothing:
    return loss_fn(config.loss)
  if config.loss == 'sparse_categorical_crossentropy':
    units = config.model.output_units
    return lambda labels, predictions: keras.losses.categorical_crossentropy(
        keras.ops.one_hot(keras.ops.reshape(labels, (-1,)), units),
        predictions, label_smoothing=smoothing)
  return functools.partial(_LOSSES[config.loss], label_smoothing=smoothing)


def optimizer(optimizer_config,
              mixed_precision: str = 'float32') -> keras.optimizers.Optimizer:
  """The configured optimizer with its learning-rate schedule.

  Under mixed_float16 it is wrapped in a LossScaleOptimizer (float16
  gradients underflow without loss scaling; bfloat16 needs none).
  """
  rate = schedules.learning_rate(optimizer_config)
  name = optimizer_config.name
  clipping = config_checks.clipping(optimizer_config)
  if name == 'sgd':
    result = keras.optimizers.SGD(rate, momentum=optimizer_config.momentum,
                                  **clipping)
  elif name == 'rmsprop':
    result = keras.optimizers.RMSprop(rate, momentum=optimizer_config.momentum,
                                      **clipping)
  elif name == 'adamw':
    result = keras.optimizers.AdamW(rate,
                                    weight_decay=optimizer_config.weight_decay,
                                    **clipping)
  else:
    result = keras.optimizers.Adam(rate, **clipping)
  if mixed_precision == 'mixed_float16':
    result = keras.optimizers.LossScaleOptimizer(result)
  return result


def metrics(loss: str, output_units: int) -> dict[str, keras.metrics.Metric]:
  """Evaluation metrics by name, for the task the loss implies."""
  accuracy = {'binary_crossentropy': keras.metrics.BinaryAccuracy,
              'categorical_crossentropy': keras.metrics.CategoricalAccuracy,
              'sparse_categorical_crossentropy':
                  keras.metrics.SparseCategoricalAccuracy}.get(loss)
  kinds = {'accuracy': accuracy, 'auc': keras.metrics.AUC,
           'mae': keras.metrics.MeanAbsoluteError,
           'rmse': keras.metrics.RootMeanSquaredError,
           'r2': keras.metrics.R2Score}
  return {name: kinds[name]() for name in
          config_checks.evaluation_metrics(loss, output_units)}
