"""report.flops: the analytic FLOP count against the backend's own."""

import keras
import numpy as np

from tfpipeline.report import flops


def test_graph_flops_agree_with_the_dense_formula():
  model = keras.Sequential([
      keras.Input((10,)),
      keras.layers.Normalization(mean=np.zeros(10), variance=np.ones(10)),
      keras.layers.Dense(64, 'relu'), keras.layers.Dense(1)])
  counted = flops.forward_flops(model)
  assert counted['graph_matmul'] == counted['analytic_matmul'] == (
      2 * (10 * 64 + 64 * 1))
  assert counted['analytic'] == 2 * (10 * 64 + 64) + 64 + 1
  assert counted['matmul_agrees']
  # Dense plus the normalisation's few element-wise ops, nothing more.
  assert counted['analytic'] <= counted['graph_total'] <= (
      counted['analytic'] + 3 * 10)


def test_graph_flops_agree_with_the_conv_formula():
  model = keras.Sequential([
      keras.Input((8, 8, 1), dtype='uint8'),
      keras.layers.Rescaling(1 / 255),
      keras.layers.Conv2D(4, 3, padding='same', activation='relu'),
      keras.layers.MaxPooling2D(2),
      keras.layers.Conv2D(6, 3),
      keras.layers.Flatten(), keras.layers.Dense(10)])
  counted = flops.forward_flops(model)
  conv = 2 * 8 * 8 * 9 * 1 * 4 + 2 * 2 * 2 * 9 * 4 * 6
  dense = 2 * 24 * 10
  assert counted['graph_matmul'] == counted['analytic_matmul'] == conv + dense
  pooling = 4 * 4 * 4 * 4  # outputs x window
  assert counted['analytic'] == conv + dense + 8 * 8 * 4 + 2 * 2 * 6 + 10 + (
      pooling)
  assert counted['matmul_agrees']
  assert counted['graph_pooling'] == counted['analytic_pooling'] == pooling


def test_graph_flops_agree_with_the_pooling_formula():
  model = keras.Sequential([
      keras.Input((12,), dtype='int64'), keras.layers.Embedding(50, 4),
      keras.layers.MaxPooling1D(2), keras.layers.AveragePooling1D(3),
      keras.layers.LayerNormalization(),  # Its Mean ops are not pooling.
      keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
  counted = flops.forward_flops(model)
  windowed = 6 * 4 * 2 + 2 * 4 * 3
  assert counted['graph_pooling'] == windowed and counted['pooling_agrees']
  assert counted['analytic_pooling'] == windowed + 2 * 4  # + global average
  assert counted['analytic_matmul'] == 2 * 4 * 2  # The Embedding: none.


def test_global_pooling_behind_a_masking_embedding_is_counted():
  model = keras.Sequential([
      keras.Input((16,), dtype='int64'),
      keras.layers.Embedding(40, 8, mask_zero=True),  # Its mask rides along.
      keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
  counted = flops.forward_flops(model)
  assert counted['analytic_pooling'] == 16 * 8
  assert counted['analytic_matmul'] == counted['graph_matmul'] == 2 * 8
  assert counted['matmul_agrees']


def test_dense_flops_count_every_position_of_its_input():
  model = keras.Sequential([
      keras.Input((5,), dtype='int32'), keras.layers.Embedding(20, 8),
      keras.layers.Dense(16), keras.layers.Flatten(), keras.layers.Dense(1)])
  counted = flops.forward_flops(model)
  matmul = 2 * 5 * 8 * 16 + 2 * 80 * 1  # 5 tokens x (8 -> 16), then 80 -> 1
  assert counted['analytic_matmul'] == counted['graph_matmul'] == matmul
  assert counted['matmul_agrees']
  assert counted['analytic'] == matmul + 5 * 16 + 1


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
  counted = flops.forward_flops(model)
  matmul = (2 * 36 * 9 * 3 * 2 +                  # depthwise 3x3, 3 x 2
            2 * 36 * (9 * 6 + 6 * 4) +             # depthwise, pointwise
            2 * 34 * 3 * 4 * 5 +                   # Conv1D
            2 * 16 * (3 * 5 + 5 * 2) +             # SeparableConv1D
            2 * 14 * 3 * 2 +                       # DepthwiseConv1D
            2 * 28)                                # Dense
  assert counted['analytic_matmul'] == counted['graph_matmul'] == matmul
  assert counted['matmul_agrees']
  biases = 36 * 6 + 36 * 4 + 34 * 5 + 16 * 2 + 14 * 2 + 1
  assert counted['analytic'] == matmul + biases
  # The 'same' separable convolution's depthwise taps on its zero padding:
  # along each 6-pixel axis, 6 x 3 taps of which the 2 past the edges.
  padding = 2 * (36 * 9 - (6 * 3 - 2) ** 2) * 6
  assert flops.analytic_flops(model) == {
      'multiply_adds': matmul, 'biases': biases, 'pooling': 0,
      'checked_pooling': 0, 'padding_multiply_adds': padding,
      'checked_pooling_outputs': 0}
