"""The JAX engine (train.backend='jax'): equal steps to the TensorFlow
engine's, one device equal to two, exact resume, checkpoints and errors.

Keras takes one backend per process and this one runs on TensorFlow, so
every JAX run is a subprocess: the CLI, or tests/engine_steps.py.
"""

import json
import shutil
import signal
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest

from conftest import REPO, assert_weights_close, cli_env, read_jsonl, run_cli
from conftest import signal_after, start_cli, start_workers
from conftest import wait_for_records
from conftest import with_noise_key_of

from tfpipeline import dp_sgd

# The seeds' model, 3,200 rows: 100 steps an epoch, 6 epochs, a device call
# every 10 steps (one metrics.jsonl record each), a checkpoint every 20.
RUN = ('--config=seed_keras_mlp', '--config.data.num_examples=3200',
       '--config.train.epochs=6', '--config.train.steps_per_loop=10',
       '--config.train.checkpoint_every_steps=20',
       '--config.train.deterministic=True', '--backend=jax', '--strategy=cpu')
LAST_STEP = 600


def _weights(model_dir):
  import tfpipeline
  return tfpipeline.load_model(model_dir).get_weights()


@pytest.fixture(scope='module')
def jax_run(tmp_path_factory):
  """RUN, uninterrupted, on one JAX CPU device."""
  model_dir = tmp_path_factory.mktemp('jax') / 'run'
  result = run_cli(f'--model_dir={model_dir}', *RUN)
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


def _engine_steps(backend, experiment, data_dir, init, out, mode) -> int:
  completed = subprocess.run(
      [sys.executable, str(REPO / 'tests' / 'engine_steps.py'), experiment,
       str(data_dir), '50', str(init), str(out), *([mode] if mode else [])],
      capture_output=True,
      text=True, timeout=600, env={**cli_env(), 'KERAS_BACKEND': backend})
  assert completed.returncode == 0, completed.stderr[-3000:]
  return int(completed.stdout.split()[-1])


@pytest.mark.parametrize('experiment, mode, tolerance', [
    pytest.param('seed_keras_mlp', None, 1e-4, marks=pytest.mark.smoke),
    ('digits_cnn', 'float64', 1e-12), ('seed_keras_mlp', 'dp', 1e-4),
    ('seed_keras_mlp', 'accumulate', 1e-4)])
def test_jax_steps_equal_the_tensorflow_engines(tmp_path, experiment, mode,
                                                tolerance, request):
  """From the same initial weights and batches, 50 SGD steps (and the rest
  of the last block) on each backend's own engine. With `dp`, DP-SGD's
  per-example clipping (its noise made negligible); with `float64`, the
  convnet in float64, where rounding cannot part the two backends' paths at
  a ReLU or a max pool (see engine_steps.py); with `accumulate`, JAX's
  steps as 4 passes each against TensorFlow's whole batches (TensorFlow's
  passes: test_tf_loop)."""
  init = tmp_path / 'init.npz'
  data_dir = request.getfixturevalue('digits_array_record_dir') if (
      experiment == 'digits_cnn') else ''
  runs = {'tensorflow': ('tensorflow', None if mode == 'accumulate' else mode),
          'jax': ('jax', mode)}
  steps = {name: _engine_steps(backend, experiment, data_dir, init,
                               tmp_path / f'{name}.npz', run_mode)
           for name, (backend, run_mode) in runs.items()}
  assert len(set(steps.values())) == 1 and steps['jax'] >= 50
  initial, *trained = (_arrays(tmp_path / f'{name}.npz')
                       for name in ('init', *runs))
  dtype = 'float64' if mode == 'float64' else 'float32'
  for weights in trained:  # The first is TensorFlow's.
    assert list(weights) == list(initial)
    for key, value in weights.items():
      assert value.dtype == dtype
      np.testing.assert_allclose(value, trained[0][key], rtol=0,
                                 atol=tolerance)
  # Training moved the weights far beyond that tolerance.
  assert max(np.abs(trained[0][key] - initial[key]).max()
             for key in initial) > 1e-3


def _arrays(path) -> dict:
  with np.load(path) as saved:
    return {key: saved[key] for key in saved.files}


def test_dp_noise_follows_the_secret_key_not_the_seed(tmp_path):
  """Two DP runs with one seed differ; a run given the first's key (as a
  resumed run reads it) equals it, also with its steps of 32 as 2 passes
  of 16 (gradient accumulation: the clipped sum noised once a step, with
  the same draw); the key is in no published file."""
  run = (*RUN, '--config.data.num_examples=640', '--config.train.epochs=1',
         '--config.privacy.dp=True')
  first, second, same_key = (tmp_path / name
                             for name in ('first', 'second', 'same_key'))
  for model_dir in (first, second, same_key):
    accumulated = ()
    if model_dir == same_key:
      with_noise_key_of(first, model_dir)
      accumulated = ('--config.train.global_batch_size=16',
                     '--config.optimizer.gradient_accumulation_steps=2',
                     '--allow_config_change')  # The copied config.json's.
    result = run_cli(f'--model_dir={model_dir}', *run, *accumulated)
    assert result.returncode == 0, result.stderr[-3000:]
  assert_weights_close(_weights(same_key), _weights(first), atol=1e-5)
  # The accounting takes the step's batch, 32 of 640 rows, either way.
  privacy = [json.loads((d / 'report' / 'report.json').read_text())[
      'privacy'] for d in (first, same_key)]
  assert privacy[0]['sampling_probability'] == 32 / 640
  assert privacy[1] == privacy[0]
  assert max(np.abs(a - b).max() for a, b in zip(
      _weights(second), _weights(first))) > 1e-4
  key = (first / 'checkpoints' / dp_sgd.NOISE_KEY_FILE).read_text().strip()
  for path in first.rglob('*'):
    if path.is_file() and 'checkpoints' not in path.parts:
      assert key.encode() not in path.read_bytes(), path


@pytest.fixture(scope='module')
def two_devices_run(tmp_path_factory):
  """RUN, uninterrupted, on two JAX CPU devices of one process."""
  model_dir = tmp_path_factory.mktemp('jax2') / 'run'
  result = run_cli(f'--model_dir={model_dir}', *RUN, '--cpu_devices=2')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'JAX devices: 2 CPU on 1 host(s)' in result.stderr
  return model_dir


def test_two_cpu_devices_equal_one(jax_run, two_devices_run):
  assert_weights_close(_weights(two_devices_run), _weights(jax_run),
                       atol=1e-5)


def test_two_hosts_preempted_and_resumed_equal_two_devices(tmp_path,
                                                          two_devices_run):
  """Two processes joined by jax.distributed (TF_CONFIG): SIGTERM to the
  non-chief host stops both at one step, the chief saves, and the rerun ends
  bit-identical to one process with two devices."""
  model_dir = tmp_path / 'run'
  args = (f'--model_dir={model_dir}', *RUN[:-1], '--strategy=multi_worker')
  chief, other = start_workers(2, *args)
  assert wait_for_records(chief, model_dir, 22)
  # JAX's preemption notifier polls for SIGTERM once a second, longer than
  # the rest of this run takes on a fast machine: the chief is held stopped
  # meanwhile (the other host cannot step without it), then both go on to
  # the sync point they agree on.
  chief.send_signal(signal.SIGSTOP)
  other.send_signal(signal.SIGTERM)
  time.sleep(3)
  chief.send_signal(signal.SIGCONT)
  (_, chief_stderr), (_, other_stderr) = (
      process.communicate(timeout=300) for process in (chief, other))
  assert (chief.returncode, other.returncode) == (3, 3), (
      chief_stderr[-3000:], other_stderr[-3000:])
  # JAX's distributed runtime may log after it at exit.
  stopped = [line for stderr in (chief_stderr, other_stderr)
             for line in stderr.splitlines() if line.startswith('preempted: ')]
  assert len(stopped) == 2 and len(set(stopped)) == 1, stopped  # One step.
  saved = int(stopped[0].split('preempted at step ')[1].split(':')[0])
  assert sorted(int(path.name) for path in (
      model_dir / 'checkpoints').iterdir())[-1] == saved
  assert 'JAX devices: 2 CPU on 2 host(s)' in chief_stderr
  outputs = [process.communicate(timeout=300)[1]
             for process in start_workers(2, *args)]
  for stderr in outputs:
    assert f'resuming from the checkpoint at step {saved}' in stderr, (
        stderr[-3000:])
  assert 'only the chief writes' in outputs[1]
  assert_weights_close(_weights(model_dir), _weights(two_devices_run))
  steps = [record['step'] for record in read_jsonl(model_dir / 'metrics.jsonl')]
  assert steps == sorted(set(steps)) and steps[-1] == LAST_STEP


class _PreemptionService:
  """JAX's preemption sync point as its service keeps it: notified, it sets
  the sync point one past the largest step shown so far, and answers True
  for that step alone."""

  def __init__(self):
    self.largest = 0
    self.sync_point = None

  def notify(self):
    self.sync_point = self.largest + 1

  def reached(self, step: int) -> bool:
    self.largest = max(self.largest, step)
    return step == self.sync_point


def test_hosts_stop_at_the_loop_end_after_a_notice(monkeypatch):
  """Orbax shows the service each saved step; a notice during a loop stops
  the hosts at the next loop end, saving there."""
  from jax.experimental import multihost_utils
  from tfpipeline import jax_devices
  from tfpipeline.errors import Preempted
  service = _PreemptionService()
  monkeypatch.setattr(multihost_utils, 'reached_preemption_sync_point',
                      service.reached)
  saved = []
  watch = jax_devices.JaxDevices.preemption_watch(
      types.SimpleNamespace(process_count=2))
  with pytest.raises(Preempted, match='preempted at step 30: checkpoint'):
    for step in (10, 20, 30, 40):
      service.reached(step)  # Orbax's save.
      if step == 20:
        service.notify()
      watch.check(saved.append, step)
  assert saved == [30]


def test_several_hosts_need_a_cluster(tmp_path, monkeypatch):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  result = run_cli(f'--model_dir={tmp_path / "run"}', '--backend=jax',
                   '--strategy=multi_worker')
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.last_line.startswith(
      'error: --strategy=multi_worker with --backend=jax: no cluster found')
  assert 'set TF_CONFIG' in result.last_line
  assert not (tmp_path / 'run').exists()


def test_sigterm_saves_and_sigkill_then_reruns_are_bit_identical(tmp_path,
                                                                jax_run):
  """SIGTERM saves and exits 3; its rerun resumes there and is killed
  (SIGKILL) later; the last rerun ends bit-identical to the uninterrupted
  run, one metrics record per step."""
  model_dir = tmp_path / 'run'
  returncode, stderr = signal_after(
      start_cli(f'--model_dir={model_dir}', *RUN), model_dir, 12,
      signal.SIGTERM)
  assert returncode == 3, stderr[-3000:]
  last_line = stderr.strip().splitlines()[-1]
  assert last_line.startswith('preempted: SIGTERM at step ')
  saved = int(last_line.split('at step ')[1].split(':')[0])
  assert saved in [int(path.name)
                   for path in (model_dir / 'checkpoints').iterdir()]
  returncode, stderr = signal_after(
      start_cli(f'--model_dir={model_dir}', *RUN), model_dir, 35,
      signal.SIGKILL)
  assert returncode == -signal.SIGKILL
  assert f'resuming from the checkpoint at step {saved}' in stderr
  assert not (model_dir / 'model.keras').exists()
  result = run_cli(f'--model_dir={model_dir}', *RUN)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming from the checkpoint at step' in result.stderr
  assert_weights_close(_weights(model_dir), _weights(jax_run))
  steps = [record['step'] for record in read_jsonl(model_dir / 'metrics.jsonl')]
  assert steps == sorted(set(steps)) and steps[-1] == LAST_STEP


def test_keeps_the_newest_checkpoints_and_skips_a_corrupt_one(tmp_path,
                                                              jax_run):
  checkpoints = jax_run / 'checkpoints'
  assert sorted(int(path.name) for path in checkpoints.iterdir()) == [
      560, 580, 600]  # train.keep_checkpoints=3
  model_dir = tmp_path / 'run'
  shutil.copytree(jax_run, model_dir)
  for path in (model_dir / 'checkpoints' / '600').rglob('*'):
    if path.is_file():
      path.write_bytes(b'\0garbage')
  result = run_cli(f'--model_dir={model_dir}', *RUN)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming from the checkpoint at step 580' in result.stderr
  assert (model_dir / 'checkpoints' / 'corrupt' / '600').is_dir()
  assert_weights_close(_weights(model_dir), _weights(jax_run))


def test_a_run_resumes_only_on_its_backend(tmp_path, jax_run):
  model_dir = tmp_path / 'run'
  shutil.copytree(jax_run, model_dir)
  before = sorted((path, path.stat().st_mtime_ns)
                  for path in model_dir.rglob('*'))
  result = run_cli(f'--model_dir={model_dir}',
                   *(arg for arg in RUN if arg != '--backend=jax'))
  assert result.returncode == 2
  assert result.last_line == (
      f'error: --model_dir={model_dir} holds a run trained on the jax '
      f'backend; resume it with --backend=jax (the backends checkpoint in '
      f'different formats), or use a new --model_dir')
  assert sorted((path, path.stat().st_mtime_ns)
                for path in model_dir.rglob('*')) == before


def test_the_model_from_a_jax_run_predicts_the_same_on_tensorflow(jax_run):
  """model.keras loads on the TensorFlow backend (this process): its
  predictions on the test split equal the JAX run's (predictions.csv) and
  its SavedModel's (jax2tf) within 1e-5."""
  import csv
  import tensorflow as tf
  from tfpipeline import config as config_lib
  from tfpipeline.data import sources
  assert keras.backend.backend() == 'tensorflow'
  config = json.loads((jax_run / 'config.json').read_text())
  assert config['train']['backend'] == 'jax'
  model = keras.saving.load_model(jax_run / 'model.keras')
  with open(jax_run / 'report' / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  c = config_lib.load('seed_keras_mlp')
  c.data.num_examples = config['data']['num_examples']
  test = sources.load(c.data, loss=c.loss).test
  features = test.table.features[[int(row['index']) for row in rows]]
  predicted = model.predict(features, verbose=0)
  np.testing.assert_allclose(
      predicted[:, 0], [float(row['prediction']) for row in rows], rtol=0,
      atol=1e-5)
  served = tf.saved_model.load(str(jax_run / 'saved_model'))
  np.testing.assert_allclose(
      served.signatures['serving_default'](features=tf.constant(features))[
          'output_0'].numpy(), predicted, rtol=0, atol=1e-5)


def _diverging(model_dir, *args):
  """The seeds' model under SGD at a rate that makes the loss NaN."""
  return run_cli('--config=seed_keras_mlp', f'--model_dir={model_dir}',
                 '--config.optimizer.name=sgd',
                 '--config.optimizer.learning_rate=3.0',
                 '--config.train.epochs=20', '--backend=jax', *args)


def test_nan_stops_with_the_step_and_saves_no_nan_weights(tmp_path):
  import orbax.checkpoint as ocp
  model_dir = tmp_path / 'run'
  result = _diverging(model_dir)
  assert result.returncode == 1
  assert 'NaN or Inf by step' in result.last_line
  assert 'Traceback' not in result.stderr
  assert not (model_dir / 'model.keras').exists()
  reader = ocp.CheckpointManager(
      model_dir / 'checkpoints', item_handlers=ocp.StandardCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(read_only=True))
  assert reader.all_steps()
  for step in reader.all_steps():
    for array in jax_leaves(reader.restore(step)):
      assert np.all(np.isfinite(array)), step


def jax_leaves(tree):
  import jax
  return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)
          if np.issubdtype(np.asarray(leaf).dtype, np.floating)]


def test_nan_rollback_halves_the_rate_and_finishes(tmp_path):
  model_dir = tmp_path / 'run'
  result = _diverging(model_dir, '--config.train.nan_policy=rollback')
  assert result.returncode == 0, result.stderr[-3000:]
  rates = [r['learning_rate'] for r in read_jsonl(model_dir / 'metrics.jsonl')
           if r.get('event') == 'rollback']
  assert rates and rates == [3.0 / 2 ** (i + 1) for i in range(len(rates))]
  assert np.isfinite(json.loads((model_dir / 'metrics.json').read_text())[
      'loss'])
  steps = [r['step'] for r in read_jsonl(model_dir / 'metrics.jsonl')
           if 'loss' in r]
  assert steps == sorted(set(steps)) and steps[-1] == 20 * 3


def test_mixed_bfloat16_trains_hidden_layers_in_bfloat16(
    tmp_path):
  model_dir = tmp_path / 'run'
  result = run_cli(f'--model_dir={model_dir}', '--backend=jax',
                   '--config.train.epochs=2',
                   '--config.train.mixed_precision=mixed_bfloat16')
  assert result.returncode == 0, result.stderr[-3000:]
  model = keras.saving.load_model(model_dir / 'model.keras')
  # The hidden layer computes in bfloat16; preprocessing and the output
  # layers (as models.build makes them) in float32.
  assert {layer.name: layer.dtype_policy.name for layer in model.layers} == {
      'normalize': 'float32', 'hidden_0': 'mixed_bfloat16',
      'output': 'float32', 'unstandardize': 'float32'}
  assert all(weight.dtype == 'float32' for weight in model.weights)
  assert np.isfinite(json.loads((model_dir / 'metrics.json').read_text())[
      'loss'])
