"""python -m tfpipeline.sweep: bad input refused before Ray starts (one
line, exit 2, nothing written); one real 4-trial ASHA sweep on a local Ray
cluster, interrupted by SIGTERM and resumed by the same command, its
summary ranking the trials as their metrics.jsonl do.

Ray and psutil are imported in the tests that use them: the TF 2.20 smoke
leg collects this file without the ray extra."""

import csv
import json
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, cli_env, read_jsonl, run_cli
from in_process import run_main
from tfpipeline import ray_local
from tfpipeline import search_space
from tfpipeline.errors import UserError

LR = 'optimizer.learning_rate'
# seed_keras_mlp at 4,000 rows: 125 steps an epoch, 4 epochs, a few seconds
# of training per trial on CI's two cores, two trials at a time.
SWEEP = ('--config=seed_keras_mlp', '--config.data.num_examples=4000',
         '--config.train.epochs=4', f'--search={LR}=loguniform(1e-4,1e-1)',
         '--trials=4', '--metric=val_loss', '--mode=min', '--grace_period=1',
         '--reduction_factor=2')
BASE = ('--config=seed_keras_mlp', '--config.train.epochs=4')


@pytest.mark.parametrize('args, fragment', [
    ([f'--search={LR}=lognormal(1,2)'], f'--search={LR}=lognormal(1,2): not '
     'a search spec; give KEY=loguniform(a,b)'),
    ([f'--search={LR}'], 'not a search spec'),
    ([f'--search={LR}=uniform(0.1,0.01)'], 'the low bound 0.1 must be below '
     'the high bound 0.01'),
    ([f'--search={LR}=loguniform(0,0.1)'], 'loguniform needs a low bound '
     'above 0'),
    ([f'--search={LR}=choice(0.1)'], 'choice() needs at least two values'),
    ([f'--search={LR}=choice(0.1, oops)'], 'takes Python literals'),
    (['--search=model.hidden=choice((64,),(32,))'], 'unknown config key '
     'model.hidden'),
    (['--search=model.hidden_units=choice(64,128)'], 'model.hidden_units=64 '
     'is refused'),
    (['--search=optimizer.name=choice("adam","lion")'],
     "optimizer.name='lion' is refused: config key optimizer.name='lion' is "
     'invalid'),
    (['--search=train.global_batch_size=uniform(16,64)'],
     'train.global_batch_size=16.0 is refused'),
    ([f'--search={LR}=uniform(0,0.1)'], f'{LR}=0.0 is refused'),
    ([f'--search={LR}=uniform(0.01,0.1)', f'--search={LR}=choice(0.1,0.2)'],
     f'{LR} is searched twice'),
    ([f'--search={LR}=uniform(0.01,0.1)', f'--config.{LR}=0.01'],
     f'{LR} is also set by --config.{LR}; drop one of them'),
    (['--trials=0'], '--trials'),
    (['--metric=val_accuracy'], '--metric=val_accuracy: not in the epoch '
     'records of this config\'s runs; use one of val_loss, loss, val_mae'),
    (['--mode=best'], '--mode'),
    (['--grace_period=5'], '--grace_period=5: more than the 4 epochs'),
    (['--cpus_per_trial=1000'], '--cpus_per_trial=1000: this machine has'),
    (['--config.train.epochs=0'], 'train.epochs'),
], ids=['unknown kind', 'no space', 'bounds', 'log bound', 'one choice',
        'not a literal', 'unknown key', 'type', 'value', 'float for int',
        'range bound', 'twice', 'also overridden', 'trials', 'metric', 'mode',
        'grace period', 'cpus', 'config'])
def test_bad_input_is_refused_before_ray_starts(tmp_path, monkeypatch, args,
                                                fragment):
  monkeypatch.setattr(ray_local, 'connected', _never_called)
  sweep_dir = tmp_path / 'sweep'
  _assert_refused(run_main(f'--model_dir={sweep_dir}', *BASE, *args,
                           command='sweep'), fragment)
  assert not sweep_dir.exists()


def _never_called(*args, **kwargs):
  raise AssertionError('Ray was started')


def _assert_refused(result, fragment: str) -> None:
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip() == result.last_line
  assert result.last_line.startswith('error: ') and fragment in (
      result.last_line), result.last_line


def test_a_sweep_dir_that_is_not_a_sweep_is_refused(tmp_path, monkeypatch):
  monkeypatch.setattr(ray_local, 'connected', _never_called)
  (tmp_path / 'other.txt').write_text('mine')
  search = f'--search={LR}=uniform(0.01,0.1)'
  _assert_refused(run_main(f'--model_dir={tmp_path}', *BASE, search,
                           command='sweep'),
                  'holds files but no sweep (no sweep.json)')
  _assert_refused(run_main(f'--model_dir={tmp_path / "other.txt"}', *BASE,
                           search, command='sweep'), 'is a file')
  _assert_refused(run_main(*BASE, search, command='sweep'),
                  "--model_dir: give the sweep's directory")
  assert [p.name for p in tmp_path.iterdir()] == ['other.txt']


def test_without_ray_installed_the_sweep_says_how_to_install_it(
    tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'ray', None)  # find_spec: not installed.
  result = run_main(f'--model_dir={tmp_path / "sweep"}', command='sweep')
  assert result.returncode == 2
  assert result.stderr.strip() == ('error: python -m tfpipeline.sweep needs '
                                   "Ray: pip install 'tfpipeline[ray]'")


def test_the_command_refuses_a_bad_spec_in_one_line(tmp_path):
  """The one subprocess of the refusals: the command's own process."""
  result = run_cli(f'--model_dir={tmp_path / "sweep"}', *BASE,
                   f'--search={LR}=uniform(1,0)', command='sweep')
  assert result.returncode == 2
  assert result.stderr.strip() == (
      f'error: --search={LR}=uniform(1,0): the low bound 1 must be below the '
      f'high bound 0')
  assert not (tmp_path / 'sweep').exists()


@pytest.mark.parametrize('spec, key, kind, values', [
    (f'{LR}=loguniform(1e-4, 1e-1)', LR, 'loguniform', (1e-4, 1e-1)),
    ('model.hidden_units=choice((64,), (128, 64))', 'model.hidden_units',
     'choice', ((64,), (128, 64))),
    ('train.seed=randint(0,3)', 'train.seed', 'randint', (0, 3)),
    ('optimizer.name = choice("adam", "sgd")', 'optimizer.name', 'choice',
     ('adam', 'sgd')),
])
def test_search_specs_are_parsed(spec, key, kind, values):
  dimension = search_space.parse(spec)
  assert (dimension.key, dimension.kind, dimension.values) == (key, kind,
                                                               values)


def test_a_searched_value_reaches_the_command_line_as_train_reads_it():
  assert search_space.as_flag('model.hidden_units', (128, 64)) == (
      '--config.model.hidden_units=(128, 64)')
  assert search_space.as_flag('optimizer.name', 'sgd') == (
      '--config.optimizer.name=sgd')
  assert search_space.as_flag(LR, 0.001) == f'--config.{LR}=0.001'


def test_randint_includes_its_high_bound():
  domain = search_space.parse('train.seed=randint(0,1)').domain()
  assert sorted(set(domain.sample(size=200))) == [0, 1]


def test_a_value_of_the_wrong_type_is_refused():
  from tfpipeline import config
  with pytest.raises(UserError, match='give a value of its type'):
    search_space.with_values(config.load('seed_keras_mlp'),
                             {'model.hidden_units': 64})


# The real sweep: started, stopped by SIGTERM once a trial has reported an
# epoch, resumed by the same command, then rerun once it is complete.


def _trial_dirs(sweep_dir: pathlib.Path) -> list[pathlib.Path]:
  trials = sweep_dir / 'trials'
  return sorted(p for p in trials.iterdir() if p.is_dir()) if (
      trials.is_dir()) else []


def _epoch_records(model_dir: pathlib.Path) -> list[dict]:
  log = model_dir / 'metrics.jsonl'
  return [r for r in read_jsonl(log) if 'val_loss' in r] if log.exists() else []


def _sweep_processes(sweep_dir: pathlib.Path) -> list:
  """Processes whose command line names the sweep (its trials' commands)."""
  import psutil  # pylint: disable=g-import-not-at-top
  found = []
  for process in psutil.process_iter(['cmdline']):
    if str(sweep_dir) in ' '.join(process.info['cmdline'] or ()):
      found.append(process)
  return found


def _summary(sweep_dir: pathlib.Path) -> list[dict]:
  with open(sweep_dir / 'summary.csv', newline='') as f:
    return list(csv.DictReader(f))


def _files(model_dir: pathlib.Path) -> dict:
  """Each file of a trial's model_dir: its bytes and modification time."""
  return {path.relative_to(model_dir): (path.read_bytes(),
                                        path.stat().st_mtime_ns)
          for path in model_dir.rglob('*') if path.is_file()}


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  """The sweep, interrupted, resumed and rerun: its directory, the
  interrupted run's exit code, stderr and summary, the resumed run's
  result, and the trials' files before and after the rerun."""
  import ray  # pylint: disable=g-import-not-at-top,unused-import
  sweep_dir = tmp_path_factory.mktemp('sweep') / 'lr'
  driver = subprocess.Popen(
      [sys.executable, '-m', 'tfpipeline.sweep', f'--model_dir={sweep_dir}',
       *SWEEP], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True, env=cli_env())
  deadline = time.monotonic() + 300
  while driver.poll() is None and time.monotonic() < deadline and not any(
      _epoch_records(model_dir) for model_dir in _trial_dirs(sweep_dir)):
    time.sleep(0.02)
  driver.send_signal(signal.SIGTERM)
  _, stderr = driver.communicate(timeout=300)
  assert not _sweep_processes(sweep_dir)  # No trial outlives the driver.
  interrupted = _summary(sweep_dir)
  resumed = run_cli(f'--model_dir={sweep_dir}', *SWEEP, command='sweep')
  assert not _sweep_processes(sweep_dir)
  complete = {d.name: _files(d) for d in _trial_dirs(sweep_dir)}
  rerun = run_cli(f'--model_dir={sweep_dir}', *SWEEP, command='sweep')
  assert rerun.returncode == 0, rerun.stderr[-5000:]
  assert rerun.last_line == resumed.last_line
  after_rerun = {d.name: _files(d) for d in _trial_dirs(sweep_dir)}
  return (sweep_dir, driver.returncode, stderr, interrupted, resumed,
          complete, rerun, after_rerun)


def test_an_interrupted_sweep_exits_3_and_says_how_to_resume(sweep):
  _, code, stderr, interrupted, *_ = sweep
  assert code == 3, stderr[-5000:]
  assert stderr.strip().splitlines()[-1].endswith(
      'trials done; rerun the same command to resume')
  assert any(row['status'].startswith('interrupted at epoch')
             for row in interrupted), interrupted


def test_a_resumed_sweep_resumes_trials_from_their_checkpoints(sweep):
  """The trial that had written an epoch was training when the sweep was
  stopped, and the first to reach a rung is never stopped by ASHA: one
  trial at least resumed from its checkpoint. (A trial ASHA stops at the
  moment the sweep is interrupted is listed as interrupted until the
  resumed sweep's summary.)"""
  sweep_dir, _, _, interrupted, resumed, *_ = sweep
  assert resumed.returncode == 0, resumed.stderr[-5000:]
  logs = [(sweep_dir / 'trials' / f'{row["trial"]}.log').read_text()
          for row in interrupted]
  assert any('resuming from the checkpoint at step' in log for log in logs)
  # Plain lines: the sweep's own, and its trials' in their log files.
  assert re.search(r'^trial_\d+ epoch \d  val_loss ', resumed.stderr,
                   re.MULTILINE), resumed.stderr[-5000:]
  assert any(re.search(r'^epoch \d/4  step \d+  loss ', log, re.MULTILINE)
             for log in logs)
  assert not any('\r' in log or '\x1b' in log for log in logs)
  for model_dir in _trial_dirs(sweep_dir):
    steps = [r['step'] for r in read_jsonl(model_dir / 'metrics.jsonl')]
    assert steps == sorted(set(steps)), model_dir  # No record twice.


def test_a_complete_sweep_rerun_keeps_every_trial(sweep):
  """Without starting Ray: its state says every trial has ended."""
  *_, complete, rerun, after_rerun = sweep
  assert after_rerun == complete
  assert 'has ended; nothing to resume' in rerun.stderr
  assert 'resuming the sweep' not in rerun.stderr


def test_the_sweep_ranks_its_trials_by_their_metric(sweep):
  sweep_dir, _, _, _, resumed, *_ = sweep
  rows = _summary(sweep_dir)
  assert [p.name for p in _trial_dirs(sweep_dir)] == sorted(
      row['trial'] for row in rows) and len(rows) == 4
  last = {}
  for row in rows:
    model_dir = pathlib.Path(row['model_dir'])
    assert model_dir == sweep_dir / 'trials' / row['trial']
    records = _epoch_records(model_dir)
    last[row['trial']] = records[-1]['val_loss']
    assert float(row['last val_loss']) == pytest.approx(last[row['trial']],
                                                        rel=1e-5)
    assert float(row['best val_loss']) == pytest.approx(
        min(r['val_loss'] for r in records), rel=1e-5)
    assert int(row['epochs']) == records[-1]['epoch']
    config = json.loads((model_dir / 'config.json').read_text())
    assert float(row[LR]) == config['optimizer']['learning_rate']
    if row['status'] == 'done':
      assert (model_dir / 'report' / 'report.json').is_file()
      assert (model_dir / 'MANIFEST.json').is_file()
      assert records[-1]['epoch'] == 4
    else:  # Stopped as a preempted run: checkpoint saved, exit 3.
      assert row['status'].startswith('stopped by ASHA at epoch '), row
      assert list((model_dir / 'checkpoints').iterdir())
      assert read_jsonl(model_dir / 'audit.jsonl')[-1]['outcome'].startswith(
          'preempted: SIGTERM')
      assert not (model_dir / 'MANIFEST.json').exists()
  assert any(row['status'] == 'done' for row in rows)
  assert any(row['status'].startswith('stopped by ASHA') for row in rows)
  assert [row['trial'] for row in rows] == sorted(last, key=last.get)
  assert [int(row['rank']) for row in rows] == [1, 2, 3, 4]
  best = rows[0]
  assert resumed.last_line == (
      f'best: {best["trial"]} val_loss {float(best["last val_loss"]):.6g}: '
      f'{best["model_dir"]}')


def test_the_summary_page_plots_the_metric_against_each_searched_key(sweep):
  sweep_dir = sweep[0]
  page = (sweep_dir / 'summary.html').read_text()
  assert page.count('<img ') == 1
  assert f'<h2>val_loss against {LR}</h2>' in page
  assert page.count('<tr>') == 5  # The header and the four trials.


def test_a_sweep_dir_is_resumed_only_by_the_same_sweep(sweep, monkeypatch):
  sweep_dir = sweep[0]
  monkeypatch.setattr(ray_local, 'connected', _never_called)
  before = {p: p.stat().st_mtime_ns for p in sweep_dir.iterdir()}
  changed = [a.replace('1e-1)', '1e-2)') for a in SWEEP]
  _assert_refused(run_main(f'--model_dir={sweep_dir}', *changed,
                           command='sweep'),
                  f'--model_dir={sweep_dir} holds a sweep with another '
                  f'--search; rerun it with its own flags')
  _assert_refused(run_main(f'--model_dir={sweep_dir}', *SWEEP,
                           '--config.data.num_examples=2000',
                           command='sweep'),
                  'holds a sweep with another config key data.num_examples')
  assert {p: p.stat().st_mtime_ns for p in sweep_dir.iterdir()} == before
