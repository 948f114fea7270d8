"""The trained model on disk: `model.keras` and a serving `saved_model/`."""

import pathlib

import keras

from tfpipeline import artifacts


def save(model: keras.Model, model_dir: pathlib.Path) -> None:
  """Writes both formats atomically (old or new, never half a model)."""
  with artifacts.replacing(model_dir / 'model.keras') as path:
    model.save(path)
  with artifacts.replacing(model_dir / 'saved_model') as path:
    # A SavedModel with a 'serving_default' signature taking raw features.
    model.export(str(path), format='tf_saved_model', verbose=False)
