"""Reading a large table: the `table_read` case of `python -m tfpipeline.bench`.

A 1,000,000-row table of 20 float columns and a target is written once into
`--bench_data_dir` as CSV, gzip-compressed CSV and Parquet. Each reader
loads it into train, validation and test splits (`sources.load`, as a run
does), then makes one pass over the training split's features (the
normalization statistics), in its own process, which imports no
TensorFlow; readers alternate over rounds and medians are reported: wall
seconds of the load and of the pass, and peak RSS (VmHWM, Linux) over the
process's RSS before reading, also as a multiple of the table's float32
size, with the anonymous and file-backed RSS at the end, and the rows per
second of random 256-row index batches of the training split read by
`Split.take`, the call the input pipeline makes.

`csv_to_cache` reads the CSV with data.max_memory_mb set below the table's
size (a fifth of it), its cache removed first: the one-off conversion;
`csv_cached` then opens that cache, memory-mapped, as every later run does.
`python_csv` is the reader tfpipeline had before Arrow (Python's `csv`
module into lists of strings, float64 arrays, then float32 splits), kept
here as the baseline.
"""

import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

TABLE_READ = 'table_read'
ROWS, COLUMNS = 1_000_000, 20
READERS = ('python_csv', 'arrow_csv', 'arrow_csv_gz', 'parquet',
           'csv_to_cache', 'csv_cached')
CACHED = ('csv_to_cache', 'csv_cached')
# Random index batches read after the load: 200 of 256 training rows.
_BATCHES, _BATCH_ROWS = 200, 256
_FILES = {'python_csv': 'table.csv', 'arrow_csv': 'table.csv',
          'arrow_csv_gz': 'table.csv.gz', 'parquet': 'table.parquet',
          'csv_to_cache': 'table.csv', 'csv_cached': 'table.csv'}


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
  from tfpipeline.data import table_cache  # pylint: disable=g-import-not-at-top
  # The readers' code is loaded before the baseline: its pages are not data.
  import pyarrow.csv  # pylint: disable=g-import-not-at-top,unused-import
  import pyarrow.dataset  # pylint: disable=g-import-not-at-top,unused-import
  import pyarrow.parquet  # pylint: disable=g-import-not-at-top,unused-import
  data = config.get_config().data
  data.update({'source': 'parquet' if reader == 'parquet' else 'csv',
               'path': str(path), 'label': 'target', 'group': None,
               'max_memory_mb': setting.get('max_memory_mb', 0)})
  if reader == 'csv_to_cache':
    for cache in path.parent.glob(f'{path.name}.*{table_cache.SUFFIX}'):
      shutil.rmtree(cache)
  before = _status_mib('VmHWM')
  start = time.perf_counter()
  if reader == 'python_csv':
    splits = _python_csv(path)
    start_pass = time.perf_counter()
    splits[0].astype(np.float64).var(axis=0)
    cached = False
  else:
    splits = sources.load(data, loss='mse')
    start_pass = time.perf_counter()
    splits.train.moments('features')
    cached = isinstance(splits.train.table.features, np.memmap)
  end = time.perf_counter()
  rows_per_s = None
  if reader != 'python_csv':  # Random batches, as the input pipeline reads.
    batches = np.random.default_rng(0).integers(
        len(splits.train), size=(_BATCHES, _BATCH_ROWS))
    start_batches = time.perf_counter()
    for positions in batches:
      splits.train.take(positions)
    rows_per_s = batches.size / (time.perf_counter() - start_batches)
  result = {'reader': reader, 'seconds': start_pass - start,
            'pass_seconds': end - start_pass, 'cached': cached,
            'batch_rows_per_s': rows_per_s,
            'rss_before_mib': before, 'peak_rss_mib': _status_mib('VmHWM'),
            'rss_anon_mib': _status_mib('RssAnon'),
            'rss_file_mib': _status_mib('RssFile')}
  del splits
  return result


def _status_mib(field: str) -> float:
  """A memory figure of this process from /proc/self/status, in MiB
  (VmHWM, the peak RSS: unlike ru_maxrss, it does not carry over the peak
  of the process that started this one)."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(f'{field}:'):
        return int(line.split()[1]) / 1024
  raise OSError(f'no {field} in /proc/self/status (Linux only)')


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
      setting = {'reader': reader, 'path': str(directory / _FILES[reader]),
                 # Below the table's size: it is cached and memory-mapped.
                 'max_memory_mb': max(1, int(float32_mib / 5))
                                  if reader in CACHED else 0}
      completed = subprocess.run(
          [sys.executable, '-m', 'tfpipeline.bench.table_reading',
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
          pass_seconds=statistics.median(r['pass_seconds'] for r in good),
          cached=all(r['cached'] for r in good),
          rss_over_baseline_mib=statistics.median(over),
          rss_vs_float32=statistics.median(over) / float32_mib,
          batch_rows_per_s=None if reader == 'python_csv' else
          statistics.median(r['batch_rows_per_s'] for r in good),
          rss_anon_mib=statistics.median(r['rss_anon_mib'] for r in good),
          rss_file_mib=statistics.median(r['rss_file_mib'] for r in good))
    results.append(result)
  baseline = next((r['seconds'] for r in results
                   if r['reader'] == 'python_csv' and 'seconds' in r), None)
  for result in results:
    if baseline and 'seconds' in result:
      result['speedup_vs_python_csv'] = baseline / result['seconds']
  return results


def print_results(results: list) -> None:
  print(f'{"reader":<14}{"file MiB":>9}{"read s":>8}{"vs python_csv":>15}'
        f'{"pass s":>8}{"peak RSS over base MiB":>24}{"x float32":>10}'
        f'{"anon MiB":>10}{"file MiB":>10}{"batch rows/s":>14}')
  for r in results:
    if 'error' in r:
      print(f'{r["reader"]:<14}  failed: {r["error"][:80]}')
      continue
    print(f'{r["reader"]:<14}{r["file_mib"]:>9.0f}{r["seconds"]:>8.2f}'
          f'{r.get("speedup_vs_python_csv", float("nan")):>14.1f}x'
          f'{r["pass_seconds"]:>8.2f}{r["rss_over_baseline_mib"]:>24.0f}'
          f'{r["rss_vs_float32"]:>10.2f}{r["rss_anon_mib"]:>10.0f}'
          f'{r["rss_file_mib"]:>10.0f}' + (
              f'{r["batch_rows_per_s"]:>14,.0f}' if r['batch_rows_per_s']
              else f'{"-":>14}'))


if __name__ == '__main__':
  print(json.dumps(measure(json.loads(sys.argv[1]))))
