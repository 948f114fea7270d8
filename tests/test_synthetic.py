"""tfpipeline.data.sources.synthetic: seeded random data."""

import numpy as np

from tfpipeline import config
from tfpipeline.data import sources


def test_synthetic_source_is_seeded_like_the_seed_examples():
  c = config.load('seed_torch_mlp').data
  splits = sources.load(c, loss='mse')
  assert splits.train.take()['features'].shape == (1000, 10)
  assert splits.train.take()['labels'].shape == (1000, 10)
  assert splits.test.take()['features'].shape == (200, 10)
  assert abs(splits.train.take()['features'].mean()) < 0.1  # standard normal
  again = sources.load(c, loss='mse')
  np.testing.assert_array_equal(again.train.take()['labels'],
                                splits.train.take()['labels'])
  uniform = sources.load(config.load('seed_keras_mlp').data, loss='mse')
  features = uniform.train.take()['features']
  assert features.shape == (100, 10)
  assert features.min() >= 0 and features.max() < 1
