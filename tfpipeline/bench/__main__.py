"""Benchmarks: `python -m tfpipeline.bench`.

Runs the chosen cases, each setting in its own process, side by side in one
invocation, and prints a table per group (and writes JSON):

    python -m tfpipeline.bench                       # every case but rss
    python -m tfpipeline.bench --cases=seed_b256 --out=/tmp/bench.json
    python -m tfpipeline.bench --cases=seed_b256 --backends=tensorflow,jax
    python -m tfpipeline.bench --device=gpu --backends=jax \
        --mixed_precision=mixed_bfloat16 --cases=wide_b512,cifar_cnn_b256
    python -m tfpipeline.bench --device=gpu --mixed_precision=mixed_bfloat16
    python -m tfpipeline.bench --cases=report_overhead --report_runs=5
    python -m tfpipeline.bench --cases=small_run --small_run_rounds=5
    python -m tfpipeline.bench --cases=input_jpeg32,input_jpeg224,rss
    python -m tfpipeline.bench --cases=table_read
    python -m tfpipeline.bench --cases=ray_launch   # pip install -e '.[ray]'

The training cases (own loop against Keras fit, on each of `--backends`)
are `training`'s; the input
and memory cases `input_pipeline`'s; `table_read` (a 1M-row table read from
CSV, CSV.gz and Parquet, and converted to and read from its memory-mapped
cache) `table_reading`'; `report_overhead` and `small_run` (whole default runs)
`runs`'; `ray_launch` (--launcher=ray against workers started by hand)
`ray_launch`'s.
"""

import json
from importlib import metadata
import os
import platform
import sys

from absl import app
from absl import flags

from tfpipeline import backend
from tfpipeline.bench import input_pipeline
from tfpipeline.bench import ray_launch
from tfpipeline.bench import runs
from tfpipeline.bench import table_reading
from tfpipeline.bench import training

_CASES = flags.DEFINE_list('cases', None, 'Cases to run (default: all).')
_DEVICE = flags.DEFINE_enum('device', 'cpu', ['cpu', 'gpu'],
                            'cpu: one CPU / 2 logical CPUs; gpu: one GPU / '
                            'every GPU.')
_BACKENDS = flags.DEFINE_list(
    'backends', ['tensorflow'], 'Keras backends of the training cases, side '
    'by side: tensorflow, jax (each setting in a process on its backend). On '
    'a GPU host with JAX for CUDA and tensorflow-cpu: --backends=jax.')
_MIXED_PRECISION = flags.DEFINE_enum(
    'mixed_precision', 'float32', ['float32', 'mixed_bfloat16',
                                   'mixed_float16'], 'Keras dtype policy.')
_UNITS = flags.DEFINE_integer('units', 12, 'Timed units per setting, after '
                              'the first.', lower_bound=3)
_REPORT_RUNS = flags.DEFINE_integer(
    'report_runs', 5, 'report_overhead: default runs per energy method.',
    lower_bound=1)
_SMALL_RUN_ROUNDS = flags.DEFINE_integer(
    'small_run_rounds', 5, 'small_run: rounds of (default run, plain fit '
    'script, default run timed by phase).', lower_bound=1)
_RAY_LAUNCH_ROUNDS = flags.DEFINE_integer(
    'ray_launch_rounds', 2, 'ray_launch: rounds of (two workers started by '
    'hand, --launcher=ray).', lower_bound=1)
_OUT = flags.DEFINE_string('out', 'bench.json', 'Where to write the JSON.')
_BENCH_DATA_DIR = flags.DEFINE_string(
    'bench_data_dir', '/tmp/tfpipeline-bench-data', 'Where the image '
    'datasets of the input, CNN and rss cases are generated once and kept '
    '(rss: about 6 GB).')
_WORKER = flags.DEFINE_string('worker', None, 'Internal: run one setting '
                              '(JSON) in this process and print its result.')

KNOWN = (*training.CASES, *input_pipeline.CASES, table_reading.TABLE_READ,
         runs.REPORT_OVERHEAD, runs.SMALL_RUN, ray_launch.RAY_LAUNCH)
# Run only when named: rss needs about 6 GB, ray_launch the extra "ray".
_NAMED_ONLY = (input_pipeline.RSS, ray_launch.RAY_LAUNCH)


def _worker(setting: dict) -> dict:
  """One setting of a training or input case, in this fresh process."""
  case = setting.pop('case')
  if case in input_pipeline.INPUT_CASES:
    return input_pipeline.measure_input(setting, _UNITS.value)
  from tfpipeline.bench import training_worker  # pylint: disable=g-import-not-at-top
  return training_worker.measure(case, setting, device=_DEVICE.value,
                                 mixed_precision=_MIXED_PRECISION.value,
                                 units=_UNITS.value,
                                 data_dir=_BENCH_DATA_DIR.value)


def _machine() -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  machine = {'platform': platform.platform(),
             'processor': platform.processor(), 'cpus': os.cpu_count(),
             'python': platform.python_version(),
             'tensorflow': tf.__version__, 'keras': keras.__version__}
  if 'jax' in _BACKENDS.value:
    machine['jax'] = metadata.version('jax')
  return machine


def _usage_error(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  del argv
  if _WORKER.value:
    print(json.dumps(_worker(json.loads(_WORKER.value))))
    return
  names = _CASES.value or [n for n in KNOWN if n not in _NAMED_ONLY]
  unknown = sorted(set(names) - set(KNOWN))
  if unknown:
    _usage_error(f'--cases: unknown {", ".join(unknown)}; choose from '
                 f'{", ".join(KNOWN)}')
  backends = tuple(b for b in backend.BACKENDS if b in _BACKENDS.value)
  if not backends or set(_BACKENDS.value) - set(backends):
    _usage_error(f'--backends={",".join(_BACKENDS.value)}: choose from '
                 f'{", ".join(backend.BACKENDS)}')
  results = []
  for name in names:
    if name in training.CASES:
      results += training.run_case(name, device=_DEVICE.value,
                                   mixed_precision=_MIXED_PRECISION.value,
                                   units=_UNITS.value,
                                   data_dir=_BENCH_DATA_DIR.value,
                                   backends=backends)
  if results:
    training.print_table(results)
  input_results = []
  for name in names:
    if name in input_pipeline.INPUT_CASES:
      input_results += input_pipeline.input_case(
          name, _BENCH_DATA_DIR.value, _UNITS.value)
  if input_results:
    input_pipeline.print_input(input_results)
    results += input_results
  if input_pipeline.RSS in names:
    rss = input_pipeline.rss_case(_BENCH_DATA_DIR.value)
    input_pipeline.print_rss(rss)
    results += rss
  if table_reading.TABLE_READ in names:
    table_results = table_reading.table_case(_BENCH_DATA_DIR.value)
    table_reading.print_results(table_results)
    results += table_results
  if runs.REPORT_OVERHEAD in names:
    overhead = runs.report_overhead(_REPORT_RUNS.value)
    results.append(overhead)
    runs.print_report_overhead(overhead)
  if runs.SMALL_RUN in names:
    small = runs.small_run(_SMALL_RUN_ROUNDS.value)
    results.append(small)
    runs.print_small_run(small)
  if ray_launch.RAY_LAUNCH in names:
    launched = ray_launch.ray_launch(_RAY_LAUNCH_ROUNDS.value)
    results.append(launched)
    ray_launch.print_ray_launch(launched)
  with open(_OUT.value, 'w', encoding='utf-8') as f:
    json.dump({'machine': _machine(), 'results': results}, f, indent=2)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
