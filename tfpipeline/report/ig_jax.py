"""Integrated Gradients' chunks on Keras's JAX backend.

The explained outputs' gradients are one `jax.grad` of their sum over the
chunk's path points: in inference mode a Sequential model's output for one
example depends on that example alone, so the gradient of the sum with
respect to a point is the gradient of that point's own output. A chunk is
one `jax.jit` program, compiled once per chunk shape (a full chunk and the
last). The model's variables are arguments of that program, read through a
`keras.StatelessScope`: closed over, their values would be compiled into
it as constants. It runs on the first device of the run's `JaxDevices`:
attributing a hundred examples needs no more.
"""

import jax
import jax.numpy as jnp
import keras
import numpy as np


def compiled(chunk, forward, variables, devices):
  """`run(inputs, baseline, targets, *context)`: NumPy arrays of a chunk's
  examples in, their attributions as `chunk(gradients, ...)` computes them
  out.

  Args:
    chunk: `IntegratedGradients._chunk`.
    forward: the explained function (see `IntegratedGradients`).
    variables: the Keras variables `forward` reads.
    devices: the run's `jax_devices.JaxDevices`, or None (JAX's default
      device).
  """
  variables = list(variables)

  def attribute(values, *arrays):

    def explained_sum(points, targets, *context):
      with keras.StatelessScope(state_mapping=list(zip(variables, values))):
        outputs = forward(points, *context)
      return jnp.sum(jnp.take_along_axis(
          outputs.astype(jnp.float32), targets[:, None], axis=1))

    return chunk(jax.grad(explained_sum), *arrays)

  attribute = jax.jit(attribute)
  device = devices.devices[0] if devices is not None else jax.devices()[0]

  def run(*arrays):
    with jax.default_device(device):
      return np.asarray(attribute([v.value for v in variables], *arrays))

  return run
