"""tfpipeline.models: Sequential from the config, optimizers, losses."""

import keras
import numpy as np
import pytest

from tfpipeline import config, models, schedules
from tfpipeline.data.sources import Split


def _train_split():
  rng = np.random.default_rng(0)
  x = rng.normal(5.0, 3.0, size=(64, 3)).astype(np.float32)
  return Split.of(x, (100 + 20 * x[:, :1]).astype(np.float32))


def test_regression_model_takes_raw_features_and_returns_label_units():
  c = config.get_config()
  c.model.hidden_units = (16, 8)
  split = _train_split()
  model = models.build(c, split)
  names = [layer.name for layer in model.layers]
  assert names == ['normalize', 'hidden_0', 'hidden_1', 'output',
                   'unstandardize']
  normalized = model.get_layer('normalize')(split.take()['features']).numpy()
  np.testing.assert_allclose(normalized.mean(axis=0), 0, atol=1e-5)
  np.testing.assert_allclose(normalized.std(axis=0), 1, atol=1e-4)
  rescale = model.get_layer('unstandardize')
  np.testing.assert_allclose(rescale(np.zeros((1, 1), np.float32)),
                             [[split.take()['labels'].mean()]], rtol=1e-5)
  # Normalization given its mean and variance keeps them as constants.
  assert model.count_params() == (3 * 16 + 16) + (16 * 8 + 8) + (8 + 1)


def test_seed_model_is_exactly_dense_64_relu_then_dense_1():
  c = config.load('seed_keras_mlp')
  model = models.build(c, Split.of(np.zeros((4, 10), np.float32),
                                np.zeros((4, 1), np.float32)))
  dense = model.layers
  assert [type(layer).__name__ for layer in dense] == ['Dense', 'Dense']
  assert dense[0].units == 64 and dense[0].activation.__name__ == 'relu'
  assert dense[1].units == 1 and dense[1].activation.__name__ == 'linear'
  assert model.count_params() == 10 * 64 + 64 + 64 + 1


@pytest.mark.parametrize('loss, units, activation, metric_names', [
    ('mse', 1, 'linear', {'mae', 'rmse', 'r2'}),
    ('mse', 10, 'linear', {'mae', 'rmse'}),
    ('binary_crossentropy', 1, 'sigmoid', {'accuracy', 'auc'}),
    ('sparse_categorical_crossentropy', 3, 'softmax', {'accuracy'}),
    ('categorical_crossentropy', 3, 'softmax', {'accuracy'}),
])
def test_output_activation_and_metrics_follow_the_loss(loss, units,
                                                       activation,
                                                       metric_names):
  c = config.get_config()
  c.loss, c.model.output_units = loss, units
  model = models.build(c, _train_split())
  assert model.get_layer('output').activation.__name__ == activation
  assert set(models.metrics(loss, units)) == metric_names
  has_rescaling = any(layer.name == 'unstandardize' for layer in model.layers)
  assert has_rescaling == (not models.is_classification(loss))


@pytest.mark.parametrize('name, cls', [
    ('adam', keras.optimizers.Adam), ('sgd', keras.optimizers.SGD),
    ('adamw', keras.optimizers.AdamW), ('rmsprop', keras.optimizers.RMSprop)])
def test_optimizers(name, cls):
  c = config.get_config().optimizer
  c.name, c.learning_rate, c.momentum = name, 0.05, 0.0
  optimizer = models.optimizer(c)
  assert isinstance(optimizer, cls)
  assert float(optimizer.learning_rate) == pytest.approx(0.05)


def test_learning_rate_schedules():
  c = config.get_config().optimizer
  c.learning_rate, c.decay_steps, c.decay_rate = 0.1, 10, 0.5
  assert schedules.learning_rate(c) == 0.1
  c.schedule = 'exponential_decay'
  schedule = schedules.learning_rate(c)
  assert float(schedule(10)) == pytest.approx(0.05)
  assert float(schedule(20)) == pytest.approx(0.025)
  c.schedule = 'cosine_decay'
  schedule = schedules.learning_rate(c)
  assert float(schedule(0)) == pytest.approx(0.1)
  assert float(schedule(5)) == pytest.approx(0.05)
  assert float(schedule(10)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize('name, after', [
    ('constant', [0.1] * 3), ('exponential_decay', [0.1, 0.1 * 0.5**0.1,
                                                    0.1 * 0.5**0.2])])
def test_warmup_rises_linearly_then_the_schedule_starts(name, after):
  c = config.get_config().optimizer
  c.learning_rate, c.decay_steps, c.decay_rate = 0.1, 10, 0.5
  c.schedule, c.warmup_steps = name, 4
  schedule = schedules.learning_rate(c)
  rates = [float(schedule(step)) for step in range(7)]
  np.testing.assert_allclose(rates, [0.025, 0.05, 0.075, 0.1, *after],
                             rtol=1e-6)
  restored = schedules.WarmUp.from_config(schedule.get_config())
  assert float(restored(5)) == pytest.approx(rates[5])


def test_label_smoothing_mixes_the_targets_with_uniform_ones():
  c = config.get_config()
  c.loss, c.model.output_units, c.train.label_smoothing = (
      'sparse_categorical_crossentropy', 3, 0.3)
  predictions = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
  targets = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])  # 0.7 + 0.3 / 3
  np.testing.assert_allclose(
      models.training_loss_fn(c, None)(np.array([0, 2]), predictions),
      -(targets * np.log(predictions)).sum(axis=1), rtol=1e-6)
  c.train.label_smoothing = 0.0
  np.testing.assert_allclose(
      models.training_loss_fn(c, None)(np.array([0, 2]), predictions),
      -np.log([0.7, 0.8]), rtol=1e-6)


def _cross_entropy(loss: str, labels, predictions, smoothing: float):
  """Cross-entropy per example, by hand, on targets smoothed towards
  uniform ones."""
  if loss == 'binary_crossentropy':
    targets = labels * (1 - smoothing) + smoothing / 2
    return -(targets * np.log(predictions) + (1 - targets) * np.log(
        1 - predictions)).mean(axis=1)
  one_hot = labels if loss == 'categorical_crossentropy' else np.eye(3)[
      labels[:, 0].astype(int)]
  targets = one_hot * (1 - smoothing) + smoothing / 3
  return -(targets * np.log(predictions)).sum(axis=1)


@pytest.mark.parametrize('loss, labels, predictions', [
    ('sparse_categorical_crossentropy', [[2], [0], [1], [2]],
     [[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]),
    ('categorical_crossentropy', [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]],
     [[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]),
    ('binary_crossentropy', [[1], [0], [0], [1]], [[0.9], [0.2], [0.6], [0.3]]),
])
@pytest.mark.parametrize('smoothing', [0.0, 0.2])
def test_class_weights_multiply_each_examples_loss_by_its_labels_weight(
    loss, labels, predictions, smoothing):
  c = config.get_config()
  c.loss, c.train.label_smoothing = loss, smoothing
  c.model.output_units = 1 if loss == 'binary_crossentropy' else 3
  labels = np.array(labels, np.float32)
  predictions = np.array(predictions, np.float32)
  binary = loss == 'binary_crossentropy'
  weights = (0.5, 3.0) if binary else (0.5, 3.0, 0.0)
  # The examples' classes: 1, 0, 0, 1 (binary); 2, 0, 1, 2.
  each = np.array([3.0, 0.5, 0.5, 3.0] if binary else [0.0, 0.5, 3.0, 0.0])
  np.testing.assert_allclose(
      models.training_loss_fn(c, weights)(labels, predictions),
      each * _cross_entropy(loss, labels, predictions, smoothing), rtol=1e-5)


def test_per_example_losses():
  y = np.array([[1.0], [3.0]], np.float32)
  p = np.array([[2.0], [1.0]], np.float32)
  np.testing.assert_allclose(models.loss_fn('mse')(y, p), [1.0, 4.0])
  np.testing.assert_allclose(models.loss_fn('mae')(y, p), [1.0, 2.0])


def test_tfds_names_with_a_config_make_valid_model_names():
  c = config.get_config()
  c.data.name = 'imdb_reviews/plain_text'
  model = models.build(c, Split.of(np.zeros((4, 10), np.float32),
                                np.zeros((4, 1), np.float32)))
  assert model.name == 'imdb_reviews_plain_text'


def test_preprocessing_stays_float32_under_mixed_bfloat16():
  """Raw units of 10,000 +- 1: bfloat16 would round them, their mean and
  their variance by up to 32 before standardising. Predictions under
  mixed_bfloat16 must match float32 to bfloat16's precision of the
  standardised values."""
  rng = np.random.default_rng(0)
  x = (10_000 + rng.normal(size=(256, 3))).astype(np.float32)
  split = Split.of(x, (x[:, :1] - 10_000).astype(np.float32))
  c = config.get_config()
  c.model.hidden_units = (16,)
  c.model.layers = ()
  predictions = {}
  try:
    for policy in ('float32', 'mixed_bfloat16'):
      keras.mixed_precision.set_global_policy(policy)
      keras.utils.set_random_seed(1)
      model = models.build(c, split)
      assert model.get_layer('normalize').compute_dtype == 'float32'
      predictions[policy] = model.predict(x, verbose=0)
      scaling = models.configured_layer(('Rescaling', {'scale': 0.5}), 'k')
      assert scaling.compute_dtype == 'float32'
  finally:
    keras.mixed_precision.set_global_policy('float32')
  scale = np.abs(predictions['float32']).max()
  np.testing.assert_allclose(predictions['mixed_bfloat16'],
                             predictions['float32'], atol=0.05 * scale)
