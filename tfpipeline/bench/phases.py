"""A default run timed by phase: `python -m tfpipeline.bench.phases OUT ARGS`.

Runs `python -m tfpipeline.train ARGS` in this process with timers around
the calls each phase is made of, and writes to OUT (JSON) the seconds of
each phase, a nested phase's time counted in it and not in the phase that
called it; `other` is the rest of the process after the interpreter
started. The first call of the own loop and of the evaluator traces and
compiles, so it is its own phase.
"""

import collections
import importlib
import json
import sys
import time

_START = time.perf_counter()

# (module, function or Class.method, phase); a method's first call goes to
# the phase in `_FIRST_CALLS` instead.
_TIMED = (
    ('tfpipeline.config', 'validate', 'config'),
    ('tfpipeline.data.sources', 'load', 'data'),
    ('tfpipeline.data.pipeline', 'inputs', 'data'),
    ('tfpipeline.models', 'build', 'model builds'),
    ('tfpipeline.checkpointing', 'Checkpoints.save', 'checkpoints'),
    ('tfpipeline.trainer', 'train', 'epochs: input pipeline, logging'),
    ('tfpipeline.engines.tf_loop', 'StepLoop.multi_step_on_iterator',
     'epochs: training blocks'),
    ('tfpipeline.evaluation', 'Evaluator.run', 'evaluation'),
    ('tfpipeline.evaluation', 'Evaluator.metrics', 'evaluation'),
    ('tfpipeline.export', 'save', 'export'),
    ('tfpipeline.report', 'write', 'report'),
    ('tfpipeline.integrity', 'write_manifest', 'manifest'),
)
_FIRST_CALLS = {
    'StepLoop.multi_step_on_iterator': 'compiling: first training block',
    'Evaluator.run': 'compiling: first evaluation'}


class _Clock:
  """Seconds and calls per phase, each call's time less its nested calls'."""

  def __init__(self):
    self.seconds = collections.defaultdict(float)
    self.calls = collections.Counter()
    self._stack = []  # [phase, nested seconds]

  def timed(self, function, phase: str, first_phase: str | None = None):
    def wrapper(*args, **kwargs):
      name = (first_phase if first_phase and not self.calls[first_phase]
              else phase)
      self._stack.append([name, 0.0])
      start = time.perf_counter()
      try:
        return function(*args, **kwargs)
      finally:
        spent = time.perf_counter() - start
        _, nested = self._stack.pop()
        self.seconds[name] += spent - nested
        self.calls[name] += 1
        if self._stack:
          self._stack[-1][1] += spent
    return wrapper


def _instrument(clock: _Clock) -> None:
  for module_name, path, phase in _TIMED:
    owner = importlib.import_module(module_name)
    *parents, name = path.split('.')
    for parent in parents:
      owner = getattr(owner, parent)
    setattr(owner, name, clock.timed(getattr(owner, name), phase,
                                     _FIRST_CALLS.get(path)))


def main(out: str, args: list[str]) -> None:
  clock = _Clock()
  import keras  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  clock.seconds['imports: tensorflow, keras'] = time.perf_counter() - _START
  start = time.perf_counter()
  from tfpipeline import train  # pylint: disable=g-import-not-at-top
  _instrument(clock)  # Imports the modules a run imports lazily.
  clock.seconds['imports: tfpipeline'] = time.perf_counter() - start
  sys.argv = ['tfpipeline.train', *args]
  code = 0
  try:
    train.cli()
  except SystemExit as e:
    code = e.code or 0
  total = time.perf_counter() - _START
  phases = dict(clock.seconds)
  phases['other'] = total - sum(phases.values())
  with open(out, 'w', encoding='utf-8') as f:
    json.dump({'returncode': code, 'seconds': phases, 'in_process_s': total,
               'calls': dict(clock.calls)}, f, indent=2)
  sys.exit(code)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2:])
