"""The seeds' Keras example: random (100, 10) inputs, random (100, 1) targets.

Dense(64, relu) then Dense(1); adam; mse; 100 epochs; batch 32; no input
normalisation, as in the example. `--config.data.num_examples=1000000` scales
the same experiment up for benchmarks.
"""

from tfpipeline import config


def get_config():
  c = config.get_config()
  c.data.source = 'synthetic'
  c.data.name = 'seed_keras_mlp'
  c.data.num_examples = 100
  c.data.num_eval_examples = 100
  c.data.num_features = 10
  c.data.num_targets = 1
  c.data.distribution = 'uniform'  # np.random.random
  c.data.features = ()
  c.data.label = 'y'
  c.data.group = None
  c.model.hidden_units = (64,)
  c.model.output_units = 1
  c.model.normalize_inputs = False
  c.model.standardize_targets = False
  c.train.epochs = 100
  c.train.global_batch_size = 32
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 0.001  # Keras' default for adam
  c.loss = 'mse'
  return c
