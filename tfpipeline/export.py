"""The trained model on disk: `model.keras` and a serving `saved_model/`."""

import pathlib

import keras

from tfpipeline import atomic_files
from tfpipeline import integrity


def save(model: keras.Model, model_dir: pathlib.Path) -> None:
  """Writes both formats atomically (old or new, never half a model)."""
  with atomic_files.replacing(model_dir / 'model.keras') as path:
    model.save(path)
  with atomic_files.replacing(model_dir / 'saved_model') as path:
    # A SavedModel with a 'serving_default' signature taking raw features.
    model.export(str(path), format='tf_saved_model', verbose=False)


def load(model_dir) -> keras.Model:
  """A finished run's `model.keras`, checked and loaded safely.

  The file's sha256 must be the one MANIFEST.json lists, and Keras loads it
  in safe mode, which refuses to deserialise code (Lambda layers, pickled
  functions) that could run on load.

  Raises:
    ValueError: no manifest entry, or the file changed since the run.
  """
  model_dir = pathlib.Path(model_dir)
  integrity.check_listed(model_dir, 'model.keras')
  return keras.saving.load_model(model_dir / 'model.keras', safe_mode=True)
