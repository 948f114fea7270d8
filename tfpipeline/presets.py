"""Openings that experiment files share: start from one, set what differs.

Each returns the embedded default config (`config.get_config()`) set up for
one kind of experiment, so that an experiment file states only its dataset
and model. The raw inputs go to the model unscaled (`normalize_inputs` and
`standardize_targets` off): images are rescaled by a Rescaling layer, text
is tokenised, synthetic data is what the experiment reproduces.
"""

from ml_collections import config_dict

from tfpipeline import config as config_lib


def tfds_classifier(name: str, *, feature: str, classes: int,
                    batch: int, epochs: int, train_split: str = 'train',
                    validation_split: str = 'validation',
                    test_split: str = 'test',
                    group: str | None = None) -> config_dict.ConfigDict:
  """A TFDS dataset's `feature` ('image', 'text') classified by its
  `label` into `classes` classes (1: binary, with binary cross-entropy)."""
  c = _raw_values(batch=batch, epochs=epochs)
  c.data.source = 'tfds'
  c.data.name = name
  c.data.train_split = train_split
  c.data.validation_split = validation_split
  c.data.test_split = test_split
  c.data.features = (feature,)
  c.data.label = 'label'
  c.data.group = group
  c.model.output_units = classes
  c.loss = ('binary_crossentropy' if classes == 1 else
            'sparse_categorical_crossentropy')
  return c


def synthetic_regression(name: str, *, examples: int, eval_examples: int,
                         features: int, targets: int, batch: int,
                         epochs: int) -> config_dict.ConfigDict:
  """Random inputs and targets (data.distribution), mse, raw values."""
  c = _raw_values(batch=batch, epochs=epochs)
  c.data.source = 'synthetic'
  c.data.name = name
  c.data.num_examples = examples
  c.data.num_eval_examples = eval_examples
  c.data.num_features = features
  c.data.num_targets = targets
  c.data.features = ()
  c.data.label = 'y'
  c.data.group = None
  c.model.output_units = targets
  c.loss = 'mse'
  return c


def _raw_values(*, batch: int, epochs: int) -> config_dict.ConfigDict:
  """The default config training on unscaled inputs and targets."""
  c = config_lib.get_config()
  c.model.normalize_inputs = False
  c.model.standardize_targets = False
  c.train.epochs = epochs
  c.train.global_batch_size = batch
  return c
