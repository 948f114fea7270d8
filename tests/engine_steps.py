"""Trains an experiment for some steps on one backend's own engine, from
given initial weights: the cross-backend equality's helper. Keras takes one
backend per process, so the test runs this once per backend:

    KERAS_BACKEND=jax python tests/engine_steps.py CONFIG DATA_DIR STEPS \
        INIT.npz OUT.npz [dp|float64|accumulate]

If INIT.npz does not exist, the model's own initial weights are written to
it first. Writes the weights after the steps to OUT.npz and prints the
number of steps taken. The optimizer is plain SGD, whose steps differ
between backends by rounding only (Adam amplifies it), and Dropout is
removed: each backend draws its own masks. With `dp`, the steps are
DP-SGD's with clipping at 0.5 and noise 1e-9: the backends draw different
noise from one key, so only the clipping is compared. With `accumulate`,
each step's batch runs as 4 passes of a quarter of it, gradients summed.

With `float64`, every layer computes in float64. A convnet's float32
trajectories part at a kink: where a ReLU's input or a max pool's top two
values lie within float32 rounding of each other, the two backends' kernels
(whose rounding differs by CPU) can send the gradient different ways. The
forward pass, and so the dense layers' gradients, stay equal; the
convolutions' weights jump (BUILD_NOTES.md: 1e-5 at step 55 where XLA
generates SSE4.2 code, 1.1e-4 on a CI machine). In float64 rounding is
1e-16 and no such flip was seen; what is compared is the engines.
"""

import os
import pathlib
import sys
import tempfile

if sys.argv[6:] == ['float64']:
  os.environ['JAX_ENABLE_X64'] = '1'

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from tfpipeline import config as config_lib
from tfpipeline import engines
from tfpipeline import models
from tfpipeline.data import pipeline
from tfpipeline.data import sources
from tfpipeline.run_context import RunContext


def _in_float64(model: keras.Model) -> keras.Model:
  """`model` with every layer computing in float64."""

  def clone(layer):
    layer = layer.__class__.from_config({**layer.get_config(),
                                         'dtype': 'float64'})
    if isinstance(layer, keras.layers.Rescaling):
      # Keras's TensorFlow backend casts a Python float to float64 through
      # float32 (tf.convert_to_tensor); JAX's does not.
      layer.scale, layer.offset = (np.float64(layer.scale),
                                   np.float64(layer.offset))
    return layer

  return keras.models.clone_model(model, clone_function=clone)


def main(name, data_dir, steps, init, out, mode=None):
  config = config_lib.load(name)
  config.data.data_dir = data_dir
  config.model.layers = tuple(layer for layer in config.model.layers
                              if layer[0] != 'Dropout')
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.01
  config.train.steps_per_loop = 10
  config.train.backend = keras.backend.backend()
  if mode == 'dp':
    config.privacy.dp = True
    config.privacy.l2_norm_clip = 0.5
    config.privacy.noise_multiplier = 1e-9
  if mode == 'accumulate':
    config.optimizer.gradient_accumulation_steps = 4
    config.train.global_batch_size //= 4
  config = config_lib.validate(config)
  if config.train.backend == 'jax':
    from tfpipeline import jax_devices as devices  # pylint: disable=g-import-not-at-top
  else:
    from tfpipeline import strategy as devices  # pylint: disable=g-import-not-at-top
  strategy = devices.create('cpu')
  config = config_lib.resolve_for_device(config, on_tpu=False, on_cpu=True)
  splits = sources.load(config.data, loss=config.loss,
                        output_units=config.model.output_units)
  inputs = pipeline.inputs(splits, config)
  model = models.build(config, splits.train, input_shape=inputs.shape,
                       input_dtype=inputs.dtype)
  if mode == 'float64':
    model = _in_float64(model)
  init = pathlib.Path(init)
  if not init.exists():
    np.savez(init, *model.get_weights())
  with np.load(init) as saved:
    model.set_weights([saved[f'arr_{i}'] for i in range(len(saved.files))])
  with tempfile.TemporaryDirectory() as model_dir:
    run = RunContext.own_loop(config, pathlib.Path(model_dir), strategy,
                              splits, inputs)
    engine = engines.create(run, model)
    taken = 0
    while taken < steps:
      taken += engine.run_block(lambda step, loss: None).steps
    np.savez(out, *engine.trained_model().get_weights())
  print(taken)


if __name__ == '__main__':
  main(*sys.argv[1:3], int(sys.argv[3]), *sys.argv[4:])
