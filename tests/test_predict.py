"""`python -m tfpipeline.predict`: a trained model on new rows."""

import csv
import shutil

import numpy as np
import pytest

from conftest import run_cli
from in_process import run_main

DIABETES = ('age', 'sex', 'bmi', 'bp', 's1', 's2', 's3', 's4', 's5', 's6')


def _predict(*args):
  """The command in this process: it shows no console of its own here."""
  return run_main(*args, command='predict')


def _predict_in_a_process(*args):
  return run_cli(*args, command='predict')


def _read(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _diabetes_csv(path, rows, label=True):
  from sklearn.datasets import load_diabetes
  data = load_diabetes(scaled=False)
  columns = list(DIABETES) + (['progression'] if label else [])
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for x, y in zip(data.data[:rows], data.target[:rows]):
      writer.writerow([*x] + ([y] if label else []))
  return data.data[:rows].astype(np.float32), data.target[:rows]


def test_a_tfds_split_predicts_what_the_report_recorded(diabetes_run,
                                                        tmp_path):
  model_dir, _ = diabetes_run
  output = tmp_path / 'test.csv'
  result = _predict(str(model_dir), '--input=tfds:test', f'--output={output}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.last_line == f'wrote 67 predictions to {output}'
  rows = _read(output)
  recorded = _read(model_dir / 'report' / 'predictions.csv')
  # The report's columns, less the features.
  assert list(rows[0]) == [c for c in recorded[0] if c not in DIABETES] == [
      'index', 'source_row', 'progression', 'group:sex', 'prediction']
  assert [r['index'] for r in rows] == [str(i) for i in range(67)]
  by_index = {r['index']: r for r in recorded}
  for row in rows:  # Same model and inputs (the report's ran under XLA).
    assert float(row['prediction']) == pytest.approx(
        float(by_index[row['index']]['prediction']), rel=1e-5)
    for column in ('source_row', 'progression', 'group:sex'):
      assert row[column] == by_index[row['index']][column]


def test_a_csv_without_label_is_predicted_row_by_row(diabetes_run, tmp_path):
  import tfpipeline
  model_dir, _ = diabetes_run
  features, _ = _diabetes_csv(tmp_path / 'new.csv', 25, label=False)
  output = tmp_path / 'out.csv'
  result = _predict_in_a_process(
      str(model_dir), f'--input={tmp_path / "new.csv"}', f'--output={output}',
      '--batch_size=7')
  assert result.returncode == 0, result.stderr[-3000:]
  rows = _read(output)
  assert list(rows[0]) == ['index', 'source_row', 'group:sex', 'prediction']
  # source_row: the file's line, the header being line 1.
  assert [int(r['source_row']) for r in rows] == list(range(2, 27))
  want = tfpipeline.load_model(model_dir).predict(features, verbose=0)
  np.testing.assert_allclose([float(r['prediction']) for r in rows],
                             want[:, 0], rtol=1e-5)
  # The console: its own line only.
  assert result.stderr.strip().splitlines() == [result.last_line]


def test_a_changed_model_is_refused_with_exit_1(diabetes_run, tmp_path):
  model_dir, _ = diabetes_run
  copy = tmp_path / 'run'
  shutil.copytree(model_dir, copy)
  with open(copy / 'model.keras', 'ab') as f:
    f.write(b'\0')
  _diabetes_csv(tmp_path / 'new.csv', 5)
  output = tmp_path / 'out.csv'
  result = _predict(str(copy), f'--input={tmp_path / "new.csv"}',
                    f'--output={output}')
  assert result.returncode == 1, result.stderr[-3000:]
  assert result.last_line.startswith(f'error: {copy / "model.keras"} changed')
  assert not output.exists()


def _bad(tmp_path, model_dir, case):
  new = tmp_path / 'new.csv'
  _diabetes_csv(new, 5)
  lines = new.read_text().splitlines()
  args = {
      'no model_dir': [],
      'not a run': [str(tmp_path)],
      'no --input': [str(model_dir), f'--output={tmp_path / "o.csv"}'],
      'unknown input kind': [str(model_dir), f'--input={tmp_path}/new.parq',
                             f'--output={tmp_path / "o.csv"}'],
      'tfds split that is not': [str(model_dir), '--input=tfds:holdout',
                                 f'--output={tmp_path / "o.csv"}'],
      'output is the input': [str(model_dir), f'--input={new}',
                              f'--output={new}'],
      'no output directory': [str(model_dir), f'--input={new}',
                              f'--output={tmp_path}/none/o.csv'],
      'bad flag': [str(model_dir), '--batch_size=0'],
  }.get(case)
  if args is None:  # A file with a bad cell.
    edit = {'missing column': lambda l: [l[0].replace('bmi', 'bmx')] + l[1:],
            'text cell': lambda l: l[:3] + [l[3].replace(',', ',x', 1)] + l[4:],
            'latin-1 file': None}[case]
    if edit:
      new.write_text('\n'.join(edit(lines)) + '\n')
    else:
      new.write_bytes(new.read_bytes() + 'caf\u00e9\n'.encode('latin-1'))
    args = [str(model_dir), f'--input={new}', f'--output={tmp_path}/o.csv']
  return args


@pytest.mark.parametrize('case, fragment', [
    ('no model_dir', 'usage: python -m tfpipeline.predict MODEL_DIR'),
    ('not a run', 'has no MANIFEST.json'),
    ('no --input', '--input is required'),
    ('unknown input kind', 'expected a .csv, .csv.gz, .npz or .parquet file'),
    ('tfds split that is not', "'holdout' is not a split of 'diabetes'"),
    ('output is the input', 'is the input file'),
    ('no output directory', 'none/o.csv: no directory'),
    ('bad flag', '--batch_size'),
    ('missing column', "no column 'bmi' (from data.features)"),
    ('text cell', "new.csv, row 4, column 'sex': 'x"),
    ('latin-1 file', 'not UTF-8 (byte 0xe9'),
])
def test_bad_input_exits_2_with_one_line(diabetes_run, tmp_path, case,
                                         fragment):
  model_dir, _ = diabetes_run
  result = _predict(*_bad(tmp_path, model_dir, case))
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.last_line.startswith('error: ')
  assert fragment in result.last_line
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'o.csv').exists()


def test_source_rows_number_rows_as_errors_do(tmp_path):
  """CSV: the row a spreadsheet shows (the header is row 1); Parquet: the
  row over all parts in order; NPZ: the array index."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  from tfpipeline import config
  from tfpipeline.data import sources
  from tfpipeline.errors import UserError
  values = np.arange(12, dtype=np.float32)
  (tmp_path / 'data.csv').write_text(
      'x,y\n' + ''.join(f'{v},{-v}\n' for v in values))
  (tmp_path / 'parts').mkdir()
  for part, rows in enumerate((values[:5], values[5:])):
    pq.write_table(pa.table({'x': rows, 'y': -rows}),
                   tmp_path / 'parts' / f'part-{part}.parquet')
  np.savez(tmp_path / 'data.npz', x=values, y=-values)
  data_config = config.get_config().data
  data_config.update({'features': ('x',), 'label': 'y', 'group': None})

  def read(source, name):
    data_config.update({'source': source, 'path': str(tmp_path / name)})
    return sources.read_rows(data_config)

  for source, name, first in (('csv', 'data.csv', 2),
                              ('parquet', 'parts', 0), ('npz', 'data.npz', 0)):
    split = read(source, name)
    np.testing.assert_array_equal(split.source_rows(), np.arange(12) + first)
    np.testing.assert_array_equal(split.source_rows([7, 3]),
                                  np.array([7, 3]) + first)
    np.testing.assert_array_equal(
        split.take(split.source_rows() - first)['features'][:, 0], values)
  # The CSV row whose source_row is 5 is the one an error calls row 5.
  assert read('csv', 'data.csv').source_rows()[3] == 5
  lines = (tmp_path / 'data.csv').read_text().splitlines()
  lines[4] = lines[4].replace(',', ',x', 1)
  (tmp_path / 'data.csv').write_text('\n'.join(lines) + '\n')
  with pytest.raises(UserError, match=r"data\.csv, row 5, column 'y'"):
    read('csv', 'data.csv')
  # A quoted line break leaves the row one row (as in a spreadsheet).
  (tmp_path / 'data.csv').write_text('x,y,note\n1,2,"a\nb"\n3,4,c\n')
  np.testing.assert_array_equal(read('csv', 'data.csv').source_rows(), [2, 3])


def test_text_a_spreadsheet_would_run_is_made_inert():
  from tfpipeline.report import predictions_csv
  cases = {'=HYPERLINK("http://x","y")': '\'=HYPERLINK("http://x","y")',
           '+cmd': "'+cmd", '-2+3': "'-2+3", '@SUM(A1)': "'@SUM(A1)",
           '\tx': "'\tx", '\rx': "'\rx", '-': "'-",
           '-1': '-1', '+1.5': '+1.5', '-1.2e-05': '-1.2e-05', '.5': '.5',
           'a=b': 'a=b', '': ''}
  assert {text: predictions_csv.inert(text) for text in cases} == cases
