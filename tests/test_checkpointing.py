"""Fault tolerance: exact resume after SIGKILL, preemption, corrupt files."""

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, assert_weights_close, read_jsonl, run_cli
from conftest import signal_after, start_cli, start_workers
from conftest import with_noise_key_of
from in_process import run_main

# seeds' model, 3,200 rows: 100 steps an epoch, 6 epochs, a device call
# every 10 steps (one metrics.jsonl record each) and a checkpoint every 20.
RUN = ('--config=seed_keras_mlp', '--config.data.num_examples=3200',
       '--config.train.epochs=6', '--config.train.steps_per_loop=10',
       '--config.train.checkpoint_every_steps=20',
       '--config.train.deterministic=True')
STRATEGIES = {'cpu': ('--strategy=cpu',),
              'mirrored': ('--strategy=mirrored', '--cpu_devices=2')}
# The same run under DP-SGD, on one device.
DP = ('--strategy=cpu', '--config.privacy.dp=True')


def _start(model_dir, *args):
  return start_cli(f'--model_dir={model_dir}', *RUN, *args)


def _weights(model_dir):
  import tfpipeline
  return tfpipeline.load_model(model_dir).get_weights()


def _assert_bit_identical(model_dir, reference_dir):
  assert_weights_close(_weights(model_dir), _weights(reference_dir))
  steps = [r['step'] for r in read_jsonl(model_dir / 'metrics.jsonl')]
  assert steps == sorted(set(steps)) and steps[-1] == 600


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """The uninterrupted run's model_dir under a strategy (or 'dp'), run
  once each."""
  runs = {}

  def reference(strategy):
    if strategy not in runs:
      model_dir = tmp_path_factory.mktemp(strategy) / 'run'
      result = run_cli(f'--model_dir={model_dir}', *RUN,
                       *{**STRATEGIES, 'dp': DP}[strategy])
      assert result.returncode == 0, result.stderr[-3000:]
      runs[strategy] = model_dir
    return runs[strategy]

  return reference


# Early (one checkpoint saved) and late, each on one strategy: a kill
# between is the same case, and the killed DP run below is another early
# one on one device.
@pytest.mark.parametrize('strategy, records', [('cpu', 3), ('mirrored', 47)])
def test_sigkill_then_rerun_is_bit_identical(tmp_path, uninterrupted,
                                             strategy, records):
  reference = uninterrupted(strategy)
  model_dir = tmp_path / 'run'
  returncode, _ = signal_after(_start(model_dir, *STRATEGIES[strategy]),
                              model_dir, records, signal.SIGKILL)
  assert returncode == -signal.SIGKILL
  assert not (model_dir / 'model.keras').exists()
  result = run_cli(f'--model_dir={model_dir}', *RUN, *STRATEGIES[strategy])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming from the checkpoint at step' in result.stderr
  _assert_bit_identical(model_dir, reference)
  # The killed attempt's records past its checkpoint were redone: one
  # value per step.
  _assert_one_value_per_step(model_dir / 'tensorboard', last=600)


def test_killed_dp_run_resumes_to_the_uninterrupted_run_with_its_key(
    tmp_path, uninterrupted):
  """The secret noise key beside the checkpoints makes a DP resume exact.

  The run is given the reference run's key (and config) before it starts,
  so that the two can be compared; a key is otherwise new in every run.
  """
  reference = uninterrupted('dp')
  model_dir = tmp_path / 'run'
  with_noise_key_of(reference, model_dir)
  returncode, _ = signal_after(_start(model_dir, *DP), model_dir, 22,
                              signal.SIGKILL)
  assert returncode == -signal.SIGKILL
  result = run_cli(f'--model_dir={model_dir}', *RUN, *DP)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming from the checkpoint at step' in result.stderr
  _assert_bit_identical(model_dir, reference)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_preemption_saves_exits_3_and_resumes(tmp_path, uninterrupted,
                                              signum):
  reference = uninterrupted('cpu')
  model_dir = tmp_path / 'run'
  returncode, stderr = signal_after(_start(model_dir, '--strategy=cpu'),
                                   model_dir, 10, signum)
  assert returncode == 3, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert last.startswith(f'preempted: {signal.Signals(signum).name} at step ')
  assert 'rerun the same command' in last
  step = int(last.split(' at step ')[1].split(':')[0])
  assert f'ckpt-{step}.index' in os.listdir(model_dir / 'checkpoints')
  assert read_jsonl(model_dir / 'metrics.jsonl')[-1]['step'] == step
  result = run_cli(f'--model_dir={model_dir}', *RUN, '--strategy=cpu')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'resuming from the checkpoint at step {step}' in result.stderr
  _assert_bit_identical(model_dir, reference)
  # The audit log has both attempts, the report covers the resumed process.
  outcomes = [entry['outcome'] for entry in read_jsonl(
      model_dir / 'audit.jsonl')]
  assert outcomes == [last, 'completed']
  report = json.loads((model_dir / 'report' / 'report.json').read_text())
  assert report['compute']['scope'].endswith(
      f'; resumed from step {step}: earlier attempts are not counted')
  from tfpipeline import integrity
  assert integrity.verify(model_dir)[1] == []


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_training_exits_3_and_writes_nothing(tmp_path,
                                                             signum):
  # The run blocks opening a named pipe as its CSV: after TensorFlow's
  # start-up, while the data loads.
  fifo = tmp_path / 'data.csv'
  os.mkfifo(fifo)
  model_dir = tmp_path / 'run'
  process = subprocess.Popen(
      [sys.executable, '-m', 'tfpipeline.train', f'--model_dir={model_dir}',
       '--config.data.source=csv', f'--config.data.path={fifo}',
       '--config.data.label=y'], cwd=REPO, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True,
      env={**os.environ, 'PYTHONPATH': str(REPO)})
  for line in process.stderr:
    if 'strategy cpu' in line:
      break
  time.sleep(0.5)  # Into the blocking open().
  process.send_signal(signum)
  stderr = process.communicate(timeout=60)[1]
  assert process.returncode == 3, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == (
      f'{signal.Signals(signum).name}: stopped before training started; '
      f'rerun the same command')
  assert 'Traceback' not in stderr
  assert not model_dir.exists()


@pytest.fixture(scope='module')
def interrupted_once(tmp_path_factory):
  """The cpu run stopped by SIGTERM after 15 records, run once."""
  model_dir = tmp_path_factory.mktemp('interrupted') / 'run'
  returncode, stderr = signal_after(_start(model_dir, '--strategy=cpu'),
                                   model_dir, 15, signal.SIGTERM)
  assert returncode == 3, stderr[-3000:]
  return model_dir


def _interrupted_run(tmp_path, interrupted_once):
  """A copy of the interrupted run, for a test to resume or change."""
  model_dir = tmp_path / 'run'
  shutil.copytree(interrupted_once, model_dir)
  return model_dir


def _snapshot(directory):
  return {str(p.relative_to(directory)): hashlib.sha256(
      p.read_bytes()).hexdigest() for p in sorted(directory.rglob('*'))
          if p.is_file()}


def test_result_changing_config_is_refused_and_nothing_changes(
    tmp_path, interrupted_once):
  model_dir = _interrupted_run(tmp_path, interrupted_once)
  before = _snapshot(model_dir)
  result = run_main(f'--model_dir={model_dir}', *RUN,
                    '--config.model.hidden_units=(32,)')
  assert result.returncode == 2
  assert 'holds a run with model.hidden_units=[64], now [32]' in (
      result.last_line)
  assert '--allow_config_change' in result.last_line
  assert _snapshot(model_dir) == before
  # Early stopping decides where the run ends: not harmless either.
  result = run_main(f'--model_dir={model_dir}', *RUN,
                    '--config.train.early_stopping.patience=5')
  assert result.returncode == 2
  assert ('holds a run with train.early_stopping.patience=0, now 5' in
          result.last_line)
  assert _snapshot(model_dir) == before
  # Fewer epochs than the checkpoints have run would count steps backwards.
  step = max(int(p.name[5:-6]) for p in
             (model_dir / 'checkpoints').glob('ckpt-*.index'))
  assert step > 100
  result = run_main(f'--model_dir={model_dir}', *RUN,
                    '--config.train.epochs=1')
  assert result.returncode == 2
  assert result.last_line == (
      f'error: train.epochs=1 ends at step 100, but --model_dir={model_dir} '
      f'has a checkpoint at step {step} (epoch {-(-step // 100)}); set '
      f'--config.train.epochs to at least that, or use a new --model_dir')
  assert _snapshot(model_dir) == before


def test_checkpoint_that_does_not_fit_the_model_is_refused(
    tmp_path, interrupted_once):
  """A model change passed with --allow_config_change: exit 2 naming the
  shapes, not a silent restart from step 0 as if the checkpoint were
  corrupt."""
  model_dir = _interrupted_run(tmp_path, interrupted_once)
  before = _snapshot(model_dir)
  result = run_main(f'--model_dir={model_dir}', *RUN,
                    '--config.model.hidden_units=(32,)',
                    '--allow_config_change')
  assert result.returncode == 2, result.stderr[-3000:]
  assert re.match(r'error: checkpoint .*/checkpoints/ckpt-\d+ does not fit '
                  r'the model \(.*incompatible tensor with shape .*64.*32',
                  result.last_line), result.last_line
  assert 'unreadable' not in result.stderr
  assert _snapshot(model_dir) == before


def test_harmless_changes_resume_without_asking(tmp_path, interrupted_once):
  """Epochs, loop and checkpoint settings and report keys change what is
  run or reported, not what a step computes."""
  model_dir = _interrupted_run(tmp_path, interrupted_once)
  result = run_cli(f'--model_dir={model_dir}', *RUN, '--strategy=cpu',
                   '--config.train.epochs=7', '--config.train.steps_per_loop=20',
                   '--config.report.fairness_min_ratio=0.5')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming from the checkpoint at step' in result.stderr
  written = json.loads((model_dir / 'config.json').read_text())
  assert (written['train']['epochs'], written['train']['steps_per_loop'],
          written['report']['fairness_min_ratio']) == (7, 20, 0.5)


def test_harmless_and_allowed_changes_resume(tmp_path, interrupted_once):
  model_dir = _interrupted_run(tmp_path, interrupted_once)
  result = run_cli(f'--model_dir={model_dir}', *RUN,
                   '--config.train.epochs=7', '--config.loss=mae',
                   '--allow_config_change')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming from the checkpoint at step' in result.stderr
  written = json.loads((model_dir / 'config.json').read_text())
  assert (written['train']['epochs'], written['loss']) == (7, 'mae')
  assert read_jsonl(model_dir / 'metrics.jsonl')[-1]['step'] == 700


def test_corrupt_latest_checkpoint_is_skipped(tmp_path, uninterrupted,
                                              interrupted_once):
  reference = uninterrupted('cpu')
  model_dir = _interrupted_run(tmp_path, interrupted_once)
  checkpoints = model_dir / 'checkpoints'
  steps = sorted(int(p.name[5:-6]) for p in checkpoints.glob('ckpt-*.index'))
  data = next(checkpoints.glob(f'ckpt-{steps[-1]}.data-*'))
  corrupted = bytearray(data.read_bytes())
  corrupted[len(corrupted) // 2] ^= 0xFF
  data.write_bytes(bytes(corrupted))
  result = run_cli(f'--model_dir={model_dir}', *RUN, '--strategy=cpu')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'ckpt-{steps[-1]} is unreadable' in result.stderr
  assert f'resuming from the checkpoint at step {steps[-2]}' in result.stderr
  _assert_bit_identical(model_dir, reference)


def test_checkpoint_write_failure_is_one_line_and_keeps_earlier_ones(
    tmp_path, interrupted_once):
  model_dir = _interrupted_run(tmp_path, interrupted_once)
  before = {name: digest for name, digest in _snapshot(model_dir).items()
            if name.startswith('checkpoints/ckpt-')}
  # Every checkpoint of this model is this size: a byte less fails the next
  # one, while the smaller files a resume writes first (TensorBoard's events
  # rewritten, 7 KB here) pass.
  limit = min((model_dir / 'checkpoints' / name[len('checkpoints/'):]).stat(
  ).st_size for name in before if '.data-' in name) - 1

  def small_files():  # Files past `limit` bytes fail to write (EFBIG).
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

  completed = subprocess.run(
      [sys.executable, '-m', 'tfpipeline.train', f'--model_dir={model_dir}',
       *RUN, '--strategy=cpu'], cwd=REPO, capture_output=True, text=True,
      timeout=300, preexec_fn=small_files,
      env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert completed.returncode == 1, completed.stderr[-3000:]
  last = completed.stderr.strip().splitlines()[-1]
  assert last.startswith('error: cannot write a checkpoint to ')
  assert 'earlier checkpoints are intact' in last
  after = _snapshot(model_dir)
  assert all(after[name] == digest for name, digest in before.items())


def _diverging(model_dir, learning_rate, *args):
  """The seeds' model under SGD at a rate that makes the loss NaN."""
  return run_cli('--config=seed_keras_mlp', f'--model_dir={model_dir}',
                 '--config.optimizer.name=sgd',
                 f'--config.optimizer.learning_rate={learning_rate}',
                 '--config.train.epochs=20', *args)


@pytest.mark.parametrize('engine', ['tfpipeline', 'keras_fit'])
def test_nan_stops_with_the_step_and_writes_no_nan_weights(tmp_path, engine):
  model_dir = tmp_path / 'run'
  result = _diverging(model_dir, 3.0, f'--engine={engine}')
  assert result.returncode == 1
  assert 'NaN or Inf by step' in result.last_line
  assert 'Traceback' not in result.stderr
  assert not (model_dir / 'model.keras').exists()
  import tensorflow as tf
  for path in tf.train.get_checkpoint_state(
      str(model_dir / 'checkpoints')).all_model_checkpoint_paths:
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
      value = reader.get_tensor(name)
      if np.issubdtype(np.asarray(value).dtype, np.floating):
        assert np.all(np.isfinite(value)), (path, name)


def test_nan_rollback_halves_the_rate_and_finishes(tmp_path):
  model_dir = tmp_path / 'run'
  result = _diverging(model_dir, 3.0, '--config.train.nan_policy=rollback')
  assert result.returncode == 0, result.stderr[-3000:]
  events = [r for r in read_jsonl(model_dir / 'metrics.jsonl')
            if r.get('event') == 'rollback']
  assert [e['learning_rate'] for e in events] == [1.5, 0.75]
  metrics = json.loads((model_dir / 'metrics.json').read_text())
  assert np.isfinite(metrics['loss'])
  # The steps redone after each rollback replace the first tries: one
  # value per step in metrics.jsonl and in TensorBoard.
  steps = [r['step'] for r in read_jsonl(model_dir / 'metrics.jsonl')
           if 'loss' in r]
  assert steps == sorted(set(steps)) and steps[-1] == 20 * 3
  _assert_one_value_per_step(model_dir / 'tensorboard', last=20 * 3)


def _assert_one_value_per_step(directory, last):
  import tensorflow as tf
  by_tag = {}
  for path in sorted(directory.glob('events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        by_tag.setdefault(value.tag, []).append(event.step)
  assert by_tag['loss'][-1] == last
  for tag, steps in by_tag.items():
    assert steps == sorted(set(steps)), tag


def test_nan_rollback_gives_up_after_three(tmp_path):
  model_dir = tmp_path / 'run'
  result = _diverging(model_dir, 1e6, '--config.train.nan_policy=rollback')
  assert result.returncode == 1
  assert 'NaN or Inf by step' in result.last_line
  events = [r for r in read_jsonl(model_dir / 'metrics.jsonl')
            if r.get('event') == 'rollback']
  assert [e['learning_rate'] for e in events] == [5e5, 2.5e5, 1.25e5]


def test_keras_fit_refuses_rollback(tmp_path):
  result = run_cli('--config=seed_keras_mlp', f'--model_dir={tmp_path / "r"}',
                   '--engine=keras_fit', '--config.train.nan_policy=rollback')
  assert result.returncode == 2
  assert result.last_line.startswith(
      'error: train.nan_policy=rollback needs --engine=tfpipeline')
  assert not (tmp_path / 'r').exists()


def test_keras_fit_preemption_saves_at_the_epoch_end_and_resumes(tmp_path):
  fit = ('--strategy=cpu', '--engine=keras_fit')
  reference = tmp_path / 'reference'
  result = run_cli(f'--model_dir={reference}', *RUN, *fit)
  assert result.returncode == 0, result.stderr[-3000:]
  model_dir = tmp_path / 'run'
  returncode, stderr = signal_after(_start(model_dir, *fit), model_dir, 2,
                                   signal.SIGTERM)
  assert returncode == 3, stderr[-3000:]
  assert 'SIGTERM at step' in stderr.strip().splitlines()[-1]
  saved = [r['step'] for r in read_jsonl(model_dir / 'metrics.jsonl')]
  assert saved and all(step % 100 == 0 for step in saved)  # Epoch ends.
  result = run_cli(f'--model_dir={model_dir}', *RUN, *fit)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'resuming from the checkpoint at step {saved[-1]}' in result.stderr
  _assert_bit_identical(model_dir, reference)


def test_multi_worker_preemption_stops_every_worker_and_resumes(
    tmp_path, uninterrupted):
  reference = uninterrupted('cpu')
  model_dir = tmp_path / 'run'

  def start_cluster():
    return start_workers(2, f'--model_dir={model_dir}', *RUN,
                         '--strategy=multi_worker')

  chief, other = start_cluster()
  other_code, other_stderr = signal_after(other, model_dir, 12, signal.SIGTERM)
  _, chief_stderr = chief.communicate(timeout=300)
  assert (chief.returncode, other_code) == (3, 3), (chief_stderr[-3000:],
                                                    other_stderr[-3000:])
  for stderr in (chief_stderr, other_stderr):
    # TensorFlow's gRPC runtime may log after it at exit (the peer is gone).
    ours = [l for l in stderr.splitlines() if l.startswith('preempted: ')]
    assert len(ours) == 1 and 'a worker was preempted at step' in ours[0]
  for process in start_cluster():
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
  assert_weights_close(_weights(model_dir), _weights(reference), atol=1e-5)


_KILLED_SWAP = '''
import os, pathlib, sys
from tfpipeline import atomic_files
kill_at = int(sys.argv[2])
real_replace, calls = os.replace, []
def replace(source, destination):
  calls.append(1)
  if len(calls) == kill_at:
    os._exit(9)  # Killed before this rename.
  real_replace(source, destination)
os.replace = replace
with atomic_files.replacing(pathlib.Path(sys.argv[1])) as new:
  new.mkdir()
  (new / 'saved_model.pb').write_text('new')
'''


@pytest.mark.parametrize('kill_at', [1, 2, 3])
def test_a_directory_swap_killed_at_any_step_loses_no_copy(tmp_path,
                                                           kill_at):
  """Kill before the move aside, before the move in, or after both (the
  third call never comes: the swap completes)."""
  path = tmp_path / 'saved_model'
  path.mkdir()
  (path / 'saved_model.pb').write_text('old')
  completed = subprocess.run(
      [sys.executable, '-c', _KILLED_SWAP, str(path), str(kill_at)],
      cwd=REPO, env={**os.environ, 'PYTHONPATH': str(REPO)})
  copies = sorted(p.read_text() for p in tmp_path.rglob('saved_model.pb'))
  if kill_at == 3:
    assert completed.returncode == 0
    assert (path / 'saved_model.pb').read_text() == 'new'
    assert copies == ['new'] and len(list(tmp_path.iterdir())) == 1
  else:
    assert completed.returncode == 9
    assert copies == ['new', 'old']  # Both complete, one of them in place
    if kill_at == 1:                 # or set aside.
      assert (path / 'saved_model.pb').read_text() == 'old'
    else:
      leftover = next(tmp_path.glob('.saved_model.*'))
      assert (leftover / 'saved_model.old' / 'saved_model.pb').read_text() == (
          'old')


def test_preemption_handler_restores_the_checkpoint_the_skip_chose(
    tmp_path, monkeypatch):
  """TensorFlow's PreemptionCheckpointHandler (multi-worker) restores the
  manager's latest checkpoint when created: never the corrupt one skipped."""
  import keras
  import tensorflow as tf
  from tfpipeline import checkpointing
  monkeypatch.delenv('TF_CONFIG', raising=False)

  def fresh():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    return model, checkpointing.Checkpoints(tmp_path, model, optimizer,
                                            keep=3)

  model, checkpoints = fresh()
  for step, value in ((10, 1.0), (20, 2.0)):
    model.layers[0].kernel.assign(np.full((2, 1), value, np.float32))
    checkpoints.save(step)
  data = next(tmp_path.glob('ckpt-20.data-*'))
  data.write_bytes(data.read_bytes()[:-8] + b'\xff' * 8)
  model, checkpoints = fresh()
  assert checkpoints.restore() == 10
  sigterm = signal.getsignal(signal.SIGTERM)
  try:
    tf.distribute.experimental.PreemptionCheckpointHandler(
        tf.distribute.cluster_resolver.TFConfigClusterResolver(),
        checkpoints.manager)
  finally:
    signal.signal(signal.SIGTERM, sigterm)
  np.testing.assert_array_equal(model.layers[0].kernel.numpy(),
                                np.full((2, 1), 1.0))
  assert sorted(p.name for p in (tmp_path / 'corrupt').iterdir()) == [
      'ckpt-20.data-00000-of-00001', 'ckpt-20.index']


def test_processes_that_restored_different_steps_are_refused(tmp_path):
  from tfpipeline import checkpointing
  from tfpipeline.errors import UserError
  checkpointing.check_same_restored_step([600, 600], tmp_path,
                                         processes='hosts', each='host')
  with pytest.raises(UserError) as refused:
    checkpointing.check_same_restored_step([600, 0], tmp_path,
                                           processes='hosts', each='host')
  assert str(refused.value) == (
      f'the hosts of this run restored different steps from {tmp_path} '
      f'(host 0: 600, host 1: 0): --model_dir must be storage every host '
      f'sees (NFS, a mounted bucket)')
