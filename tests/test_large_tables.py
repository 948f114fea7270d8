"""Tables as index sets into one table, and tables over data.max_memory_mb
memory-mapped from their cache: read, trained and resumed alike."""

import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import assert_weights_close, read_jsonl, run_cli
from in_process import run_main
from tfpipeline import atomic_files
from tfpipeline import config
from tfpipeline.data import sources
from tfpipeline.data import table_cache
from tfpipeline.errors import UserError

ROWS = 80_000  # 3 features, label and group codes: 1.5 MiB as float32.
SMALL_BUDGET = '--config.data.max_memory_mb=1'


def _write(path, rows=ROWS, bad_row=None):
  """y = 3a - 2b + c + 1 with a text group, as CSV or Parquet."""
  import pyarrow as pa
  from pyarrow import csv as arrow_csv
  from pyarrow import parquet
  rng = np.random.default_rng(5)
  a, b, c = (rng.normal(size=rows).astype(np.float32) for _ in range(3))
  if bad_row is not None:
    c[bad_row] = np.nan
  table = pa.table({'a': a, 'b': b, 'c': c,
                    'side': np.where(np.arange(rows) % 3, 'left', 'right'),
                    'y': 3 * a - 2 * b + c + 1})
  if path.suffix == '.parquet':
    parquet.write_table(table, path, row_group_size=30_000)
  else:
    arrow_csv.write_csv(table, path)
  return path


def _data_config(path, max_memory_mb=0, group='side'):
  data = config.get_config().data
  data.update({'source': 'parquet' if path.suffix == '.parquet' else 'csv',
               'path': str(path), 'label': 'y', 'group': group,
               'max_memory_mb': max_memory_mb})
  return data


def test_file_splits_are_index_sets_into_one_table(regression_csv):
  splits = sources.load(_data_config(regression_csv, group='group'),
                        loss='mse')
  table = splits.train.table
  assert splits.validation.table is table and splits.test.table is table
  rows = np.concatenate([getattr(splits, name).rows
                         for name in ('train', 'validation', 'test')])
  np.testing.assert_array_equal(np.sort(rows), np.arange(120))
  assert len(table) == 120 and not isinstance(table.features, np.memmap)


@pytest.mark.parametrize('name', ['table.csv', 'table.parquet'])
def test_a_table_over_the_budget_is_cached_beside_it_and_reads_alike(
    tmp_path, monkeypatch, name):
  path = _write(tmp_path / name)
  in_memory = sources.load(_data_config(path), loss='mse')
  converted = sources.load(_data_config(path, max_memory_mb=1), loss='mse')
  caches = [p for p in tmp_path.iterdir() if p != path]
  assert len(caches) == 1 and caches[0].name.endswith(table_cache.SUFFIX)
  metadata = json.loads((caches[0] / 'table.json').read_text())
  assert caches[0].name.startswith(f'{name}.{metadata["sha256"][:16]}.')
  assert metadata['rows'] == ROWS
  # A second run reads the cache: nothing is converted again.
  monkeypatch.setattr(table_cache, 'build', None)
  cached = sources.load(_data_config(path, max_memory_mb=1), loss='mse')
  assert isinstance(cached.train.table.features, np.memmap)
  for split in ('train', 'validation', 'test'):
    want = getattr(in_memory, split)
    for got in (getattr(converted, split), getattr(cached, split)):
      np.testing.assert_array_equal(got.rows, want.rows)
      for key, value in want.take().items():
        np.testing.assert_array_equal(got.take()[key], value)
  # Statistics in one streaming pass, equal to NumPy's over the split.
  features = in_memory.train.take()['features'].astype(np.float64)
  for split in (in_memory.train, cached.train):
    mean, variance = split.moments('features')
    np.testing.assert_allclose(mean, features.mean(axis=0), rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_allclose(variance, features.var(axis=0), rtol=1e-10)


def test_a_damaged_cache_is_converted_again(tmp_path):
  path = _write(tmp_path / 'table.csv')
  want = sources.load(_data_config(path, max_memory_mb=1),
                      loss='mse').test.take()['features']
  cache, = tmp_path.glob(f'*{table_cache.SUFFIX}')
  features = cache / 'features.bin'
  features.write_bytes(features.read_bytes()[:1000])  # Cut short.
  got = sources.load(_data_config(path, max_memory_mb=1), loss='mse')
  np.testing.assert_array_equal(got.test.take()['features'], want)
  assert features.stat().st_size == ROWS * 3 * 4
  assert sorted(p.name for p in tmp_path.iterdir()) == ['table.csv',
                                                       cache.name]


def test_a_bad_cell_in_a_large_table_leaves_no_cache(tmp_path):
  path = _write(tmp_path / 'table.csv', bad_row=ROWS - 7)
  with pytest.raises(UserError, match=rf"table.csv, row {ROWS - 5}, "
                     rf"feature 'c' is nan"):
    sources.load(_data_config(path, max_memory_mb=1), loss='mse')
  assert [p.name for p in tmp_path.iterdir()] == ['table.csv']


def test_an_unwritable_cache_directory_is_named(tmp_path, monkeypatch):
  path = _write(tmp_path / 'table.csv')

  def refuse(**_):
    raise PermissionError(13, 'Permission denied')

  monkeypatch.setattr(atomic_files.tempfile, 'mkdtemp', refuse)
  with pytest.raises(UserError, match=rf'table.csv: its cache cannot be '
                     rf'written in {tmp_path} \(Permission denied\); make '
                     rf'that directory writable'):
    sources.load(_data_config(path, max_memory_mb=1), loss='mse')
  assert [p.name for p in tmp_path.iterdir()] == ['table.csv']


def test_a_bad_label_in_a_large_table_leaves_no_cache(tmp_path):
  path = _write(tmp_path / 'table.csv')
  with pytest.raises(UserError, match=r"table.csv, row 2, label 'y' is "
                     r"[-0-9.]+: loss=binary_crossentropy needs labels 0 or "
                     r"1"):
    sources.load(_data_config(path, max_memory_mb=1),
                 loss='binary_crossentropy')
  assert [p.name for p in tmp_path.iterdir()] == ['table.csv']


NUMBERS = 20_000  # Rows of `_fill_numbers`.
_NUMBERS_SHAPE = {'rows_bound': NUMBERS, 'width': 3, 'labelled': True,
                  'grouped': False, 'metadata': {'source': 'numbers'}}


def _fill_numbers(writer, started=None):
  """Row i: features (i, -i, i / 2), label i mod 7, 1000 rows at a time;
  with `started`, sets it after the first batch and blocks."""
  for start in range(0, NUMBERS, 1000):
    i = np.arange(start, start + 1000, dtype=np.float32)
    writer.append(np.stack([i, -i, i / 2], axis=1), (i % 7)[:, None], None)
    if started:
      started.set()
      threading.Event().wait()


def _contents(table) -> tuple[bytes, bytes]:
  return np.asarray(table.features).tobytes(), np.asarray(
      table.labels).tobytes()


def _build_with_others(directories, barrier, results):
  """Builds each cache in `directories` at the same moment as the other
  processes: what it read (or the error), and any deleted file of the
  cache's that it still maps."""
  for directory in directories:
    barrier.wait()
    try:
      table = table_cache.build(directory, _fill_numbers, **_NUMBERS_SHAPE)
      contents = _contents(table)
    except Exception as e:  # pylint: disable=broad-except
      contents = repr(e)  # Compared: the next round still starts at once.
    barrier.wait()  # Every process has its table (still mapped) here.
    with open('/proc/self/maps', encoding='utf-8') as maps:
      deleted = [line for line in maps
                 if str(directory.parent) in line and '(deleted)' in line]
    results.put((str(directory), contents, deleted))


def test_concurrent_conversions_of_one_table_all_read_the_first_cache(
    tmp_path):
  """Workers (or runs sharing a disk) converting one table at once: each
  reads one complete cache, none a deleted one, and no scratch is left."""
  processes, rounds = 3, 4
  writer = table_cache.TableWriter(NUMBERS, 3, labelled=True, grouped=False)
  _fill_numbers(writer)
  want = _contents(writer.table())
  directories = [tmp_path / f'round{r}' / 'numbers.table'
                 for r in range(rounds)]
  for directory in directories:
    directory.parent.mkdir()
  context = multiprocessing.get_context('spawn')
  barrier, results = context.Barrier(processes), context.Queue()
  workers = [context.Process(target=_build_with_others,
                             args=(directories, barrier, results))
             for _ in range(processes)]
  for worker in workers:
    worker.start()
  got = [results.get(timeout=300) for _ in range(processes * rounds)]
  for worker in workers:
    worker.join(timeout=60)
  for directory, contents, deleted in got:
    assert contents == want, directory
    assert not deleted, deleted
  for directory in directories:
    assert list(directory.parent.iterdir()) == [directory]


def _build_until_killed(directory, started):
  table_cache.build(directory, lambda writer: _fill_numbers(writer, started),
                    **_NUMBERS_SHAPE)


def test_the_next_conversion_removes_a_killed_ones_scratch(tmp_path, caplog):
  directory = tmp_path / 'numbers.table'
  context = multiprocessing.get_context('spawn')
  started = context.Event()
  killed = context.Process(target=_build_until_killed,
                           args=(directory, started))
  killed.start()
  assert started.wait(timeout=300)
  os.kill(killed.pid, signal.SIGKILL)  # As the OOM killer does.
  killed.join(timeout=60)
  leftover, = tmp_path.iterdir()
  assert (leftover / directory.name / 'features.bin').stat().st_size > 0
  caplog.set_level(logging.WARNING)
  table = table_cache.build(directory, _fill_numbers, **_NUMBERS_SHAPE)
  assert np.asarray(table.labels)[-1, 0] == (NUMBERS - 1) % 7
  assert list(tmp_path.iterdir()) == [directory]
  assert any(f'removing {leftover}, left by process {killed.pid}, which has '
             f'ended' in r.getMessage() for r in caplog.records)


def test_a_run_reading_the_cache_removes_a_killed_conversions_scratch(
    tmp_path):
  """Another process completed the cache that a killed one was writing."""
  path = _write(tmp_path / 'table.csv')
  sources.load(_data_config(path, max_memory_mb=1), loss='mse')
  cache, = tmp_path.glob(f'*{table_cache.SUFFIX}')
  ended = subprocess.Popen([sys.executable, '-c', ''])
  ended.wait()
  stale = tmp_path / (f'.{cache.name}.scratch-{ended.pid}@'
                      f'{socket.gethostname()}-abcd_123')
  (stale / cache.name).mkdir(parents=True)
  (stale / cache.name / 'features.bin').write_bytes(b'\0' * 1024)
  sources.load(_data_config(path, max_memory_mb=1), loss='mse')
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      [cache.name, 'table.csv'])


def _fake_cgroup(tmp_path, monkeypatch, membership, limits):
  """/proc/self/cgroup says `membership`; `limits` are {file: text} under a
  fake /sys/fs/cgroup."""
  proc = tmp_path / 'proc_self_cgroup'
  proc.write_text(membership)
  root = tmp_path / 'sys_fs_cgroup'
  for name, text in limits.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
  monkeypatch.setattr(table_cache, '_PROC_CGROUP', proc)
  monkeypatch.setattr(table_cache, '_CGROUP', root)


@pytest.mark.parametrize('membership, limits', [
    # cgroup v2 (Kubernetes, Docker on a recent host): the pod's limit, on
    # a parent of the container's group.
    ('0::/kubepods/pod1/container\n', {
        'kubepods/pod1/memory.max': '2147483648\n',
        'kubepods/pod1/container/memory.max': 'max\n'}),
    # cgroup v1 (older Docker, Colab): the container's group mounted as the
    # hierarchy's root.
    ('12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n', {
        'memory/memory.limit_in_bytes': '2147483648\n'}),
])
def test_the_default_memory_budget_is_half_a_containers_limit(
    tmp_path, monkeypatch, membership, limits):
  _fake_cgroup(tmp_path, monkeypatch, membership, limits)
  assert table_cache.memory_budget(0) == 1 << 30
  assert table_cache.memory_budget(3) == 3 << 20  # data.max_memory_mb wins.


def test_without_a_container_limit_the_budget_is_half_the_ram(
    tmp_path, monkeypatch):
  _fake_cgroup(tmp_path, monkeypatch, '4:memory:/user\n0::/user\n', {
      'memory.max': 'max\n',
      'memory/user/memory.limit_in_bytes': '9223372036854771712\n'})
  ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  assert table_cache.memory_budget(0) == ram // 2


@pytest.fixture(scope='module')
def large_csv(tmp_path_factory):
  return _write(tmp_path_factory.mktemp('large') / 'table.csv')


def _train(model_dir, path, *flags):
  result = run_cli(f'--model_dir={model_dir}', '--config.data.source=csv',
                   f'--config.data.path={path}', '--config.data.label=y',
                   '--config.data.group=side',
                   '--config.train.global_batch_size=512', *flags)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_a_cached_table_trains_resumes_and_mirrors_as_in_memory(
    tmp_path, large_csv):
  def weights(model_dir):
    import tfpipeline
    return tfpipeline.load_model(model_dir).get_weights()

  reference = tmp_path / 'in_memory'
  _train(reference, large_csv, '--config.train.epochs=3')

  # Two epochs in memory, resumed for the third from the cache: the budget
  # may change on a resume, and the steps are the same.
  resumed = tmp_path / 'resumed'
  _train(resumed, large_csv, '--config.train.epochs=2')
  result = _train(resumed, large_csv, '--config.train.epochs=3',
                  SMALL_BUDGET)
  assert 'converting' in result.stderr and 'memory-mapped cache' in (
      result.stderr)
  assert 'resuming from the checkpoint at step' in result.stderr
  assert_weights_close(weights(resumed), weights(reference))
  assert (json.loads((resumed / 'metrics.json').read_text()) ==
          json.loads((reference / 'metrics.json').read_text()))
  provenance = [json.loads((d / 'report' / 'report.json').read_text())[
      'provenance']['data'] for d in (resumed, reference)]
  assert provenance[0] == provenance[1]

  # Mirrored over two logical CPUs, reading the cache (reused).
  mirrored = tmp_path / 'mirrored'
  result = _train(mirrored, large_csv, '--config.train.epochs=3',
                  SMALL_BUDGET, '--strategy=mirrored', '--cpu_devices=2')
  assert 'from its memory-mapped cache' in result.stderr
  assert 'converting' not in result.stderr
  assert_weights_close(weights(mirrored), weights(reference), atol=1e-5)
  losses = [[r['val_loss'] for r in read_jsonl(d / 'metrics.jsonl')
             if 'val_loss' in r] for d in (mirrored, reference)]
  assert len(losses[0]) == 3
  np.testing.assert_allclose(*losses, rtol=1e-5)

  # predict scores the file through the same cache.
  output = tmp_path / 'scores.csv'
  result = run_main(str(mirrored), f'--input={large_csv}',
                    f'--output={output}', command='predict')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'converting' not in result.stderr
  header = output.read_text().split('\n', 1)[0].split(',')
  scores = np.loadtxt(output, delimiter=',', skiprows=1, usecols=[
      header.index(name) for name in ('index', 'source_row', 'y',
                                      'prediction')])
  assert len(scores) == ROWS
  np.testing.assert_array_equal(scores[:, 0], np.arange(ROWS))
  np.testing.assert_array_equal(scores[:, 1], np.arange(ROWS) + 2)  # Lines.
  assert np.corrcoef(scores[:, 2], scores[:, 3])[0, 1] > 0.99
