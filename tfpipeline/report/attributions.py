"""The report's feature attributions: what drove the model's predictions.

Integrated Gradients (see `integrated_gradients`) over the float input each
kind of data gives the model, for the first `report.attribution_examples`
test examples:

- a table's columns, from the training mean (or zeros, always under
  DP-SGD): ranked by mean absolute attribution;
- an image's pixels, from a black (or blurred) image: per-class mean
  absolute maps (channels summed), and a few examples drawn beside their
  maps;
- a text's token embeddings, from the padding token's embedding at every
  position: per token, the sum over its embedding; tokens ranked per class
  by mean signed attribution, and a few sentences shaded by it.

Classifiers explain the predicted class (a binary classifier's single
output explains class 1, and its negation class 0); regressors output 0.
"""

import numpy as np

from tfpipeline import config as config_lib
from tfpipeline.data import sources
from tfpipeline.report import integrated_gradients as ig

# Images: examples drawn per class, for at most this many classes, and the
# largest side of a per-class map kept in report.json (larger maps are
# area-averaged down).
EXAMPLES_PER_CLASS = 2
DRAWN_CLASSES = 10
MAX_MAP_SIDE = 64
# Text: tokens listed per class and direction, the fewest occurrences a
# ranked token needs (a word seen once ranks by chance), sentences shown.
TOP_TOKENS = 15
MIN_TOKEN_COUNT = 2
SHADED_SENTENCES = 5


def section(model, inputs: dict, *, kind: str, report_config,
            classification: bool, private: bool = False, train_mean=None,
            feature_names=(), vocabulary=None,
            strategy=None) -> tuple[dict, dict | None]:
  """The `attributions` section, and what the image figure draws.

  Args:
    model: the trained Sequential model.
    inputs: a batch of test examples: 'features' as the model takes them,
      'labels'.
    kind: `sources.TABLE`, `IMAGE`, `TEXT` or `TENSOR`.
    report_config: config.report.
    classification: the loss is a cross-entropy.
    private: trained with DP-SGD: a table's automatic baseline is zeros,
      never the training mean (which the report would publish).
    train_mean: a table's training mean per column (the 'mean' baseline).
    feature_names: a table's column names.
    vocabulary: a text model's tokens by id.
    strategy: the model's (a tf.distribute strategy or, on the JAX backend,
      `jax_devices.JaxDevices`); IG runs on its devices (see
      `integrated_gradients`).

  Returns:
    (section, drawing): drawing holds the images, signed maps and titles of
    the examples an image report draws, else None.
  """
  if kind not in config_lib.IG_BASELINES:
    return {'method': None, 'skipped': (
        f'attributions of {kind} inputs are not computed: Integrated '
        f'Gradients here explains table columns, image pixels and text '
        f'tokens')}, None
  baseline = report_config.ig_baseline
  if baseline == 'auto':
    baseline = ('zeros' if private and kind == sources.TABLE
                else config_lib.IG_BASELINES[kind][0])
  common = {'method': 'integrated_gradients', 'kind': kind,
            'rule': 'trapezoid', 'baseline': baseline,
            'examples': len(inputs['features'])}
  steps = report_config.ig_steps
  if kind == sources.TABLE:
    return {**common, **_table(model, inputs['features'], feature_names,
                               train_mean, baseline, steps, classification,
                               strategy)}, None
  if kind == sources.IMAGE:
    result, drawing = _image(model, inputs, baseline, steps, classification,
                             strategy)
    return {**common, **result}, drawing
  return {**common, **_text(model, inputs['features'], vocabulary, steps,
                            classification, strategy)}, None


def _apply(layers, inputs, mask=None):
  """`layers` called in order, in inference mode, passing a padding mask to
  the layers that take one (as Sequential does)."""
  for layer in layers:
    kwargs = {'mask': mask} if mask is not None and getattr(
        layer, '_call_has_mask_arg', False) else {}
    outputs = layer(inputs, training=False, **kwargs)
    mask = layer.compute_mask(inputs, mask) if mask is not None else None
    inputs = outputs
  return inputs


def _targets(outputs: np.ndarray, classification: bool) -> np.ndarray:
  """The output explained per example: the predicted class, or output 0."""
  if classification and outputs.shape[1] > 1:
    return outputs.argmax(axis=1).astype(np.int32)
  return np.zeros(len(outputs), np.int32)


def _classes(outputs: np.ndarray, classification: bool):
  """(predicted class per example, sign turning the explained output's
  attributions into the class's); regression: one class 0, sign 1."""
  if not classification:
    return np.zeros(len(outputs), np.int64), np.ones(len(outputs))
  if outputs.shape[1] > 1:
    return outputs.argmax(axis=1), np.ones(len(outputs))
  predicted = (outputs[:, 0] > 0.5).astype(np.int64)
  return predicted, np.where(predicted == 1, 1.0, -1.0)


def _explained(forward, inputs: np.ndarray, baseline, classification: bool,
               steps: int, strategy, variables, *context):
  """IG of the explained output of each example; `forward` reads the
  Keras `variables`.

  Returns:
    (attributions, outputs at the inputs, the fields every kind reports:
    steps used, the output explained, completeness).
  """
  outputs = np.asarray(forward(inputs, *context), np.float32)
  attributions, steps, error = ig.attribute(
      forward, inputs, baseline, outputs, _targets(outputs, classification),
      *context, steps=steps, strategy=strategy, variables=variables)
  if classification and outputs.shape[1] > 1:
    output = 'predicted class'
  else:
    output = ('output 0 (class 1; class 0 is its negation)' if classification
              else 'output 0')
  return attributions, outputs, {
      'steps': steps, 'output': output, 'completeness_error': error,
      'completeness_warning': error > ig.COMPLETENESS_LIMIT}


def _table(model, features, feature_names, train_mean, baseline_kind, steps,
           classification, strategy) -> dict:
  features = np.asarray(features, np.float32)
  baseline = (np.asarray(train_mean, np.float32) if baseline_kind == 'mean'
              else np.zeros(features.shape[1], np.float32))
  attributions, _, summary = _explained(
      lambda x: model(x, training=False), features, baseline, classification,
      steps, strategy, model.variables)
  importance = np.abs(attributions).mean(axis=0)
  order = np.argsort(-importance, kind='stable')
  return {
      **summary,
      'baseline_values': dict(zip(feature_names, baseline.tolist())),
      'ranking': [{'feature': feature_names[i],
                   'mean_abs_attribution': float(importance[i])}
                  for i in order],
      'per_example': attributions.tolist(),
  }


def blurred(images: np.ndarray) -> np.ndarray:
  """Each image under a Gaussian blur of sigma = its shorter side / 8,
  per channel, edges extended: shapes gone, colours kept."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  sigma = max(min(images.shape[1:3]) / 8, 1.0)
  return ndimage.gaussian_filter(np.asarray(images, np.float32),
                                 sigma=(0, sigma, sigma, 0), mode='nearest')


def _pooled(image_map: np.ndarray) -> np.ndarray:
  """An (H, W) map area-averaged to at most MAX_MAP_SIDE a side."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  height, width = image_map.shape
  scale = MAX_MAP_SIDE / max(height, width)
  if scale >= 1:
    return image_map
  size = (max(1, round(height * scale)), max(1, round(width * scale)))
  return tf.image.resize(image_map[..., None], size, method='area'
                         ).numpy()[..., 0]


def _image(model, inputs, baseline_kind, steps, classification, strategy):
  images = np.asarray(inputs['features'])
  pixels = images.astype(np.float32)
  # The layers after the input, so that float pixels reach them (the model
  # itself would cast them back to its uint8 input).
  baseline = (np.zeros_like(pixels) if baseline_kind == 'black'
              else blurred(pixels))
  attributions, outputs, summary = _explained(
      lambda x: _apply(model.layers, x), pixels, baseline, classification,
      steps, strategy, model.variables)
  signed = attributions.sum(axis=-1)  # (n, H, W), toward the explained output
  magnitude = np.abs(attributions).sum(axis=-1)
  predicted, sign = _classes(outputs, classification)
  class_maps, drawn = {}, []
  for c in np.unique(predicted):
    members = np.flatnonzero(predicted == c)
    class_maps[str(c)] = {'examples': len(members), 'map': _pooled(
        magnitude[members].mean(axis=0)).tolist()}
    if len(class_maps) <= DRAWN_CLASSES:
      drawn += list(members[:EXAMPLES_PER_CLASS])
  labels = np.asarray(inputs['labels']).reshape(len(images), -1)
  labels = labels.argmax(axis=1) if labels.shape[1] > 1 else labels[:, 0]
  drawing = {
      'images': images[drawn],
      'maps': signed[drawn] * sign[drawn, None, None],
      'titles': [(f'predicted {predicted[i]}' if classification else
                  f'output {outputs[i, 0]:.3g}') + f', label {labels[i]:g}'
                 for i in drawn],
  }
  return {
      **summary,
      'class_maps': class_maps,
      'map_method': ('mean over the examples predicted as the class of the '
                     'absolute attribution summed over channels, at most '
                     f'{MAX_MAP_SIDE} pixels a side (area-averaged)'),
  }, drawing


def _text(model, tokens, vocabulary, steps, classification, strategy) -> dict:
  import keras  # pylint: disable=g-import-not-at-top
  first = model.layers[0]
  if not isinstance(first, keras.layers.Embedding):
    return {'method': None, 'skipped': (
        'attributions of text need an Embedding as the first of '
        f'model.layers (Integrated Gradients runs over its output); this '
        f'model starts with {type(first).__name__}')}
  tokens = np.asarray(tokens, np.int64)
  embedded = np.asarray(first(tokens), np.float32)
  padding = np.asarray(first(np.zeros((1, tokens.shape[1]), np.int64)),
                       np.float32)

  def forward(x, token_ids):
    mask = (token_ids != 0) if first.mask_zero else None
    return _apply(model.layers[1:], x, mask)

  attributions, outputs, summary = _explained(
      forward, embedded, padding, classification, steps, strategy,
      model.variables, tokens)
  per_token = attributions.sum(axis=-1)  # (n, length)
  predicted, sign = _classes(outputs, classification)
  toward = per_token * sign[:, None]  # toward each example's class
  ranking = {str(c): _token_ranking(tokens[predicted == c],
                                    toward[predicted == c], vocabulary)
             for c in np.unique(predicted)}
  sentences = [{
      'example': int(i),
      'predicted': (int(predicted[i]) if classification
                    else float(outputs[i, 0])),
      'tokens': [vocabulary[t] for t in tokens[i] if t],
      'attributions': toward[i][tokens[i] != 0].tolist(),
  } for i in range(min(SHADED_SENTENCES, len(tokens)))]
  return {
      **summary,
      'token_ranking': ranking,
      'min_token_count': MIN_TOKEN_COUNT,
      'sentences': sentences,
      'token_method': ('a token\'s attribution is the sum over its embedding; '
                       'ranked per predicted class by the mean over its '
                       f'occurrences (at least {MIN_TOKEN_COUNT}) of the '
                       'attribution toward that class; padding excluded '
                       '(its attribution is 0)'),
  }


def _token_ranking(tokens: np.ndarray, toward: np.ndarray,
                   vocabulary) -> dict:
  """The tokens most for and most against a class, by mean attribution."""
  ids, values = tokens.ravel(), toward.ravel()
  counts = np.bincount(ids, minlength=len(vocabulary))
  sums = np.bincount(ids, weights=values, minlength=len(vocabulary))
  counts[0] = 0  # Padding.
  eligible = np.flatnonzero(counts >= MIN_TOKEN_COUNT)
  means = sums[eligible] / counts[eligible]
  order = eligible[np.argsort(-means, kind='stable')]

  def rows(ids_in_order):
    return [{'token': vocabulary[t], 'mean_attribution': float(
        sums[t] / counts[t]), 'count': int(counts[t])}
            for t in ids_in_order]

  ordered_means = sums[order] / counts[order]
  return {'for': rows(order[ordered_means > 0][:TOP_TOKENS]),
          'against': rows(order[ordered_means < 0][::-1][:TOP_TOKENS])}
