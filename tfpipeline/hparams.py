"""The run's hyperparameters and test metrics for TensorBoard's HParams
plugin, so that runs, and a sweep's trials (`tensorboard --logdir
SWEEP_DIR`), compare side by side in its table and parallel coordinates.

The hyperparameters are the config's keys that shape training (the model,
train, optimizer and privacy sections, the loss and the dataset's name); the
metrics are the scalars the run log writes (val_loss...) and the test
split's, written as `test_NAME` at the run's last step.
"""

import pathlib

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from tfpipeline import config as config_lib

# Sections whose keys are hyperparameters; data.name names the dataset.
_SECTIONS = ('model.', 'train.', 'optimizer.', 'privacy.')
_ALSO = ('loss', 'data.name')


def hyperparameters(config) -> dict[str, bool | float | str]:
  """The config's hyperparameters as the plugin takes them: booleans,
  numbers and strings (a tuple as its text)."""
  flat = config_lib.flatten(config.to_dict())
  chosen = {}
  for key, value in sorted(flat.items()):
    if not (key.startswith(_SECTIONS) or key in _ALSO):
      continue
    if isinstance(value, bool) or isinstance(value, str):
      chosen[key] = value
    elif isinstance(value, (int, float)):
      chosen[key] = float(value)
    else:  # Tuples (model.layers, hidden_units), None.
      chosen[key] = str(value)
  return chosen


def write_hyperparameters(tensorboard: pathlib.Path, config, *,
                          trial_id: str) -> None:
  """Writes the run's hyperparameters to its TensorBoard directory, at
  step 0 (a resumed run keeps them: its logs are cut after its step)."""
  with tf.summary.create_file_writer(str(tensorboard)).as_default():
    hp.hparams(hyperparameters(config), trial_id=trial_id)


def write_test_metrics(tensorboard: pathlib.Path, metrics: dict[str, float],
                       step: int) -> None:
  """Writes the test split's metrics as `test_NAME` scalars at `step`."""
  with tf.summary.create_file_writer(str(tensorboard)).as_default(step=step):
    for name, value in metrics.items():
      tf.summary.scalar(f'test_{name}', value)
