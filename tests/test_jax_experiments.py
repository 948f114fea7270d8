"""Every experiment in experiments/ trains on --backend=jax: the catalogue
ones on tfds.testing.mock_data (nothing can download here) for one tiny
epoch, the others for one epoch (the wide MLP on 1,024 rows); digits_cnn
runs as shipped in test_jax_report.py. One JAX process runs them all (Keras
takes one backend per process; this one runs on TensorFlow)."""

import json
import subprocess
import sys

from conftest import REPO, cli_env

# Runs in the JAX process: argv = [out_dir].
_RUN_ALL = '''
import contextlib, json, pathlib, sys
sys.path.insert(0, 'tests')
from conftest import mock_catalogue
import tfpipeline
from tfpipeline import config

out = pathlib.Path(sys.argv[1])
catalogue = ('mnist_convnet', 'cifar10_cnn', 'imdb_text')  # Mocked: 64 rows.
results = {}
for name in config.available_experiments():
  if name == 'digits_cnn':
    continue
  c = config.load(name)
  c.report.energy_method = 'estimate'
  c.report.attribution_examples = 10  # The report is test_jax_report's.
  c.train.epochs = 1
  if name in catalogue:
    c.train.global_batch_size = 32
  if name == 'wide_mlp':
    c.data.num_examples = 1024
  with mock_catalogue(num_examples=64) if name in catalogue else (
      contextlib.nullcontext()):
    metrics = tfpipeline.run(c, out / name, strategy='cpu', backend='jax')
  report = json.loads((out / name / 'report' / 'report.json').read_text())
  results[name] = {'metrics': metrics,
                   'backend': report['provenance']['backend']}
print(json.dumps(results))
'''


def test_every_experiment_trains_on_jax(tmp_path):
  completed = subprocess.run(
      [sys.executable, '-c', _RUN_ALL, str(tmp_path)], cwd=REPO,
      capture_output=True, text=True, timeout=900,
      env={**cli_env(), 'KERAS_BACKEND': 'jax'})
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = json.loads(completed.stdout.strip().splitlines()[-1])
  from tfpipeline import config
  assert sorted([*results, 'digits_cnn']) == config.available_experiments()
  assert {r['backend'] for r in results.values()} == {'jax'}
  for name, result in results.items():
    assert all(value == value for value in result['metrics'].values()), name
