"""tfpipeline.class_weights and data.class_counts: train.class_weight as one
weight per class, 'balanced' from the training split's labels."""

import numpy as np
import pytest

from tfpipeline import class_weights
from tfpipeline import config
from tfpipeline.data import class_counts
from tfpipeline.data import sources
from tfpipeline.data.splits import Split, Splits
from tfpipeline.data.table import Table
from tfpipeline.errors import UserError


def _splits(train_labels, memory_mapped_to=None) -> Splits:
  """Splits whose training rows (every other row of their table) have
  `train_labels`; the other rows are class 0."""
  labels = np.zeros((2 * len(train_labels), 1), np.float32)
  labels[1::2, 0] = train_labels
  if memory_mapped_to:
    mapped = np.memmap(memory_mapped_to, np.float32, 'w+', shape=labels.shape)
    mapped[:] = labels
    labels = mapped
  table = Table(np.zeros((len(labels), 2), np.float32), labels)
  train = Split(table, np.arange(1, len(labels), 2)[::-1])
  other = Split(table, np.arange(0, len(labels), 2))
  return Splits(train, other, other, feature_names=('a', 'b'),
                label_name='y', group_name=None)


def _config(loss='sparse_categorical_crossentropy', units=3,
            class_weight='balanced'):
  c = config.get_config()
  c.loss, c.model.output_units = loss, units
  c.train.class_weight = class_weight
  return config.validate(c)


@pytest.mark.parametrize('memory_mapped', [False, True])
def test_balanced_weights_are_n_over_classes_times_each_count(
    tmp_path, memory_mapped):
  labels = np.array([0, 2, 2, 1, 2, 0, 2, 2, 0, 2])  # 3, 1 and 6 of 10
  splits = _splits(labels, tmp_path / 'labels.bin' if memory_mapped else None)
  weights = class_weights.resolve(_config(), splits)
  np.testing.assert_allclose(weights, [10 / (3 * 3), 10 / (3 * 1),
                                       10 / (3 * 6)], rtol=1e-12)
  # Each class then weighs n / classes in all.
  np.testing.assert_allclose(np.array(weights) * [3, 1, 6], 10 / 3)


def test_binary_and_one_hot_labels_are_counted_by_class():
  binary = _splits(np.array([1, 0, 0, 0]))
  assert class_weights.resolve(_config('binary_crossentropy', 1),
                               binary) == (4 / (2 * 3), 4 / (2 * 1))
  one_hot = np.eye(3, dtype=np.float32)[[0, 1, 1, 2]]
  table = Table(np.zeros((4, 1), np.float32), one_hot)
  splits = Splits(*[Split(table, np.arange(4))] * 3, feature_names=('a',),
                  label_name='y', group_name=None)
  assert class_weights.resolve(_config('categorical_crossentropy'),
                               splits) == (4 / 3, 4 / 6, 4 / 3)


def test_a_class_without_training_examples_is_refused():
  # Class 1 is in the table, but only outside the training rows.
  splits = _splits(np.array([0, 2, 2, 0]))
  with pytest.raises(UserError, match=(
      r"^train.class_weight='balanced': class 1 of label 'y' has no training "
      r'example \(of 4\), so its balanced weight would be infinite')):
    class_weights.resolve(_config(), splits)


def test_given_weights_are_used_as_they_are_and_none_is_unweighted():
  splits = _splits(np.array([0, 0, 0, 0]))  # Not read: no class 1 or 2.
  assert class_weights.resolve(_config(class_weight=(1, 0, 2.5)),
                               splits) == (1.0, 0.0, 2.5)
  assert class_weights.resolve(_config(class_weight=''), splits) is None
  assert [class_weights.mode(value) for value in ('', 'balanced', (1, 2))
         ] == ['', 'balanced', 'given']


def test_streamed_labels_are_counted_in_one_checked_pass(tmp_path):
  import tfds_fixtures
  tfds_fixtures.prepare('numbered_images', tmp_path, 'array_record')
  c = config.load('digits_cnn')
  c.data.update(name='numbered_images', data_dir=str(tmp_path), group=None)
  loss = 'sparse_categorical_crossentropy'
  splits = sources.load(c.data, loss=loss, output_units=8)
  assert splits.train.streamed
  # 40 training records: i % 2, but record 29's label is 7.
  np.testing.assert_array_equal(class_counts.count(
      splits, 'train', c.data, loss=loss, output_units=8),
                                [20, 19, 0, 0, 0, 0, 0, 1])
  bad = np.flatnonzero(splits.train.records.read_all()['label'] == 7).item()
  with pytest.raises(UserError, match=(
      rf"^TFDS dataset 'numbered_images': train row {bad}, label 'label' is "
      rf'7: loss={loss} needs class ids 0 to 1')):
    class_counts.count(splits, 'train', c.data, loss=loss, output_units=2)
