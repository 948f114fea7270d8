"""The seeds' PyTorch example, in Keras: Linear(10, 50), ReLU, Linear(50, 10).

SGD with learning rate 0.01; mse; 100 epochs; standard-normal (N, 10) inputs
and (N, 10) targets (torch.randn).
"""

from tfpipeline import config


def get_config():
  c = config.get_config()
  c.data.source = 'synthetic'
  c.data.name = 'seed_torch_mlp'
  c.data.num_examples = 1000
  c.data.num_eval_examples = 200
  c.data.num_features = 10
  c.data.num_targets = 10
  c.data.distribution = 'normal'  # torch.randn
  c.data.features = ()
  c.data.label = 'y'
  c.data.group = None
  c.model.hidden_units = (50,)
  c.model.output_units = 10
  c.model.normalize_inputs = False
  c.model.standardize_targets = False
  c.train.epochs = 100
  c.train.global_batch_size = 32
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.01
  c.loss = 'mse'
  return c
