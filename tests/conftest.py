"""Shared fixtures: small data files, a prepared TFDS dir, a CLI runner."""

import contextlib
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
if 'TFDS_DATA_DIR' not in os.environ:
  # TFDS's default data_dir, read when TFDS is imported: one per test
  # process (pytest-xdist runs several), removed at its exit, so that no two
  # prepare the diabetes data of a run without data.data_dir in one place.
  _TFDS_DEFAULT_DIR = tempfile.TemporaryDirectory(prefix='tfds-default-')
  os.environ['TFDS_DATA_DIR'] = _TFDS_DEFAULT_DIR.name

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory) -> pathlib.Path:
  """A TFDS data_dir with the package's diabetes dataset prepared once."""
  from tfpipeline import config
  from tfpipeline.data import sources
  data_dir = tmp_path_factory.mktemp('tfds')
  data_config = config.get_config().data
  data_config.data_dir = str(data_dir)
  sources.load(data_config, loss='mse')
  return data_dir


@pytest.fixture(scope='session', params=['array_record', 'tfrecord'])
def digits_dir(request, tmp_path_factory) -> pathlib.Path:
  """A TFDS data_dir with the package's digits images, in each file format
  (TFRecord is converted to ArrayRecord on first read)."""
  import tfds_fixtures
  data_dir = tmp_path_factory.mktemp(f'digits-{request.param}')
  tfds_fixtures.prepare('digits', data_dir, request.param)
  return data_dir


@pytest.fixture(scope='session')
def digits_array_record_dir(tmp_path_factory) -> pathlib.Path:
  """The digits in ArrayRecord only, for tests the file format cannot
  change (both formats are read by the same random-access path)."""
  import tfds_fixtures
  data_dir = tmp_path_factory.mktemp('digits-ar')
  tfds_fixtures.prepare('digits', data_dir, 'array_record')
  return data_dir


@pytest.fixture(scope='session')
def text_dir(tmp_path_factory) -> pathlib.Path:
  """A TFDS data_dir with the tests' tiny_reviews text dataset."""
  import tfds_fixtures
  data_dir = tmp_path_factory.mktemp('text')
  tfds_fixtures.prepare('tiny_reviews', data_dir, 'array_record')
  return data_dir


@pytest.fixture(scope='session')
def diabetes_run(tmp_path_factory, tfds_dir):
  """The embedded default at its full default settings, run once: its
  model_dir and CLI result. Tests that change files must copy it first."""
  model_dir = tmp_path_factory.mktemp('diabetes') / 'run'
  result = run_cli(f'--model_dir={model_dir}',
                   f'--config.data.data_dir={tfds_dir}')
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir, result


@pytest.fixture
def regression_csv(tmp_path) -> pathlib.Path:
  """120 rows: y = 3 a - 2 b + 1 and a text group column."""
  rng = np.random.default_rng(7)
  a, b = rng.normal(size=120), rng.normal(size=120)
  y = 3 * a - 2 * b + 1
  path = tmp_path / 'data.csv'
  lines = ['a,b,group,y'] + [f'{x1:.6f},{x2:.6f},{"ab"[i % 2]},{t:.6f}'
                             for i, (x1, x2, t) in enumerate(zip(a, b, y))]
  path.write_text('\n'.join(lines) + '\n')
  return path


class CliResult:
  def __init__(self, completed: subprocess.CompletedProcess):
    self.returncode = completed.returncode
    self.stdout = completed.stdout
    self.stderr = completed.stderr

  @property
  def last_line(self) -> str:
    lines = self.stderr.strip().splitlines()
    return lines[-1] if lines else ''


def run_cli(*args: str, cwd=REPO, command='train') -> CliResult:
  """Runs `python -m tfpipeline.COMMAND ARGS` in a fresh process, with the
  console a user gets (no TF_CPP_MIN_LOG_LEVEL of the tests')."""
  completed = subprocess.run(
      [sys.executable, '-m', f'tfpipeline.{command}', *args], cwd=cwd,
      capture_output=True, text=True, timeout=600, env=cli_env())
  return CliResult(completed)


def start_cli(*args: str) -> subprocess.Popen:
  """Starts `python -m tfpipeline.train ARGS`; stderr is piped."""
  return subprocess.Popen(
      [sys.executable, '-m', 'tfpipeline.train', *args], cwd=REPO,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
      env={**os.environ, 'PYTHONPATH': str(REPO)})


def start_workers(count: int, *args: str,
                  cwd=lambda index: REPO) -> list[subprocess.Popen]:
  """Starts a cluster of `count` processes of `python -m tfpipeline.train
  ARGS` on 127.0.0.1 (TF_CONFIG; worker 0 is the chief), chief first, each
  in its working directory `cwd(index)`; stderr is piped."""
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  workers = [f'127.0.0.1:{s.getsockname()[1]}' for s in sockets]
  for s in sockets:
    s.close()
  return [subprocess.Popen(
      [sys.executable, '-m', 'tfpipeline.train', *args], cwd=cwd(index),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
      env={**os.environ, 'PYTHONPATH': str(REPO), 'TF_CONFIG': json.dumps(
          {'cluster': {'worker': workers},
           'task': {'type': 'worker', 'index': index}})})
          for index in range(count)]


def wait_for_records(process: subprocess.Popen, model_dir: pathlib.Path,
                     records: int) -> bool:
  """Waits until the run's metrics.jsonl holds `records` lines; False if
  the process ended first."""
  log = model_dir / 'metrics.jsonl'
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and process.poll() is None:
    if log.exists() and len(log.read_text().splitlines()) >= records:
      return True
    time.sleep(0.02)
  return False


def signal_after(process: subprocess.Popen, model_dir: pathlib.Path,
                 records: int, signum: int) -> tuple[int, str]:
  """Sends `signum` once the run's metrics.jsonl holds `records` lines;
  returns the process's exit code and stderr."""
  if wait_for_records(process, model_dir, records):
    process.send_signal(signum)
  _, stderr = process.communicate(timeout=300)
  return process.returncode, stderr


def foreign_lines(stderr: str) -> list[str]:
  """The log lines of a command's console that tfpipeline's own modules did
  not write (C++, TFDS, Keras, converters...): the package's INFO lines are
  plain, its warnings keep absl's prefix naming its module."""
  modules = {p.name for p in (REPO / 'tfpipeline').rglob('*.py')}
  logged = re.compile(r'[IWEF]\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\] ')
  return [line for line in stderr.splitlines()
          if ((match := logged.match(line)) and match[1] not in modules) or
          re.match(r'(\d{4}-\d\d-\d\d |WARNING: All log messages)', line)]


def cli_env() -> dict[str, str]:
  env = {**os.environ, 'PYTHONPATH': str(REPO)}
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  return env


def assert_weights_close(got: list, want: list, atol: float = 0.0) -> None:
  """Two models' weight lists: as many arrays, each equal within `atol`
  (0: bit-identical)."""
  assert len(got) == len(want), (len(got), len(want))
  for got_array, want_array in zip(got, want):
    np.testing.assert_allclose(got_array, want_array, rtol=0, atol=atol)


def with_noise_key_of(reference: pathlib.Path, model_dir: pathlib.Path):
  """Prepares `model_dir` to run `reference`'s DP config with its secret
  noise key (every DP run draws a new one), so that the two can be
  compared."""
  (model_dir / 'checkpoints').mkdir(parents=True)
  shutil.copy(reference / 'config.json', model_dir)
  shutil.copy(reference / 'checkpoints' / 'dp_noise_key',
              model_dir / 'checkpoints')


def read_jsonl(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


class SerializedFakeSource:
  """Random serialized examples of a TFDS dataset's features, by index.

  tfds.testing.mock_data's own data source decodes examples even when they
  are asked for as raw bytes, and its batched read is broken (TFDS 4.9.10),
  so the catalogue tests give it this one, built from the same generator.
  """

  def __init__(self, features, num_examples: int):
    from tensorflow_datasets.testing import mocking
    generator = mocking.RandomFakeGenerator(features, num_examples)
    self._records = [features.serialize_example(generator[i])
                     for i in range(num_examples)]

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> bytes:
    return self._records[index]

  def __getitems__(self, indices) -> list[bytes]:
    return [self._records[i] for i in indices]


@contextlib.contextmanager
def mock_catalogue(num_examples: int):
  """tfds.testing.mock_data: any catalogue dataset, `num_examples` random
  examples in every split, read by tfpipeline's random-access reader."""
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(
      num_examples=num_examples,
      as_data_source_fn=lambda builder, split, **_: SerializedFakeSource(
          builder.info.features, num_examples)):
    yield
