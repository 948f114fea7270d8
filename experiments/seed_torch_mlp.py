"""The seeds' PyTorch example, in Keras: Linear(10, 50), ReLU, Linear(50, 10).

SGD with learning rate 0.01; mse; 100 epochs; standard-normal (N, 10) inputs
and (N, 10) targets (torch.randn).
"""

from tfpipeline import presets


def get_config():
  c = presets.synthetic_regression(
      'seed_torch_mlp', examples=1000, eval_examples=200, features=10,
      targets=10, batch=32, epochs=100)
  c.data.distribution = 'normal'  # torch.randn
  c.model.hidden_units = (50,)
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.01
  return c
