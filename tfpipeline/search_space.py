"""`--search` specs: `KEY=loguniform(a,b)`, `uniform(a,b)`, `randint(a,b)`
(integers a..b, both included) or `choice(v1, v2, ...)` (Python literals),
parsed, checked against the config, and as Ray Tune search spaces.

No Ray is imported until `Dimension.domain`: bad specs are refused first.
"""

import ast
import dataclasses
import math

from ml_collections import config_dict

from tfpipeline import config as config_lib
from tfpipeline.errors import UserError
from tfpipeline.errors import first_line

KINDS = ('loguniform', 'uniform', 'randint', 'choice')
_HOW = ('give KEY=loguniform(a,b), uniform(a,b), randint(a,b) or '
        'choice(v1,v2,...), e.g. optimizer.learning_rate=loguniform(1e-4,1e-1)')


@dataclasses.dataclass(frozen=True)
class Dimension:
  """One searched config key.

  Attributes:
    key: the config key, e.g. 'optimizer.learning_rate'.
    kind: one of KINDS.
    values: (low, high) for a range; the candidates of a choice.
    spec: the text given, to quote in messages.
  """
  key: str
  kind: str
  values: tuple
  spec: str

  @property
  def log_scale(self) -> bool:
    return self.kind == 'loguniform'

  @property
  def candidates(self) -> tuple:
    """Values that stand for all it can take: a choice's values, a range's
    bounds (as floats for the continuous kinds, which sample floats)."""
    if self.kind in ('uniform', 'loguniform'):
      return tuple(float(value) for value in self.values)
    return self.values

  def domain(self):
    """The Ray Tune search space object."""
    from ray import tune  # pylint: disable=g-import-not-at-top
    if self.kind == 'choice':
      return tune.choice(list(self.values))
    low, high = self.values
    if self.kind == 'randint':
      return tune.randint(low, high + 1)  # Tune's upper bound is excluded.
    return getattr(tune, self.kind)(low, high)


def parse(spec: str) -> Dimension:
  """A `--search` spec as a Dimension.

  Raises:
    UserError: malformed, or bounds out of order (loguniform: not above 0).
  """
  key, sep, expression = spec.partition('=')
  key = key.strip()
  try:
    call = ast.parse(expression.strip(), mode='eval').body if sep else None
  except SyntaxError:
    call = None
  if not (key and isinstance(call, ast.Call) and
          isinstance(call.func, ast.Name) and call.func.id in KINDS and
          not call.keywords):
    raise UserError(f'--search={spec}: not a search spec; {_HOW}')
  kind = call.func.id
  try:
    values = tuple(ast.literal_eval(arg) for arg in call.args)
  except (ValueError, SyntaxError):
    raise UserError(f'--search={spec}: {kind}() takes Python literals '
                    f'(numbers, strings, tuples...); {_HOW}') from None
  if kind == 'choice':
    if len(values) < 2:
      raise UserError(f'--search={spec}: choice() needs at least two values')
    return Dimension(key, kind, values, spec)
  number = int if kind == 'randint' else (int, float)
  if len(values) != 2 or not all(isinstance(v, number) and
                                 not isinstance(v, bool) for v in values):
    raise UserError(f'--search={spec}: {kind}(a,b) takes two '
                    f'{"integers" if kind == "randint" else "numbers"}')
  low, high = values
  if not low < high:
    raise UserError(f'--search={spec}: the low bound {low} must be below the '
                    f'high bound {high}')
  if kind == 'loguniform' and low <= 0:
    raise UserError(f'--search={spec}: loguniform needs a low bound above 0')
  if not all(math.isfinite(v) for v in values):
    raise UserError(f'--search={spec}: bounds must be finite')
  return Dimension(key, kind, values, spec)


def parse_all(specs: list[str]) -> list[Dimension]:
  """Each spec, parsed; a key searched twice is refused."""
  dimensions = [parse(spec) for spec in specs]
  keys = [d.key for d in dimensions]
  for dimension in dimensions:
    if keys.count(dimension.key) > 1:
      raise UserError(f'--search: {dimension.key} is searched twice; give '
                      f'one --search per key')
  return dimensions


def check(dimensions: list[Dimension], config: config_dict.ConfigDict) -> None:
  """Each dimension's key is in `config`, and each of its bounds or values
  gives a config that validates (as `train` validates it).

  Raises:
    UserError: naming the spec and what is wrong.
  """
  keys = config_lib.flatten(config.to_dict())
  for dimension in dimensions:
    if dimension.key not in keys:
      raise UserError(f'--search={dimension.spec}: unknown config key '
                      f'{dimension.key} (see README, "Config keys")')
    for value in dimension.candidates:
      try:
        config_lib.validate(with_values(config, {dimension.key: value}))
      except UserError as e:
        raise UserError(f'--search={dimension.spec}: {dimension.key}='
                        f'{value!r} is refused: {e}') from None


def with_values(config: config_dict.ConfigDict,
                values: dict) -> config_dict.ConfigDict:
  """A copy of `config` with each `KEY: value` set, as --config.KEY=value
  sets it.

  Raises:
    UserError: a value the key's type cannot take.
  """
  config = config.copy_and_resolve_references()
  for key, value in values.items():
    *parents, name = key.split('.')
    section = config
    for parent in parents:
      section = section[parent]
    try:
      with section.unlocked():
        setattr(section, name, value)
    except (TypeError, ValueError) as e:
      raise UserError(f'{first_line(e)}; give a value of its type') from None
  return config


def format_value(value) -> str:
  """A searched value as `--config.KEY=VALUE` and the summary show it."""
  return value if isinstance(value, str) else repr(value)


def as_flag(key: str, value) -> str:
  """`--config.KEY=VALUE` as `train`'s command line reads it back."""
  return f'--config.{key}={format_value(value)}'
