"""FLOPs of a model's forward pass: by formula, and as its backend counts them.

`analytic_flops` counts the work of Dense, convolution and pooling layers
from their shapes, with no backend; `forward_flops` adds the framework's
own count of the whole forward pass and checks the two against each other
where they count the same operations.
"""

import math

# The graph ops that Dense and convolution layers become (Conv1D and
# SeparableConv*'s pointwise step are Conv2D, depthwise steps
# DepthwiseConv2dNative; the profiler gives grouped convolutions no count:
# their analytic count stands alone), and those of 1-D and 2-D max and
# average pooling (it counts no 3-D pooling, and global pooling's Mean is
# shared with normalization layers).
_MULTIPLY_ADD_OPS = ('MatMul', 'BatchMatMulV2', 'BatchMatMulV3', 'Conv2D',
                     'Conv3D', 'DepthwiseConv2dNative')
_POOLING_OPS = ('MaxPool', 'AvgPool')

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
    `multiply_adds` (Dense and convolutions), `biases`, `pooling` and
    `checked_pooling` (the 1-D and 2-D pooling the graph also counts).
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
                         'checked_pooling'), 0)
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
    elif isinstance(layer, windowed_pooling):
      pooled = math.prod(layer.output.shape[1:]) * math.prod(layer.pool_size)
      count['pooling'] += pooled
      count['checked_pooling'] += (pooled if isinstance(layer, checked_pooling)
                                   else 0)
    elif isinstance(layer, global_pooling):
      count['pooling'] += math.prod(layer.input.shape[1:])
  return count


def forward_flops(model) -> dict:
  """Forward-pass FLOPs per example: the graph's count and the formula's.

  The graph count is the TF profiler's float operations of the frozen
  inference function at batch 1 (MatMul counts 2 x m x k x n, Conv2D 2 x
  output pixels x kernel size x input channels x filters). The analytic
  count is `analytic_flops`'; its multiply-adds must equal the graph's
  MatMul, Conv and DepthwiseConv operations, its 1-D and 2-D pooling the
  graph's MaxPool and AvgPool (an Embedding's index checks, two per token,
  stay in the graph's total only).
  """
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

  analytic = analytic_flops(model)
  graph_matmul, graph_pooling = (graph_count(_MULTIPLY_ADD_OPS),
                                 graph_count(_POOLING_OPS))
  return {
      'graph_total': int(profile.total_float_ops),
      'graph_matmul': graph_matmul,
      'analytic': int(analytic['multiply_adds'] + analytic['biases'] +
                      analytic['pooling']),
      'analytic_matmul': int(analytic['multiply_adds']),
      'matmul_agrees': graph_matmul == analytic['multiply_adds'],
      'graph_pooling': graph_pooling,
      'analytic_pooling': int(analytic['pooling']),
      'pooling_agrees': graph_pooling == analytic['checked_pooling'],
      'method': 'tf.compat.v1.profiler float_operation on the frozen '
                'forward graph, batch 1',
  }
