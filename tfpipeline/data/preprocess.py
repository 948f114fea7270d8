"""Per-example preprocessing in tf.data: augmentation and tokenization.

Augmentation is stateless: each example's random numbers are drawn from
(train.seed, epoch, example index) by `pipeline.global_batch_indices` and
passed in, so an example looks the same whichever step, replica or resumed
run reads it. Text is tokenized by a Keras `TextVectorization` layer adapted
on the training split, in tf.data (never inside XLA), to a fixed length so
shapes stay static for XLA and TPUs.
"""

import tensorflow as tf

# Uniform [0, 1) numbers each example gets: flip, crop row, crop column.
AUGMENT_PARAMS = 3
DEFAULT_SEQUENCE_LENGTH = 128


def augment(images: tf.Tensor, params: tf.Tensor, ops,
            crop_padding: int) -> tf.Tensor:
  """Augments a batch of images (n, H, W, C) with its params (n, 3).

  random_flip mirrors an image left-right when its first number is < 0.5;
  random_crop pads by `crop_padding` zero pixels on every side and crops back
  to (H, W) at an offset chosen by the other two. Pixels are only moved, so
  the dtype (uint8 as stored) is kept.
  """
  if 'random_flip' in ops:
    flip = params[:, 0] < 0.5
    images = tf.where(flip[:, None, None, None],
                      tf.reverse(images, axis=[2]), images)
  if 'random_crop' in ops and crop_padding:
    height, width = images.shape[1], images.shape[2]
    positions = 2 * crop_padding + 1
    padded = tf.pad(images, [[0, 0], [crop_padding, crop_padding],
                             [crop_padding, crop_padding], [0, 0]])
    offsets = tf.cast(tf.floor(params[:, 1:3] * positions), tf.int32)
    offsets = tf.minimum(offsets, positions - 1)
    rows = offsets[:, :1] + tf.range(height)[None]  # (n, H)
    columns = offsets[:, 1:2] + tf.range(width)[None]  # (n, W)
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    images = tf.gather(images, columns, axis=2, batch_dims=1)
  return images


def text_vectorizer(texts: tf.data.Dataset, *, vocab_size: int,
                    sequence_length: int):
  """A TextVectorization layer adapted on `texts` (batches of strings).

  Lower-cased, punctuation stripped, split on whitespace; `vocab_size`
  counts the padding and out-of-vocabulary tokens; every output has
  `sequence_length` token ids (padded with 0 or truncated).
  """
  import keras  # pylint: disable=g-import-not-at-top
  layer = keras.layers.TextVectorization(
      max_tokens=vocab_size, output_mode='int',
      output_sequence_length=sequence_length, name='tokenize')
  layer.adapt(texts)
  return layer
