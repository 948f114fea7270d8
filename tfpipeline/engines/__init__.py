"""Training engines: one module per engine behind `engine.Engine`.

    tf_loop    the own TensorFlow loop: many steps per device call, XLA
               under every strategy (--engine=tfpipeline, the default)
    keras_fit  Keras `model.fit`, the reference (--engine=keras_fit)
    jax_loop   the own loop on Keras's JAX backend: a block of steps is one
               jitted XLA program (--engine=tfpipeline, train.backend='jax')

`check` imports nothing heavy, so bad flags fail before TensorFlow loads;
`engine_class` and `create` import the engine's module.
"""

import importlib

from tfpipeline import config_checks
from tfpipeline.errors import UserError

# (train.backend, --engine): the engine's class, as module.Class here.
_CLASSES = {('tensorflow', 'tfpipeline'): 'tf_loop.TfLoop',
            ('tensorflow', 'keras_fit'): 'keras_fit.KerasFit',
            ('jax', 'tfpipeline'): 'jax_loop.JaxLoop'}
NAMES = tuple(dict.fromkeys(name for _, name in _CLASSES))
# Engines that cannot restore a checkpoint mid-run, and why.
_NO_ROLLBACK = {'keras_fit': 'Keras fit cannot restore a checkpoint mid-run'}


def check(name: str, config) -> None:
  """Raises UserError if `name` is no engine or refuses `config`."""
  if name not in NAMES:
    raise UserError(f'--engine={name}: expected one of {", ".join(NAMES)}')
  backend = config.train.backend
  if (backend, name) not in _CLASSES:
    raise UserError(f'--engine={name} runs on the TensorFlow backend only; '
                    f'use --engine=tfpipeline with --backend={backend} (Keras '
                    f'fit on JAX is measured by python -m tfpipeline.bench)')
  if name in _NO_ROLLBACK and config.train.nan_policy == 'rollback':
    raise UserError(f'train.nan_policy=rollback needs --engine=tfpipeline: '
                    f'{_NO_ROLLBACK[name]}; use nan_policy=stop with {name}')


def check_replicas(name: str, config, replicas: int) -> None:
  """Raises UserError if engine `name` cannot train `config` over
  `replicas` replicas as it would on one."""
  clipping = list(config_checks.clipping(config.optimizer))
  if name == 'keras_fit' and replicas > 1 and clipping:
    raise UserError(
        f'optimizer.{clipping[0]} with --engine=keras_fit on {replicas} replicas: Keras '
        f"fit clips each replica's part of the gradient before it sums them "
        f'(Keras 3.15), so the result would depend on the replicas; use '
        f"--engine=tfpipeline, which clips the whole batch's gradient")


def engine_class(name: str, backend: str = 'tensorflow'):
  """The class of engine `name` (one of NAMES) on `backend`; imports its
  module."""
  module, cls = _CLASSES[backend, name].rsplit('.', 1)
  return getattr(importlib.import_module(f'{__name__}.{module}'), cls)


def create(run, model):
  """The run's engine (`run.engine`) over `model`, its state restored."""
  return engine_class(run.engine, run.config.train.backend)(run, model)
