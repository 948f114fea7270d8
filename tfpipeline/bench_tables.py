"""Reading a large table: the `table_read` case of `python -m tfpipeline.bench`.

A 1,000,000-row table of 20 float columns and a target is written once into
`--bench_data_dir` as CSV, gzip-compressed CSV and Parquet. Each reader
loads it into train, validation and test splits (`sources.load`, as a run
does), in its own process, which imports no TensorFlow; readers alternate
over rounds and medians are reported: wall seconds, and peak RSS (VmHWM,
Linux) over the process's RSS before reading, also as a multiple of the
table's float32 size.

`python_csv` is the reader tfpipeline had before Arrow (Python's `csv`
module into lists of strings, float64 arrays, then float32 splits), kept
here as the baseline.
"""

import json
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np

TABLE_READ = 'table_read'
ROWS, COLUMNS = 1_000_000, 20
READERS = ('python_csv', 'arrow_csv', 'arrow_csv_gz', 'parquet')
_FILES = {'python_csv': 'table.csv', 'arrow_csv': 'table.csv',
          'arrow_csv_gz': 'table.csv.gz', 'parquet': 'table.parquet'}


def _write_table(directory: pathlib.Path, rows: int) -> None:
  """The table in each format, once (about 1 GB of CSV text per 5M rows)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from pyarrow import csv as arrow_csv  # pylint: disable=g-import-not-at-top
  from pyarrow import parquet  # pylint: disable=g-import-not-at-top
  if all((directory / name).exists() for name in _FILES.values()):
    return
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((rows, COLUMNS)).astype(np.float32)
  columns = {f'x{i}': x[:, i] for i in range(COLUMNS)}
  columns['target'] = x @ rng.standard_normal(COLUMNS).astype(np.float32)
  table = pa.table(columns)
  arrow_csv.write_csv(table, directory / 'table.csv')
  with pa.CompressedOutputStream(str(directory / 'table.csv.gz'),
                                 'gzip') as out:
    arrow_csv.write_csv(table, out)
  parquet.write_table(table, directory / 'table.parquet')


def _python_csv(path: pathlib.Path) -> list:
  """The pre-Arrow reader: csv module, float64 columns, float32 splits."""
  import csv  # pylint: disable=g-import-not-at-top
  with open(path, newline='') as f:
    reader = csv.reader(f)
    header = next(reader)
    rows = list(reader)
  columns = {name: [] for name in header}
  for row in rows:
    for name, cell in zip(header, row):
      columns[name].append(cell.strip())
  arrays = {name: np.asarray(cells, dtype=np.float64)
            for name, cells in columns.items()}
  x = np.concatenate([arrays[name].reshape(-1, 1) for name in header
                      if name != 'target'], axis=1).astype(np.float32)
  order = np.random.default_rng(0).permutation(len(x))
  train, test = int(0.7 * len(x)), int(0.85 * len(x))
  return [x[order[:train]], x[order[train:test]], x[order[test:]]]


def measure(setting: dict) -> dict:
  """One reader, in this process: seconds and RSS (worker side)."""
  reader, path = setting['reader'], pathlib.Path(setting['path'])
  from tfpipeline import config  # pylint: disable=g-import-not-at-top
  from tfpipeline.data import sources  # pylint: disable=g-import-not-at-top
  import pyarrow.csv  # pylint: disable=g-import-not-at-top,unused-import
  import pyarrow.parquet  # pylint: disable=g-import-not-at-top,unused-import
  data = config.get_config().data
  data.update({'source': 'parquet' if reader == 'parquet' else 'csv',
               'path': str(path), 'label': 'target', 'group': None})
  before = _peak_rss_mib()
  start = time.perf_counter()
  if reader == 'python_csv':
    splits = _python_csv(path)
  else:
    splits = sources.load(data, loss='mse')
  seconds = time.perf_counter() - start
  del splits
  return {'reader': reader, 'seconds': seconds, 'rss_before_mib': before,
          'peak_rss_mib': _peak_rss_mib()}


def _peak_rss_mib() -> float:
  """This process's peak RSS (Linux's VmHWM: unlike ru_maxrss, it does not
  carry over the peak of the process that started this one)."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  raise OSError('no VmHWM in /proc/self/status (Linux only)')


def table_case(data_dir: str, rounds: int = 3, rows: int = ROWS) -> list:
  """Every reader, alternated over `rounds` processes each; medians."""
  directory = pathlib.Path(data_dir) / f'table_{rows}'
  print(f'{TABLE_READ}: writing the table once into {directory}',
        file=sys.stderr, flush=True)
  _write_table(directory, rows)
  float32_mib = rows * (COLUMNS + 1) * 4 / 2**20
  runs = {reader: [] for reader in READERS}
  for round_ in range(rounds):
    for reader in READERS:
      print(f'{TABLE_READ}: {reader} ({round_ + 1}/{rounds})',
            file=sys.stderr, flush=True)
      setting = {'reader': reader, 'path': str(directory / _FILES[reader])}
      completed = subprocess.run(
          [sys.executable, '-m', 'tfpipeline.bench_tables',
           json.dumps(setting)], capture_output=True, text=True, check=False)
      lines = completed.stdout.strip().splitlines()
      runs[reader].append(json.loads(lines[-1]) if completed.returncode == 0
                          else {'error': completed.stderr.strip()[-300:]})
  results = []
  for reader in READERS:
    good = [r for r in runs[reader] if 'error' not in r]
    result = {'case': TABLE_READ, 'reader': reader, 'rows': rows,
              'columns': COLUMNS + 1, 'float32_mib': float32_mib,
              'file_mib': (directory / _FILES[reader]).stat().st_size / 2**20,
              'rounds': rounds}
    if not good:
      result['error'] = runs[reader][-1]['error']
    else:
      over = [r['peak_rss_mib'] - r['rss_before_mib'] for r in good]
      result.update(
          seconds=statistics.median(r['seconds'] for r in good),
          seconds_all=[r['seconds'] for r in good],
          rss_over_baseline_mib=statistics.median(over),
          rss_vs_float32=statistics.median(over) / float32_mib)
    results.append(result)
  baseline = next((r['seconds'] for r in results
                   if r['reader'] == 'python_csv' and 'seconds' in r), None)
  for result in results:
    if baseline and 'seconds' in result:
      result['speedup_vs_python_csv'] = baseline / result['seconds']
  return results


def print_results(results: list) -> None:
  print(f'{"reader":<14}{"file MiB":>9}{"read s":>8}{"vs python_csv":>15}'
        f'{"RSS over baseline MiB":>23}{"x float32":>10}')
  for r in results:
    if 'error' in r:
      print(f'{r["reader"]:<14}  failed: {r["error"][:80]}')
      continue
    print(f'{r["reader"]:<14}{r["file_mib"]:>9.0f}{r["seconds"]:>8.2f}'
          f'{r.get("speedup_vs_python_csv", float("nan")):>14.1f}x'
          f'{r["rss_over_baseline_mib"]:>23.0f}{r["rss_vs_float32"]:>10.2f}')


if __name__ == '__main__':
  print(json.dumps(measure(json.loads(sys.argv[1]))))
