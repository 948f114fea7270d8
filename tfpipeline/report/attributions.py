"""Feature attributions by Integrated Gradients (Sundararajan et al. 2017).

attribution_i = (x_i - b_i) x the mean gradient of the output along the
straight path from the baseline b to x, by the trapezoid rule. Attributions
sum to f(x) - f(b) (completeness) up to the quadrature error, which the
report states and warns about above 5%.
"""

from absl import logging
import numpy as np

COMPLETENESS_WARNING = 0.05
_CHUNK = 128  # examples per compiled call


class IntegratedGradients:
  """Integrated Gradients of one output of `model`, compiled once.

  Args:
    model: a Keras model taking (n, d) features.
    steps: trapezoid intervals along the path (steps + 1 gradients).
  """

  def __init__(self, model, steps: int = 50):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._model, self._steps = model, steps
    features = tf.TensorSpec([None, model.input_shape[-1]], tf.float32)
    # One trace for every chunk size, and no AutoGraph (no Python control
    # flow): tracing costs more than the math here.
    self._attribute = tf.function(self._chunk, input_signature=(
        features, features, tf.TensorSpec([None], tf.int32)), autograph=False)

  def _chunk(self, inputs, baseline, targets):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    alphas = tf.linspace(0.0, 1.0, self._steps + 1)[:, None, None]
    path = baseline[None] + alphas * (inputs - baseline)[None]  # (s+1, n, d)
    flat = tf.reshape(path, [-1, tf.shape(inputs)[1]])
    flat_targets = tf.tile(targets, [self._steps + 1])
    with tf.GradientTape() as tape:
      tape.watch(flat)
      outputs = tf.cast(self._model(flat, training=False), tf.float32)
      chosen = tf.gather(outputs, flat_targets, axis=1, batch_dims=1)
    gradients = tf.reshape(tape.gradient(chosen, flat), tf.shape(path))
    mean_gradient = tf.reduce_mean(
        (gradients[:-1] + gradients[1:]) / 2.0, axis=0)
    return (inputs - baseline) * mean_gradient

  def __call__(self, inputs: np.ndarray, baseline: np.ndarray,
               targets: np.ndarray | None = None) -> np.ndarray:
    """Attributions (n, d) of output `targets[i]` (default 0) of each row."""
    inputs = np.asarray(inputs, np.float32)
    baseline = np.broadcast_to(np.asarray(baseline, np.float32), inputs.shape)
    if targets is None:
      targets = np.zeros(len(inputs), np.int32)
    return np.concatenate([
        self._attribute(inputs[i:i + _CHUNK], baseline[i:i + _CHUNK],
                        np.asarray(targets[i:i + _CHUNK], np.int32)).numpy()
        for i in range(0, len(inputs), _CHUNK)])


def completeness_error(attributions: np.ndarray, output_at_inputs: np.ndarray,
                       output_at_baseline: np.ndarray) -> float:
  """sum_i |sum(attr_i) - (f(x_i) - f(b))| / sum_i |f(x_i) - f(b)|."""
  delta = output_at_inputs - output_at_baseline
  gap = np.abs(attributions.sum(axis=1) - delta).sum()
  return float(gap / max(np.abs(delta).sum(), 1e-12))


def section(model, inputs: np.ndarray, feature_names, *, train_mean,
            baseline_kind: str, steps: int, classification: bool) -> dict:
  """The report's `attributions` section for `inputs` (a test sample)."""
  baseline = (np.asarray(train_mean, np.float32) if baseline_kind == 'mean'
              else np.zeros(inputs.shape[1], np.float32))
  outputs = np.asarray(model(inputs, training=False), np.float32)
  at_baseline = np.asarray(model(baseline[None], training=False), np.float32)
  # Classifiers: the predicted class's output; regressors: the first output.
  targets = (outputs.argmax(axis=1) if classification and outputs.shape[1] > 1
             else np.zeros(len(inputs), np.int64))
  attributions = IntegratedGradients(model, steps)(inputs, baseline, targets)
  rows = np.arange(len(inputs))
  error = completeness_error(attributions, outputs[rows, targets],
                             at_baseline[0, targets])
  if error > COMPLETENESS_WARNING:
    logging.warning('Integrated Gradients completeness error %.1f%% > %d%%: '
                    'raise report.ig_steps', 100 * error,
                    100 * COMPLETENESS_WARNING)
  importance = np.abs(attributions).mean(axis=0)
  order = np.argsort(-importance, kind='stable')
  return {
      'method': 'integrated_gradients',
      'steps': steps,
      'rule': 'trapezoid',
      'baseline': baseline_kind,
      'baseline_values': dict(zip(feature_names, baseline.tolist())),
      'examples': len(inputs),
      'output': ('predicted class' if classification and outputs.shape[1] > 1
                 else 'output 0'),
      'completeness_error': error,
      'completeness_warning': error > COMPLETENESS_WARNING,
      'ranking': [{'feature': feature_names[i],
                   'mean_abs_attribution': float(importance[i])}
                  for i in order],
      'per_example': attributions.tolist(),
  }
