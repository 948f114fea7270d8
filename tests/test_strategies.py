"""Strategies: mirrored and multi-worker train to one device's weights."""

import json

import numpy as np
import pytest

from conftest import assert_weights_close, read_jsonl, run_cli
from conftest import start_workers

EPOCHS = 3  # 27 steps of the diabetes default


def _weights(model_dir):
  import tfpipeline
  return tfpipeline.load_model(model_dir).get_weights()


def _assert_same_training(model_dir, reference_dir):
  assert_weights_close(_weights(model_dir), _weights(reference_dir),
                       atol=1e-5)
  for key in ('loss', 'val_loss'):  # Validation: under the strategy too.
    losses = [r[key] for r in read_jsonl(model_dir / 'metrics.jsonl')
              if key in r]
    reference = [r[key] for r in read_jsonl(reference_dir / 'metrics.jsonl')
                 if key in r]
    assert len(losses) == len(reference) > 0
    np.testing.assert_allclose(losses, reference, rtol=1e-5)
  # Test predictions (spread over the replicas), in the split's order, and
  # the report's attributions.
  tables = [np.loadtxt(d / 'report' / 'predictions.csv', delimiter=',',
                       skiprows=1, usecols=(0, 1, -1))
            for d in (model_dir, reference_dir)]
  np.testing.assert_array_equal(tables[0][:, :2], tables[1][:, :2])
  np.testing.assert_allclose(tables[0][:, 2], tables[1][:, 2], rtol=1e-5)
  attributions = [json.loads((d / 'report' / 'report.json').read_text())[
      'attributions']['per_example'] for d in (model_dir, reference_dir)]
  np.testing.assert_allclose(*attributions, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope='module')
def one_device(tmp_path_factory, tfds_dir):
  model_dir = tmp_path_factory.mktemp('one') / 'run'
  result = run_cli('--strategy=cpu', f'--model_dir={model_dir}',
                   f'--config.data.data_dir={tfds_dir}',
                   f'--config.train.epochs={EPOCHS}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'strategy cpu (OneDeviceStrategy) with 1 replica' in result.stderr
  return model_dir


@pytest.mark.parametrize('strategy', ['mirrored', 'auto'])
def test_mirrored_over_two_logical_cpus_equals_one_device(
    tmp_path, tfds_dir, one_device, strategy):
  model_dir = tmp_path / 'run'
  result = run_cli(f'--strategy={strategy}', '--cpu_devices=2',
                   f'--model_dir={model_dir}',
                   f'--config.data.data_dir={tfds_dir}',
                   f'--config.train.epochs={EPOCHS}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'strategy mirrored (MirroredStrategy) with 2 replica' in (
      result.stderr)
  _assert_same_training(model_dir, one_device)


SGD = ('--config.optimizer.name=sgd', '--config.optimizer.learning_rate=0.05')


def test_clipping_under_mirrored_clips_the_whole_batchs_gradient(
    tmp_path, tfds_dir):
  """Keras's optimizer clips each replica's part of the gradient; the own
  loop clips their sum, so two replicas equal one device. Unclipped, SGD
  at this rate diverges on the diabetes targets (raw units, squared)."""
  runs = {}
  for name, args in (('one', ('--strategy=cpu',)),
                     ('mirrored', ('--strategy=mirrored', '--cpu_devices=2')),
                     ('unclipped', ('--strategy=cpu',))):
    runs[name] = tmp_path / name
    clip = () if name == 'unclipped' else (
        '--config.optimizer.global_clipnorm=0.5',)
    result = run_cli(*args, f'--model_dir={runs[name]}',
                     f'--config.data.data_dir={tfds_dir}',
                     f'--config.train.epochs={EPOCHS}', *SGD, *clip)
    if name == 'unclipped':
      assert result.returncode == 1
      assert 'loss or weights became NaN or Inf' in result.last_line
    else:
      assert result.returncode == 0, result.stderr[-3000:]
  _assert_same_training(runs['mirrored'], runs['one'])


def test_two_worker_processes_equal_one_device(tmp_path, tfds_dir,
                                               one_device):
  model_dir = tmp_path / 'run'
  processes = start_workers(
      2, '--strategy=multi_worker', f'--model_dir={model_dir}',
      f'--config.data.data_dir={tfds_dir}', f'--config.train.epochs={EPOCHS}')
  outputs = [p.communicate(timeout=600) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
    assert 'strategy multi_worker' in stderr and 'with 2 replica' in stderr
  assert 'only the chief writes' in outputs[1][1]
  _assert_same_training(model_dir, one_device)


def test_keras_fit_engine_under_mirrored(tmp_path, tfds_dir):
  model_dir = tmp_path / 'run'
  result = run_cli('--strategy=mirrored', '--cpu_devices=2',
                   '--engine=keras_fit', f'--model_dir={model_dir}',
                   f'--config.data.data_dir={tfds_dir}',
                   '--config.train.epochs=2')
  assert result.returncode == 0, result.stderr[-3000:]
  records = read_jsonl(model_dir / 'metrics.jsonl')
  assert [r['epoch'] for r in records] == [1, 2]
  assert records[1]['loss'] < records[0]['loss']


@pytest.mark.parametrize('args, fragment', [
    (['--strategy=gpu'], 'no GPU is visible'),
    (['--strategy=tpu'], 'no TPU found at --tpu=local'),
    (['--strategy=cpu', '--cpu_devices=0'], '--cpu_devices'),
])
def test_unavailable_devices_are_bad_input(tmp_path, args, fragment):
  model_dir = tmp_path / 'run'
  result = run_cli('--config=seed_keras_mlp', f'--model_dir={model_dir}',
                   *args)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.last_line.startswith('error: ') and fragment in result.last_line
  assert 'Traceback' not in result.stderr
  assert not model_dir.exists()


@pytest.mark.parametrize('tf_config, strategy, fragment', [
    ({'cluster': {'worker': []}, 'task': {'type': 'worker', 'index': 3}},
     'multi_worker', 'TF_CONFIG is not usable'),
    # Vertex AI's evaluator pool: a task outside the cluster.
    ({'cluster': {'chief': ['cmle-training-workerpool0-ab-0:2222'],
                  'worker': ['cmle-training-workerpool1-ab-0:2222']},
      'environment': 'cloud', 'task': {'type': 'evaluator', 'index': 0}},
     'multi_worker',
     """TF_CONFIG's task {"type": "evaluator", "index": 0}: tfpipeline runs """
     'no side-car evaluator'),
    # A cluster's task told to train alone (a TF_CONFIG left in the shell).
    ({'cluster': {'worker': ['127.0.0.1:2222', '127.0.0.1:2223']},
      'task': {'type': 'worker', 'index': 1}}, 'cpu',
     'TF_CONFIG describes a cluster of 2 tasks, but --strategy=cpu trains on '
     'this process alone: pass --strategy=multi_worker, or unset TF_CONFIG'),
], ids=['bad index', 'evaluator', 'alone'])
def test_bad_tf_config_is_bad_input(tmp_path, monkeypatch, tf_config,
                                    strategy, fragment):
  monkeypatch.setenv('TF_CONFIG', json.dumps(tf_config))
  model_dir = tmp_path / 'run'
  result = run_cli('--config=seed_keras_mlp', f'--model_dir={model_dir}',
                   f'--strategy={strategy}')
  assert result.returncode == 2
  assert result.stderr.strip() == result.last_line
  assert result.last_line.startswith('error: ') and fragment in (
      result.last_line)
  assert not model_dir.exists()


def _fake_host(tmp_path, dev_names, vendors):
  dev, pci = tmp_path / 'dev', tmp_path / 'pci'
  for name in dev_names:
    (dev / name).mkdir(parents=True)
  pci.mkdir()
  for i, vendor in enumerate(vendors):
    (pci / f'0000:00:0{i}.0').mkdir()
    (pci / f'0000:00:0{i}.0' / 'vendor').write_text(vendor + '\n')
  return str(dev), str(pci)


@pytest.mark.parametrize('dev_names, vendors, tpu', [
    (('vfio', 'nvidia0'), ('0x10de', '0x8086'), False),  # GPU VM with VFIO
    (('vfio',), ('0x1ae0',), True),                      # TPU v5e and later
    (('accel0', 'accel1'), (), True),                    # TPU VM up to v4
    (('nvidia0', 'null'), ('0x10de',), False),
    ((), (), False),
])
def test_tpu_detection_needs_a_tpu_not_just_vfio(tmp_path, monkeypatch,
                                                  dev_names, vendors, tpu):
  from tfpipeline import strategy
  for name in ('TPU_NAME', 'COLAB_TPU_ADDR', 'TPU_ACCELERATOR_TYPE'):
    monkeypatch.delenv(name, raising=False)
  dev, pci = _fake_host(tmp_path, dev_names, vendors)
  assert strategy._tpu_present(dev, pci) is tpu
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v5litepod-8')
  assert strategy._tpu_present(dev, pci) is True
