"""The trained model on disk: `model.keras` and a serving `saved_model/`.

Both take raw features: for text, the tokenizer comes first. On the JAX
backend Keras exports through jax2tf, which converts numeric JAX functions
only, so a text model's SavedModel is put together from two parts: the
tokenizer, a TensorFlow layer, and the token model, converted.
"""

import pathlib

import keras

from tfpipeline import atomic_files
from tfpipeline import integrity
from tfpipeline import models


def save(model: keras.Model, model_dir: pathlib.Path,
         vectorizer=None) -> None:
  """Writes both formats atomically (old or new, never half a model).

  Args:
    model: the trained model.
    model_dir: where model.keras and saved_model/ go.
    vectorizer: for text, the TextVectorization layer the model's tokens
      come from, else None.
  """
  serving = models.serving_model(model, vectorizer)
  with atomic_files.replacing(model_dir / 'model.keras') as path:
    serving.save(path)
  with atomic_files.replacing(model_dir / 'saved_model') as path:
    # A SavedModel with a 'serving_default' signature taking raw features.
    if vectorizer is not None and keras.backend.backend() == 'jax':
      _export_text_on_jax(model, vectorizer, path)
    else:
      serving.export(str(path), format='tf_saved_model', verbose=False)


def _export_text_on_jax(model: keras.Model, vectorizer,
                        path: pathlib.Path) -> None:
  """The SavedModel of a text model trained on JAX: 'serve' and
  'serving_default' take strings ('text', as on the TensorFlow backend),
  tokenize them in TensorFlow and call the jax2tf-converted token model,
  also served on its own as 'serve_tokens'."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  archive = keras.export.ExportArchive()
  archive.track(model)
  tokens = archive.add_endpoint('serve_tokens', model.__call__, [
      keras.InputSpec(shape=model.input_shape, dtype=model.inputs[0].dtype)])
  # Keras tracks a tokenizer's vocabulary table itself only on the
  # TensorFlow backend, where its layers are TensorFlow trackables.
  archive.track(vectorizer._lookup_layer.lookup_table)  # pylint: disable=protected-access

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='text')])
  def serve(text):
    return tokens(vectorizer(text))

  archive.add_endpoint('serve', serve)
  archive.add_endpoint('serving_default', serve)
  archive.write_out(str(path), verbose=False)


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
