"""Streamed TFDS datasets: random access in both file formats, shaped
features, augmentation and tokenization, identical batches on every layout."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfpipeline import config
from tfpipeline import errors
from tfpipeline.data import pipeline
from tfpipeline.data import preprocess
from tfpipeline.data import records
from tfpipeline.data import sources
from tfpipeline.errors import UserError

pytestmark = pytest.mark.smoke  # Also run on TF 2.20 in CI.


def _digits_config(data_dir, **data):
  c = config.load('digits_cnn')
  c.data.data_dir = str(data_dir)
  c.data.update(data)
  return c


def _batches(dataset, count):
  return [tuple(t.numpy() for t in b) for b in dataset.take(count)]


def test_images_are_streamed_with_their_shape_and_dtype(digits_dir):
  c = _digits_config(digits_dir)
  splits = sources.load(c.data, loss=c.loss)
  assert splits.kind == sources.IMAGE
  assert (splits.feature_shape, splits.feature_dtype) == ((8, 8, 1), 'uint8')
  assert [len(s) for s in (splits.train, splits.validation, splits.test)] == [
      1257, 269, 271]
  assert splits.train.streamed and splits.train.table is None
  batch = next(iter(splits.test.records.dataset(5)))
  assert batch['image'].dtype == tf.uint8 and batch['image'].shape == (
      5, 8, 8, 1)
  assert set(batch['parity'].numpy()) <= {b'even', b'odd'}
  # What the scikit-learn copy holds, scaled to 0-255.
  assert int(tf.reduce_max(batch['image'])) <= 255 and int(
      tf.reduce_max(batch['image'])) > 16


def test_tfrecord_is_converted_once_beside_the_data(tmp_path):
  import tfds_fixtures
  tfds_fixtures.prepare('digits', tmp_path, 'tfrecord')
  c = _digits_config(tmp_path)
  first = sources.load(c.data, loss=c.loss)
  copy = tmp_path / 'digits' / ('1.0.0' + records.CONVERTED_SUFFIX)
  assert sorted(p.name for p in copy.glob('*.array_record-*')) == [
      f'digits-{s}.array_record-00000-of-00001'
      for s in ('test', 'train', 'validation')]
  stamp = os.stat(copy / 'digits-train.array_record-00000-of-00001').st_mtime_ns
  again = sources.load(c.data, loss=c.loss)  # Reuses the copy.
  assert os.stat(copy / 'digits-train.array_record-00000-of-00001'
                 ).st_mtime_ns == stamp
  assert not list(copy.parent.glob('.*.scratch-*'))
  # The copy holds the same examples, in the same order.
  rows = np.array([0, 5, 1256])
  assert list(first.train.records.serialized(rows)) == list(
      again.train.records.serialized(rows))
  reference = tmp_path / 'ref'
  tfds_fixtures.prepare('digits', reference, 'array_record')
  native = sources.load(_digits_config(reference).data, loss=c.loss)
  assert list(native.train.records.serialized(rows)) == list(
      first.train.records.serialized(rows))


def test_truncated_or_corrupt_record_files_are_named(tmp_path):
  import tfds_fixtures
  tfds_fixtures.prepare('digits', tmp_path / 'ar', 'array_record')
  shard = next((tmp_path / 'ar' / 'digits' / '1.0.0').glob('*train*'))
  shard.write_bytes(shard.read_bytes()[:-300])
  with pytest.raises(UserError, match=f'{shard.name}.*(corrupt|truncated)'):
    sources.load(_digits_config(tmp_path / 'ar').data, loss='mse')

  tfds_fixtures.prepare('digits', tmp_path / 'tr', 'tfrecord')
  shard = next((tmp_path / 'tr' / 'digits' / '1.0.0').glob('*train*'))
  data = bytearray(shard.read_bytes())
  data[len(data) // 2] ^= 0xFF
  shard.write_bytes(bytes(data))
  with pytest.raises(UserError, match=f'{shard.name}: corrupt or truncated'):
    sources.load(_digits_config(tmp_path / 'tr').data, loss='mse')
  # No half-written copy is left behind.
  assert not [p for p in shard.parent.parent.iterdir() if p != shard.parent]


def test_streamed_batches_equal_in_memory_batches(digits_dir):
  c = _digits_config(digits_dir)
  splits = sources.load(c.data, loss=c.loss)
  train = pipeline.examples(splits, 'train', c)
  arrays = splits.train.records.read_all()
  in_memory = sources.Split.of(arrays['image'], arrays['label'].astype(
      np.int32)[:, None], arrays['parity'])
  for steps_per_block in (None, 3):
    streamed = _batches(pipeline.training_dataset_fn(
        train, 64, seed=4, steps_per_block=steps_per_block)(
            tf.distribute.InputContext()), 8)
    held = _batches(pipeline.training_dataset_fn(
        in_memory, 64, seed=4, steps_per_block=steps_per_block)(
            tf.distribute.InputContext()), 8)
    for one, other in zip(streamed, held):
      for a, b in zip(one, other):  # features, labels (and steps)
        np.testing.assert_array_equal(a, b)
    assert streamed[0][0].dtype == np.uint8


def _augmented(digits_dir, **data):
  c = _digits_config(digits_dir, augment=('random_flip', 'random_crop'),
                     crop_padding=2, **data)
  splits = sources.load(c.data, loss=c.loss)
  return pipeline.examples(splits, 'train', c)


def test_augmentation_is_a_function_of_seed_epoch_and_row(digits_dir):
  train = _augmented(digits_dir)
  fn = pipeline.training_dataset_fn(train, 64, seed=4)
  whole = _batches(fn(tf.distribute.InputContext()), 40)
  # Two workers with two replicas each see the same augmented examples.
  parts = [_batches(fn(tf.distribute.InputContext(
      num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=4)), 8)
           for i in range(2)]
  for step in range(4):
    pieces = [parts[w][2 * step + r][0] for w in range(2) for r in range(2)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole[step][0])
  # A run resumed at step 21 (epoch 2) reads the same examples, augmented
  # alike, without reading steps 0-20.
  resumed = _batches(pipeline.training_dataset_fn(
      train, 64, seed=4, start_step=21)(tf.distribute.InputContext()), 19)
  for (x1, y1), (x2, y2) in zip(resumed, whole[21:]):
    np.testing.assert_array_equal(x1, x2)
  # Blocks of steps hold the same examples as single steps.
  blocks = _batches(pipeline.training_dataset_fn(
      train, 64, seed=4, steps_per_block=5)(tf.distribute.InputContext()), 2)
  np.testing.assert_array_equal(blocks[1][0][2], whole[7][0])
  # Augmentation changes images, differently in each epoch.
  plain = pipeline.training_dataset_fn(
      pipeline.examples(sources.load(_digits_config(digits_dir).data,
                                     loss='mse'), 'train',
                        _digits_config(digits_dir)), 64, seed=4)
  unaugmented = _batches(plain(tf.distribute.InputContext()), 1)[0][0]
  assert not np.array_equal(unaugmented, whole[0][0])


def test_flip_and_crop_move_pixels_only():
  images = tf.reshape(tf.range(2 * 4 * 5 * 1, dtype=tf.int32) % 251,
                      [2, 4, 5, 1])
  images = tf.cast(images, tf.uint8)
  # First image: flipped, then cropped at padded row 2 (no vertical shift)
  # and column 4 (shifted left by 2). Second: not flipped, centred crop.
  params = tf.constant([[0.1, 0.5, 0.99], [0.9, 0.5, 0.5]])
  out = preprocess.augment(images, params, ('random_flip', 'random_crop'), 2)
  assert out.dtype == tf.uint8 and out.shape == images.shape
  np.testing.assert_array_equal(out[1], images[1])
  flipped = images[0, :, ::-1]
  want = np.zeros((4, 5, 1), np.uint8)
  want[:, :3] = flipped[:, 2:]
  np.testing.assert_array_equal(out[0], want)


def test_validation_and_test_are_never_augmented(digits_dir):
  c = _digits_config(digits_dir, augment=('random_flip',))
  splits = sources.load(c.data, loss=c.loss)
  for name in ('validation', 'test'):
    examples = pipeline.examples(splits, name, c)
    assert examples.augment == ()
    batch = next(iter(pipeline.evaluation_dataset(examples, 300)))
    np.testing.assert_array_equal(
        batch['features'], getattr(splits, name).records.read_all()['image'])


def test_text_is_tokenized_in_tf_data_to_a_fixed_length(text_dir):
  c = config.get_config()
  c.data.update(name='tiny_reviews', data_dir=str(text_dir),
                features=('text',), label='label', group='length',
                vocab_size=40, sequence_length=12)
  c.model.normalize_inputs = False
  c.loss = 'binary_crossentropy'
  splits = sources.load(c.data, loss=c.loss)
  assert (splits.kind, splits.feature_shape, splits.feature_dtype) == (
      sources.TEXT, (), 'string')
  inputs = pipeline.inputs(splits, c)
  assert (inputs.shape, inputs.dtype) == ((12,), 'int64')
  vocabulary = inputs.vectorizer.get_vocabulary()
  assert len(vocabulary) <= 40 and vocabulary[:2] == ['', '[UNK]']
  assert {'good', 'bad', 'film'} <= set(vocabulary)  # lower-cased, no '!'
  x, y = _batches(pipeline.training_dataset_fn(inputs.train, 16, seed=0)(
      tf.distribute.InputContext()), 1)[0]
  assert x.shape == (16, 12) and x.dtype == np.int64
  assert y.shape == (16, 1) and y.dtype == np.float32


@pytest.mark.parametrize('change, message', [
    (dict(features=('pixels',)), "no column 'pixels' .*it has image, label, "
                                 "parity"),
    (dict(augment=('random_flip',), name='tiny_reviews', features=('text',),
          group='length', vocab_size=40),
     r"data.augment=\('random_flip',\): image ops need image features"),
    (dict(name='tiny_reviews', features=('text',), group='length'),
     "data.vocab_size: data.features 'text' .text. holds strings"),
])
def test_bad_combinations_are_refused(digits_dir, text_dir, change, message):
  c = _digits_config(digits_dir if 'name' not in change else text_dir,
                     **change)
  with pytest.raises(UserError, match=message):
    pipeline.inputs(sources.load(c.data, loss=c.loss), c)


def test_images_of_different_sizes_are_refused(tmp_path):
  import tfds_fixtures
  tfds_fixtures.prepare('mixed_sizes', tmp_path, 'array_record')
  c = _digits_config(tmp_path, name='mixed_sizes', group=None)
  with pytest.raises(UserError, match=r"'image' of TFDS dataset 'mixed_sizes'"
                     r" has shape \(None, None, 1\): its examples differ"):
    sources.load(c.data, loss=c.loss)


@pytest.mark.parametrize('loss, units, needs', [
    ('sparse_categorical_crossentropy', 2, 'needs class ids 0 to 1'),
    ('binary_crossentropy', 1, 'needs labels 0 or 1')])
def test_streamed_labels_the_loss_cannot_take_name_the_record(
    tmp_path, loss, units, needs):
  import tfds_fixtures
  tfds_fixtures.prepare('numbered_images', tmp_path, 'array_record')
  c = _digits_config(tmp_path, name='numbered_images', group=None)
  c.loss, c.model.output_units = loss, units
  splits = sources.load(c.data, loss=loss, output_units=units)  # No pass.
  for name in ('validation', 'test'):  # Every label 0 or 1.
    assert len(list(pipeline.evaluation_dataset(
        pipeline.examples(splits, name, c), 8))) == 2
  # Where TFDS's shuffle put the bad record; 40 rows, batch 8: the block of
  # the first epoch's 5 steps reads it.
  bad = np.flatnonzero(splits.train.records.read_all()['label'] == 7)
  train = pipeline.training_dataset_fn(
      pipeline.examples(splits, 'train', c), 8, seed=0, steps_per_block=5)
  with pytest.raises(UserError, match=(
      rf"^TFDS dataset 'numbered_images': train row {bad.item()}, label "
      rf"'label' is 7: "
      rf'loss={loss} {needs}; fix the label')):
    with errors.user_errors_through_tensorflow():
      next(iter(train(tf.distribute.InputContext())))


def test_npz_images_keep_their_shape(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / 'images.npz'
  np.savez(path, image=rng.integers(0, 255, (50, 6, 6, 3), dtype=np.uint8),
           label=rng.integers(0, 3, 50))
  c = config.get_config()
  c.data.update(source='npz', path=str(path), features=('image',),
                label='label', group=None)
  splits = sources.load(c.data, loss='sparse_categorical_crossentropy')
  assert (splits.kind, splits.feature_shape, splits.feature_dtype) == (
      sources.IMAGE, (6, 6, 3), 'uint8')
  assert splits.train.take()['features'].shape[1:] == (6, 6, 3)
  assert not splits.train.streamed
