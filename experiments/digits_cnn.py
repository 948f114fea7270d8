"""Handwritten digits with a small convnet: the image experiment CI runs.

The 1,797 8x8 digit images scikit-learn ships, read through the package's
TFDS builder (`digits`: (8, 8, 1) uint8 images, 1257/269/271 train,
validation and test, no download), grouped by the digit's parity. Two 3x3
convolutions, max pooling, dropout and a dense head, trained with adam.

    python -m tfpipeline.train --config=digits_cnn --model_dir=/tmp/runs/digits
"""

from tfpipeline import presets


def get_config():
  c = presets.tfds_classifier('digits', feature='image', classes=10,
                              batch=32, epochs=30, group='parity')
  c.model.layers = (
      ('Rescaling', {'scale': 1 / 255}),
      ('Conv2D', {'filters': 32, 'kernel_size': 3, 'padding': 'same',
                  'activation': 'relu'}),
      ('Conv2D', {'filters': 32, 'kernel_size': 3, 'padding': 'same',
                  'activation': 'relu'}),
      ('MaxPooling2D', {'pool_size': 2}),
      ('Dropout', {'rate': 0.25}),
      ('Flatten', {}),
      ('Dense', {'units': 128, 'activation': 'relu'}),
      ('Dropout', {'rate': 0.5}),
  )
  return c
