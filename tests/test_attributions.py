"""report.attributions and report.integrated_gradients on known models:
completeness, zero for what a model ignores, images, text, rankings."""

import keras
import numpy as np
import pytest

from tfpipeline.report import attributions
from tfpipeline.report import integrated_gradients as ig
from tfpipeline.report import plots, render

from data_configs import report_config


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
      model, {'features': x}, kind='table', report_config=report_config(),
      classification=False, train_mean=np.zeros(3),
      feature_names=['a', 'b', 'c'])
  assert drawing is None and section['baseline'] == 'mean'
  assert [r['feature'] for r in section['ranking']] == ['b', 'a', 'c']
  assert section['ranking'][2]['mean_abs_attribution'] == 0.0
  assert section['completeness_error'] < 1e-5
  assert not section['completeness_warning']


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
      kind='image', report_config=report_config(), classification=True)
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
      report_config=report_config(ig_baseline='blurred'), classification=True)
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
      report_config=report_config(), classification=True,
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
      report_config=report_config(), classification=True,
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
      report_config=report_config(), classification=False,
      vocabulary=VOCABULARY)
  assert section['method'] is None and 'Embedding' in section['skipped']


def test_shaded_tokens_are_html_escaped():
  block = render._Tokens('Test example 0', ['<b>&', 'plot'], [0.5, -0.25])
  shaded = render._shaded(block)
  assert '&lt;b&gt;&amp;' in shaded and '<b>' not in shaded
  assert 'rgba(220,40,40,1.00)' in shaded and 'rgba(40,90,220,0.50)' in shaded
