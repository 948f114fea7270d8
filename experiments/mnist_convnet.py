"""keras.io's "Simple MNIST convnet" on TFDS `mnist`, streamed.

Two 3x3 convolutions with max pooling, dropout and a softmax over the ten
digits; adam, batch 128, 15 epochs, 10% of the training images held out for
validation, as the keras.io example does (it publishes test accuracy 0.992;
not measured here: mnist needs a download). The model takes raw uint8
pixels; Rescaling makes them [0, 1].

    tfds build mnist --data_dir=/data/tfds --file_format=array_record
    python -m tfpipeline.train --config=mnist_convnet --config.data.data_dir=/data/tfds
"""

from tfpipeline import config


def get_config():
  c = config.get_config()
  c.data.source = 'tfds'
  c.data.name = 'mnist'
  c.data.train_split = 'train[:90%]'
  c.data.validation_split = 'train[90%:]'
  c.data.test_split = 'test'
  c.data.features = ('image',)
  c.data.label = 'label'
  c.data.group = None
  c.model.layers = (
      ('Rescaling', {'scale': 1 / 255}),
      ('Conv2D', {'filters': 32, 'kernel_size': 3, 'activation': 'relu'}),
      ('MaxPooling2D', {'pool_size': 2}),
      ('Conv2D', {'filters': 64, 'kernel_size': 3, 'activation': 'relu'}),
      ('MaxPooling2D', {'pool_size': 2}),
      ('Flatten', {}),
      ('Dropout', {'rate': 0.5}),
  )
  c.model.output_units = 10
  c.model.normalize_inputs = False
  c.model.standardize_targets = False
  c.loss = 'sparse_categorical_crossentropy'
  c.train.epochs = 15
  c.train.global_batch_size = 128
  return c
