"""The `--config` flag with its `--config.KEY=VALUE` overrides, and
`--model_dir`, as the commands that train define and parse them.

Each is defined once per process: `train` and `sweep` share the definition
where both are imported (the tests' in-process runs); a command's own
process imports one of them.
"""

import re

from absl import flags
from ml_collections import config_flags

from tfpipeline import config as config_lib
from tfpipeline.errors import UserError


class _ExperimentParser(flags.ArgumentParser):
  """`--config` values: an experiment path or bare name; errors fail at once.

  (ml_collections' own parser defers a missing file's error to first use.)
  """

  def parse(self, argument):
    try:
      config = config_lib.load(argument)
    except UserError as e:
      raise flags.IllegalFlagValueError(str(e)) from None
    config.lock()
    return config

  def flag_type(self):
    return 'config object'


def define() -> flags.FlagHolder:
  """Defines `--config` (once)."""
  if 'config' in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS['config'])
  # No default here: ml_collections would parse it, overrides included,
  # while the flag is defined, where a bad override cannot be reported
  # cleanly. `parse` supplies the embedded default instead.
  holder = config_flags.DEFINE_config_file(
      'config', default=None,
      help_string=('Experiment: a .py file with get_config(), or a bare name '
                   'from experiments/ (' + ', '.join(
                       config_lib.available_experiments()) + '). Default: '
                   'the embedded diabetes experiment. Override any value '
                   'with --config.KEY=VALUE, e.g. --config.train.epochs=3.'),
      lock_config=True)
  flags.FLAGS['config'].parser = _ExperimentParser()
  return holder


def define_model_dir(default: str | None,
                     help_string: str) -> flags.FlagHolder:
  """Defines `--model_dir` (once: the first command's default and help)."""
  if 'model_dir' in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS['model_dir'])
  return flags.DEFINE_string('model_dir', default, help_string)


def parse(argv: list[str]) -> list[str]:
  """absl flag parsing (--flagfile expanded; the embedded default when no
  --config is given).

  Raises:
    UserError: a bad flag, experiment or override (one line).
  """
  try:
    argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
    if not any(re.match(r'--?config(=|$)', arg) for arg in argv[1:]):
      argv = argv[:1] + [f'--config={config_lib.__file__}'] + argv[1:]
    return flags.FLAGS(argv)
  except flags.Error as e:
    raise UserError(str(e).splitlines()[0] if str(e) else
                    type(e).__name__) from None
  except (AttributeError, KeyError) as e:
    # ml_collections: an override names a key the config does not have.
    cause = e.args[0] if e.args and isinstance(e.args[0], Exception) else e
    detail = ' '.join(str(cause.args[0] if cause.args else cause).split())
    raise UserError(f'unknown config key in a --config.KEY=VALUE override: '
                    f'{detail} (see README, "Config keys")') from None

