"""data.source=synthetic: random inputs and targets, seeded, as in the
seeds' Keras and PyTorch examples."""

import numpy as np

from tfpipeline.data.sources import core
from tfpipeline.data.splits import Split, Splits


class Synthetic(core.Source):
  """data.num_examples training rows and data.num_eval_examples validation
  and test rows of data.num_features inputs and data.num_targets targets,
  drawn from data.distribution with data.split_seed."""

  def check_loss(self, loss: str, check: core.ConfigCheck) -> None:
    check('crossentropy' not in loss, 'loss', loss,
          'a regression loss with data.source=synthetic (random targets)')

  def describe(self, data_config) -> str:
    return 'synthetic data'

  def title(self, data_config) -> str:
    return data_config.name or self.name

  def row_namer(self, data_config, split_name: str) -> core.RowNamer:
    return lambda i: f'synthetic data: {split_name} row {i}'

  def load(self, data_config, check_labels: core.LabelCheck) -> Splits:
    data_config = self.with_columns(data_config)  # A label must be named.
    rng = np.random.default_rng(data_config.split_seed)
    draw = rng.random if data_config.distribution == 'uniform' else (
        rng.standard_normal)

    def split(rows: int) -> Split:
      x = draw((rows, data_config.num_features)).astype(np.float32)
      y = draw((rows, data_config.num_targets)).astype(np.float32)
      return Split.of(x, y)

    return Splits(
        split(data_config.num_examples),
        split(data_config.num_eval_examples),
        split(data_config.num_eval_examples),
        feature_names=tuple(f'x{i}' for i in range(data_config.num_features)),
        label_name='y', group_name=None,
        origin={'source': 'synthetic', 'seed': data_config.split_seed,
                'distribution': data_config.distribution},
        feature_shape=(data_config.num_features,))


SOURCES = {'synthetic': Synthetic('synthetic')}
