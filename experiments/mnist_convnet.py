"""keras.io's "Simple MNIST convnet" on TFDS `mnist`, streamed.

Two 3x3 convolutions with max pooling, dropout and a softmax over the ten
digits; adam, batch 128, 15 epochs, 10% of the training images held out for
validation, as the keras.io example does (it publishes test accuracy 0.992;
not measured here: mnist needs a download). The model takes raw uint8
pixels; Rescaling makes them [0, 1].

    tfds build mnist --data_dir=/data/tfds --file_format=array_record
    python -m tfpipeline.train --config=mnist_convnet --config.data.data_dir=/data/tfds
"""

from tfpipeline import presets


def get_config():
  c = presets.tfds_classifier(
      'mnist', feature='image', classes=10, batch=128, epochs=15,
      train_split='train[:90%]', validation_split='train[90%:]')
  c.model.layers = (
      ('Rescaling', {'scale': 1 / 255}),
      ('Conv2D', {'filters': 32, 'kernel_size': 3, 'activation': 'relu'}),
      ('MaxPooling2D', {'pool_size': 2}),
      ('Conv2D', {'filters': 64, 'kernel_size': 3, 'activation': 'relu'}),
      ('MaxPooling2D', {'pool_size': 2}),
      ('Flatten', {}),
      ('Dropout', {'rate': 0.5}),
  )
  return c
