"""The trained model on disk: `model.keras`, and export.formats: a serving
`saved_model/`, `model.tflite`, `model.onnx`.

All take raw features: for text, the tokenizer comes first. On the JAX
backend Keras exports through jax2tf, which converts numeric JAX functions
only, so a text model's SavedModel is put together from two parts: the
tokenizer, a TensorFlow layer, and the token model, converted.

The TFLite and ONNX files are converted from model.keras (`conversion`),
then checked: run in their runtimes (`runtimes`) on the first test
examples, their outputs must match the trained model's within a tolerance
relative to the outputs' scale, which the report records with the largest
difference. A model a converter cannot take gets one line in the report
instead of a file.
"""

import contextlib
import os
import pathlib
import shutil

from absl import logging
import keras
import numpy as np

from tfpipeline import atomic_files
from tfpipeline import conversion
from tfpipeline import integrity
from tfpipeline import models
from tfpipeline import runtimes
from tfpipeline.errors import UserError
from tfpipeline.errors import first_line

# Test examples the exports are checked on: the evaluation's first batch
# at the default batch sizes (all of a smaller test split).
CHECK_EXAMPLES = 256
# Largest |export - model.keras| allowed, relative to the largest
# |model.keras output| on those examples: ONNX's, and TFLite's by
# quantization. Measured (BUILD_NOTES, "Exports"): float32 TFLite and ONNX
# within 6e-7 on the default and digits_cnn, float16 within 4e-4, dynamic
# range within 5e-3.
ONNX_TOLERANCE = 1e-4
TFLITE_TOLERANCES = {'none': 1e-4, 'float16': 1e-2, 'dynamic_range': 5e-2}


def save(model: keras.Model, model_dir: pathlib.Path, vectorizer=None,
         formats=('saved_model',)) -> None:
  """Writes model.keras and, if in `formats`, saved_model/ atomically (old
  or new, never half a model); a saved_model/ not asked for is removed.

  Args:
    model: the trained model.
    model_dir: where model.keras and saved_model/ go.
    vectorizer: for text, the TextVectorization layer the model's tokens
      come from, else None.
    formats: export.formats.
  """
  serving = models.serving_model(model, vectorizer)
  with atomic_files.replacing(model_dir / 'model.keras') as path:
    serving.save(path)
  if 'saved_model' not in formats:
    shutil.rmtree(model_dir / 'saved_model', ignore_errors=True)
    return
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


def portable(model: keras.Model, model_dir: pathlib.Path, test, *,
             formats, quantization: str) -> dict:
  """Writes the TFLite and ONNX files `formats` asks for from model_dir's
  model.keras, each checked, atomically; removes those not asked for.

  Args:
    model: the trained model (model.keras's weights, taking tokens for text).
    model_dir: the run's directory, holding model.keras.
    test: the test split's `pipeline.Examples`.
    formats: export.formats.
    quantization: export.tflite_quantization.

  Returns:
    The report's `exports` section: per format, its check, or its `error`.
  """
  wanted = {name: file for name, file in conversion.FILES.items()
            if name in formats}
  for name, file in conversion.FILES.items():
    if name not in wanted:
      (model_dir / file).unlink(missing_ok=True)
  if not wanted:
    return {}
  raw, reference = _first_test_examples(model, test)
  section = {}
  with contextlib.ExitStack() as stack:
    written = {name: stack.enter_context(atomic_files.scratch(
        model_dir / file)) / file for name, file in wanted.items()}
    errors = conversion.convert(model_dir / 'model.keras', written,
                                quantization=quantization)
    for name, path in written.items():
      section[name] = (_failed(errors[name]) if errors[name] else _checked(
          name, path, raw, reference, quantization))
      _log(section[name])
      if section[name]['path']:
        os.replace(path, model_dir / wanted[name])
      else:
        (model_dir / wanted[name]).unlink(missing_ok=True)
  return section


def _first_test_examples(model: keras.Model, test):
  """The first CHECK_EXAMPLES test examples as stored (strings for text)
  and the trained model's outputs on them."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.function  # As tf.data reads them (a streamed split's read is a map).
  def read(rows):
    features = test.read(rows)['features']
    return features, test.model_inputs(features)

  raw, inputs = read(tf.range(min(CHECK_EXAMPLES, len(test)), dtype=tf.int64))
  reference = model.predict_on_batch(inputs.numpy())
  return raw.numpy(), np.asarray(reference, dtype=np.float32)


def _checked(name: str, path: pathlib.Path, raw: np.ndarray,
             reference: np.ndarray, quantization: str) -> dict:
  """The exported file `path` run on `raw`, compared with `reference`."""
  try:
    outputs = runtimes.load(name, path).predict_on_batch(raw)
  except Exception as e:  # pylint: disable=broad-except
    return _failed(f'{name}: its runtime cannot run it: '
                   f'{type(e).__name__}: {first_line(e)}')
  if outputs.shape != reference.shape:
    return _failed(f'{name}: outputs of shape {outputs.shape}, not '
                   f'{reference.shape}')
  difference = float(np.max(np.abs(outputs - reference)))
  if not np.isfinite(difference):
    return _failed(f'{name}: non-finite outputs')
  relative = (TFLITE_TOLERANCES[quantization] if name == 'tflite' else
              ONNX_TOLERANCE)
  tolerance = relative * (float(np.max(np.abs(reference))) or 1.0)
  return {'path': conversion.FILES[name],
          **({'quantization': quantization} if name == 'tflite' else {}),
          'examples': len(raw), 'max_abs_diff': difference,
          'tolerance': tolerance, 'relative_tolerance': relative,
          'ok': difference <= tolerance}


def _failed(error: str) -> dict:
  """The check of an export that could not be written or run."""
  return {'path': None, 'ok': False, 'error': error}


def _log(entry: dict) -> None:
  """One console line per export: its check, or why it failed."""
  if entry.get('error'):
    logging.warning('export %s', entry['error'])
    return
  logging.log(logging.INFO if entry['ok'] else logging.WARNING,
              'export %s: max |difference| from model.keras %.3g on %d test '
              'examples, %s tolerance %.3g', entry['path'],
              entry['max_abs_diff'], entry['examples'],
              'within' if entry['ok'] else 'BEYOND', entry['tolerance'])


def load(model_dir, format_name: str = 'keras'):
  """A finished run's model.keras, or its model.tflite or model.onnx in its
  runtime (`runtimes`), checked and loaded safely: an object with
  `predict_on_batch`.

  The file's sha256 must be the one MANIFEST.json lists, and Keras loads
  model.keras in safe mode, which refuses to deserialise code (Lambda
  layers, pickled functions) that could run on load.

  Args:
    model_dir: the run's directory.
    format_name: 'keras', 'tflite' or 'onnx'.

  Raises:
    UserError: the run has no such export, or its runtime is not installed.
    ValueError: no manifest entry, or the file changed since the run.
  """
  model_dir = pathlib.Path(model_dir)
  if format_name == 'keras':
    integrity.check_listed(model_dir, 'model.keras')
    return keras.saving.load_model(model_dir / 'model.keras', safe_mode=True)
  file = conversion.FILES[format_name]
  if not (model_dir / file).is_file():
    raise UserError(f'{model_dir} has no {file}: its run did not export '
                    f"{format_name} (export.formats), or could not (see "
                    f'report/report.json, exports)')
  conversion.check_installed([format_name])
  integrity.check_listed(model_dir, file)
  return runtimes.load(format_name, model_dir / file)
