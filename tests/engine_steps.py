"""Trains an experiment for some steps on one backend's own engine, from
given initial weights: the cross-backend equality's helper. Keras takes one
backend per process, so the test runs this once per backend:

    KERAS_BACKEND=jax python tests/engine_steps.py CONFIG DATA_DIR STEPS \
        INIT.npz OUT.npz [dp]

If INIT.npz does not exist, the model's own initial weights are written to
it first. Writes the weights after the steps to OUT.npz and prints the
number of steps taken. The optimizer is plain SGD, whose steps differ
between backends by float32 rounding only (Adam amplifies it), and Dropout
is removed: each backend draws its own masks. With `dp`, the steps are
DP-SGD's with clipping at 0.5 and noise 1e-9: the backends draw different
noise from one key, so only the clipping is compared.

Both backends' kernels are asked for strict float32: on JAX, XLA:CPU's
platform-independent arithmetic (by default its YNNPACK kernels may compute
a float32 dot or convolution in a way that depends on the CPU), and oneDNN's
strict math mode for TensorFlow (the default, unless the environment says
otherwise). On one CI machine digits_cnn's weights after 50 steps were
1.3e-4 from TensorFlow's (1.5e-8 on the machine of BUILD_NOTES.md); what is
compared here is the engines, not two CPUs' kernels.
"""

import os
import pathlib
import sys
import tempfile

os.environ['ONEDNN_DEFAULT_FPMATH_MODE'] = 'STRICT'
if os.environ.get('KERAS_BACKEND') == 'jax':
  os.environ['XLA_FLAGS'] = ' '.join((
      os.environ.get('XLA_FLAGS', ''),
      '--xla_cpu_enable_platform_dependent_math=false')).strip()

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from tfpipeline import config as config_lib
from tfpipeline import engines
from tfpipeline import models
from tfpipeline.data import pipeline
from tfpipeline.data import sources
from tfpipeline.run_context import RunContext


def main(name, data_dir, steps, init, out, dp=False):
  config = config_lib.load(name)
  config.data.data_dir = data_dir
  config.model.layers = tuple(layer for layer in config.model.layers
                              if layer[0] != 'Dropout')
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.01
  config.train.steps_per_loop = 10
  config.train.backend = keras.backend.backend()
  if dp:
    config.privacy.dp = True
    config.privacy.l2_norm_clip = 0.5
    config.privacy.noise_multiplier = 1e-9
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
  main(*sys.argv[1:3], int(sys.argv[3]), *sys.argv[4:6],
       dp=sys.argv[6:] == ['dp'])
