"""Integrated Gradients (Sundararajan et al. 2017) of any float input.

attribution_i = (x_i - b_i) x the mean gradient of the output along the
straight path from the baseline b to x, by the trapezoid rule. Attributions
sum to f(x) - f(b) (completeness) up to the quadrature error. The input is
whatever float tensor the explained function starts from: a table's
columns, an image's pixels, or a text model's token embeddings.
"""

from absl import logging
import numpy as np

COMPLETENESS_LIMIT = 0.05
# Path points (examples x (steps + 1) x input size) per compiled call: a
# 224x224x3 image at 50 steps is 7.7M floats, so one example at a time; 8x8
# digits go 128 at a time.
_PATH_FLOATS = 1 << 22
_MAX_CHUNK = 128
# report.ig_steps is doubled until completeness holds, at most this often.
_MAX_DOUBLINGS = 3


class IntegratedGradients:
  """Integrated Gradients of one output of `forward`, compiled once.

  Args:
    forward: `(inputs, *context) -> (n, outputs)` float outputs, where
      inputs is (n, *example_shape) float32 and context holds per-example
      tensors that are not attributed (a text model's token ids, for its
      padding mask).
    example_shape: one example's input shape.
    steps: trapezoid intervals along the path (steps + 1 gradients).
    context_specs: the `tf.TensorSpec`s of `context`, batch first.
    strategy: with several replicas, each chunk of examples is spread over
      this worker's replicas with `strategy.run` (on a TPU: its cores).
  """

  def __init__(self, forward, example_shape, steps: int = 50,
               context_specs=(), strategy=None):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._forward, self.steps = forward, steps
    self._strategy, self._replicated = strategy, None
    if strategy is not None and strategy.num_replicas_in_sync > 1:
      self._replicated = tf.function(
          lambda *args: strategy.run(self._chunk, args), autograph=False)
    self._example_shape = tuple(example_shape)
    size = int(np.prod(self._example_shape, dtype=np.int64))
    self._chunk_size = int(np.clip(_PATH_FLOATS // (size * (steps + 1)), 1,
                                   _MAX_CHUNK))
    inputs = tf.TensorSpec([None, *self._example_shape], tf.float32)
    # One trace for every chunk size, and no AutoGraph (no Python control
    # flow): tracing costs more than the math here.
    self._attribute = tf.function(self._chunk, input_signature=(
        inputs, inputs, tf.TensorSpec([None], tf.int32), *context_specs),
                                  autograph=False)

  def _chunk(self, inputs, baseline, targets, *context):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    points = self.steps + 1
    rank = len(self._example_shape)
    alphas = tf.reshape(tf.linspace(0.0, 1.0, points), [-1, 1] + [1] * rank)
    path = baseline[None] + alphas * (inputs - baseline)[None]  # (s+1, n, ...)
    flat = tf.reshape(path, [-1, *self._example_shape])
    flat_context = [tf.tile(c, [points] + [1] * (c.shape.rank - 1))
                    for c in context]
    with tf.GradientTape() as tape:
      tape.watch(flat)
      outputs = tf.cast(self._forward(flat, *flat_context), tf.float32)
      chosen = tf.gather(outputs, tf.tile(targets, [points]), axis=1,
                         batch_dims=1)
    gradients = tf.reshape(tape.gradient(chosen, flat), tf.shape(path))
    mean_gradient = tf.reduce_mean(
        (gradients[:-1] + gradients[1:]) / 2.0, axis=0)
    return (inputs - baseline) * mean_gradient

  def __call__(self, inputs: np.ndarray, baseline: np.ndarray,
               targets: np.ndarray | None = None, *context) -> np.ndarray:
    """Attributions, shaped as `inputs`, of output `targets[i]` (default 0)
    of each example; `baseline` broadcasts to `inputs`."""
    inputs = np.asarray(inputs, np.float32)
    baseline = np.broadcast_to(np.asarray(baseline, np.float32), inputs.shape)
    if targets is None:
      targets = np.zeros(len(inputs), np.int32)
    targets = np.asarray(targets, np.int32)
    arrays = (inputs, baseline, targets, *context)
    if self._replicated is not None:
      return self._on_replicas(arrays)
    step = self._chunk_size
    return np.concatenate([
        self._attribute(*(a[i:i + step] for a in arrays)).numpy()
        for i in range(0, len(inputs), step)])

  def _on_replicas(self, arrays) -> np.ndarray:
    """Chunks of one per replica, the last padded by repeating its last
    example; the padding's attributions are dropped."""
    strategy, step = self._strategy, self._chunk_size
    replicas = len(strategy.extended.worker_devices)
    count, results = len(arrays[0]), []
    for start in range(0, count, step * replicas):
      rows = np.minimum(np.arange(start, start + step * replicas), count - 1)
      parts = [[a[rows[r * step:(r + 1) * step]] for r in range(replicas)]
               for a in arrays]
      per_replica = [strategy.experimental_distribute_values_from_function(
          lambda context, part=part: part[
              context.replica_id_in_sync_group % replicas]) for part in parts]
      results += [r.numpy() for r in strategy.experimental_local_results(
          self._replicated(*per_replica))]
    return np.concatenate(results)[:count]


def completeness_error(attributions: np.ndarray, output_at_inputs: np.ndarray,
                       output_at_baseline: np.ndarray) -> float:
  """sum_i |sum(attr_i) - (f(x_i) - f(b_i))| / sum_i |f(x_i) - f(b_i)|."""
  delta = output_at_inputs - output_at_baseline
  sums = attributions.reshape(len(attributions), -1).sum(axis=1)
  return float(np.abs(sums - delta).sum() / max(np.abs(delta).sum(), 1e-12))


def attribute(forward, inputs: np.ndarray, baseline: np.ndarray,
              outputs: np.ndarray, targets: np.ndarray, *context, steps: int,
              context_specs=(), strategy=None) -> tuple[np.ndarray, int, float]:
  """Attributions whose completeness error is at most 5%, if doubling the
  steps up to 8x gets there; warns if not.

  Args:
    outputs: `forward(inputs, *context)`, which the caller has computed.

  Returns:
    (attributions, steps used, completeness error).
  """
  rows = np.arange(len(inputs))
  baseline = np.broadcast_to(np.asarray(baseline, np.float32), inputs.shape)
  at_inputs = outputs[rows, targets]
  at_baseline = np.asarray(forward(baseline, *context),
                           np.float32)[rows, targets]
  for doubling in range(_MAX_DOUBLINGS + 1):
    ig = IntegratedGradients(forward, inputs.shape[1:], steps << doubling,
                             context_specs, strategy)
    result = ig(inputs, baseline, targets, *context)
    error = completeness_error(result, at_inputs, at_baseline)
    if error <= COMPLETENESS_LIMIT:
      break
  if error > COMPLETENESS_LIMIT:
    logging.warning('Integrated Gradients completeness error %.1f%% > %d%% at '
                    '%d steps: raise report.ig_steps', 100 * error,
                    100 * COMPLETENESS_LIMIT, ig.steps)
  return result, ig.steps, error
