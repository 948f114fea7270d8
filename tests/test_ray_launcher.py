"""--launcher=ray: Ray Train runs the workers on a local cluster, heals a
worker killed mid-run, and ends bit-identical to workers started by hand;
bad input is refused before Ray starts. A worker that does not see the
chief's checkpoints is refused (the TF engines' shared-storage check)."""

import random
import shutil
import signal
import sys
import time

import pytest

from conftest import assert_weights_close, read_jsonl, start_cli
from conftest import start_workers
from in_process import run_main
from tfpipeline import ray_launcher
from tfpipeline.errors import Preempted
from tfpipeline.errors import UserError
from tfpipeline.errors import WorkersFailed

# seeds' model, 3,200 rows: 100 steps an epoch, 6 epochs, a device call
# every 10 steps (one metrics.jsonl record each) and a checkpoint every 20.
RUN = ('--config=seed_keras_mlp', '--config.data.num_examples=3200',
       '--config.train.epochs=6', '--config.train.steps_per_loop=10',
       '--config.train.checkpoint_every_steps=20',
       '--config.train.deterministic=True', '--cpu_devices=1')


def _weights(model_dir):
  import tfpipeline
  return tfpipeline.load_model(model_dir).get_weights()


def _training_processes(driver_pid: int) -> list:
  """The workers' training commands (psutil processes) among the driver's
  descendants, each a child of its Ray worker. (psutil comes with the ray
  extra; the TF 2.20 smoke leg collects this file without it.)"""
  import psutil  # pylint: disable=g-import-not-at-top
  driver = psutil.Process(driver_pid)
  found = []
  for process in driver.children(recursive=True):
    try:
      if 'tfpipeline.ray_local' in ' '.join(process.cmdline()):
        found.append(process)
    except psutil.NoSuchProcess:
      pass
  return found


@pytest.fixture(scope='module')
def by_hand(tmp_path_factory):
  """RUN on two workers started by hand: started, not awaited (each test
  that reads it calls `by_hand()`, which waits and returns its model_dir)."""
  model_dir = tmp_path_factory.mktemp('by_hand') / 'run'
  workers = start_workers(2, f'--model_dir={model_dir}', *RUN,
                          '--strategy=multi_worker')

  def finished():
    for process in workers:
      _, stderr = process.communicate(timeout=300)
      assert process.returncode == 0, stderr[-3000:]
    return model_dir

  return finished


def test_a_worker_killed_mid_run_is_restarted_by_ray_and_ends_bit_identical(
    tmp_path, by_hand):
  model_dir = tmp_path / 'ray'
  driver = start_cli('--launcher=ray', '--num_workers=2', '--max_failures=2',
                     f'--model_dir={model_dir}', *RUN)
  log = model_dir / 'metrics.jsonl'
  kill_after = random.randint(3, 40)  # Of the 60 records: mid-training.
  deadline = time.monotonic() + 300
  while driver.poll() is None and time.monotonic() < deadline and not (
      log.exists() and len(log.read_text().splitlines()) >= kill_after):
    time.sleep(0.02)
  training = _training_processes(driver.pid)
  assert len(training) == 2, training
  ray_worker = random.choice(training).parent()
  ray_worker.send_signal(signal.SIGKILL)  # Its training child dies with it.
  _, stderr = driver.communicate(timeout=300)
  assert driver.returncode == 0, stderr[-5000:]
  assert not any(p.is_running() for p in training)
  lines = stderr.strip().splitlines()
  assert lines[-1].endswith(f'wrote {model_dir} (2 workers under Ray; its '
                            f'audit log lists every attempt)')
  assert 'resuming from the checkpoint at step' in stderr
  # One progress stream: the chief's plain lines (the other worker logs no
  # INFO line, such as its "only the chief writes").
  assert sum('epoch 6/6  step 600  loss ' in line for line in lines) == 1
  assert 'only the chief writes' not in stderr
  steps = [r['step'] for r in read_jsonl(log)]
  assert steps == sorted(set(steps)) and steps[-1] == 600
  audit = read_jsonl(model_dir / 'audit.jsonl')
  assert audit[-1]['outcome'] == 'completed'
  failed = [entry for entry in audit if entry.get('launcher') == 'ray']
  assert len(failed) >= 1 and all(
      entry['outcome'].startswith('failed: worker ') for entry in failed)
  assert_weights_close(_weights(model_dir), _weights(by_hand()))


@pytest.mark.parametrize('args, fragment', [
    (['--strategy=cpu'], '--strategy=cpu: with --launcher=ray every worker '
     'runs --strategy=multi_worker'),
    (['--num_workers=0'], '--num_workers'),
    (['--num_workers=3'], 'train.global_batch_size=32 does not divide evenly '
     'over 3 replicas'),
    (['--resources_per_worker=CPU'], '--resources_per_worker=CPU: expected a '
     'JSON object or a list like CPU=2,GPU=1'),
    (['--config.train.epochs=0'], 'train.epochs'),
], ids=['strategy', 'no workers', 'batch split', 'resources', 'config'])
def test_bad_input_is_refused_before_ray_starts(tmp_path, monkeypatch, args,
                                                fragment):
  monkeypatch.setattr(ray_launcher, 'launch', _never_called)
  model_dir = tmp_path / 'run'
  result = run_main('--launcher=ray', '--config=seed_keras_mlp',
                    f'--model_dir={model_dir}', *args)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip() == result.last_line
  assert result.last_line.startswith('error: ') and fragment in (
      result.last_line)
  assert not model_dir.exists()


def _never_called(*args, **kwargs):
  raise AssertionError('Ray was started')


def test_without_ray_installed_the_launcher_says_how_to_install_it(
    tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'ray', None)  # find_spec: not installed.
  result = run_main('--launcher=ray', f'--model_dir={tmp_path / "run"}')
  assert result.returncode == 2
  assert result.stderr.strip() == (
      "error: --launcher=ray needs Ray: pip install 'tfpipeline[ray]'")


@pytest.mark.parametrize('flag', ['--num_workers=2', '--ray_address=auto',
                                  '--max_failures=1'])
def test_launcher_flags_without_the_ray_launcher_are_refused(tmp_path, flag):
  result = run_main('--config=seed_keras_mlp',
                    f'--model_dir={tmp_path / "run"}', flag)
  assert result.returncode == 2
  name = flag.split('=')[0]
  assert result.stderr.strip() == f'error: {name} needs --launcher=ray'


@pytest.mark.parametrize('text, resources', [
    ('CPU=2,GPU=1', {'CPU': 2.0, 'GPU': 1.0}),
    ('{"CPU": 4, "memory": 1e9}', {'CPU': 4.0, 'memory': 1e9}),
])
def test_resources_per_worker_as_json_or_a_list(text, resources):
  assert ray_launcher.parse_resources(text) == resources


@pytest.mark.parametrize('text', ['CPU', '{"CPU": "many"}', 'GPU=-1', '[1]'])
def test_bad_resources_per_worker(text):
  with pytest.raises(UserError, match='--resources_per_worker'):
    ray_launcher.parse_resources(text)


def test_a_local_cluster_too_small_for_the_workers_is_refused():
  cluster = ray_launcher.Cluster(2, resources={'CPU': 1, 'GPU': 1})
  with pytest.raises(UserError, match='2 workers need 2 GPU, and this '
                     'machine has 0'):
    ray_launcher._check_fits({'CPU': 2.0}, cluster)


def test_each_worker_runs_the_command_without_the_launchers_flags():
  argv = ['--launcher=ray', '--num_workers', '3', '--strategy=auto',
          '--model_dir=/runs/a', '--config.train.epochs=2',
          '--max_failures=1', '--resources_per_worker=CPU=2']
  assert ray_launcher.worker_argv(argv, ('launcher', 'num_workers',
                                         'max_failures',
                                         'resources_per_worker')) == [
      '--model_dir=/runs/a', '--config.train.epochs=2',
      '--strategy=multi_worker']


@pytest.mark.parametrize('code, line, error, message', [
    (2, 'error: data: no such file', UserError, 'data: no such file'),
    (3, 'preempted: a worker was preempted at step 40: checkpoint saved',
     Preempted, 'a worker was preempted at step 40: checkpoint saved'),
    (-9, 'I1205 ...] epoch 1/6', WorkersFailed,
     'the workers failed under Ray (worker 1 killed by SIGKILL: '),
])
def test_the_drivers_exit_follows_the_workers(code, line, error, message):
  from ray import train
  failure = train.WorkerGroupError('failed', {
      1: ray_launcher.WorkerExit(1, code, line)})
  outcome = ray_launcher._outcome(failure)
  assert type(outcome) is error and str(outcome).startswith(message)


def test_a_worker_that_does_not_see_the_chiefs_checkpoints_is_refused(
    tmp_path, by_hand):
  """The hand-started run, resumed for one more epoch with the same flags,
  --model_dir a relative path: each worker runs in a directory of its own,
  as on machines without shared storage, so the non-chief's is empty."""
  machines = [tmp_path / 'chief', tmp_path / 'other']
  for machine in machines:
    machine.mkdir()
  model_dir = machines[0] / 'run'
  shutil.copytree(by_hand(), model_dir)
  workers = start_workers(
      2, '--model_dir=run', *RUN, '--config.train.epochs=7',
      '--strategy=multi_worker', cwd=lambda index: machines[index])
  for process in workers:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr[-3000:]
    ours = [l for l in stderr.splitlines() if l.startswith('error: ')]
    assert ours == [
        'error: the workers of this run restored different steps from '
        'run/checkpoints (replica 0: 600, replica 1: 0): --model_dir must '
        'be storage every worker sees (NFS, a mounted bucket)'], (
            stderr[-3000:])
  # Nothing trained: the chief's records end where the run ended.
  assert read_jsonl(model_dir / 'metrics.jsonl')[-1]['step'] == 600
