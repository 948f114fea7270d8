"""tfpipeline.data.sources.table_file: CSV and Parquet tables, bad
cells refused by file, row and column."""

import numpy as np
import pytest

from data_configs import csv_config
from data_configs import data_config
from tfpipeline import config
from tfpipeline.data import sources
from tfpipeline.errors import UserError


def test_csv_splits_are_seeded_disjoint_and_complete(regression_csv):
  splits = sources.load(csv_config(regression_csv), loss='mse')
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
  again = sources.load(csv_config(regression_csv), loss='mse')
  np.testing.assert_array_equal(again.test.take()['features'],
                                splits.test.take()['features'])


def test_csv_without_declared_features_uses_every_other_column(
    regression_csv):
  splits = sources.load(csv_config(regression_csv, features=()), loss='mse')
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
    sources.load(csv_config(regression_csv), loss='mse')
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
    sources.load(csv_config(path), loss='mse')
  assert str(error.value).startswith(str(path))


def test_a_header_wider_than_64_kib_is_read_whole(tmp_path):
  # 7,001 names in 98 KB: the first 64 KiB held 4,682 of them.
  names = [f'feature_{i:05d}' for i in range(7000)]
  rows = np.arange(20 * 7001).reshape(20, 7001) % 97
  path = tmp_path / 'wide.csv'
  path.write_text('\n'.join([','.join(names + ['y'])] + [
      ','.join(map(str, row)) for row in rows]) + '\n')
  splits = sources.load(csv_config(path, features=(), group=''), loss='mse')
  assert splits.feature_names == tuple(names)
  train = splits.train.take()
  np.testing.assert_array_equal(train['features'],
                                rows[splits.train.rows, :-1])
  np.testing.assert_array_equal(train['labels'][:, 0],
                                rows[splits.train.rows, -1])


def test_gzip_csv_reads_like_the_plain_file(regression_csv, tmp_path):
  import gzip
  packed = tmp_path / 'data.csv.gz'
  packed.write_bytes(gzip.compress(regression_csv.read_bytes()))
  plain = sources.load(csv_config(regression_csv), loss='mse')
  read = sources.load(csv_config(packed), loss='mse')
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
    sources.load(csv_config(packed), loss='mse')


def test_blank_line_is_named_not_skipped(regression_csv):
  lines = regression_csv.read_text().splitlines()
  regression_csv.write_text('\n'.join(lines[:4] + [''] + lines[4:]) + '\n')
  with pytest.raises(UserError, match=r'data.csv, row 5: 0 cells, header '
                     r'has 4'):
    sources.load(csv_config(regression_csv), loss='mse')


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
  want = sources.load(csv_config(regression_csv), loss='mse')
  for path in (tmp_path / 'one.parquet', parts):
    got = sources.load(csv_config(path, source='parquet'), loss='mse')
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
    sources.load(csv_config(parts, source='parquet'), loss='mse')


@pytest.mark.parametrize('column, fragment', [
    (['1.0', 'x'], r"column 'b' holds string, not numbers"),
    ([1.0, None], r"row 1, column 'b' is null"),
])
def test_parquet_cells_that_are_not_numbers(tmp_path, column, fragment):
  _parquet(tmp_path / 'bad.parquet', {'a': [1.0, 2.0], 'b': column,
                                      'y': [0.0, 1.0]})
  with pytest.raises(UserError, match=fragment):
    sources.load(data_config(source='parquet', features=('a', 'b'),
                             path=str(tmp_path / 'bad.parquet'), label='y',
                             group=None), loss='mse')


def test_missing_file_says_so(tmp_path):
  with pytest.raises(UserError, match=r'data.path: .*nothing.csv does not '
                     r'exist'):
    sources.load(csv_config(tmp_path / 'nothing.csv'), loss='mse')


def test_a_file_takes_every_other_column_and_needs_a_label(regression_csv):
  c = data_config(source='csv', path=str(regression_csv), label='y',
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
