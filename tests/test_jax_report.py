"""The report of runs on the JAX backend: XLA's FLOP count against the
formula, devices and energy, fairness, Integrated Gradients complete and
equal to the TensorFlow path's, the backend recorded, and the TFLite and
ONNX exports of digits_cnn checked against the JAX model.

Keras takes one backend per process and this one runs on TensorFlow, so
the runs are CLI subprocesses (a table, an image and a text experiment,
started together), and the attributions of the same saved models are
compared through tests/attributions_on_backend.py.
"""

import concurrent.futures
import csv
import importlib.metadata
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import attributions_on_backend
from conftest import REPO, cli_env, run_cli
from in_process import run_main

# Few steps (the report, not the training, is under test), but digits_cnn
# as shipped: test_digits_cnn_as_shipped_reaches_97_percent checks it, and
# its exports are checked.
RUNS = {
    'table': ('--config.train.epochs=2',),
    'image': ('--config=digits_cnn',  # As shipped: its accuracy band too.
              "--config.export.formats=('saved_model','tflite','onnx')"),
    'text': ('--config.data.source=tfds', '--config.data.name=tiny_reviews',
             "--config.data.features=('text',)", '--config.data.label=label',
             '--config.data.group=length', '--config.data.vocab_size=40',
             '--config.data.sequence_length=16',
             '--config.loss=binary_crossentropy',
             '--config.model.normalize_inputs=False',
             '--config.train.epochs=3',
             "--config.model.layers=(('Embedding', {'input_dim': 40, "
             "'output_dim': 8, 'mask_zero': True}), "
             "('GlobalAveragePooling1D', {}))"),
}


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tfds_dir, digits_array_record_dir, text_dir):
  """{kind: (model_dir, report.json)} of RUNS on one JAX CPU device."""
  root = tmp_path_factory.mktemp('jax-report')
  data_dirs = {'table': tfds_dir, 'image': digits_array_record_dir,
               'text': text_dir}

  def run(kind):
    return run_cli(*RUNS[kind], f'--model_dir={root / kind}',
                   '--backend=jax', '--strategy=cpu',
                   f'--config.data.data_dir={data_dirs[kind]}')

  with concurrent.futures.ThreadPoolExecutor(len(RUNS)) as pool:
    results = dict(zip(RUNS, pool.map(run, RUNS)))
  for kind, result in results.items():
    assert result.returncode == 0, (kind, result.stderr[-3000:])
  return {kind: (root / kind, json.loads(
      (root / kind / 'report' / 'report.json').read_text())) for kind in RUNS}


def test_flops_are_xla_s_and_agree_with_the_formula(runs):
  # Dense 10-64-1; digits_cnn (8x8 'same' 3x3 convolutions: XLA counts
  # the 22 x 22 taps inside the image, not the 8 x 8 x 9 of the formula);
  # the text model's Dense 8-1.
  dense = {'table': 2 * (10 * 64 + 64), 'image': 2 * 512 * 128 + 2 * 128 * 10,
           'text': 2 * 8}
  formula_conv = 2 * 8 * 8 * 9 * (1 * 32 + 32 * 32)
  xla_conv = 2 * 22 * 22 * (1 * 32 + 32 * 32)
  for kind, (_, report) in runs.items():
    compute = report['compute']
    flops = compute['forward_flops_per_example']
    assert flops['method'].startswith("XLA's cost_analysis() of the compiled")
    assert 'less those of convolution taps on zero padding' in (
        flops['cross_check'])
    assert flops['matmul_agrees'] and flops['pooling_agrees'], (kind, flops)
    conv = (formula_conv, xla_conv) if kind == 'image' else (0, 0)
    assert flops['analytic_matmul'] == dense[kind] + conv[0]
    assert flops['graph_matmul'] == dense[kind] + conv[1]
    # XLA's total adds the element-wise work to what is compared.
    assert flops['graph_total'] > flops['graph_matmul'] + flops[
        'graph_pooling']
    assert compute['training_flops'] == (
        3 * flops['graph_total'] * compute['examples_seen'])
  image = runs['image'][1]['compute']['forward_flops_per_example']
  # 2x2 max pooling of 8x8x32: 512 outputs, 4 inputs each, 3 comparisons.
  assert (image['analytic_pooling'], image['graph_pooling']) == (
      512 * 4, 512 * 3)


def test_devices_and_energy_on_the_jax_cpu(runs):
  for _, report in runs.values():
    compute = report['compute']
    devices = compute['devices']
    assert (devices['kind'], devices['count'], devices['replicas'],
            devices['workers']) == ('CPU', os.cpu_count(), 1, 1)
    assert compute['energy']['kwh'] > 0 and compute['energy']['co2e_kg'] > 0
    assert compute['utilisation']['precision'] == 'float32'
    assert 0 < compute['train_wall_s'] < compute['run_wall_s']


def test_fairness_of_the_diabetes_run_is_by_sex(runs):
  fairness = runs['table'][1]['fairness']
  assert fairness['evaluated'] and fairness['group'] == 'sex'
  assert len(fairness['by_group']) == 2
  assert set(fairness['gaps']) >= {'mse', 'mae'}


def test_integrated_gradients_are_complete_for_each_kind(runs):
  baselines = {'table': 'mean', 'image': 'black', 'text': 'padding'}
  examples = {'table': 67, 'image': 100, 'text': 60}
  for kind, (_, report) in runs.items():
    ig = report['attributions']
    assert (ig['kind'], ig['baseline'], ig['examples']) == (
        kind, baselines[kind], examples[kind])
    assert ig['completeness_error'] <= 0.05, (kind, ig['completeness_error'])
    assert not ig['completeness_warning']
  table = runs['table'][1]['attributions']
  assert np.asarray(table['per_example']).shape == (67, 10)
  assert {row['feature'] for row in table['ranking']} == {
      'age', 'sex', 'bmi', 'bp', 's1', 's2', 's3', 's4', 's5', 's6'}
  assert all(np.asarray(m['map']).shape == (8, 8) for m in runs['image'][1][
      'attributions']['class_maps'].values())
  sentence = runs['text'][1]['attributions']['sentences'][0]
  assert len(sentence['tokens']) == len(sentence['attributions']) > 0


def test_the_backend_is_recorded(runs):
  for model_dir, report in runs.values():
    config = json.loads((model_dir / 'config.json').read_text())
    assert config['train']['backend'] == 'jax'
    provenance = report['provenance']
    assert provenance['backend'] == 'jax'
    for package in ('jax', 'jaxlib', 'orbax-checkpoint'):
      assert provenance['packages'][package] == importlib.metadata.version(
          package)
    details = report['model_card']['model_details']
    assert details['backend'] == 'jax'
    assert f"on JAX {provenance['packages']['jax']} (jaxlib " in (
        details['software'])
    page = (model_dir / 'report' / 'report.md').read_text()
    assert 'Keras on its jax backend' in page
    assert '| Keras backend (train.backend) | jax |' in page


def test_attributions_equal_the_tensorflow_paths(tmp_path):
  """The same saved models explained on each backend: JAX's attributions
  (a subprocess) are TensorFlow's (this process) within float32 noise."""
  attributions_on_backend.save_models(tmp_path)
  with subprocess.Popen(
      [sys.executable, str(REPO / 'tests' / 'attributions_on_backend.py'),
       str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True, env={**cli_env(), 'KERAS_BACKEND': 'jax'}) as process:
    on_tf = attributions_on_backend.attributions(tmp_path)  # Meanwhile.
    _, stderr = process.communicate(timeout=600)
  assert process.returncode == 0, stderr[-3000:]
  on_jax = json.loads((tmp_path / 'attributions_jax.json').read_text())
  for kind in attributions_on_backend.KINDS:
    tf_result, jax_result = on_tf[kind], on_jax[kind]
    assert tf_result['steps'] == jax_result['steps'], kind
    assert jax_result['completeness_error'] == pytest.approx(
        tf_result['completeness_error'], abs=1e-4)

  def assert_close(got, want):
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=1e-5,
                               atol=1e-6 * np.abs(want).max(initial=0))

  assert_close(on_jax['table']['per_example'], on_tf['table']['per_example'])
  assert_close(on_jax['image']['drawn_maps'], on_tf['image']['drawn_maps'])
  assert on_jax['image']['class_maps'].keys() == on_tf['image'][
      'class_maps'].keys()
  for c, class_map in on_tf['image']['class_maps'].items():
    assert_close(on_jax['image']['class_maps'][c]['map'], class_map['map'])
  for got, want in zip(on_jax['text']['sentences'],
                       on_tf['text']['sentences'], strict=True):
    assert got['tokens'] == want['tokens']
    assert_close(got['attributions'], want['attributions'])
  for c, ranking in on_tf['text']['token_ranking'].items():
    for direction, rows in ranking.items():
      got = on_jax['text']['token_ranking'][c][direction]
      assert [r['token'] for r in got] == [r['token'] for r in rows]
      assert_close([r['mean_attribution'] for r in got],
                   [r['mean_attribution'] for r in rows])


def test_digits_cnn_as_shipped_reaches_97_percent(runs):
  model_dir, _ = runs['image']
  assert json.loads((model_dir / 'metrics.json').read_text())[
      'accuracy'] >= 0.97


def test_exports_of_digits_cnn_predict_like_the_jax_model(runs, tmp_path):
  """Converted from model.keras on the TensorFlow backend (a child
  process), checked in the run against the JAX model; predict --format
  scores the test split as the report's predictions.csv recorded it."""
  model_dir, report = runs['image']
  listed = json.loads((model_dir / 'MANIFEST.json').read_text())['files']
  for name, check in report['exports'].items():
    assert check['ok'] and check['path'] in listed, check
    assert check['examples'] == 256 and check['max_abs_diff'] <= 1e-4
  with open(model_dir / 'report' / 'predictions.csv', newline='') as f:
    recorded = list(csv.DictReader(f))
  columns = [f'prediction_{c}' for c in range(10)]
  want = np.array([[float(row[c]) for c in columns] for row in recorded])
  for name in ('tflite', 'onnx'):
    output = tmp_path / f'{name}.csv'
    result = run_main(str(model_dir), '--input=tfds:test',
                      f'--output={output}', f'--format={name}',
                      command='predict')
    assert result.returncode == 0, result.stderr[-3000:]
    with open(output, newline='') as f:
      rows = list(csv.DictReader(f))
    assert [r['index'] for r in rows] == [r['index'] for r in recorded]
    got = np.array([[float(row[c]) for c in columns] for row in rows])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
