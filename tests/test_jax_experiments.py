"""Every experiment in experiments/ trains on --backend=jax: the catalogue
ones on tfds.testing.mock_data (nothing can download here) for one tiny
epoch, the others for one epoch (the wide MLP on fewer rows), and
digits_cnn as shipped, to its accuracy band. One JAX process runs them all
(Keras takes one backend per process; this one runs on TensorFlow)."""

import json
import subprocess
import sys

from conftest import REPO, cli_env

# Runs in the JAX process: argv = [data_dir of the digits, out_dir].
_RUN_ALL = '''
import json, pathlib, sys
sys.path.insert(0, 'tests')
from conftest import mock_catalogue
import tfpipeline
from tfpipeline import config

digits_dir, out = sys.argv[1], pathlib.Path(sys.argv[2])
results = {}
for name in config.available_experiments():
  c = config.load(name)
  c.report.energy_method = 'estimate'
  if name == 'digits_cnn':
    c.data.data_dir = digits_dir
  else:
    c.train.epochs = 1
  if name == 'wide_mlp':
    c.data.num_examples = 4096
  with mock_catalogue(num_examples=64):
    metrics = tfpipeline.run(c, out / name, strategy='cpu', backend='jax')
  report = json.loads((out / name / 'report' / 'report.json').read_text())
  results[name] = {'metrics': metrics,
                   'backend': report['provenance']['backend']}
print(json.dumps(results))
'''


def test_every_experiment_trains_on_jax(tmp_path, digits_array_record_dir):
  completed = subprocess.run(
      [sys.executable, '-c', _RUN_ALL, str(digits_array_record_dir),
       str(tmp_path)], cwd=REPO, capture_output=True, text=True,
      timeout=900, env={**cli_env(), 'KERAS_BACKEND': 'jax'})
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = json.loads(completed.stdout.strip().splitlines()[-1])
  from tfpipeline import config
  assert sorted(results) == config.available_experiments()
  assert {r['backend'] for r in results.values()} == {'jax'}
  for name, result in results.items():
    assert all(value == value for value in result['metrics'].values()), name
  assert results['digits_cnn']['metrics']['accuracy'] >= 0.97
