"""Integrated Gradients (Sundararajan et al. 2017) of any float input.

attribution_i = (x_i - b_i) x the mean gradient of the output along the
straight path from the baseline b to x, by the trapezoid rule. Attributions
sum to f(x) - f(b) (completeness) up to the quadrature error. The input is
whatever float tensor the explained function starts from: a table's
columns, an image's pixels, or a text model's token embeddings.

The path, the quadrature, the chunking and the step doubling are written
once, in Keras ops; the gradient of the explained outputs and how a chunk
is compiled are the backend's (`ig_tensorflow`, `ig_jax`).
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
      arrays that are not attributed (a text model's token ids, for its
      padding mask).
    example_shape: one example's input shape.
    steps: trapezoid intervals along the path (steps + 1 gradients).
    strategy: the run's devices: a tf.distribute strategy spreads each
      chunk of examples over this worker's replicas; see `ig_jax` for the
      JAX backend's.
    variables: the Keras variables `forward` reads; the JAX backend passes
      them to the compiled chunk (see `ig_jax`).
  """

  def __init__(self, forward, example_shape, steps: int = 50,
               strategy=None, variables=()):
    import keras  # pylint: disable=g-import-not-at-top
    self.steps = steps
    self._example_shape = tuple(example_shape)
    size = int(np.prod(self._example_shape, dtype=np.int64))
    chunk_size = int(np.clip(_PATH_FLOATS // (size * (steps + 1)), 1,
                             _MAX_CHUNK))
    if keras.backend.backend() == 'jax':
      from tfpipeline.report import ig_jax  # pylint: disable=g-import-not-at-top
      self._run = ig_jax.compiled(self._chunk, forward, variables, strategy)
      self._examples_per_run = chunk_size
    else:
      from tfpipeline.report import ig_tensorflow  # pylint: disable=g-import-not-at-top
      self._run, self._examples_per_run = ig_tensorflow.compiled(
          self._chunk, forward, strategy, chunk_size)

  def _chunk(self, chosen_gradients, inputs, baseline, targets, *context):
    """Attributions of a chunk of examples, in Keras ops: the path's points,
    `chosen_gradients(points, targets, *context)` (the gradient of each
    point's explained output with respect to it) and the trapezoid rule."""
    from keras import ops  # pylint: disable=g-import-not-at-top
    points = self.steps + 1
    rank = len(self._example_shape)
    alphas = ops.reshape(ops.linspace(0.0, 1.0, points), [-1, 1] + [1] * rank)
    path = baseline[None] + alphas * (inputs - baseline)[None]  # (s+1, n, ...)
    flat = ops.reshape(path, [-1, *self._example_shape])
    flat_context = [ops.tile(c, [points] + [1] * (len(c.shape) - 1))
                    for c in context]
    gradients = ops.reshape(
        chosen_gradients(flat, ops.tile(targets, [points]), *flat_context),
        [points, -1, *self._example_shape])
    mean_gradient = ops.mean((gradients[:-1] + gradients[1:]) / 2.0, axis=0)
    return (inputs - baseline) * mean_gradient

  def __call__(self, inputs: np.ndarray, baseline: np.ndarray,
               targets: np.ndarray | None = None, *context) -> np.ndarray:
    """Attributions, shaped as `inputs`, of output `targets[i]` (default 0)
    of each example; `baseline` broadcasts to `inputs`."""
    inputs = np.asarray(inputs, np.float32)
    baseline = np.broadcast_to(np.asarray(baseline, np.float32), inputs.shape)
    if targets is None:
      targets = np.zeros(len(inputs), np.int32)
    arrays = (inputs, baseline, np.asarray(targets, np.int32), *context)
    step = self._examples_per_run
    return np.concatenate([self._run(*(a[i:i + step] for a in arrays))
                           for i in range(0, len(inputs), step)])


def completeness_error(attributions: np.ndarray, output_at_inputs: np.ndarray,
                       output_at_baseline: np.ndarray) -> float:
  """sum_i |sum(attr_i) - (f(x_i) - f(b_i))| / sum_i |f(x_i) - f(b_i)|."""
  delta = output_at_inputs - output_at_baseline
  sums = attributions.reshape(len(attributions), -1).sum(axis=1)
  return float(np.abs(sums - delta).sum() / max(np.abs(delta).sum(), 1e-12))


def attribute(forward, inputs: np.ndarray, baseline: np.ndarray,
              outputs: np.ndarray, targets: np.ndarray, *context, steps: int,
              strategy=None, variables=()) -> tuple[np.ndarray, int, float]:
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
                             strategy, variables)
    result = ig(inputs, baseline, targets, *context)
    error = completeness_error(result, at_inputs, at_baseline)
    if error <= COMPLETENESS_LIMIT:
      break
  if error > COMPLETENESS_LIMIT:
    logging.warning('Integrated Gradients completeness error %.1f%% > %d%% at '
                    '%d steps: raise report.ig_steps', 100 * error,
                    100 * COMPLETENESS_LIMIT, ig.steps)
  return result, ig.steps, error
