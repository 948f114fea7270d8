"""tfpipeline.bench: what it measures and reports (never how fast)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

from tfpipeline import bench


def test_flops_are_the_reports_multiply_adds_of_every_position():
  import keras
  seed = keras.Sequential([keras.Input((10,)), keras.layers.Dense(64),
                           keras.layers.Dense(1)])
  assert bench._flops_per_example(seed) == 3 * 2 * (10 * 64 + 64 * 1)
  tokens = keras.Sequential([keras.Input((7,), dtype='int32'),
                             keras.layers.Embedding(30, 4),
                             keras.layers.Dense(8)])
  assert bench._flops_per_example(tokens) == 3 * 2 * 7 * 4 * 8


def test_convnet_flops_are_the_cifar10_cnn_multiply_adds():
  from tfpipeline import config, models
  case = bench.CASES['cifar_cnn_b256']
  model = models.build(config.load('cifar10_cnn'), None,
                       input_shape=case.image, input_dtype='uint8')
  convolutions = [(32, 3, 32), (32, 32, 32), (16, 32, 64), (16, 64, 64),
                  (8, 64, 128), (8, 128, 128)]  # (side, in, out), 3x3
  forward = sum(2 * side * side * 9 * c_in * c_out
                for side, c_in, c_out in convolutions)
  forward += 2 * (8 * 8 * 128 // 4 * 128 + 128 * 10)
  assert bench._flops_per_example(model) == 3 * forward == 233_381_376


def test_convnet_settings_add_the_streamed_own_loop():
  settings = bench._settings(bench.CASES['cifar_cnn_b256'])
  assert {'engine': 'tfpipeline', 'jit_compile': False,
          'streamed': True} in settings
  assert {'engine': 'tfpipeline', 'jit_compile': True, 'streamed': True} in (
      bench._settings(bench.CASES['cifar_cnn_b256'], 'gpu'))
  assert len([s for s in settings if s['engine'] == 'keras_fit']) == 4


def test_settings_compare_fit_only_where_it_runs():
  single = bench._settings(bench.CASES['seed_b256'])
  assert {s['engine'] for s in single} == {'tfpipeline', 'keras_fit'}
  assert {s['steps_per_execution'] for s in single
          if s['engine'] == 'keras_fit'} == {1, 200}
  mirrored = bench._settings(bench.CASES['mirrored_b256'])
  assert [s for s in mirrored if s['engine'] == 'keras_fit'] == [
      {'engine': 'keras_fit', 'jit_compile': False, 'steps_per_execution': 1}]


def test_worker_reports_one_setting():
  setting = {'case': 'seed_b32', 'engine': 'tfpipeline', 'jit_compile': True}
  completed = subprocess.run(
      [sys.executable, '-m', 'tfpipeline.bench', '--units=3',
       f'--worker={json.dumps(setting)}'], cwd=REPO, capture_output=True,
      text=True, timeout=300, check=True)
  result = json.loads(completed.stdout.strip().splitlines()[-1])
  assert (result['case'], result['engine'], result['replicas'],
          result['global_batch']) == ('seed_b32', 'tfpipeline', 1, 32)
  assert result['examples_per_sec'] == pytest.approx(
      result['global_batch'] / (result['ms_per_step'] / 1000))
  assert result['ms_per_step_min'] <= result['ms_per_step'] <= (
      result['ms_per_step_max'])
  assert 0 <= result['input_stall_pct'] <= 100
  assert result['compile_s'] >= 0 and result['first_step_s'] > 0
  assert result['gflops'] == pytest.approx(bench._flops_per_example(
      bench.CASES['seed_b32']) * 32 / (result['ms_per_step'] / 1000) / 1e9)


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

  monkeypatch.setattr(bench.subprocess, 'run', fake_run)
  monkeypatch.setattr(bench.time, 'perf_counter', lambda: clock[0])
  result = bench._report_overhead(runs=2)
  assert [c[-1] for c in commands] == [
      '--config.report.energy_method=codecarbon',
      '--config.report.energy_method=estimate'] * 2
  assert result['estimate'] == {'wall_s': 9.5, 'report_s': 0.8,
                                'overhead_pct': pytest.approx(100 * 0.8 / 8.7)}
  assert result['codecarbon']['overhead_pct'] == pytest.approx(
      100 * 1.3 / 8.7)


def test_table_read_case_measures_every_reader(tmp_path):
  from tfpipeline import bench_tables
  # 15,000 rows of 21 float32 columns: 1.2 MiB, over the 1 MiB budget the
  # cached readers get.
  results = bench_tables.table_case(str(tmp_path), rounds=1, rows=15_000)
  assert [r['reader'] for r in results] == list(bench_tables.READERS)
  for r in results:
    assert 'error' not in r, r
    assert r['seconds'] > 0 and r['rss_over_baseline_mib'] >= 0
    assert r['pass_seconds'] > 0 and r['rss_anon_mib'] > 0
    assert r['cached'] == (r['reader'] in bench_tables.CACHED), r
    assert (r['batch_rows_per_s'] is None) == (r['reader'] == 'python_csv')
  assert results[0]['speedup_vs_python_csv'] == 1.0
  assert len(list((tmp_path / 'table_15000').glob('table.csv.*.table'))) == 1
