"""tfpipeline.bench: what it measures and reports (never how fast)."""

import json
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO

from tfpipeline.bench import phases
from tfpipeline.bench import runs
from tfpipeline.bench import table_reading
from tfpipeline.bench import training


def test_flops_are_the_reports_multiply_adds_of_every_position():
  import keras
  seed = keras.Sequential([keras.Input((10,)), keras.layers.Dense(64),
                           keras.layers.Dense(1)])
  assert training.flops_per_example(seed) == 3 * 2 * (10 * 64 + 64 * 1)
  tokens = keras.Sequential([keras.Input((7,), dtype='int32'),
                             keras.layers.Embedding(30, 4),
                             keras.layers.Dense(8)])
  assert training.flops_per_example(tokens) == 3 * 2 * 7 * 4 * 8


def test_convnet_flops_are_the_cifar10_cnn_multiply_adds():
  from tfpipeline import config, models
  case = training.CASES['cifar_cnn_b256']
  model = models.build(config.load('cifar10_cnn'), None,
                       input_shape=case.image, input_dtype='uint8')
  convolutions = [(32, 3, 32), (32, 32, 32), (16, 32, 64), (16, 64, 64),
                  (8, 64, 128), (8, 128, 128)]  # (side, in, out), 3x3
  forward = sum(2 * side * side * 9 * c_in * c_out
                for side, c_in, c_out in convolutions)
  forward += 2 * (8 * 8 * 128 // 4 * 128 + 128 * 10)
  assert training.flops_per_example(model) == 3 * forward == 233_381_376


def test_convnet_settings_add_the_streamed_own_loop():
  case = training.CASES['cifar_cnn_b256']
  settings = training.settings(case)
  assert {'backend': 'tensorflow', 'engine': 'tfpipeline',
          'jit_compile': False, 'streamed': True} in settings
  assert {'backend': 'tensorflow', 'engine': 'tfpipeline',
          'jit_compile': True, 'streamed': True} in (
              training.settings(case, 'gpu'))
  assert len([s for s in settings if s['engine'] == 'keras_fit']) == 4
  # JAX streams as train.jit_compile=auto would compile: one call a step
  # for convolutions on a CPU, the whole block elsewhere.
  assert {'backend': 'jax', 'engine': 'tfpipeline', 'jit_compile': False,
          'streamed': True} in training.settings(case, backends=('jax',))
  assert {'backend': 'jax', 'engine': 'tfpipeline', 'jit_compile': True,
          'streamed': True} in training.settings(case, 'gpu', ('jax',))


def test_settings_compare_fit_only_where_it_runs():
  single = training.settings(training.CASES['seed_b256'])
  assert {s['engine'] for s in single} == {'tfpipeline', 'keras_fit'}
  assert {s['backend'] for s in single} == {'tensorflow'}
  assert {s['steps_per_execution'] for s in single
          if s['engine'] == 'keras_fit'} == {1, 200}
  mirrored = training.settings(training.CASES['mirrored_b256'])
  assert [s for s in mirrored if s['engine'] == 'keras_fit'] == [
      {'backend': 'tensorflow', 'engine': 'keras_fit', 'jit_compile': False,
       'steps_per_execution': 1}]


def test_jax_settings_are_the_engine_and_fit_at_its_best_after_tensorflows():
  case = training.CASES['wide_b512']
  both = training.settings(case, backends=('tensorflow', 'jax'))
  assert both[:len(training.settings(case))] == training.settings(case)
  assert both[len(training.settings(case)):] == [
      {'backend': 'jax', 'engine': 'tfpipeline', 'jit_compile': True},
      {'backend': 'jax', 'engine': 'tfpipeline', 'jit_compile': False},
      {'backend': 'jax', 'engine': 'keras_fit', 'jit_compile': True,
       'steps_per_execution': case.steps}]


def test_xla_own_loops_of_a_convnet_are_not_run_on_a_cpu():
  case = training.CASES['cifar_cnn_b256']
  left_out = [s for s in training.settings(case, 'cpu', ('tensorflow', 'jax'))
              if training.not_run(case, s, 'cpu')]
  assert left_out == [
      {'backend': 'tensorflow', 'engine': 'tfpipeline', 'jit_compile': True},
      {'backend': 'jax', 'engine': 'tfpipeline', 'jit_compile': True}]
  assert not any(training.not_run(case, s, 'gpu') for s in
                 training.settings(case, 'gpu', ('tensorflow', 'jax')))
  assert not any(training.not_run(training.CASES['seed_b256'], s, 'cpu')
                 for s in training.settings(training.CASES['seed_b256'],
                                            'cpu', ('tensorflow', 'jax')))


def test_worker_reports_one_setting():
  setting = {'case': 'seed_b32', 'backend': 'tensorflow',
             'engine': 'tfpipeline', 'jit_compile': True}
  completed = subprocess.run(
      [sys.executable, '-m', 'tfpipeline.bench', '--units=3',
       f'--worker={json.dumps(setting)}'], cwd=REPO, capture_output=True,
      text=True, timeout=300, check=True)
  result = json.loads(completed.stdout.strip().splitlines()[-1])
  assert (result['case'], result['engine'], result['replicas'],
          result['global_batch']) == ('seed_b32', 'tfpipeline', 1, 32)
  assert result['unit_steps'] == [200] * 4
  assert result['examples_per_sec'] == pytest.approx(
      result['global_batch'] / (result['ms_per_step'] / 1000))
  assert result['ms_per_step_min'] <= result['ms_per_step'] <= (
      result['ms_per_step_max'])
  assert 0 <= result['input_stall_pct'] <= 100
  assert result['compile_s'] >= 0 and result['first_step_s'] > 0
  seed_flops = 3 * 2 * (10 * 64 + 64 * 1)  # seed_b32: 10 -> 64 -> 1
  assert result['gflops'] == pytest.approx(
      seed_flops * 32 / (result['ms_per_step'] / 1000) / 1e9)


def test_jax_settings_run_side_by_side(tmp_path):
  """The JAX engine and Keras fit on JAX, each in a process on the JAX
  backend, over the same steps of the same case."""
  out = tmp_path / 'bench.json'
  subprocess.run(
      [sys.executable, '-m', 'tfpipeline.bench', '--cases=seed_b32',
       '--backends=jax', '--units=3', f'--out={out}'], cwd=REPO,
      capture_output=True, text=True, timeout=300, check=True)
  report = json.loads(out.read_text())
  assert report['machine']['jax']
  results = report['results']
  assert [(r['backend'], r['engine'], r['jit_compile']) for r in results] == [
      ('jax', 'tfpipeline', True), ('jax', 'tfpipeline', False),
      ('jax', 'keras_fit', True)]
  own, _, fit = results
  for r in results:
    assert 'error' not in r, r
    assert (r['case'], r['replicas'], r['global_batch']) == (
        'seed_b32', 1, 32)
    assert r['examples_per_sec'] > 0 and r['gflops'] > 0
  assert all(r['unit_steps'] == [200] * 4 for r in results)
  assert fit['steps_per_execution'] == 200 and fit['jit_compile']
  assert 0 <= own['input_stall_pct'] <= 100
  assert fit['input_stall_pct'] is None
  assert fit['vs_fit_best'] == 1.0
  assert own['vs_fit_best'] == pytest.approx(
      own['examples_per_sec'] / fit['examples_per_sec'])


def test_unknown_case_is_bad_input():
  completed = subprocess.run(
      [sys.executable, '-m', 'tfpipeline.bench', '--cases=nope'], cwd=REPO,
      capture_output=True, text=True, timeout=60)
  assert completed.returncode == 2
  last = completed.stderr.strip().splitlines()[-1]
  assert 'unknown nope' in last
  for name in ('cifar_cnn_b256', 'input_jpeg32', 'input_jpeg224', 'rss',
               'report_overhead'):
    assert name in last


def test_unknown_backend_is_bad_input():
  completed = subprocess.run(
      [sys.executable, '-m', 'tfpipeline.bench', '--cases=seed_b32',
       '--backends=jax,torch'], cwd=REPO, capture_output=True, text=True,
      timeout=60)
  assert completed.returncode == 2
  assert completed.stderr.strip().splitlines()[-1] == (
      'error: --backends=jax,torch: choose from tensorflow, jax')


def test_report_overhead_is_measured_against_a_run_without_the_report(
    monkeypatch):
  """Fake runs: 10 s with codecarbon (report 0.9 s), 9.5 s estimating
  (report 0.8 s); a run without a report would take 8.7 s."""
  clock = [0.0]
  commands = []

  def fake_run(command, **kwargs):
    commands.append(command)
    method = command[-1].rsplit('=', 1)[1]
    clock[0] += {'codecarbon': 10.0, 'estimate': 9.5}[method]
    report = {'codecarbon': 0.9, 'estimate': 0.8}[method]
    return subprocess.CompletedProcess(
        command, 0, '', f'I1122 runner.py:204] report: /tmp/x/report/'
        f'report.html ({report:.2f} s)\n')

  monkeypatch.setattr(runs.subprocess, 'run', fake_run)
  monkeypatch.setattr(runs.time, 'perf_counter', lambda: clock[0])
  result = runs.report_overhead(runs=2)
  assert [c[-1] for c in commands] == [
      '--config.report.energy_method=codecarbon',
      '--config.report.energy_method=estimate'] * 2
  assert result['estimate'] == {'wall_s': 9.5, 'report_s': 0.8,
                                'overhead_pct': pytest.approx(100 * 0.8 / 8.7)}
  assert result['codecarbon']['overhead_pct'] == pytest.approx(
      100 * 1.3 / 8.7)


def test_table_read_case_measures_every_reader(tmp_path):
  # 15,000 rows of 21 float32 columns: 1.2 MiB, over the 1 MiB budget the
  # cached readers get.
  results = table_reading.table_case(str(tmp_path), rounds=1, rows=15_000)
  assert [r['reader'] for r in results] == list(table_reading.READERS)
  for r in results:
    assert 'error' not in r, r
    assert r['seconds'] > 0 and r['rss_over_baseline_mib'] >= 0
    assert r['pass_seconds'] > 0 and r['rss_anon_mib'] > 0
    assert r['cached'] == (r['reader'] in table_reading.CACHED), r
    assert (r['batch_rows_per_s'] is None) == (r['reader'] == 'python_csv')
  assert results[0]['speedup_vs_python_csv'] == 1.0
  assert len(list((tmp_path / 'table_15000').glob('table.csv.*.table'))) == 1


def test_bench_is_a_package_that_registers_nothing_on_import():
  """The TFDS builder of the image cases is registered only by a case that
  reads it; no benchmark module sits at the package root."""
  import tfpipeline
  root = pathlib.Path(tfpipeline.__file__).parent
  assert not list(root.glob('bench*.py'))
  completed = subprocess.run(
      [sys.executable, '-c',
       'import tfpipeline, tfpipeline.bench, tfpipeline.bench.__main__; '
       'import tensorflow_datasets as tfds; '
       'print("bench_images" in tfds.list_builders('
       'with_community_datasets=False)); '
       'from tfpipeline.bench import images; '
       'print("bench_images" in tfds.list_builders('
       'with_community_datasets=False))'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
  assert completed.stdout.split() == ['False', 'True']


def test_small_run_alternates_the_default_run_and_plain_fit(monkeypatch):
  """Fake processes: default runs of 12 s, plain fits of 8 s, phase-timed
  runs of 13 s of which 12 s in the process (1 s before its first line)."""
  clock = [0.0]
  commands = []

  def fake_run(command, **kwargs):
    commands.append(command[2])
    if command[2] == 'tfpipeline.bench.phases':
      pathlib.Path(command[3]).write_text(json.dumps(
          {'returncode': 0, 'in_process_s': 12.0, 'seconds': {
              'imports: tensorflow, keras': 6.0, 'report': 1.0 + len(
                  commands) % 2, 'other': 5.0}}))
    clock[0] += {'tfpipeline.train': 12.0, 'tfpipeline.bench.plain_fit': 8.0,
                 'tfpipeline.bench.phases': 13.0}[command[2]]
    return subprocess.CompletedProcess(command, 0, '', '')

  monkeypatch.setattr(runs.subprocess, 'run', fake_run)
  monkeypatch.setattr(runs.time, 'perf_counter', lambda: clock[0])
  result = runs.small_run(rounds=3)
  assert commands == [
      'tfpipeline.train', 'tfpipeline.bench.plain_fit',
      'tfpipeline.bench.phases', 'tfpipeline.bench.plain_fit',
      'tfpipeline.train', 'tfpipeline.bench.phases', 'tfpipeline.train',
      'tfpipeline.bench.plain_fit', 'tfpipeline.bench.phases']
  assert (result['default_run_s'], result['plain_fit_s']) == (12.0, 8.0)
  assert result['ratio'] == 1.5
  assert result['phases_s'] == {'interpreter': 1.0,
                                'imports: tensorflow, keras': 6.0,
                                'report': 2.0, 'other': 5.0}


def test_small_run_reports_a_failed_process(monkeypatch):
  monkeypatch.setattr(runs.subprocess, 'run', lambda command, **kwargs: (
      subprocess.CompletedProcess(command, 2, '', 'error: no data\n')))
  assert runs.small_run(rounds=1) == {
      'case': 'small_run', 'error': 'default_run: error: no data'}


def test_phases_count_a_nested_call_in_its_own_phase_only(monkeypatch):
  ticks = iter([0.0, 1.0, 3.0, 4.0, 10.0, 11.0])
  monkeypatch.setattr(phases.time, 'perf_counter', lambda: next(ticks))
  clock = phases._Clock()
  inner = clock.timed(lambda: None, 'inner', 'inner: first call')
  outer = clock.timed(lambda: [inner(), inner()], 'outer')
  outer()  # 0 -> 11; the inner calls 1 -> 3 and 4 -> 10.
  assert dict(clock.seconds) == {'inner: first call': 2.0, 'inner': 6.0,
                                 'outer': 3.0}
  assert dict(clock.calls) == {'inner: first call': 1, 'inner': 1,
                               'outer': 1}
