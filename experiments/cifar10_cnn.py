"""CIFAR-10 with a VGG-style Sequential convnet (TFDS `cifar10`).

Three blocks of two 3x3 convolutions with batch normalization, max pooling
and growing dropout, then a dense head; random flips and 4-pixel random
crops; SGD with momentum and a cosine schedule after a 5-epoch linear
warm-up (a rate of 0.05 from the first step can diverge before batch
normalization's statistics settle: Goyal et al. 2017). The best epoch's
weights by validation accuracy are exported, and training stops after 15
epochs without a better one: under a cosine schedule that happens only
when the run has stopped learning. The images stream from the prepared TFDS
files (either file format) and the model takes raw uint8 pixels.

    python -m tfpipeline.train --config=cifar10_cnn --model_dir=/tmp/runs/cifar10
"""

from tfpipeline import presets


def _conv_block(filters: int, dropout: float) -> tuple:
  conv = ('Conv2D', {'filters': filters, 'kernel_size': 3, 'padding': 'same',
                     'activation': 'relu', 'kernel_initializer': 'he_uniform'})
  return (conv, ('BatchNormalization', {}), conv, ('BatchNormalization', {}),
          ('MaxPooling2D', {'pool_size': 2}), ('Dropout', {'rate': dropout}))


def get_config():
  c = presets.tfds_classifier(
      'cifar10', feature='image', classes=10, batch=256, epochs=100,
      train_split='train[:90%]', validation_split='train[90%:]')
  c.data.augment = ('random_flip', 'random_crop')
  c.model.layers = (
      ('Rescaling', {'scale': 1 / 255}),
      *_conv_block(32, 0.2), *_conv_block(64, 0.3), *_conv_block(128, 0.4),
      ('Flatten', {}),
      ('Dense', {'units': 128, 'activation': 'relu',
                 'kernel_initializer': 'he_uniform'}),
      ('BatchNormalization', {}),
      ('Dropout', {'rate': 0.5}),
  )
  c.optimizer.name = 'sgd'
  c.optimizer.momentum = 0.9
  c.optimizer.learning_rate = 0.05
  c.optimizer.warmup_epochs = 5.0
  c.optimizer.schedule = 'cosine_decay'  # From the warm-up's end.
  c.optimizer.decay_epochs = c.train.epochs - c.optimizer.warmup_epochs
  c.train.early_stopping.metric = 'val_accuracy'
  c.train.early_stopping.patience = 15
  c.train.keep_best = True
  return c
