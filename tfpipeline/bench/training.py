"""The own loop against Keras fit, on each Keras backend: the training
cases of `python -m tfpipeline.bench` (seed_*, mirrored_*, wide_*,
cifar_cnn_*).

Each (case, setting) runs in its own process (`training_worker`), one
Keras backend each: examples/s, median ms/step, time to the first step and
compile time, input stall %, GFLOP/s (for the wide MLP also the share of a
matmul's measured rate; on a GPU the share of the datasheet peak) and each
setting's ratio to Keras fit's best setting on the same backend, model,
data pipeline and batch. `cifar_cnn_*` train the `cifar10_cnn`
experiment's convnet on CIFAR-shaped uint8 images, from memory and streamed
from JPEG files on disk (flipped and cropped).

A timing unit is `steps` training steps: one device call of the own loop
(fewer where a block of `steps` would hold over `pipeline.BLOCK_BYTES` of
input), or one Keras epoch with `steps_per_epoch=steps`.
"""

import dataclasses
import json
import sys

from tfpipeline.bench import processes


@dataclasses.dataclass(frozen=True)
class Case:
  features: int
  hidden_units: tuple[int, ...]
  batch: int
  steps: int  # steps per timing unit
  replicas: int = 1
  image: tuple[int, ...] = ()  # (H, W, C): the cifar10_cnn convnet


CASES = {
    'seed_b32': Case(10, (64,), 32, steps=200),
    'seed_b256': Case(10, (64,), 256, steps=200),
    'mirrored_b256': Case(10, (64,), 256, steps=200, replicas=2),
    # 8 steps of 512 x 1024 float32 inputs: one 16 MiB block.
    'wide_b512': Case(1024, (1024, 1024, 1024), 512, steps=8),
    'cifar_cnn_b256': Case(0, (), 256, steps=4, image=(32, 32, 3)),
    'cifar_cnn_b1024': Case(0, (), 1024, steps=4, image=(32, 32, 3)),
    'cifar_cnn_mirrored_b256': Case(0, (), 256, steps=4, replicas=2,
                                    image=(32, 32, 3)),
}


def settings(case: Case, device: str = 'cpu',
             backends: tuple[str, ...] = ('tensorflow',)) -> list[dict]:
  """Each backend's settings, TensorFlow's first.

  TensorFlow: the own loop with and without XLA, and fit's settings that
  work. JAX: the own loop with a block as one jitted program
  (`jit_compile`) and with one jitted call a step, and fit at its best
  (XLA, steps_per_execution = a unit's steps). For the convnet each own
  loop also streams JPEG files from disk, compiled as
  `train.jit_compile=auto` would on `device` (on a CPU: no XLA for
  convolutions on TensorFlow, one call a step on JAX).
  """
  result = []
  if 'tensorflow' in backends:
    result += _tensorflow_settings(case, device)
  if 'jax' in backends:
    own = [{'backend': 'jax', 'engine': 'tfpipeline', 'jit_compile': jit}
           for jit in (True, False)]
    if case.image:
      own.append({'backend': 'jax', 'engine': 'tfpipeline',
                  'jit_compile': device != 'cpu', 'streamed': True})
    result += own + [{'backend': 'jax', 'engine': 'keras_fit',
                      'jit_compile': True, 'steps_per_execution': case.steps}]
  return result


def _tensorflow_settings(case: Case, device: str) -> list[dict]:
  own = [{'backend': 'tensorflow', 'engine': 'tfpipeline', 'jit_compile': jit}
         for jit in (True, False)]
  if case.image:
    own.append({'backend': 'tensorflow', 'engine': 'tfpipeline',
                'jit_compile': device != 'cpu', 'streamed': True})
  if case.replicas > 1:  # fit fails with more (see BUILD_NOTES.md)
    fit = [{'backend': 'tensorflow', 'engine': 'keras_fit',
            'jit_compile': False, 'steps_per_execution': 1}]
  else:
    fit = [{'backend': 'tensorflow', 'engine': 'keras_fit',
            'jit_compile': jit, 'steps_per_execution': spe}
           for jit in (False, True) for spe in (1, case.steps)]
  return own + fit


def not_run(case: Case, setting: dict, device: str) -> str | None:
  """Why `setting` is left out on `device`, or None: the own loop's XLA
  programs of a convnet on a CPU, where XLA emits the weight gradients of
  convolutions inside a loop as plain loops (52 s a step on TensorFlow, 69
  on JAX, at batch 256 on 2 cores; BUILD_NOTES.md)."""
  if (case.image and device == 'cpu' and setting['engine'] == 'tfpipeline'
      and setting['jit_compile']):
    return 'XLA convnet gradients in a loop on a CPU (over 50 s a step)'
  return None


def flops_per_example(model) -> int:
  """Training FLOPs per example: 3 x the report's forward multiply-adds
  (2 each) of the model's Dense and convolution layers."""
  from tfpipeline.report import flops  # pylint: disable=g-import-not-at-top
  return 3 * flops.analytic_flops(model)['multiply_adds']


_BACKEND_NAMES = {'tensorflow': 'tf', 'jax': 'jax'}
_ENGINE_NAMES = {'tfpipeline': 'own', 'keras_fit': 'fit'}


def _label(result: dict) -> str:
  """'tf own xla', 'jax fit xla spe=200', 'tf own streamed'..."""
  label = (f'{_BACKEND_NAMES[result["backend"]]} '
           f'{_ENGINE_NAMES[result["engine"]]}')
  label += ' xla' if result['jit_compile'] else ''
  if 'steps_per_execution' in result:
    label += f' spe={result["steps_per_execution"]}'
  return label + (' streamed' if result.get('streamed') else '')


def _percent(value: float | None) -> str:
  return '-' if value is None else f'{100 * value:.1f}'


def print_table(results: list[dict]) -> None:
  """One table per case, every setting side by side. "peak %": GFLOP/s
  over the matmul rate measured in the same process (wide MLP); "sheet %":
  over the device's datasheet peak (GPUs); "vs fit": over Keras fit's best
  setting on the same backend."""
  header = (f'{"setting":<26}{"ex/s":>12}{"ms/step":>10}{"first s":>9}'
            f'{"compile s":>10}{"stall %":>9}{"GFLOP/s":>10}{"peak %":>8}'
            f'{"sheet %":>9}{"vs fit":>8}')
  for case in dict.fromkeys(r['case'] for r in results):
    rows = [r for r in results if r['case'] == case]
    print(f'\n{case}: batch {CASES[case].batch}, '
          f'{rows[0].get("replicas", CASES[case].replicas)} device(s)')
    print(header)
    print('-' * len(header))
    for r in rows:
      if 'error' in r or 'not_run' in r:
        why = (f'failed: {r["error"][:80]}' if 'error' in r else
               f'not run: {r["not_run"]}')
        print(f'{_label(r):<26}  {why}')
        continue
      stall = '-' if r['input_stall_pct'] is None else (
          f'{r["input_stall_pct"]:.1f}')
      peak = (r['gflops'] / r['matmul_peak_gflops']
              if 'matmul_peak_gflops' in r else None)
      print(f'{_label(r):<26}{r["examples_per_sec"]:>12,.0f}'
            f'{r["ms_per_step"]:>10.3f}{r["first_step_s"]:>9.2f}'
            f'{r["compile_s"]:>10.2f}{stall:>9}{r["gflops"]:>10.1f}'
            f'{_percent(peak):>8}{_percent(r.get("mfu_datasheet")):>9}'
            f'{r["vs_fit_best"]:>7.2f}x')


def run_case(name: str, *, device: str, mixed_precision: str, units: int,
             data_dir: str, backends: tuple[str, ...]) -> list[dict]:
  """Every setting of case `name` on `backends`, each in its own process,
  with its ratio to Keras fit's best setting on the same backend."""
  case = CASES[name]
  results = []
  for setting in settings(case, device, backends):
    reason = not_run(case, setting, device)
    if reason:
      results.append({'case': name, **setting, 'not_run': reason})
      continue
    print(f'{name}: {setting}', file=sys.stderr, flush=True)
    result = processes.run_json([
        sys.executable, '-m', 'tfpipeline.bench',
        f'--worker={json.dumps({"case": name, **setting})}',
        f'--device={device}', f'--mixed_precision={mixed_precision}',
        f'--units={units}', f'--bench_data_dir={data_dir}'])
    results.append({'case': name, **setting, **result} if 'error' in result
                   else result)
  measured = [r for r in results if 'examples_per_sec' in r]
  for backend in backends:
    fit_best = max((r['examples_per_sec'] for r in measured
                    if r['backend'] == backend and
                    r['engine'] == 'keras_fit'), default=float('nan'))
    for r in measured:
      if r['backend'] == backend:
        r['vs_fit_best'] = r['examples_per_sec'] / fit_best
  return results
