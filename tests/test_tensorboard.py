"""What a run writes for TensorBoard beyond its curves: hyperparameters and
test metrics for the HParams plugin, and a profile of chosen steps."""

import json

import tensorflow as tf
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import read_jsonl, run_cli

from tfpipeline import config as config_lib
from tfpipeline import hparams


def _events(tensorboard):
  for path in sorted(tensorboard.glob('events.out.tfevents.*')):
    for record in tf.data.TFRecordDataset(str(path)):
      yield tf.compat.v1.Event.FromString(record.numpy())


def test_the_hyperparameters_are_the_training_keys_as_the_plugin_takes_them():
  config = config_lib.get_config()
  config.train.early_stopping.patience = 4
  chosen = hparams.hyperparameters(config)
  assert chosen['train.early_stopping.patience'] == 4.0
  assert chosen['optimizer.name'] == 'adam' and chosen['loss'] == 'mse'
  assert chosen['model.hidden_units'] == '(64,)'
  assert chosen['train.deterministic'] is False
  assert chosen['data.name'] == 'diabetes'
  assert not any(key.startswith(('report.', 'data.source')) for key in chosen)


def test_a_run_writes_its_hyperparameters_and_test_metrics(diabetes_run):
  model_dir, _ = diabetes_run
  written, scalars = None, {}
  for event in _events(model_dir / 'tensorboard'):
    for value in event.summary.value:
      if value.metadata.plugin_data.plugin_name == 'hparams':
        data = plugin_data_pb2.HParamsPluginData.FromString(
            value.metadata.plugin_data.content)
        if data.HasField('session_start_info'):
          written = (event.step, data.session_start_info)
      elif value.tag.startswith('test_'):
        scalars[value.tag] = (event.step, tf.make_ndarray(value.tensor))
  step, start = written
  assert step == 0 and start.group_name == 'run'
  config = json.loads((model_dir / 'config.json').read_text())
  assert start.hparams['optimizer.learning_rate'].number_value == (
      config['optimizer']['learning_rate'])
  assert start.hparams['loss'].string_value == 'mse'
  metrics = json.loads((model_dir / 'metrics.json').read_text())
  last_step = 50 * (309 // 32)
  assert {tag: (at, float(value)) for tag, (at, value) in scalars.items()} == {
      f'test_{name}': (last_step, float(tf.constant(value, tf.float32)))
      for name, value in metrics.items()}


def test_a_profile_of_the_chosen_steps_changes_nothing(tmp_path, tfds_dir,
                                                       diabetes_run):
  """train.profile_steps: TensorFlow's profiler from the first block
  boundary at step 100 or after (an epoch's end: 9 steps) to the first at
  200 or after, in the profile plugin's layout; the losses equal an
  unprofiled run's (the embedded default's, `diabetes_run`)."""
  model_dir = tmp_path / 'run'
  result = run_cli(f'--model_dir={model_dir}',
                   f'--config.data.data_dir={tfds_dir}',
                   '--config.train.profile_steps=(100, 200)')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'profiling from step 108' in result.stderr
  assert 'profiled to step 207' in result.stderr
  profiles = list((model_dir / 'tensorboard' / 'plugins' / 'profile').glob(
      '*/*.xplane.pb'))
  assert len(profiles) == 1 and profiles[0].stat().st_size > 1000
  losses = [(r['step'], r['loss']) for r in
            read_jsonl(model_dir / 'metrics.jsonl')]
  assert losses == [(r['step'], r['loss']) for r in
                    read_jsonl(diabetes_run[0] / 'metrics.jsonl')]
