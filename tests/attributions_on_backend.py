"""The report's attributions of three saved models, on this process's Keras
backend: `python tests/attributions_on_backend.py DIR` (with KERAS_BACKEND
set) writes DIR/attributions_<backend>.json. The tests call `attributions`
in their own (TensorFlow) process and compare the two.

`save_models(DIR)` writes the models (a table MLP behind a Normalization,
a 'same'-padded convnet over uint8 pixels with pooling and dropout, a
masked text model) and their inputs.
"""

import json
import pathlib
import sys

import numpy as np

KINDS = ('table', 'image', 'text')
VOCABULARY = ['', '[UNK]'] + [f'w{i}' for i in range(2, 20)]


def save_models(directory: pathlib.Path) -> None:
  import keras  # pylint: disable=g-import-not-at-top
  layers = keras.layers
  rng = np.random.default_rng(0)
  keras.utils.set_random_seed(0)
  table = rng.normal(size=(30, 10)).astype(np.float32)
  models = {
      'table': keras.Sequential([
          keras.Input((10,)),
          layers.Normalization(mean=table.mean(axis=0),
                               variance=table.var(axis=0)),
          layers.Dense(16, 'tanh'), layers.Dense(1)]),
      'image': keras.Sequential([
          keras.Input((8, 8, 1), dtype='uint8'), layers.Rescaling(1 / 255),
          layers.Conv2D(4, 3, padding='same', activation='tanh'),
          layers.MaxPooling2D(2), layers.Dropout(0.5), layers.Flatten(),
          layers.Dense(3, 'softmax')]),
      'text': keras.Sequential([
          keras.Input((10,), dtype='int64'),
          layers.Embedding(len(VOCABULARY), 4, mask_zero=True),
          layers.GlobalAveragePooling1D(), layers.Dense(1, 'sigmoid')]),
  }
  tokens = rng.integers(2, len(VOCABULARY), size=(12, 10))
  tokens[:, 7:] = 0  # Padding.
  for kind, model in models.items():
    model.save(directory / f'{kind}.keras')
  np.savez(directory / 'inputs.npz', table=table,
           image=rng.integers(0, 256, size=(12, 8, 8, 1), dtype=np.uint8),
           image_labels=rng.integers(0, 3, size=12), text=tokens)


def attributions(directory: pathlib.Path) -> dict:
  """Each kind's attributions section; an image's drawn maps besides."""
  import keras  # pylint: disable=g-import-not-at-top
  from tfpipeline.report import attributions as attributions_lib  # pylint: disable=g-import-not-at-top
  from data_configs import report_config  # pylint: disable=g-import-not-at-top
  inputs = np.load(directory / 'inputs.npz')
  results = {}
  for kind in KINDS:
    model = keras.saving.load_model(directory / f'{kind}.keras')
    section, drawing = attributions_lib.section(
        model, {'features': inputs[kind], 'labels': inputs.get(
            f'{kind}_labels', np.zeros(len(inputs[kind])))},
        kind=kind, report_config=report_config(), classification=(
            kind != 'table'), train_mean=inputs['table'].mean(axis=0),
        feature_names=[f'x{i}' for i in range(10)], vocabulary=VOCABULARY)
    if drawing:
      section['drawn_maps'] = np.asarray(drawing['maps']).tolist()
    results[kind] = section
  return results


if __name__ == '__main__':
  import keras  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(sys.argv[1])
  (out / f'attributions_{keras.backend.backend()}.json').write_text(
      json.dumps(attributions(out)))
