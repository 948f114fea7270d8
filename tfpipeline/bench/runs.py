"""Whole default runs (`python -m tfpipeline.train`), timed as processes.

`report_overhead` alternates the report's energy methods (codecarbon,
estimate) and reads the report's own time from each run's log.
`small_run` times the default run beside `plain_fit` (the same training as
a plain Keras script), alternated, and a third, phase-timed default run
(`phases`) per round; medians of each, and their ratio.
"""

import json
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPORT_OVERHEAD = 'report_overhead'
SMALL_RUN = 'small_run'


def print_report_overhead(result: dict) -> None:
  if 'error' in result:
    print(f'{REPORT_OVERHEAD}: failed: {result["error"][:100]}')
    return
  for method in ('codecarbon', 'estimate'):
    r = result[method]
    print(f'default run, energy {method:<10}: {r["wall_s"]:.2f} s wall, '
          f'report {r["report_s"]:.2f} s, overhead {r["overhead_pct"]:.1f}% '
          f'(medians of {result["runs_per_method"]})')


def report_overhead(runs: int) -> dict:
  """Median whole-process wall time of the default run and its report's
  share, with codecarbon measuring and with the estimate, alternated."""
  walls = {'codecarbon': [], 'estimate': []}
  reports = {'codecarbon': [], 'estimate': []}
  for i in range(runs):
    for method in walls:
      with tempfile.TemporaryDirectory() as model_dir:
        print(f'{REPORT_OVERHEAD}: {method} run {i + 1}/{runs}',
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, '-m', 'tfpipeline.train',
             f'--model_dir={model_dir}/run',
             f'--config.report.energy_method={method}'],
            capture_output=True, text=True, check=False)
        walls[method].append(time.perf_counter() - start)
        found = re.search(r'report: \S+ \(([0-9.]+) s\)', completed.stderr)
        if completed.returncode or not found:
          tail = completed.stderr.strip().splitlines()[-1:] or ['no output']
          return {'case': REPORT_OVERHEAD, 'error': tail[0]}
        reports[method].append(float(found.group(1)))
  result = {'case': REPORT_OVERHEAD, 'runs_per_method': runs}
  for method in walls:
    wall, report = (statistics.median(walls[method]),
                    statistics.median(reports[method]))
    result[method] = {'wall_s': wall, 'report_s': report}
  # Without a report a run would take the estimate run's time less its
  # report (the estimate adds nothing else); codecarbon also adds its
  # tracker's start and stop.
  base = result['estimate']['wall_s'] - result['estimate']['report_s']
  for method in walls:
    result[method]['overhead_pct'] = 100 * (result[method]['wall_s'] -
                                            base) / base
  return result


def _timed(command: list[str]) -> tuple[float, str | None]:
  """Wall seconds of a child process; its last stderr line if it failed."""
  start = time.perf_counter()
  completed = subprocess.run(command, capture_output=True, text=True,
                             check=False)
  seconds = time.perf_counter() - start
  if completed.returncode:
    return seconds, (completed.stderr.strip().splitlines()[-1:] or
                     ['no output'])[0]
  return seconds, None


def small_run(rounds: int) -> dict:
  """Median whole-process seconds of the default run and of `plain_fit`
  (alternating which goes first), their ratio, and the median seconds of
  each phase of a phase-timed default run (`interpreter` is its wall time
  before its first line ran)."""
  commands = {
      'default_run': [sys.executable, '-m', 'tfpipeline.train'],
      'plain_fit': [sys.executable, '-m', 'tfpipeline.bench.plain_fit']}
  walls = {name: [] for name in commands}
  phases = []
  for i in range(rounds):
    with tempfile.TemporaryDirectory() as scratch:
      order = list(commands) if i % 2 == 0 else list(commands)[::-1]
      for name in order:
        print(f'{SMALL_RUN}: {name} {i + 1}/{rounds}', file=sys.stderr,
              flush=True)
        extra = [f'--model_dir={scratch}/run'] if name == 'default_run' else []
        seconds, error = _timed(commands[name] + extra)
        if error:
          return {'case': SMALL_RUN, 'error': f'{name}: {error}'}
        walls[name].append(seconds)
      print(f'{SMALL_RUN}: phases {i + 1}/{rounds}', file=sys.stderr,
            flush=True)
      out = pathlib.Path(scratch) / 'phases.json'
      seconds, error = _timed([sys.executable, '-m', 'tfpipeline.bench.phases',
                               str(out), f'--model_dir={scratch}/phased'])
      if error:
        return {'case': SMALL_RUN, 'error': f'phases: {error}'}
      timed = json.loads(out.read_text())
      phases.append({'interpreter': seconds - timed['in_process_s'],
                     **timed['seconds']})
  result = {'case': SMALL_RUN, 'rounds': rounds,
            **{f'{name}_s': statistics.median(walls[name]) for name in walls},
            **{f'{name}_s_all': walls[name] for name in walls},
            'phases_s': {name: statistics.median(p.get(name, 0.0)
                                                 for p in phases)
                         for name in phases[0]}}
  result['ratio'] = result['default_run_s'] / result['plain_fit_s']
  return result


def print_small_run(result: dict) -> None:
  if 'error' in result:
    print(f'{SMALL_RUN}: failed: {result["error"][:100]}')
    return
  print(f'default run {result["default_run_s"]:.2f} s, plain fit script '
        f'{result["plain_fit_s"]:.2f} s: {result["ratio"]:.2f}x (medians of '
        f'{result["rounds"]} alternated rounds)')
  print('default run by phase (s, medians):')
  for name, seconds in result['phases_s'].items():
    print(f'  {name:<34}{seconds:>7.2f}')
