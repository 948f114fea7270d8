"""tfpipeline.data.sources.tfds_dataset: the package's and the catalogue's
TFDS datasets, their columns, splits and preparation."""

import numpy as np
import pytest

from conftest import mock_catalogue
from data_configs import data_config
from tfpipeline import config
from tfpipeline.data import sources
from tfpipeline.errors import UserError


def test_diabetes_through_the_package_tfds_builder(tfds_dir):
  c = config.get_config().data
  c.data_dir = str(tfds_dir)
  splits = sources.load(c, loss='mse')
  assert (len(splits.train), len(splits.validation), len(splits.test)) == (
      309, 66, 67)
  assert splits.feature_names[:3] == ('age', 'sex', 'bmi')
  # The config leaves the columns to the dataset, which names its own.
  assert (c.features, c.label, c.group) == ((), '', 'auto')
  assert splits.feature_keys == ('age', 'sex', 'bmi', 'bp', 's1', 's2', 's3',
                                 's4', 's5', 's6')
  assert (splits.label_name, splits.group_name) == ('progression', 'sex')
  from sklearn.datasets import load_diabetes
  raw = load_diabetes(scaled=False)
  every_label = np.concatenate([s.take()['labels'][:, 0] for s in (
      splits.train, splits.validation, splits.test)])
  np.testing.assert_allclose(np.sort(every_label), np.sort(raw.target))
  train = splits.train.take()
  assert set(np.unique(train['groups'])) == {1.0, 2.0}
  np.testing.assert_array_equal(train['groups'], train['features'][:, 1])


def test_tfds_catalogue_dataset_with_mock_data():
  # mock_data gives every split (slices too) num_examples random examples.
  c = data_config(name='iris', features=('features',), label='label',
                  group=None, validation_split='train', test_split='train')
  with mock_catalogue(num_examples=50):
    splits = sources.load(c, loss='sparse_categorical_crossentropy')
  assert splits.train.take()['features'].shape == (50, 4)
  assert splits.train.take()['features'].dtype == np.float32
  assert splits.train.take()['labels'].shape == (50, 1)
  # Class ids as stored; the pipeline casts them for the loss (int32).
  assert np.issubdtype(splits.train.take()['labels'].dtype, np.integer)
  assert set(np.unique(splits.train.take()['labels'])) <= {0, 1, 2}


def test_catalogue_columns_come_from_its_supervised_keys():
  c = data_config(name='iris', validation_split='train', test_split='train')
  with mock_catalogue(num_examples=50):
    splits = sources.load(c, loss='sparse_categorical_crossentropy',
                          output_units=3)
    assert (splits.feature_keys, splits.label_name, splits.group_name,
            splits.num_classes) == (('features',), 'label', None, 3)
    with pytest.raises(UserError, match=r"'label' has 3 classes, but .*"
                       r'output_units=2 predicts fewer; set '
                       r'--config.model.output_units=3'):
      sources.load(c, loss='sparse_categorical_crossentropy', output_units=2)


def test_tfds_not_prepared_and_no_download(tmp_path):
  c = data_config(name='mnist', data_dir=str(tmp_path), download=False,
                  features=('image',), label='label', group=None)
  with pytest.raises(UserError, match="'mnist' is not prepared in .*tfds "
                     "build mnist"):
    sources.load(c, loss='sparse_categorical_crossentropy')
  assert not any(tmp_path.iterdir())


def test_unknown_tfds_dataset_and_split(tfds_dir):
  with pytest.raises(UserError, match="no TFDS dataset 'not_a_dataset'"):
    sources.load(data_config(name='not_a_dataset'), loss='mse')
  with pytest.raises(UserError, match="data.test_split: 'holdout' is not a "
                     "split of 'diabetes'"):
    sources.load(data_config(data_dir=str(tfds_dir), test_split='holdout'),
                 loss='mse')
