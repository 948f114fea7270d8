"""A wide MLP for throughput: 1024 features, three Dense(1024) layers.

Synthetic data (uniform random inputs and targets), batch 512 (a multiple of
8 x 8 TPU cores). Compute-bound: the case the benchmark compares with the
device's matmul peak. On a TPU, add --config.train.mixed_precision=mixed_bfloat16.
"""

from tfpipeline import presets


def get_config():
  c = presets.synthetic_regression(
      'wide_mlp', examples=65536, eval_examples=4096, features=1024,
      targets=1, batch=512, epochs=10)
  c.model.hidden_units = (1024, 1024, 1024)
  c.optimizer.learning_rate = 0.0003
  return c
