"""The report's parts on known inputs: IG, fairness, privacy, FLOPs, energy,
manifest and audit log."""

import hashlib
import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfpipeline import accelerators, config, integrity
from tfpipeline.report import attributions, compute, fairness, privacy
from tfpipeline.report import integrated_gradients as ig
from tfpipeline.report import plots, render

from conftest import REPO


def _mlp(activation, seed=0, inputs=4):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([keras.Input((inputs,)),
                           keras.layers.Dense(16, activation),
                           keras.layers.Dense(1)])


def test_integrated_gradients_are_complete_on_a_smooth_model():
  model = _mlp('tanh')
  x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
  baseline = np.zeros(4, np.float32)
  result = ig.IntegratedGradients(model, (4,), steps=50)(x, baseline)
  error = ig.completeness_error(
      result, model(x).numpy()[:, 0], model(baseline[None]).numpy()[0, 0])
  assert error <= 1e-3


def test_a_feature_the_model_ignores_gets_zero():
  model = _mlp('tanh')
  kernel, bias = model.layers[0].get_weights()
  kernel[2] = 0.0  # Feature 2 reaches nothing.
  model.layers[0].set_weights([kernel, bias])
  x = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
  result = ig.IntegratedGradients(model, (4,))(x, x.mean(axis=0))
  assert np.all(result[:, 2] == 0.0)
  assert np.all(np.abs(result[:, [0, 1, 3]]).sum(axis=0) > 0)


def test_linear_model_attributions_are_weight_times_displacement():
  keras.utils.set_random_seed(3)
  model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
  w = model.layers[0].get_weights()[0][:, 0]
  x = np.random.default_rng(2).normal(size=(8, 5)).astype(np.float32)
  baseline = np.linspace(-1, 1, 5).astype(np.float32)
  result = ig.IntegratedGradients(model, (5,), steps=7)(x, baseline)
  np.testing.assert_allclose(result, w * (x - baseline), rtol=1e-5,
                             atol=1e-6)


def test_attribution_section_ranks_the_features_that_matter():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
  model.layers[0].set_weights([np.array([[0.1], [5.0], [0.0]], np.float32),
                               np.zeros(1, np.float32)])
  x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
  section, drawing = attributions.section(
      model, {'features': x}, kind='table', report_config=_report_config(),
      classification=False, train_mean=np.zeros(3),
      feature_names=['a', 'b', 'c'])
  assert drawing is None and section['baseline'] == 'mean'
  assert [r['feature'] for r in section['ranking']] == ['b', 'a', 'c']
  assert section['ranking'][2]['mean_abs_attribution'] == 0.0
  assert section['completeness_error'] < 1e-5
  assert not section['completeness_warning']


def _report_config(**overrides):
  report_config = config.get_config().report
  report_config.update(overrides)
  return report_config


def _convnet(seed=0):
  """uint8 (8, 8, 1) images -> 3 classes, like digits_cnn."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((8, 8, 1), dtype='uint8'), keras.layers.Rescaling(1 / 255),
      keras.layers.Conv2D(8, 3, activation='relu'),
      keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
      keras.layers.Dense(3, activation='softmax')])


def _images(count=12, seed=0):
  images = np.random.default_rng(seed).integers(
      0, 256, size=(count, 8, 8, 1)).astype(np.uint8)
  images[:, :, :2] = 0  # Two black columns.
  return images


def test_image_attributions_from_black_are_complete_and_zero_on_black():
  model, images = _convnet(), _images()
  section, drawing = attributions.section(
      model, {'features': images, 'labels': np.arange(12) % 3},
      kind='image', report_config=_report_config(), classification=True)
  assert section['baseline'] == 'black' and section['kind'] == 'image'
  assert section['completeness_error'] <= 0.05
  predicted = model.predict(images, verbose=0).argmax(axis=1)
  assert sorted(section['class_maps']) == sorted(map(str, set(predicted)))
  for name, entry in section['class_maps'].items():
    assert entry['examples'] == int((predicted == int(name)).sum())
    class_map = np.asarray(entry['map'])
    assert class_map.shape == (8, 8) and class_map.min() >= 0
    # A black pixel is its own baseline: nothing to attribute.
    assert np.all(class_map[:, :2] == 0) and class_map.max() > 0
  assert drawing['images'].dtype == np.uint8
  assert drawing['maps'].shape == (len(drawing['images']), 8, 8)
  assert np.all(drawing['maps'][:, :, :2] == 0)
  png = plots.attribution_examples_png(**drawing)
  assert png.startswith(b'\x89PNG')


def test_a_blurred_baseline_explains_shapes_not_flat_colour():
  flat = np.full((2, 16, 16, 3), 100.0, np.float32)
  np.testing.assert_allclose(attributions.blurred(flat), flat, rtol=1e-6)
  edge = np.zeros((1, 16, 16, 1), np.float32)
  edge[:, :, 8:] = 255
  smooth = attributions.blurred(edge)
  assert 0 < smooth[0, 0, 7, 0] < 255 and smooth[0, 0, 0, 0] < 5
  model = _convnet()
  images = np.full((4, 8, 8, 1), 90, np.uint8)
  section, _ = attributions.section(
      model, {'features': images, 'labels': np.zeros(4)}, kind='image',
      report_config=_report_config(ig_baseline='blurred'), classification=True)
  # A flat image blurs to itself: no difference to attribute.
  assert all(np.all(np.asarray(e['map']) == 0)
             for e in section['class_maps'].values())


def test_large_class_maps_are_area_averaged_to_64_a_side():
  big = np.arange(256 * 128, dtype=np.float32).reshape(256, 128)
  pooled = attributions._pooled(big)
  assert pooled.shape == (64, 32)
  np.testing.assert_allclose(pooled[0, 0], big[:4, :4].mean())


def _bag_of_embeddings(mask_zero=False, seed=0):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((6,), dtype='int64'),
      keras.layers.Embedding(8, 4, mask_zero=mask_zero),
      keras.layers.GlobalAveragePooling1D(),
      keras.layers.Dense(1, activation='sigmoid')])


VOCABULARY = ['', '[UNK]', 'good', 'bad', 'plot', 'the', '<b>&', 'film']
TOKENS = np.array([[2, 5, 4, 0, 0, 0], [3, 5, 7, 4, 0, 0], [2, 2, 7, 0, 0, 0],
                   [3, 3, 5, 4, 7, 0], [2, 4, 7, 0, 0, 0], [3, 7, 5, 0, 0, 0]])


@pytest.mark.parametrize('mask_zero', [False, True])
def test_text_attributions_over_embeddings_are_complete(mask_zero):
  model = _bag_of_embeddings(mask_zero)
  section, drawing = attributions.section(
      model, {'features': TOKENS, 'labels': np.zeros(6)}, kind='text',
      report_config=_report_config(), classification=True,
      vocabulary=VOCABULARY)
  assert drawing is None and section['baseline'] == 'padding'
  assert section['completeness_error'] <= 1e-3
  first = section['sentences'][0]
  assert first['tokens'] == ['good', 'the', 'plot']  # No padding.
  # Toward the predicted class: class 1's output, or its negation.
  probability = float(model(TOKENS[:1])[0, 0])
  assert first['predicted'] == int(probability > 0.5)
  embedded = model.layers[0](TOKENS[:1])
  padding = model.layers[0](np.zeros((1, 6), np.int64))
  rest = lambda x: model.layers[2](model.layers[1](x, mask=(
      TOKENS[:1] != 0) if mask_zero else None))
  delta = float(rest(embedded)[0, 0] - rest(padding)[0, 0])
  assert abs(sum(first['attributions']) * (1 if probability > 0.5 else -1)
             - delta) <= 1e-3 * max(abs(delta), 1e-3)


def test_tokens_rank_by_their_weight_toward_each_class():
  model = _bag_of_embeddings()
  embedding = np.zeros((8, 4), np.float32)
  embedding[2, 0], embedding[3, 0] = 3.0, -3.0  # good +, bad -
  embedding[7, 0] = 0.5  # film slightly +
  model.layers[0].set_weights([embedding])
  model.layers[2].set_weights([np.eye(4, 1, dtype=np.float32),
                               np.zeros(1, np.float32)])
  section, _ = attributions.section(
      model, {'features': TOKENS, 'labels': np.zeros(6)}, kind='text',
      report_config=_report_config(), classification=True,
      vocabulary=VOCABULARY)
  ranking = section['token_ranking']
  assert [r['token'] for r in ranking['1']['for']][:2] == ['good', 'film']
  assert ranking['0']['for'][0]['token'] == 'bad'
  assert ranking['1']['for'][0]['count'] == 4  # good, in class-1 examples
  assert all(r['mean_attribution'] < 0 for c in ranking.values()
             for r in c['against'])
  assert 'the' not in [r['token'] for c in ranking.values()
                       for d in c.values() for r in d]  # zero weight


def test_text_without_a_leading_embedding_is_skipped_with_the_reason():
  model = keras.Sequential([keras.Input((6,), dtype='int64'),
                            keras.layers.Dense(1)])
  section, _ = attributions.section(
      model, {'features': TOKENS, 'labels': np.zeros(6)}, kind='text',
      report_config=_report_config(), classification=False,
      vocabulary=VOCABULARY)
  assert section['method'] is None and 'Embedding' in section['skipped']


def test_shaded_tokens_are_html_escaped():
  block = render._Tokens('Test example 0', ['<b>&', 'plot'], [0.5, -0.25])
  shaded = render._shaded(block)
  assert '&lt;b&gt;&amp;' in shaded and '<b>' not in shaded
  assert 'rgba(220,40,40,1.00)' in shaded and 'rgba(40,90,220,0.50)' in shaded


def test_datasheet_peaks_by_device_name_and_precision(monkeypatch):
  assert accelerators.gpu_peak_tflops('NVIDIA H100 80GB HBM3', 'tf32') == 494.7
  assert accelerators.gpu_peak_tflops('NVIDIA H100 PCIe', 'bfloat16') == 756.0
  assert accelerators.gpu_peak_tflops('NVIDIA A100-SXM4-40GB',
                                      'float16') == 312.0
  assert accelerators.gpu_peak_tflops('Tesla T4', 'bfloat16') is None
  assert accelerators.gpu_peak_tflops('Radeon', 'float32') is None
  assert accelerators.gpu_peak_tflops('NVIDIA H200', 'bfloat16') == 989.4
  assert accelerators.gpu_peak_tflops('NVIDIA A100 80GB PCIe', 'tf32') == 156.0
  assert accelerators.gpu_peak_tflops('NVIDIA L40S', 'bfloat16') == 362.05
  assert accelerators.gpu_peak_tflops('Tesla V100-PCIE-32GB',
                                      'float16') == 112.0
  peak, source = accelerators.peak_flops_per_s('GPU', 'NVIDIA L4',
                                               'bfloat16', 2)
  assert peak == 2 * 121e12 and 'NVIDIA L4' in source
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v5litepod-8')
  assert accelerators.peak_flops_per_s('TPU', 'TPU', 'bfloat16', 8)[0] == (
      8 * 197e12)
  monkeypatch.delenv('TPU_ACCELERATOR_TYPE')
  assert accelerators.peak_flops_per_s('TPU', 'TPU', 'bfloat16', 8)[0] is None
  assert accelerators.peak_flops_per_s('CPU', 'x', 'float32', 1)[0] is None


@pytest.mark.parametrize('name, precision, tflops', [
    ('NVIDIA L40', 'bfloat16', 181.05),  # Not the L4's 121.
    ('NVIDIA RTX A1000', 'float32', None),  # Not an A100.
    ('NVIDIA H100 NVL', 'bfloat16', None),  # Not the SXM part's.
    ('NVIDIA H200 NVL', 'bfloat16', None),
    ('NVIDIA A100X', 'tf32', None),
    ('Tesla V100S-PCIE-32GB', 'float32', None),
    ('NVIDIA L4 ', 'float32', 30.3),  # Surrounding spaces only are ignored.
])
def test_datasheet_peaks_match_whole_device_names(name, precision, tflops):
  assert accelerators.gpu_peak_tflops(name, precision) == tflops
  peak, source = accelerators.peak_flops_per_s('GPU', name, precision, 1)
  if tflops is None:
    assert peak is None and source.startswith('unknown peak: ')
    assert repr(name) in source and 'report.peak_flops_per_s' in source
  else:
    assert peak == tflops * 1e12


def test_mfu_is_achieved_over_the_peak():
  cpu = {'kind': 'CPU', 'model': 'x', 'replicas': 2}
  unknown = compute.utilisation(_report_config(), cpu, 'float32', 5e9)
  assert unknown['mfu'] is None and unknown['precision'] == 'float32'
  given = compute.utilisation(_report_config(peak_flops_per_s=2e11), cpu,
                              'mixed_bfloat16', 5e9)
  assert given['mfu'] == 5e9 / 2e11 and given['precision'] == 'bfloat16'
  assert given['peak_source'] == 'report.peak_flops_per_s'
  gpu = {'kind': 'GPU', 'model': 'NVIDIA H100 80GB HBM3', 'replicas': 2}
  h100 = compute.utilisation(_report_config(), gpu, 'mixed_bfloat16', 1e14)
  assert h100['mfu'] == 1e14 / (2 * 989.4e12)


def test_regression_fairness_matches_per_group_errors():
  rng = np.random.default_rng(0)
  labels = rng.normal(size=(50, 1)).astype(np.float32)
  predictions = labels + rng.normal(size=(50, 1)).astype(np.float32)
  groups = np.array([1.0, 2.0] * 25)
  predictions[groups == 2] += 3.0  # Group 2 is predicted badly.
  section = fairness.section(labels, predictions, groups, group_name='sex',
                             loss='mse', min_ratio=0.8)
  for name, value in (('1', 1.0), ('2', 2.0)):
    rows = groups == value
    error = predictions[rows] - labels[rows]
    assert section['by_group'][name]['count'] == 25
    assert section['by_group'][name]['mse'] == pytest.approx(
        float(np.mean(error ** 2)), rel=1e-5)
    assert section['by_group'][name]['mae'] == pytest.approx(
        float(np.mean(np.abs(error))), rel=1e-5)
  mse = [section['by_group'][g]['mse'] for g in ('1', '2')]
  assert section['gaps']['mse']['ratio'] == pytest.approx(min(mse) / max(mse))
  assert section['gaps']['mse']['difference'] == pytest.approx(
      max(mse) - min(mse), rel=1e-5)
  assert section['gaps']['mse']['max_group'] == '2'
  assert section['flagged'] == ['mae', 'mse']
  assert section['small_groups'] == ['1', '2']


def test_binary_fairness_rates():
  labels = np.array([1, 1, 0, 0, 1, 1, 0, 0], np.float32)[:, None]
  probabilities = np.array([.9, .2, .7, .1, .8, .6, .3, .4],
                           np.float32)[:, None]
  groups = np.array(['a'] * 4 + ['b'] * 4)
  section = fairness.section(labels, probabilities, groups, group_name='g',
                             loss='binary_crossentropy', min_ratio=0.8)
  a, b = section['by_group']['a'], section['by_group']['b']
  assert (a['tpr'], a['fpr'], a['selection_rate'], a['accuracy']) == (
      0.5, 0.5, 0.5, 0.5)
  assert (b['tpr'], b['fpr'], b['selection_rate'], b['accuracy']) == (
      1.0, 0.0, 0.5, 1.0)
  assert section['gaps']['selection_rate']['flagged'] is False
  assert section['gaps']['tpr']['flagged'] is True


def test_no_group_no_fairness_section():
  section = fairness.section(np.zeros((3, 1)), np.zeros((3, 1)), None,
                             group_name=None, loss='mse', min_ratio=0.8)
  assert section == {'evaluated': False, 'reason': section['reason']}
  assert 'data.group' in section['reason']


def test_epsilon_matches_dp_accounting_rdp():
  import dp_accounting
  q, sigma, steps, delta = 256 / 60000, 1.1, 14062, 1e-5
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          q, dp_accounting.GaussianDpEvent(sigma)), steps))
  ours = privacy.epsilon(noise_multiplier=sigma, sampling_probability=q,
                         steps=steps, delta=delta)
  assert ours == accountant.get_epsilon(delta)
  assert ours == pytest.approx(2.60, abs=0.01)


def test_calibrated_noise_reaches_the_target_epsilon():
  q, steps, delta = 32 / 309, 450, 1e-5
  sigma = privacy.calibrate_noise_multiplier(
      target_epsilon=8.0, sampling_probability=q, steps=steps, delta=delta)
  reached = privacy.epsilon(noise_multiplier=sigma, sampling_probability=q,
                            steps=steps, delta=delta)
  assert reached <= 8.0
  assert reached == pytest.approx(8.0, rel=0.01)
  assert privacy.epsilon(noise_multiplier=sigma * 0.95,
                         sampling_probability=q, steps=steps,
                         delta=delta) > 8.0


def test_privacy_section_without_dp_says_so():
  section = privacy.section(config.get_config().privacy, batch_size=32,
                            train_rows=309, steps=450)
  assert section['dp_sgd'] is False and 'without differential' in (
      section['statement'])


def test_graph_flops_agree_with_the_dense_formula():
  model = keras.Sequential([
      keras.Input((10,)),
      keras.layers.Normalization(mean=np.zeros(10), variance=np.ones(10)),
      keras.layers.Dense(64, 'relu'), keras.layers.Dense(1)])
  flops = compute.forward_flops(model)
  assert flops['graph_matmul'] == flops['analytic_matmul'] == (
      2 * (10 * 64 + 64 * 1))
  assert flops['analytic'] == 2 * (10 * 64 + 64) + 64 + 1
  assert flops['matmul_agrees']
  # Dense plus the normalisation's few element-wise ops, nothing more.
  assert flops['analytic'] <= flops['graph_total'] <= (
      flops['analytic'] + 3 * 10)


def test_graph_flops_agree_with_the_conv_formula():
  model = keras.Sequential([
      keras.Input((8, 8, 1), dtype='uint8'),
      keras.layers.Rescaling(1 / 255),
      keras.layers.Conv2D(4, 3, padding='same', activation='relu'),
      keras.layers.MaxPooling2D(2),
      keras.layers.Conv2D(6, 3),
      keras.layers.Flatten(), keras.layers.Dense(10)])
  flops = compute.forward_flops(model)
  conv = 2 * 8 * 8 * 9 * 1 * 4 + 2 * 2 * 2 * 9 * 4 * 6
  dense = 2 * 24 * 10
  assert flops['graph_matmul'] == flops['analytic_matmul'] == conv + dense
  pooling = 4 * 4 * 4 * 4  # outputs x window
  assert flops['analytic'] == conv + dense + 8 * 8 * 4 + 2 * 2 * 6 + 10 + (
      pooling)
  assert flops['matmul_agrees']
  assert flops['graph_pooling'] == flops['analytic_pooling'] == pooling


def test_graph_flops_agree_with_the_pooling_formula():
  model = keras.Sequential([
      keras.Input((12,), dtype='int64'), keras.layers.Embedding(50, 4),
      keras.layers.MaxPooling1D(2), keras.layers.AveragePooling1D(3),
      keras.layers.LayerNormalization(),  # Its Mean ops are not pooling.
      keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
  flops = compute.forward_flops(model)
  windowed = 6 * 4 * 2 + 2 * 4 * 3
  assert flops['graph_pooling'] == windowed and flops['pooling_agrees']
  assert flops['analytic_pooling'] == windowed + 2 * 4  # + global average
  assert flops['analytic_matmul'] == 2 * 4 * 2  # The Embedding: none.


def test_dense_flops_count_every_position_of_its_input():
  model = keras.Sequential([
      keras.Input((5,), dtype='int32'), keras.layers.Embedding(20, 8),
      keras.layers.Dense(16), keras.layers.Flatten(), keras.layers.Dense(1)])
  flops = compute.forward_flops(model)
  matmul = 2 * 5 * 8 * 16 + 2 * 80 * 1  # 5 tokens x (8 -> 16), then 80 -> 1
  assert flops['analytic_matmul'] == flops['graph_matmul'] == matmul
  assert flops['matmul_agrees']
  assert flops['analytic'] == matmul + 5 * 16 + 1


def test_depthwise_and_separable_convolutions_are_counted_and_checked():
  model = keras.Sequential([
      keras.Input((8, 8, 3)),
      keras.layers.DepthwiseConv2D(3, depth_multiplier=2),  # -> 6x6x6
      keras.layers.SeparableConv2D(4, 3, padding='same'),   # -> 6x6x4
      keras.layers.Reshape((36, 4)),
      keras.layers.Conv1D(5, 3),                            # -> 34x5
      keras.layers.SeparableConv1D(2, 3, strides=2),        # -> 16x2
      keras.layers.DepthwiseConv1D(3),                      # -> 14x2
      keras.layers.Flatten(), keras.layers.Dense(1)])
  flops = compute.forward_flops(model)
  matmul = (2 * 36 * 9 * 3 * 2 +                  # depthwise 3x3, 3 x 2
            2 * 36 * (9 * 6 + 6 * 4) +             # depthwise, pointwise
            2 * 34 * 3 * 4 * 5 +                   # Conv1D
            2 * 16 * (3 * 5 + 5 * 2) +             # SeparableConv1D
            2 * 14 * 3 * 2 +                       # DepthwiseConv1D
            2 * 28)                                # Dense
  assert flops['analytic_matmul'] == flops['graph_matmul'] == matmul
  assert flops['matmul_agrees']
  biases = 36 * 6 + 36 * 4 + 34 * 5 + 16 * 2 + 14 * 2 + 1
  assert flops['analytic'] == matmul + biases
  assert compute.analytic_flops(model) == {
      'multiply_adds': matmul, 'biases': biases, 'pooling': 0,
      'checked_pooling': 0}


def test_energy_estimate_is_power_times_utilisation_times_time():
  report_config = config.get_config().report
  report_config.cpu_watts = 100.0
  report_config.pue = 1.5
  device = {'kind': 'CPU', 'count': 2}
  import os
  threads = os.cpu_count()
  times = {'wall_s': 36.0, 'process_cpu_s': 36.0 * threads / 2}
  energy = compute._energy(report_config, device, times)
  assert energy['method'] == 'estimate'
  assert energy['detail']['cpu_utilisation'] == pytest.approx(0.5)
  assert energy['kwh'] == pytest.approx(100 * 0.5 * 36 * 1.5 / 3.6e6)
  report_config.gpu_watts = 300.0
  gpus = compute._energy(report_config, {'kind': 'GPU', 'count': 4}, times)
  assert gpus['kwh'] == pytest.approx((50 + 1200) * 36 * 1.5 / 3.6e6)


def test_country_grid_intensity_comes_from_codecarbon_and_bad_codes_fail():
  from tfpipeline.errors import UserError
  report_config = config.get_config().report
  assert compute.grid_intensity(report_config)['g_per_kwh'] == 475.0
  report_config.country = 'FRA'
  france = compute.grid_intensity(report_config)
  assert 0 < france['g_per_kwh'] < 475 and 'France' in france['source']
  report_config.country = 'XYZ'
  with pytest.raises(UserError, match="report.country='XYZ'"):
    compute.grid_intensity(report_config)


def test_manifest_names_changed_missing_and_added_files(tmp_path):
  (tmp_path / 'a.txt').write_text('a')
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'sub' / 'b.bin').write_bytes(b'\0b')
  (tmp_path / 'c.txt').write_text('c')
  manifest_sha256 = integrity.write_manifest(tmp_path)
  integrity.append_audit(tmp_path, {'outcome': 'completed',
                                    'manifest_sha256': manifest_sha256})
  assert integrity.verify(tmp_path) == (3, [])
  listed = json.loads((tmp_path / 'MANIFEST.json').read_text())['files']
  assert listed['sub/b.bin'] == hashlib.sha256(b'\0b').hexdigest()

  (tmp_path / 'a.txt').write_text('A')
  (tmp_path / 'c.txt').unlink()
  (tmp_path / 'sub' / 'new').write_text('')
  assert integrity.verify(tmp_path)[1] == [
      'changed: a.txt', 'missing: c.txt', 'added: sub/new']


def test_audit_log_chain_and_manifest_hash_catch_edits(tmp_path):
  (tmp_path / 'a.txt').write_text('a')
  integrity.append_audit(tmp_path, {'outcome': 'preempted'})
  sha = integrity.write_manifest(tmp_path)
  integrity.append_audit(tmp_path, {'outcome': 'completed',
                                    'manifest_sha256': sha})
  assert integrity.verify(tmp_path)[1] == []
  log = tmp_path / 'audit.jsonl'
  lines = log.read_text().splitlines()
  log.write_text(lines[0].replace('preempted', 'completed') + '\n' +
                 lines[1] + '\n')
  assert integrity.verify(tmp_path)[1] == [
      'audit.jsonl line 2: the hash chain is broken (a line before it was '
      'changed or removed)']
  log.write_text('\n'.join(lines) + '\n')
  # A manifest rewritten to hide a change no longer matches the log.
  (tmp_path / 'a.txt').write_text('forged')
  integrity.write_manifest(tmp_path)
  problems = integrity.verify(tmp_path)[1]
  assert problems == [problems[0]] and problems[0].startswith(
      'changed: MANIFEST.json')


def test_energy_meter_falls_back_to_the_estimate_when_codecarbon_fails(
    monkeypatch):
  import codecarbon

  def broken_tracker(**kwargs):
    raise OSError('no hardware access')

  monkeypatch.setattr(codecarbon, 'OfflineEmissionsTracker', broken_tracker)
  report_config = config.get_config().report
  report_config.energy_method = 'codecarbon'
  times = compute.EnergyMeter(report_config).stop()
  assert 'codecarbon' not in times
  assert times['codecarbon_error'] == 'OSError: no hardware access'
  energy = compute._energy(report_config, {'kind': 'CPU', 'count': 2}, times)
  assert energy['method'] == 'estimate'
  assert energy['codecarbon_error'] == times['codecarbon_error']


def test_energy_meter_with_codecarbon_records_its_measurement():
  report_config = config.get_config().report
  report_config.energy_method = 'codecarbon'
  times = compute.EnergyMeter(report_config).stop()
  measured = times['codecarbon']
  assert measured['tracking_mode'] == 'process'
  assert measured['energy_kwh']['total'] > 0
  assert times['wall_s'] > 0 and times['process_cpu_s'] > 0


def test_data_fingerprint_depends_on_the_data_alone():
  """Object arrays (TFDS text) hash their values, not their addresses:
  the same in another process."""
  import subprocess
  import sys
  from tfpipeline.report import provenance
  code = ("import numpy as np; from tfpipeline.report import provenance; "
          "print(provenance.arrays_sha256(np.arange(3, dtype=np.float32), "
          "np.array([b'even', 'odd', b'odd'], dtype=object)))")
  here = provenance.arrays_sha256(
      np.arange(3, dtype=np.float32),
      np.array([b'even', 'odd', b'odd'], dtype=object))
  there = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout.strip()
  assert here == there
  assert here != provenance.arrays_sha256(
      np.arange(3, dtype=np.float32),
      np.array([b'even', b'odd', b'odd!'], dtype=object))
  # Values, dtype and shape all count; element boundaries too.
  assert provenance.arrays_sha256(np.zeros(2, np.float32)) != (
      provenance.arrays_sha256(np.zeros(1, np.float64)))
  assert provenance.arrays_sha256(np.array(['ab', 'c'], dtype=object)) != (
      provenance.arrays_sha256(np.array(['a', 'bc'], dtype=object)))


class _Strategy:
  """What `compute.devices` reads of a tf.distribute strategy."""

  def __init__(self, kind, used, workers=1):
    self.extended = type('Extended', (), {'worker_devices': tuple(
        f'/job:worker/replica:0/task:0/device:{kind}:{i}'
        for i in range(used))})()
    self.num_replicas_in_sync = used * workers


def test_energy_counts_the_devices_used_and_tpu_chips(monkeypatch):
  import tensorflow as tf
  monkeypatch.setattr(tf.config, 'list_physical_devices',
                      lambda kind=None: [f'{kind}:{i}' for i in range(4)])
  monkeypatch.setattr(tf.config.experimental, 'get_device_details',
                      lambda device: {'device_name': 'NVIDIA H100 80GB HBM3'})
  gpu = compute.devices(_Strategy('GPU', 1))  # One of the host's four.
  assert (gpu['kind'], gpu['count'], gpu['replicas']) == ('GPU', 1, 1)
  times = {'wall_s': 10.0, 'process_cpu_s': 0.0}
  estimate = compute._energy(_report_config(), gpu, times)
  assert estimate['detail']['accelerators'] == 1
  assert estimate['kwh'] == pytest.approx(10 * 300 / 3.6e6)
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v3-8')
  tpu = compute.devices(_Strategy('TPU', 8))  # 8 cores, 4 chips
  assert (tpu['model'], tpu['count'], tpu['replicas']) == ('TPU v3', 4, 8)
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v5litepod-8')
  assert compute.devices(_Strategy('TPU', 8))['count'] == 8


def test_multi_worker_energy_and_co2e_cover_every_worker(monkeypatch):
  import tensorflow as tf
  monkeypatch.setattr(tf.config, 'list_physical_devices',
                      lambda kind=None: [f'{kind}:{i}' for i in range(2)])
  monkeypatch.setattr(tf.config.experimental, 'get_device_details',
                      lambda device: {'device_name': 'NVIDIA H100 80GB HBM3'})
  times = {'wall_s': 100.0, 'process_cpu_s': 0.0}
  report_config = _report_config(gpu_watts=300.0, pue=1.0,
                                 grid_gco2_per_kwh=400.0)
  one = compute.section(_mlp('relu'), _Strategy('GPU', 2), report_config,
                        times, examples_seen=1000, train_seconds=50.0,
                        resumed_from_step=0, mixed_precision='float32')
  three = compute.section(_mlp('relu'), _Strategy('GPU', 2, workers=3),
                          report_config, times, examples_seen=1000,
                          train_seconds=50.0, resumed_from_step=0,
                          mixed_precision='float32')
  chief_kwh = 100 * 2 * 300 / 3.6e6  # Two GPUs, idle CPU.
  assert one['energy']['kwh'] == pytest.approx(chief_kwh)
  assert (one['devices']['workers'], one['energy']['workers']) == (1, 1)
  assert one['energy']['scope'] == 'this process, the only worker'
  assert three['devices']['workers'] == three['energy']['workers'] == 3
  assert three['devices']['replicas'] == 6
  assert three['energy']['chief_kwh'] == pytest.approx(chief_kwh)
  assert three['energy']['kwh'] == pytest.approx(3 * chief_kwh)
  assert three['energy']['co2e_kg'] == pytest.approx(3 * chief_kwh * 0.4)
  assert "3 x the chief's estimate" in three['energy']['scope']
  assert three['energy']['scope'] in three['scope']
  # Examples and FLOPs were global already: the same in both.
  assert three['training_flops'] == one['training_flops']


def _git(repo, *args) -> str:
  return subprocess.run(
      ['git', '-c', 'user.name=t', '-c', 'user.email=t@example.com', *args],
      cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _new_repo(path):
  """A git repository with one commit."""
  path.mkdir(parents=True)
  (path / 'README').write_text('not tfpipeline\n')
  _git(path, 'init', '-q')
  _git(path, 'add', 'README')
  _git(path, 'commit', '-q', '-m', 'first')
  return path


def _provenance_git(site) -> dict | None:
  """`provenance.git_commit()` of the tfpipeline package in `site` (copied
  there first if it has none)."""
  if not (site / 'tfpipeline').exists():
    shutil.copytree(REPO / 'tfpipeline', site / 'tfpipeline',
                    ignore=shutil.ignore_patterns('__pycache__'))
  run = subprocess.run(
      [sys.executable, '-c', 'import json, tfpipeline.report.provenance as p; '
       'print(json.dumps([p.__file__, p.git_commit()]))'],
      cwd=site, env={'PATH': '/usr/bin:/bin', 'PYTHONPATH': str(site)},
      check=True, capture_output=True, text=True)
  where, git = json.loads(run.stdout)
  assert where == str(site / 'tfpipeline' / 'report' / 'provenance.py')
  return git


def test_installed_package_names_no_commit_of_the_users_repository(tmp_path):
  # A virtualenv inside the user's own repository: its HEAD is not ours.
  user_repo = _new_repo(tmp_path / 'project')
  site = user_repo / '.venv' / 'lib' / 'python3' / 'site-packages'
  site.mkdir(parents=True)
  assert _provenance_git(site) is None
  # Beside a setup.cfg that is not tfpipeline's, or not readable as one.
  for text in (b'[metadata]\nname = project\n', b'\xff[metadata\n'):
    (site / 'setup.cfg').write_bytes(text)
    assert _provenance_git(site) is None


def test_own_checkout_names_its_commit_and_local_changes(tmp_path):
  checkout = _new_repo(tmp_path / 'tfpipeline-src')
  shutil.copy(REPO / 'setup.cfg', checkout)
  vendored = _new_repo(tmp_path / 'monorepo') / 'third_party'
  vendored.mkdir()
  shutil.copy(REPO / 'setup.cfg', vendored)
  assert _provenance_git(vendored) is None  # Not the root of its work tree.
  shutil.copytree(REPO / 'tfpipeline', checkout / 'tfpipeline',
                  ignore=shutil.ignore_patterns('__pycache__'))
  (checkout / '.gitignore').write_text('__pycache__/\n')
  _git(checkout, 'add', '.')
  _git(checkout, 'commit', '-q', '-m', 'tfpipeline')
  commit = _git(checkout, 'rev-parse', 'HEAD')
  assert _provenance_git(checkout) == {'commit': commit,
                                       'package_modified': False}
  with open(checkout / 'tfpipeline' / 'errors.py', 'a') as f:
    f.write('# a local change\n')
  assert _provenance_git(checkout) == {'commit': commit,
                                       'package_modified': True}
