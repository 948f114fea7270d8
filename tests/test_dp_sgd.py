"""DP-SGD: clipping, noise, and the same DP step under every engine and
strategy; the privacy budget in the report."""

import dataclasses
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_weights_close, read_jsonl, run_cli
from conftest import with_noise_key_of
from tfpipeline import config, dp_sgd, models
from tfpipeline.data import pipeline, sources
from tfpipeline.engines import keras_fit, tf_loop
from tfpipeline.errors import UserError
from tfpipeline.report import privacy

STEPS = 20
DP = dp_sgd.DpSgd(l2_norm_clip=0.5, noise_multiplier=1.1, noise_key=(3, -5))


def _model_and_data(units=(64,), rows=320):
  c = config.load('seed_keras_mlp')
  c.data.num_examples = rows
  c.model.hidden_units = units
  splits = sources.load(c.data, loss=c.loss)
  keras.utils.set_random_seed(0)
  return c, models.build(c, splits.train), splits


def test_per_example_gradients_are_each_examples_own():
  _, model, splits = _model_and_data()
  train = splits.train.take(np.arange(6))
  x, y = train['features'], train['labels']
  loss_fn = models.loss_fn('mse')
  losses, gradients = dp_sgd.per_example_gradients(model, loss_fn, x, y)
  for i in (0, 5):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(loss_fn(y[i:i + 1], model(x[i:i + 1])))
    for got, want in zip(gradients, tape.gradient(
        loss, model.trainable_variables)):
      np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
    assert float(losses[i]) == pytest.approx(float(loss), rel=1e-6)


def test_every_per_example_gradient_is_clipped():
  _, model, splits = _model_and_data()
  train = splits.train.take(np.arange(64))
  x, y = train['features'], train['labels']
  _, gradients = dp_sgd.per_example_gradients(model, models.loss_fn('mse'),
                                              x, y)

  def norms(grads):
    return np.sqrt(sum(np.sum(np.reshape(g, (64, -1)) ** 2, axis=1)
                       for g in grads))

  before = norms(gradients)
  clip = float(np.median(before))  # Half the examples above it, half below.
  assert (before > clip).sum() == (before < clip).sum() == 32
  clipped = dp_sgd.clip(gradients, clip)
  after = norms(clipped)
  assert np.all(after <= clip * (1 + 1e-5))
  np.testing.assert_allclose(after[before > clip], clip, rtol=1e-5)
  small = before < clip  # Already small: untouched.
  for g, c in zip(gradients, clipped):
    np.testing.assert_array_equal(np.asarray(g)[small], np.asarray(c)[small])


def _dp_step(model, x, y, step, dp=DP):
  return dp_sgd.gradients(model, models.loss_fn('mse'), x, y, dp,
                          global_batch_size=len(x), step=step)[2]


def test_noise_is_gaussian_with_std_sigma_times_clip_and_keyed_by_step():
  _, model, splits = _model_and_data(units=(512,))
  train = splits.train.take(np.arange(32))
  x, y = train['features'], train['labels']
  _, per_example = dp_sgd.per_example_gradients(model, models.loss_fn('mse'),
                                                x, y)
  clipped_sum = [np.sum(g, axis=0) for g in dp_sgd.clip(per_example,
                                                        DP.l2_norm_clip)]
  noisy = _dp_step(model, x, y, tf.constant(7, tf.int64))
  noise = np.concatenate([(np.asarray(g) * 32 - s).ravel()
                          for g, s in zip(noisy, clipped_sum)])
  assert noise.size > 6000
  assert np.std(noise) == pytest.approx(1.1 * 0.5, rel=0.05)
  assert abs(np.mean(noise)) < 0.05
  again = _dp_step(model, x, y, tf.constant(7, tf.int64))
  other = _dp_step(model, x, y, tf.constant(8, tf.int64))
  np.testing.assert_array_equal(noisy[0], again[0])
  assert not np.allclose(noisy[0], other[0])
  # Keyed by the secret key, not a published seed: another key, other noise.
  other_key = dataclasses.replace(DP, noise_key=(3, -4))
  assert not np.allclose(noisy[0], _dp_step(
      model, x, y, tf.constant(7, tf.int64), other_key)[0])


def test_noise_key_comes_from_the_os_is_private_and_read_back(tmp_path):
  first = dp_sgd.noise_key(tmp_path / 'a', tmp_path / 'a')
  path = tmp_path / 'a' / dp_sgd.NOISE_KEY_FILE
  assert os.stat(path).st_mode & 0o777 == 0o600
  assert re.fullmatch(r'[0-9a-f]{32}\n', path.read_text())
  assert dp_sgd.noise_key(tmp_path / 'a', tmp_path / 'b') == first
  assert not (tmp_path / 'b').exists()  # Read, not copied.
  assert dp_sgd.noise_key(tmp_path / 'c', tmp_path / 'c') != first
  assert 'noise_key' not in repr(dataclasses.replace(DP, noise_key=first))
  path.write_text('not a key\n')
  with pytest.raises(UserError, match=f'{path} is not a DP noise key'):
    dp_sgd.noise_key(tmp_path / 'a', tmp_path / 'a')


def test_regularization_is_added_to_the_dp_gradient_unclipped_unnoised():
  _, model, splits = _model_and_data()
  train = splits.train.take(np.arange(32))
  x, y = train['features'], train['labels']
  step = tf.constant(4, tf.int64)
  plain = _dp_step(model, x, y, step)
  kernel = model.layers[0].kernel
  kernel.regularizer = keras.regularizers.L2(0.01)  # As kernel_regularizer does.
  losses, penalty, regularized = dp_sgd.gradients(
      model, models.loss_fn('mse'), x, y, DP, global_batch_size=32, step=step)
  assert float(penalty) == pytest.approx(
      0.01 * float(np.sum(np.square(kernel))), rel=1e-5)
  # d/dw 0.01 |w|^2 = 0.02 w, on the kernel only; the rest is unchanged.
  np.testing.assert_allclose(regularized[0] - plain[0],
                             0.02 * np.asarray(kernel), rtol=1e-4, atol=1e-7)
  for got, want in zip(regularized[1:], plain[1:]):
    np.testing.assert_array_equal(got, want)
  assert losses.shape == (32,)


def _batches(splits, steps_per_block=None):
  return pipeline.training_dataset_fn(splits.train, 32, seed=0,
                                      steps_per_block=steps_per_block)


def _own_loop_weights(jit_compile, dp=DP, micro_batches=1):
  c, model, splits = _model_and_data()
  loop = tf_loop.StepLoop(model, models.optimizer(c.optimizer),
                          models.loss_fn(c.loss),
                          tf.distribute.get_strategy(), step_batch_size=32,
                          jit_compile=jit_compile, dp=dp,
                          micro_batches=micro_batches)
  iterator = iter(tf.distribute.get_strategy().distribute_datasets_from_function(
      _batches(splits, steps_per_block=10)))
  losses = np.concatenate([loop.multi_step_on_iterator(iterator).losses
                           for _ in range(2)])
  return losses, model.get_weights()


@pytest.mark.parametrize('micro_batches', [1, 4])
def test_dp_step_is_the_same_in_the_fused_loop_per_step_loop_and_keras_fit(
    micro_batches):
  """The fused XLA loop's DP steps, each over one pass of 32, equal the
  per-step loop's and Keras fit's; with 4 micro-batches (gradient
  accumulation), each step's examples clipped in 4 passes of 8 and their
  sum noised once equal them too, noise included (one draw a step from the
  key)."""
  whole_losses, whole = _own_loop_weights(jit_compile=True)
  for jit_compile in (True, False) if micro_batches > 1 else (False,):
    losses, weights = _own_loop_weights(jit_compile,
                                        micro_batches=micro_batches)
    np.testing.assert_allclose(losses, whole_losses, rtol=1e-5)
    assert_weights_close(weights, whole, atol=1e-5)
  c, model, splits = _model_and_data()
  wrapped = keras_fit.OwnStep(model, keras_fit.dp_sgd_step(
      model, models.loss_fn(c.loss), DP, 32, micro_batches))
  wrapped.compile(optimizer=models.optimizer(c.optimizer), jit_compile=True,
                  steps_per_execution=5)
  history = wrapped.fit(
      tf.distribute.get_strategy().distribute_datasets_from_function(
          _batches(splits)), epochs=2, steps_per_epoch=10, shuffle=False,
      verbose=0)
  assert history.history['loss'][0] == pytest.approx(
      np.mean(whole_losses[:10]), rel=1e-5)
  assert_weights_close(model.get_weights(), whole, atol=1e-5)
  if micro_batches == 1:  # And DP changed the steps: not without it.
    _, without_dp = _own_loop_weights(jit_compile=True, dp=None)
    assert not np.allclose(whole[0], without_dp[0], atol=1e-3)


# The diabetes default less its training statistics (refused under DP).
DP_FLAGS = ('--config.privacy.dp=True', '--config.train.epochs=3',
            '--config.model.normalize_inputs=False',
            '--config.model.standardize_targets=False')


@pytest.fixture(scope='module')
def dp_one_device(tmp_path_factory, tfds_dir):
  model_dir = tmp_path_factory.mktemp('dp') / 'run'
  result = run_cli('--strategy=cpu', f'--model_dir={model_dir}',
                   f'--config.data.data_dir={tfds_dir}', *DP_FLAGS)
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


@pytest.mark.parametrize('engine', ['tfpipeline', 'keras_fit'])
def test_dp_under_mirrored_equals_one_device(tmp_path, tfds_dir,
                                             dp_one_device, engine):
  """Both engines on 2 logical CPUs take the own loop's one-device steps."""
  import tfpipeline
  model_dir = tmp_path / 'run'
  with_noise_key_of(dp_one_device, model_dir)
  result = run_cli('--strategy=mirrored', '--cpu_devices=2',
                   f'--engine={engine}', f'--model_dir={model_dir}',
                   f'--config.data.data_dir={tfds_dir}', *DP_FLAGS)
  assert result.returncode == 0, result.stderr[-3000:]
  assert_weights_close(tfpipeline.load_model(model_dir).get_weights(),
                       tfpipeline.load_model(dp_one_device).get_weights(),
                       atol=1e-5)
  epoch_losses = [r['loss'] for r in read_jsonl(dp_one_device /
                                                'metrics.jsonl')]
  np.testing.assert_allclose(
      [r['loss'] for r in read_jsonl(model_dir / 'metrics.jsonl')],
      epoch_losses, rtol=1e-5)


def test_report_states_the_privacy_budget(dp_one_device):
  report = json.loads((dp_one_device / 'report' / 'report.json').read_text())
  section = report['privacy']
  steps = 3 * (309 // 32)
  assert section['dp_sgd'] is True and section['steps'] == steps
  assert section['sampling_probability'] == 32 / 309
  assert section['epsilon'] == privacy.epsilon(
      noise_multiplier=1.1, sampling_probability=32 / 309, steps=steps,
      delta=1e-5)
  assert 'Poisson' in section['assumption']
  assert 'differential privacy' in ' '.join(
      report['model_card']['ethical_considerations'])


def test_target_epsilon_calibrates_the_noise(tmp_path, tfds_dir):
  model_dir = tmp_path / 'run'
  result = run_cli(f'--model_dir={model_dir}',
                   f'--config.data.data_dir={tfds_dir}', *DP_FLAGS,
                   '--config.privacy.target_epsilon=5.0')
  assert result.returncode == 0, result.stderr[-3000:]
  sigma = json.loads((model_dir / 'config.json').read_text())[
      'privacy']['noise_multiplier']
  assert sigma == privacy.calibrate_noise_multiplier(
      target_epsilon=5.0, sampling_probability=32 / 309, steps=27, delta=1e-5)
  report = json.loads((model_dir / 'report' / 'report.json').read_text())
  assert report['privacy']['epsilon'] == pytest.approx(5.0, rel=0.01)
  assert report['privacy']['noise_multiplier_source'].startswith('calibrated')


def test_no_raw_training_statistic_is_published(dp_one_device, tfds_dir):
  """Neither the model nor the report holds a training mean or variance."""
  import tfpipeline
  c = config.load('diabetes')
  c.data.data_dir = str(tfds_dir)
  train = sources.load(c.data, loss=c.loss).train.take()
  statistics = np.concatenate([
      train['features'].mean(axis=0), train['features'].var(axis=0),
      train['labels'].mean(axis=0), train['labels'].std(axis=0)]).astype(
          np.float32)
  weights = np.concatenate([w.ravel() for w in tfpipeline.load_model(
      dp_one_device).get_weights()]).astype(np.float32)
  assert not np.isin(statistics, weights).any()
  report_json = (dp_one_device / 'report' / 'report.json').read_text()
  report = json.loads(report_json)
  published = {float(v) for v in re.findall(r'-?\d+\.\d+(?:e-?\d+)?',
                                             report_json)}
  assert not published & {float(v) for v in statistics}
  assert not published & {float(np.float64(v)) for v in
                          train['features'].astype(np.float64).mean(axis=0)}
  assert report['attributions']['baseline'] == 'zeros'
  assert set(report['attributions']['baseline_values'].values()) == {0.0}
  section = report['privacy']
  assert section['covers'].startswith('The trained weights')
  assert any('training loss' in item for item in section['not_covered'])
  html = (dp_one_device / 'report' / 'report.html').read_text()
  assert 'Not covered: The training loss' in html


@pytest.mark.parametrize('flag, key', [
    ('--config.model.normalize_inputs=True', 'model.normalize_inputs'),
    ('--config.model.standardize_targets=True', 'model.standardize_targets'),
    ('--config.report.ig_baseline=mean', 'report.ig_baseline'),
])
def test_dp_refuses_exact_training_statistics(tmp_path, tfds_dir, flag, key):
  model_dir = tmp_path / 'run'
  result = run_cli(f'--model_dir={model_dir}',
                   f'--config.data.data_dir={tfds_dir}', *DP_FLAGS, flag)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.last_line.startswith(f'error: config key {key}=')
  assert 'with privacy.dp' in result.last_line
  assert not model_dir.exists()


def test_two_dp_runs_with_one_seed_end_with_different_weights(
    tmp_path, tfds_dir, dp_one_device):
  """The noise is secret: the published train.seed does not determine it."""
  import tfpipeline
  model_dir = tmp_path / 'run'
  result = run_cli('--strategy=cpu', f'--model_dir={model_dir}',
                   f'--config.data.data_dir={tfds_dir}', *DP_FLAGS)
  assert result.returncode == 0, result.stderr[-3000:]
  assert ((model_dir / 'config.json').read_text() ==
          (dp_one_device / 'config.json').read_text())
  first = tfpipeline.load_model(dp_one_device).get_weights()
  second = tfpipeline.load_model(model_dir).get_weights()
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert not np.allclose(a, b, atol=1e-4)


def test_the_noise_key_is_in_no_published_file(dp_one_device):
  import zipfile
  key_file = dp_one_device / 'checkpoints' / dp_sgd.NOISE_KEY_FILE
  key = bytes.fromhex(key_file.read_text().strip())
  words = [int.from_bytes(key[i:i + 8], 'little', signed=True)
           for i in (0, 8)]
  secrets = [key, key.hex().encode(), key.hex().upper().encode(),
             *(str(w).encode() for w in words),
             *(str(w % 2**64).encode() for w in words)]
  published = [p for p in dp_one_device.rglob('*')
               if p.is_file() and 'checkpoints' not in p.parts]
  assert {'config.json', 'MANIFEST.json', 'audit.jsonl', 'model.keras',
          'report.json', 'report.html', 'report.md'} <= {
              p.name for p in published}
  assert any(p.parts[-2] == 'tensorboard' or 'tensorboard' in p.parts
             for p in published)
  contents = {p: p.read_bytes() for p in published}
  with zipfile.ZipFile(dp_one_device / 'model.keras') as archive:
    contents.update({f'model.keras:{n}': archive.read(n)
                     for n in archive.namelist()})
  for path, data in contents.items():
    for secret in secrets:
      assert secret not in data, (path, secret)
  manifest = json.loads((dp_one_device / 'MANIFEST.json').read_text())
  assert 'checkpoints/dp_noise_key' not in manifest['files']
  assert any(name.startswith('checkpoints/ckpt-')
             for name in manifest['files'])
  report = json.loads((dp_one_device / 'report' / 'report.json').read_text())
  assert 'checkpoints/dp_noise_key' in report['privacy']['noise']
  assert 'secret' in report['privacy']['noise']


@pytest.mark.parametrize('layer, reason', [
    (('BatchNormalization', {}), 'updates moving_mean, moving_variance'),
    (('Dense', {'units': 4, 'activity_regularizer': 'l2'}),
     'has an activity_regularizer'),
])
def test_dp_refuses_layers_it_cannot_privatise(tmp_path, layer, reason):
  import tfpipeline
  c = config.load('seed_keras_mlp')
  c.privacy.dp = True
  c.model.layers = (('Dense', {'units': 8, 'activation': 'relu'}), layer)
  with pytest.raises(UserError, match=f'privacy.dp: layer .*{reason}'):
    tfpipeline.run(c, tmp_path / 'run', strategy='cpu')
  assert not (tmp_path / 'run').exists()


def test_dp_accepts_normalization_with_given_statistics():
  """Public constants, not training statistics: nothing updates them."""
  c = config.load('seed_keras_mlp')
  c.model.layers = (('Normalization', {'mean': [0.5] * 10,
                                       'variance': [0.08] * 10}),
                    ('Dense', {'units': 8, 'kernel_regularizer': 'l2'}),
                    ('Dropout', {'rate': 0.2}))
  splits = sources.load(c.data, loss=c.loss)
  assert dp_sgd.refused_layers(models.build(c, splits.train)) == []
