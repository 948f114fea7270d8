"""Keras's backend for a run: TensorFlow or JAX, chosen before Keras loads.

Keras 3 reads `KERAS_BACKEND` once, at import, so a process trains on one
backend. `select` sets it before anything imports Keras and refuses a
process whose Keras already runs on the other one. tf.data feeds both: on
the JAX backend TensorFlow runs the input pipeline on the host only.
"""

import importlib.util
import os
import sys

from tfpipeline.errors import UserError

BACKENDS = ('tensorflow', 'jax')
# What --backend=jax needs beyond the core install, and where it comes from.
_JAX_MODULES = ('jax', 'orbax.checkpoint')
_JAX_INSTALL = ("pip install 'tfpipeline[jax]' (in a checkout: pip install "
                "-e '.[jax]')")


def select(name: str) -> None:
  """Makes `name` (one of BACKENDS) Keras's backend in this process.

  Raises:
    UserError: JAX is not installed, or Keras is already loaded on another
      backend.
  """
  if name == 'jax':
    for module in _JAX_MODULES:
      if not _installed(module):
        raise UserError(f'--backend=jax needs {module.split(".")[0]}, which '
                        f'is not installed; {_JAX_INSTALL}')
  keras = sys.modules.get('keras')
  if keras is None:
    os.environ['KERAS_BACKEND'] = name
    return
  current = keras.backend.backend()
  if current != name:
    raise UserError(
        f'--backend={name}: Keras is already loaded on its {current} backend '
        f'in this process (it takes one per process); run in a fresh '
        f'process, or set KERAS_BACKEND={name} before importing keras')


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # A missing parent package.
    return False
