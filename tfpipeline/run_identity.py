"""What a run trains on, recorded when it starts and compared on resume.

A resumed run reads "the exact next batch" only if the data is the data its
checkpoints were trained on: config.json cannot tell, since a CSV edited in
place, a regenerated TFDS dataset or another `data_dir` keep the same config.
`identity.json` in `model_dir` holds the run's engine and the data's
identity: every source file's sha256, a TFDS dataset's name, version and
split sizes, and the row count of each split. A resume with other data is
refused unless the user allows it, and then the new version is appended, so
the file lists every version of the data the run trained on, each from the
step it was first used. A switch of engine is always refused: the engines
checkpoint at different steps (the own loop within epochs, Keras fit at
their ends), so the steps, and the epsilon and examples counted from them,
would drift.
"""

import json
import pathlib

from tfpipeline import atomic_files
from tfpipeline import config as config_lib
from tfpipeline.errors import UserError

FILE = 'identity.json'
# Where the data was read from: config keys tell it; a moved copy of the
# same data is the same data.
_LOCATIONS = frozenset({'path', 'data_dir'})


def of(splits, engine: str) -> dict:
  """The identity of a run on `splits` (sources.Splits) with `engine`."""
  return {'engine': engine, 'data': dict(splits.origin),
          'rows': {name: len(getattr(splits, name))
                   for name in ('train', 'validation', 'test')}}


def check(model_dir: pathlib.Path, identity: dict, *,
          allow_change: bool) -> None:
  """Refuses to resume the run in `model_dir` on another engine, or, unless
  `allow_change`, on other data. A run without identity.json (written before
  it existed) is not checked."""
  recorded = versions(model_dir)
  if not recorded:
    return
  last = recorded[-1]
  if last['engine'] != identity['engine']:
    raise UserError(
        f'--model_dir={model_dir} holds a run trained with '
        f'--engine={last["engine"]}; resume it with --engine='
        f'{last["engine"]} (the engines checkpoint at different steps, so '
        f'the steps, examples and epsilon would drift), or use a new '
        f'--model_dir')
  changes = _changes(last, identity)
  if changes and not allow_change:
    key, was, now = changes[0]
    more = f' and {len(changes) - 1} more' if len(changes) > 1 else ''
    raise UserError(
        f'--model_dir={model_dir} holds a run trained on other data: {key} '
        f'was {was!r}, now {now!r}{more}; use a new --model_dir, or pass '
        f'--allow_config_change to resume on this data ({FILE} will list '
        f'both versions)')


def record(model_dir: pathlib.Path, identity: dict, start_step: int) -> None:
  """Writes `identity` to `model_dir/identity.json` as the version used from
  `start_step`: appended if the data changed, the only one from step 0."""
  recorded = versions(model_dir) if start_step else []
  if recorded and not _changes(recorded[-1], identity):
    return
  recorded.append({'from_step': start_step, **identity})
  atomic_files.write_text(model_dir / FILE, json.dumps(
      {'versions': recorded}, indent=2, sort_keys=True) + '\n')


def versions(model_dir: pathlib.Path) -> list[dict]:
  """The data versions identity.json records, oldest first ([]: none)."""
  path = model_dir / FILE
  if not path.is_file():
    return []
  try:
    return json.loads(path.read_text())['versions']
  except (ValueError, KeyError, TypeError):
    raise UserError(f'{path} is damaged; restore it, or use a new '
                    f'--model_dir') from None


def _changes(recorded: dict, identity: dict) -> list[tuple]:
  """(key, recorded value, new value) of what differs in the data."""
  was = config_lib.flatten(recorded)
  now = config_lib.flatten(json.loads(json.dumps(identity)))  # Tuples: lists.
  return [(key, was.get(key), now.get(key))
          for key in sorted(set(was) | set(now))
          if key.startswith(('data.', 'rows.')) and
          key.split('.')[1] not in _LOCATIONS and
          was.get(key) != now.get(key)]
