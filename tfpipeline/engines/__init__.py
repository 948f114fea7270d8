"""Training engines: one module per engine behind `engine.Engine`.

    tf_loop    the own TensorFlow loop: many steps per device call, XLA
               under every strategy (--engine=tfpipeline, the default)
    keras_fit  Keras `model.fit`, the reference (--engine=keras_fit)

`check` imports nothing heavy, so bad flags fail before TensorFlow loads;
`engine_class` and `create` import the engine's module.
"""

import importlib

from tfpipeline.errors import UserError

# --engine value: the engine's class, as module.Class under this package.
_CLASSES = {'tfpipeline': 'tf_loop.TfLoop', 'keras_fit': 'keras_fit.KerasFit'}
NAMES = tuple(_CLASSES)
# Engines that cannot restore a checkpoint mid-run, and why.
_NO_ROLLBACK = {'keras_fit': 'Keras fit cannot restore a checkpoint mid-run'}


def check(name: str, config) -> None:
  """Raises UserError if `name` is no engine or refuses `config`."""
  if name not in _CLASSES:
    raise UserError(f'--engine={name}: expected one of {", ".join(NAMES)}')
  if name in _NO_ROLLBACK and config.train.nan_policy == 'rollback':
    raise UserError(f'train.nan_policy=rollback needs --engine=tfpipeline: '
                    f'{_NO_ROLLBACK[name]}; use nan_policy=stop with {name}')


def engine_class(name: str):
  """The class of engine `name` (one of NAMES); imports its module."""
  module, cls = _CLASSES[name].rsplit('.', 1)
  return getattr(importlib.import_module(f'{__name__}.{module}'), cls)


def create(run, model):
  """The run's engine (`run.engine`) over `model`, its state restored."""
  return engine_class(run.engine)(run, model)
