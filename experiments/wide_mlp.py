"""A wide MLP for throughput: 1024 features, three Dense(1024) layers.

Synthetic data (uniform random inputs and targets), batch 512 (a multiple of
8 x 8 TPU cores). Compute-bound: the case the benchmark compares with the
device's matmul peak. On a TPU, add --config.train.mixed_precision=mixed_bfloat16.
"""

from tfpipeline import config


def get_config():
  c = config.get_config()
  c.data.source = 'synthetic'
  c.data.name = 'wide_mlp'
  c.data.num_examples = 65536
  c.data.num_eval_examples = 4096
  c.data.num_features = 1024
  c.data.num_targets = 1
  c.data.features = ()
  c.data.label = 'y'
  c.data.group = None
  c.model.hidden_units = (1024, 1024, 1024)
  c.model.normalize_inputs = False
  c.model.standardize_targets = False
  c.train.epochs = 10
  c.train.global_batch_size = 512
  c.optimizer.learning_rate = 0.0003
  return c
