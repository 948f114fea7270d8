"""The seeds' Keras example: random (100, 10) inputs, random (100, 1) targets.

Dense(64, relu) then Dense(1); adam; mse; 100 epochs; batch 32; no input
normalisation, as in the example. `--config.data.num_examples=1000000` scales
the same experiment up for benchmarks.
"""

from tfpipeline import presets


def get_config():
  c = presets.synthetic_regression(
      'seed_keras_mlp', examples=100, eval_examples=100, features=10,
      targets=1, batch=32, epochs=100)
  c.data.distribution = 'uniform'  # np.random.random
  c.model.hidden_units = (64,)
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 0.001  # Keras' default for adam
  return c
