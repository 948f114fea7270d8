"""FLOPs of a model's forward pass: by formula, and as its backend counts them.

`analytic_flops` counts the work of Dense, convolution and pooling layers
from their shapes, with no backend. `forward_flops` adds the backend's own
count of the whole forward pass at batch 1 (TensorFlow: the profiler's
count of the frozen graph; JAX: XLA's `cost_analysis()` of the compiled
program) and checks the two where they count the same operations.
"""

import math

import numpy as np

# The graph ops that Dense and convolution layers become (Conv1D and
# SeparableConv*'s pointwise step are Conv2D, depthwise steps
# DepthwiseConv2dNative; the profiler gives grouped convolutions no count:
# their analytic count stands alone), and those of 1-D and 2-D max and
# average pooling (it counts no 3-D pooling, and global pooling's Mean is
# shared with normalization layers).
_MULTIPLY_ADD_OPS = ('MatMul', 'BatchMatMulV2', 'BatchMatMulV3', 'Conv2D',
                     'Conv3D', 'DepthwiseConv2dNative')
_POOLING_OPS = ('MaxPool', 'AvgPool')
# The JAX primitives of the same layers; a pooling layer's reduce_window
# has rank 3 (1-D) or 4 (2-D), batch and channels included.
_MULTIPLY_ADD_PRIMITIVES = ('dot_general', 'conv_general_dilated')
_POOLING_PRIMITIVES = ('reduce_window_max', 'reduce_window_sum')
_CHECKED_POOLING_RANKS = (3, 4)

_METHODS = {
    'tensorflow': {
        'method': 'tf.compat.v1.profiler float_operation on the frozen '
                  'forward graph, batch 1',
        'cross_check': (
            'graph_matmul (MatMul, BatchMatMul, Conv2D, Conv3D and '
            'DepthwiseConv2dNative) against the analytic multiply-adds; '
            'graph_pooling (MaxPool, AvgPool) against the analytic 1-D and '
            '2-D pooling; graph_total also counts element-wise operations '
            '(biases, activations, normalisation); a dilated convolution is '
            'counted over the padded blocks TensorFlow runs it on '
            '(SpaceToBatchND), which the analytic count does not'),
    },
    'jax': {
        'method': "XLA's cost_analysis() of the compiled forward (jax.jit of "
                  'model.stateless_call), batch 1; graph_matmul and '
                  "graph_pooling: XLA's cost analysis of each of its "
                  'dot_general, conv_general_dilated and reduce_window '
                  'operations, lowered alone (unoptimised)',
        'cross_check': (
            'graph_matmul (dot_general, conv_general_dilated) against the '
            'analytic multiply-adds less those of convolution taps on zero '
            'padding, which XLA does not count; graph_pooling (the '
            'reduce_window of 1-D and 2-D pooling) against the analytic 1-D '
            'and 2-D pooling less one per output (XLA counts n - 1 '
            'operations to reduce n values); graph_total also counts '
            'element-wise operations (biases, activations, normalisation, '
            'softmax) and is that of the optimised program, where XLA may '
            'rewrite an operation (a Dense of one unit becomes a multiply '
            'and a reduce: one FLOP fewer); an average pooling with same '
            'padding also counts its windows\' inputs with a reduce_window, '
            'which the analytic count does not'),
    },
}


def analytic_flops(model) -> dict:
  """Forward-pass FLOPs per example by formula, from the layers' shapes.

  Imports no TensorFlow (`bench.keras_fit` runs on any Keras backend). Dense
  does 2 x inputs x units per position of its input (batch, *positions,
  inputs); convolutions 2 x output positions x kernel size (window x input
  channels / groups x filters); depthwise ones 2 x output positions x
  window x channels x depth multiplier; separable ones their depthwise and
  pointwise (1 x 1) steps; each adds its bias per output value. Pooling
  counts one operation per window element per output (global pooling: per
  input element). An Embedding is a lookup: no FLOPs.

  Returns:
    `multiply_adds` (Dense and convolutions), `biases`, `pooling`,
    `checked_pooling` (the 1-D and 2-D pooling the backends also count),
    and, for XLA's conventions, `padding_multiply_adds` (those of
    `multiply_adds` whose window tap falls on a convolution's zero padding)
    and `checked_pooling_outputs` (the outputs of that 1-D and 2-D pooling).
  """
  import keras  # pylint: disable=g-import-not-at-top
  layers = keras.layers
  convolutions = (layers.Conv1D, layers.Conv2D, layers.Conv3D,
                  layers.DepthwiseConv1D, layers.DepthwiseConv2D)
  separable = (layers.SeparableConv1D, layers.SeparableConv2D)
  checked_pooling = (layers.MaxPooling1D, layers.MaxPooling2D,
                     layers.AveragePooling1D, layers.AveragePooling2D)
  windowed_pooling = checked_pooling + (layers.MaxPooling3D,
                                        layers.AveragePooling3D)
  global_pooling = (layers.GlobalAveragePooling1D,
                    layers.GlobalAveragePooling2D,
                    layers.GlobalAveragePooling3D, layers.GlobalMaxPooling1D,
                    layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D)
  count = dict.fromkeys(('multiply_adds', 'biases', 'pooling',
                         'checked_pooling', 'padding_multiply_adds',
                         'checked_pooling_outputs'), 0)
  # A layer's `input` is [inputs, mask] behind a masking Embedding: the
  # shape comes from the layer before.
  input_shape = model.input_shape
  for layer in model.layers:
    if isinstance(layer, (layers.Dense,) + convolutions + separable):
      kernels = ([layer.depthwise_kernel, layer.pointwise_kernel]
                 if isinstance(layer, separable) else [layer.kernel])
      values = math.prod(layer.output.shape[1:])
      channels_first = getattr(layer, 'data_format', '') == 'channels_first'
      positions = values // layer.output.shape[1 if channels_first else -1]
      count['multiply_adds'] += 2 * positions * sum(
          math.prod(kernel.shape) for kernel in kernels)
      count['biases'] += values if layer.use_bias else 0
      if getattr(layer, 'padding', '') == 'same':  # Causal pads the input.
        # The windowed kernel's multiply-adds per tap: its last two axes.
        window = math.prod(layer.kernel_size)
        count['padding_multiply_adds'] += 2 * (
            positions * window - _taps_inside(layer, input_shape,
                                              channels_first)
        ) * math.prod(kernels[0].shape[-2:])
    elif isinstance(layer, windowed_pooling):
      outputs = math.prod(layer.output.shape[1:])
      count['pooling'] += outputs * math.prod(layer.pool_size)
      if isinstance(layer, checked_pooling):
        count['checked_pooling'] += outputs * math.prod(layer.pool_size)
        count['checked_pooling_outputs'] += outputs
    elif isinstance(layer, global_pooling):
      count['pooling'] += math.prod(input_shape[1:])
    input_shape = layer.output.shape
  return count


def _taps_inside(layer, input_shape, channels_first: bool) -> int:
  """A 'same'-padded convolution's window taps that fall inside its input,
  not on its zero padding, summed over its output positions."""
  spatial = slice(2, None) if channels_first else slice(1, -1)
  taps = 1
  for size, outputs, kernel, stride, dilation in zip(
      input_shape[spatial], layer.output.shape[spatial],
      layer.kernel_size, layer.strides, layer.dilation_rate):
    span = (kernel - 1) * dilation + 1
    before = max((outputs - 1) * stride + span - size, 0) // 2
    at = (np.arange(outputs)[:, None] * stride - before +
          np.arange(kernel)[None, :] * dilation)
    taps *= int(((at >= 0) & (at < size)).sum())
  return taps


def forward_flops(model) -> dict:
  """Forward-pass FLOPs per example: the backend's count and the formula's.

  `graph_total` is the backend's count of the whole inference function at
  batch 1, `graph_matmul` and `graph_pooling` its count of the operations
  that Dense, convolution and pooling layers become; `matmul_agrees` and
  `pooling_agrees` say whether these equal the analytic count
  (`analytic_flops`) in the backend's conventions; `method` and
  `cross_check` say how each was counted and what is compared. An
  Embedding's index checks (two per token on TensorFlow) stay in
  `graph_total` only.
  """
  import keras  # pylint: disable=g-import-not-at-top
  backend = keras.backend.backend()
  analytic = analytic_flops(model)
  if backend == 'jax':
    total, matmul, pooling = _xla_counts(model)
    expected_matmul = (analytic['multiply_adds'] -
                       analytic['padding_multiply_adds'])
    expected_pooling = (analytic['checked_pooling'] -
                        analytic['checked_pooling_outputs'])
  else:
    total, matmul, pooling = _profiler_counts(model)
    expected_matmul = analytic['multiply_adds']
    expected_pooling = analytic['checked_pooling']
  return {
      'graph_total': total,
      'graph_matmul': matmul,
      'analytic': int(analytic['multiply_adds'] + analytic['biases'] +
                      analytic['pooling']),
      'analytic_matmul': int(analytic['multiply_adds']),
      'matmul_agrees': matmul == expected_matmul,
      'graph_pooling': pooling,
      'analytic_pooling': int(analytic['pooling']),
      'pooling_agrees': pooling == expected_pooling,
      **_METHODS[backend],
  }


def _profiler_counts(model) -> tuple[int, int, int]:
  """(total, MatMul and Conv, MaxPool and AvgPool) FLOPs: the TF profiler's
  float operations of the frozen inference graph at batch 1 (MatMul counts
  2 x m x k x n, Conv2D 2 x output pixels x kernel size x input channels x
  filters)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import

  spec = tf.TensorSpec([1, *model.input_shape[1:]], model.inputs[0].dtype)
  concrete = tf.function(lambda x: model(x, training=False)
                         ).get_concrete_function(spec)
  frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options['output'] = 'none'
  verbosity = tf.compat.v1.logging.get_verbosity()
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)  # Deprecations.
  try:
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph,
                                            options=options)
  finally:
    tf.compat.v1.logging.set_verbosity(verbosity)
  op_types = {op.name: op.type for op in frozen.graph.get_operations()}
  # The profile is a tree of name scopes (a separable convolution's
  # depthwise op sits under its pointwise Conv2D): each node's own count.
  nodes, ops = list(profile.children), []
  while nodes:
    node = nodes.pop()
    ops.append((op_types.get(node.name), node.float_ops))
    nodes.extend(node.children)

  def graph_count(kinds):
    return int(sum(flops for kind, flops in ops if kind in kinds))

  return (int(profile.total_float_ops), graph_count(_MULTIPLY_ADD_OPS),
          graph_count(_POOLING_OPS))


def _xla_counts(model) -> tuple[int, int, int]:
  """(total, dot_general and conv_general_dilated, 1-D and 2-D pooling's
  reduce_window) FLOPs: XLA's cost analysis of the compiled inference
  function at batch 1, and of each of those operations of its jaxpr
  lowered alone (XLA's per-operation counts are not public)."""
  import jax  # pylint: disable=g-import-not-at-top

  def abstract(values):
    return [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in values]

  def forward(trainable, non_trainable, inputs):
    return model.stateless_call(trainable, non_trainable, inputs,
                                training=False)[0]

  arguments = (abstract(model.trainable_variables),
               abstract(model.non_trainable_variables),
               jax.ShapeDtypeStruct(
                   (1, *model.input_shape[1:]),
                   jax.dtypes.canonicalize_dtype(model.inputs[0].dtype)))
  total = _cost(jax.jit(forward).lower(*arguments).compile())
  matmul = pooling = 0
  for equation in _equations(jax.make_jaxpr(forward)(*arguments).jaxpr):
    name = equation.primitive.name
    if name in _MULTIPLY_ADD_PRIMITIVES:
      matmul += _operation_cost(equation)
    elif (name in _POOLING_PRIMITIVES and
          equation.invars[0].aval.ndim in _CHECKED_POOLING_RANKS):
      pooling += _operation_cost(equation)
  return total, matmul, pooling


def _cost(stage) -> int:
  """FLOPs of a lowered or compiled JAX computation, by XLA's analysis."""
  return int(stage.cost_analysis().get('flops', 0))


def _operation_cost(equation) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  operands = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype)
              for v in equation.invars]
  return _cost(jax.jit(lambda *args: equation.primitive.bind(
      *args, **equation.params)).lower(*operands))


def _equations(jaxpr):
  """A jaxpr's equations, those of the jaxprs nested in them included."""
  from jax.extend import core  # pylint: disable=g-import-not-at-top
  for equation in jaxpr.eqns:
    yield equation
    for param in equation.params.values():
      if isinstance(param, core.ClosedJaxpr):
        yield from _equations(param.jaxpr)
      elif isinstance(param, core.Jaxpr):
        yield from _equations(param)
