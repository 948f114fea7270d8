"""tfpipeline.data.sources: every source, and bad data refused by name."""

import numpy as np
import pytest

from conftest import mock_catalogue
from tfpipeline import config
from tfpipeline.data import sources
from tfpipeline.errors import UserError


def _data_config(**values):
  c = config.get_config().data
  c.update(values)
  return c


def _csv_config(path, **values):
  return _data_config(**{'source': 'csv', 'path': str(path),
                         'features': ('a', 'b'), 'label': 'y',
                         'group': 'group', **values})


def test_csv_splits_are_seeded_disjoint_and_complete(regression_csv):
  splits = sources.load(_csv_config(regression_csv), loss='mse')
  sizes = len(splits.train), len(splits.validation), len(splits.test)
  assert sizes == (84, 18, 18)
  assert splits.feature_names == ('a', 'b') and splits.group_name == 'group'
  rows = np.concatenate([s.take()['features'] for s in (
      splits.train, splits.validation, splits.test)])
  assert len(np.unique(rows, axis=0)) == 120
  for split in (splits.train, splits.test):
    a, b = split.take()['features'].T
    np.testing.assert_allclose(split.take()['labels'][:, 0], 3 * a - 2 * b + 1,
                               atol=1e-4)
    assert set(split.take()['groups']) == {'a', 'b'}
  again = sources.load(_csv_config(regression_csv), loss='mse')
  np.testing.assert_array_equal(again.test.take()['features'],
                                splits.test.take()['features'])


def test_csv_without_declared_features_uses_every_other_column(
    regression_csv):
  splits = sources.load(_csv_config(regression_csv, features=()), loss='mse')
  assert splits.feature_names == ('a', 'b')


@pytest.mark.parametrize('edit, fragment', [
    (lambda lines: lines[:5] + ['0.1,oops,a,2.0'] + lines[6:],
     r"data.csv, row 6, column 'b': 'oops' is not a number"),
    (lambda lines: lines[:3] + ['0.1,0.2,a'] + lines[4:],
     r'data.csv, row 4: 3 cells, header has 4'),
    (lambda lines: ['a,b,group,target'] + lines[1:],
     r"no column 'y' \(from data.label\)"),
    # The file's row (the header is row 1), not an index into a split.
    (lambda lines: lines[:7] + ['nan,0.2,a,2.0'] + lines[8:],
     r"data.csv, row 8, feature 'a' is nan"),
    (lambda lines: lines[:7] + ['0.5,0.2,a,inf'] + lines[8:],
     r"data.csv, row 8, label 'y' is inf"),
    (lambda lines: [], r'data.csv: empty file'),
])
def test_bad_csv_names_file_row_and_column(regression_csv, edit, fragment):
  lines = regression_csv.read_text().splitlines()
  regression_csv.write_text('\n'.join(edit(lines)) + '\n')
  with pytest.raises(UserError, match=fragment) as error:
    sources.load(_csv_config(regression_csv), loss='mse')
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('content, fragment', [
    ('a,b,group,y\n1,2,a,3\n'.encode('utf-16'),
     'UTF-16 text .*save it as UTF-8 CSV'),
    ('a,b,group,y\n1,2,a,3\n1,2,caf\u00e9,3\n'.encode('latin-1'),
     r'not UTF-8 \(byte 0xe9 at byte offset 27, line 3; Latin-1'),
    (b'PK\x03\x04\x14\x00\x00\x00', r'a binary file, not CSV \(a NUL '
     r'byte at byte offset 5, line 1\)'),
    (b'a,b,group,y\n', 'a header row and no data rows'),
    (b'a,b,group,y\r1,2,a,3\r4,5,b,6\r', r'row 1: a line ends in a lone '
     r'carriage return \(CR, as old Mac and spreadsheet exports write\); save '
     r'it with LF or CRLF line endings'),
])
def test_files_that_are_not_utf8_csv_are_refused(tmp_path, content,
                                                 fragment):
  path = tmp_path / 'data.csv'
  path.write_bytes(content)
  with pytest.raises(UserError, match=fragment) as error:
    sources.load(_csv_config(path), loss='mse')
  assert str(error.value).startswith(str(path))


def test_a_header_wider_than_64_kib_is_read_whole(tmp_path):
  # 7,001 names in 98 KB: the first 64 KiB held 4,682 of them.
  names = [f'feature_{i:05d}' for i in range(7000)]
  rows = np.arange(20 * 7001).reshape(20, 7001) % 97
  path = tmp_path / 'wide.csv'
  path.write_text('\n'.join([','.join(names + ['y'])] + [
      ','.join(map(str, row)) for row in rows]) + '\n')
  splits = sources.load(_csv_config(path, features=(), group=''), loss='mse')
  assert splits.feature_names == tuple(names)
  train = splits.train.take()
  np.testing.assert_array_equal(train['features'],
                                rows[splits.train.rows, :-1])
  np.testing.assert_array_equal(train['labels'][:, 0],
                                rows[splits.train.rows, -1])


def _labelled_csv(path, labels) -> str:
  rows = ''.join(f'{i % 7},{i % 5},a,{label}\n' for i, label in
                 enumerate(labels))
  path.write_text('a,b,group,y\n' + rows)
  return path


@pytest.mark.parametrize('loss, units, labels, fragment', [
    ('sparse_categorical_crossentropy', 10, [3] * 50 + [11] + [2] * 49,
     r"row 52, label 'y' is 11: loss=sparse_categorical_crossentropy needs "
     r'class ids 0 to 9'),
    ('sparse_categorical_crossentropy', 10, [3] * 50 + [-1] + [2] * 49,
     r"row 52, label 'y' is -1"),
    ('sparse_categorical_crossentropy', 10, [3] * 50 + [2.5] + [2] * 49,
     r"row 52, label 'y' is 2.5"),
    ('binary_crossentropy', 1, [0, 1] * 30 + [2] + [1] * 39,
     r"row 62, label 'y' is 2: loss=binary_crossentropy needs labels 0 or 1"),
])
def test_labels_the_loss_cannot_take_name_the_file_row(
    tmp_path, loss, units, labels, fragment):
  path = _labelled_csv(tmp_path / 'data.csv', labels)
  with pytest.raises(UserError, match=fragment):
    sources.load(_csv_config(path), loss=loss, output_units=units)


def test_one_hot_labels_must_be_rows_of_probabilities(tmp_path):
  y = np.eye(3)[np.arange(60) % 3]
  y[17] = [0, 2, 0]
  path = tmp_path / 'data.npz'
  np.savez(path, x=np.arange(60.0), y=y)
  c = _data_config(source='npz', path=str(path), features=('x',), label='y',
                   group=None)
  with pytest.raises(UserError, match=r"data.npz, index 17, label 'y' is "
                     r'\[0, 2, 0\]: .* sum to 1'):
    sources.load(c, loss='categorical_crossentropy', output_units=3)
  with pytest.raises(UserError, match=r"'y' has 3 values per example, "
                     r'model.output_units=4'):
    sources.load(c, loss='categorical_crossentropy', output_units=4)


def test_gzip_csv_reads_like_the_plain_file(regression_csv, tmp_path):
  import gzip
  packed = tmp_path / 'data.csv.gz'
  packed.write_bytes(gzip.compress(regression_csv.read_bytes()))
  plain = sources.load(_csv_config(regression_csv), loss='mse')
  read = sources.load(_csv_config(packed), loss='mse')
  np.testing.assert_array_equal(read.train.take()['features'],
                                plain.train.take()['features'])
  np.testing.assert_array_equal(read.test.take()['labels'],
                                plain.test.take()['labels'])
  assert read.train.take()['features'].dtype == np.float32
  lines = regression_csv.read_text().splitlines()
  packed.write_bytes(gzip.compress('\n'.join(
      lines[:6] + ['0.1,oops,a,2.0'] + lines[7:]).encode()))
  with pytest.raises(UserError, match=r"data.csv.gz, row 7, column 'b': "
                     r"'oops' is not a number"):
    sources.load(_csv_config(packed), loss='mse')


def test_blank_line_is_named_not_skipped(regression_csv):
  lines = regression_csv.read_text().splitlines()
  regression_csv.write_text('\n'.join(lines[:4] + [''] + lines[4:]) + '\n')
  with pytest.raises(UserError, match=r'data.csv, row 5: 0 cells, header '
                     r'has 4'):
    sources.load(_csv_config(regression_csv), loss='mse')


def _parquet(path, columns):
  import pyarrow as pa
  from pyarrow import parquet
  parquet.write_table(pa.table(columns), path)


def test_parquet_file_and_parts_read_like_csv(regression_csv, tmp_path):
  import csv
  with open(regression_csv) as f:
    rows = list(csv.DictReader(f))
  columns = {'a': [float(r['a']) for r in rows],
             'b': [float(r['b']) for r in rows],
             'group': [r['group'] for r in rows],
             'y': [float(r['y']) for r in rows]}
  _parquet(tmp_path / 'one.parquet', columns)
  parts = tmp_path / 'parts'
  parts.mkdir()
  for i, (start, stop) in enumerate([(0, 50), (50, 120)]):
    _parquet(parts / f'part-{i}.parquet',
             {k: v[start:stop] for k, v in columns.items()})
  want = sources.load(_csv_config(regression_csv), loss='mse')
  for path in (tmp_path / 'one.parquet', parts):
    got = sources.load(_csv_config(path, source='parquet'), loss='mse')
    np.testing.assert_array_equal(got.train.take()['features'],
                                  want.train.take()['features'])
    np.testing.assert_array_equal(got.validation.take()['labels'],
                                  want.validation.take()['labels'])
    assert list(got.test.take()['groups']) == list(want.test.take()['groups'])
  assert sorted(got.origin['parts_sha256']) == ['part-0.parquet',
                                                'part-1.parquet']
  # A bad value is named by its part file and row.
  columns['a'][70] = float('nan')
  _parquet(parts / 'part-1.parquet',
           {k: v[50:120] for k, v in columns.items()})
  with pytest.raises(UserError, match=r"part-1.parquet, row 20, feature 'a' "
                     r'is nan'):
    sources.load(_csv_config(parts, source='parquet'), loss='mse')


@pytest.mark.parametrize('column, fragment', [
    (['1.0', 'x'], r"column 'b' holds string, not numbers"),
    ([1.0, None], r"row 1, column 'b' is null"),
])
def test_parquet_cells_that_are_not_numbers(tmp_path, column, fragment):
  _parquet(tmp_path / 'bad.parquet', {'a': [1.0, 2.0], 'b': column,
                                      'y': [0.0, 1.0]})
  with pytest.raises(UserError, match=fragment):
    sources.load(_data_config(source='parquet', features=('a', 'b'),
                              path=str(tmp_path / 'bad.parquet'), label='y',
                              group=None), loss='mse')


def test_missing_file_says_so(tmp_path):
  with pytest.raises(UserError, match=r'data.path: .*nothing.csv does not '
                     r'exist'):
    sources.load(_csv_config(tmp_path / 'nothing.csv'), loss='mse')


def test_npz_source(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / 'data.npz'
  np.savez(path, x=rng.normal(size=(50, 4)), y=rng.normal(size=50),
           sex=rng.integers(1, 3, size=50))
  splits = sources.load(_data_config(source='npz', path=str(path),
                                     features=('x',), label='y', group='sex'),
                        loss='mse')
  assert splits.train.take()['features'].shape == (34, 4)
  assert splits.train.take()['labels'].shape == (34, 1)
  assert set(splits.train.take()['groups']) <= {1, 2}
  x = np.zeros((50, 2))
  x[37, 1] = np.nan
  np.savez(path, x=x, y=np.zeros(50))
  with pytest.raises(UserError, match=r"data.npz, index 37, feature 'x\[1\]' "
                     r'is nan'):
    sources.load(_data_config(source='npz', path=str(path), features=('x',),
                              label='y', group=None), loss='mse')
  np.savez(path, x=np.zeros((5, 2)), y=np.zeros(4))
  with pytest.raises(UserError, match='differ in length'):
    sources.load(_data_config(source='npz', path=str(path), features=('x',),
                              label='y', group=None), loss='mse')
  path.write_text('not an archive')
  with pytest.raises(UserError, match='not a readable .npz'):
    sources.load(_data_config(source='npz', path=str(path), features=('x',),
                              label='y', group=None), loss='mse')


def test_synthetic_source_is_seeded_like_the_seed_examples():
  c = config.load('seed_torch_mlp').data
  splits = sources.load(c, loss='mse')
  assert splits.train.take()['features'].shape == (1000, 10)
  assert splits.train.take()['labels'].shape == (1000, 10)
  assert splits.test.take()['features'].shape == (200, 10)
  assert abs(splits.train.take()['features'].mean()) < 0.1  # standard normal
  again = sources.load(c, loss='mse')
  np.testing.assert_array_equal(again.train.take()['labels'],
                                splits.train.take()['labels'])
  uniform = sources.load(config.load('seed_keras_mlp').data, loss='mse')
  features = uniform.train.take()['features']
  assert features.shape == (100, 10)
  assert features.min() >= 0 and features.max() < 1


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
  c = _data_config(name='iris', features=('features',), label='label',
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
  c = _data_config(name='iris', validation_split='train', test_split='train')
  with mock_catalogue(num_examples=50):
    splits = sources.load(c, loss='sparse_categorical_crossentropy',
                          output_units=3)
    assert (splits.feature_keys, splits.label_name, splits.group_name,
            splits.num_classes) == (('features',), 'label', None, 3)
    with pytest.raises(UserError, match=r"'label' has 3 classes, but .*"
                       r'output_units=2 predicts fewer; set '
                       r'--config.model.output_units=3'):
      sources.load(c, loss='sparse_categorical_crossentropy', output_units=2)


def test_a_file_takes_every_other_column_and_needs_a_label(regression_csv):
  c = _data_config(source='csv', path=str(regression_csv), label='y',
                   group='group')
  splits = sources.load(c, loss='mse')
  assert (splits.feature_keys, splits.label_name, splits.group_name) == (
      ('a', 'b'), 'y', 'group')
  c.group = 'auto'  # A file has no group of its own: 'group' is a feature.
  with pytest.raises(UserError, match=r"column 'group': 'a' is not a number"):
    sources.load(c, loss='mse')
  full = config.get_config()
  full.data.update({'source': 'csv', 'path': str(regression_csv)})
  with pytest.raises(UserError, match=r"data.label='' is invalid: expected "
                     r'the label column with data.source=csv'):
    config.validate(full)


def test_tfds_not_prepared_and_no_download(tmp_path):
  c = _data_config(name='mnist', data_dir=str(tmp_path), download=False,
                   features=('image',), label='label', group=None)
  with pytest.raises(UserError, match="'mnist' is not prepared in .*tfds "
                     "build mnist"):
    sources.load(c, loss='sparse_categorical_crossentropy')
  assert not any(tmp_path.iterdir())


def test_unknown_tfds_dataset_and_split(tfds_dir):
  with pytest.raises(UserError, match="no TFDS dataset 'not_a_dataset'"):
    sources.load(_data_config(name='not_a_dataset'), loss='mse')
  with pytest.raises(UserError, match="data.test_split: 'holdout' is not a "
                     "split of 'diabetes'"):
    sources.load(_data_config(data_dir=str(tfds_dir), test_split='holdout'),
                 loss='mse')
