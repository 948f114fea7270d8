"""The own loop against Keras fit: the training cases of
`python -m tfpipeline.bench` (seed_*, mirrored_*, wide_*, cifar_cnn_*).

Each (case, engine setting) runs in its own process: examples/s, median
ms/step, time to the first step and compile time, input stall %, GFLOP/s
and each engine's ratio to Keras fit's best setting on the same data, model
and batch. `cifar_cnn_b256` trains the `cifar10_cnn` experiment's convnet
on CIFAR-shaped uint8 images, from memory and streamed from JPEG files on
disk (flipped and cropped).

Each timing unit is `steps` training steps: one device call of the own loop,
or one Keras epoch with `steps_per_epoch=steps`. The first unit (tracing and
compilation included) gives the time to first step; the median of the others
gives ms/step.
"""

import dataclasses
import json
import os
import statistics
import sys
import time

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
    'wide_b512': Case(1024, (1024, 1024, 1024), 512, steps=10),
    'cifar_cnn_b256': Case(0, (), 256, steps=4, image=(32, 32, 3)),
    'cifar_cnn_mirrored_b256': Case(0, (), 256, steps=4, replicas=2,
                                    image=(32, 32, 3)),
}


def settings(case: Case, device: str = 'cpu') -> list[dict]:
  """The own loop with and without XLA, and fit's settings that work; for
  the convnet also the own loop streaming JPEG files from disk, compiled as
  `train.jit_compile=auto` would on `device` (no XLA for convolutions on a
  CPU)."""
  own = [{'engine': 'tfpipeline', 'jit_compile': True},
         {'engine': 'tfpipeline', 'jit_compile': False}]
  if case.image:
    own.append({'engine': 'tfpipeline', 'jit_compile': device != 'cpu',
                'streamed': True})
  if case.replicas > 1:  # fit fails with more (see BUILD_NOTES.md)
    fit = [{'engine': 'keras_fit', 'jit_compile': False,
            'steps_per_execution': 1}]
  else:
    fit = [{'engine': 'keras_fit', 'jit_compile': jit,
            'steps_per_execution': spe}
           for jit in (False, True) for spe in (1, case.steps)]
  return own + fit


def flops_per_example(model) -> int:
  """Training FLOPs per example: 3 x the report's forward multiply-adds
  (2 each) of the model's Dense and convolution layers."""
  from tfpipeline.report import flops  # pylint: disable=g-import-not-at-top
  return 3 * flops.analytic_flops(model)['multiply_adds']


def measure(case_name: str, setting: dict, *, device: str,
            mixed_precision: str, units: int, data_dir: str) -> dict:
  """Runs one setting in this process (which must be fresh); `data_dir`
  holds the streamed convnet's images."""
  case = CASES[case_name]
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from tfpipeline import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  name = ('mirrored' if case.replicas > 1 else device)
  strategy = strategy_lib.create(
      name, cpu_devices=case.replicas if device == 'cpu' else 1)
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfpipeline import config, models  # pylint: disable=g-import-not-at-top
  from tfpipeline.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  from tfpipeline.engines import tf_loop  # pylint: disable=g-import-not-at-top

  if case.image:
    c, train = _convnet_data(case, data_dir,
                             streamed=setting.get('streamed', False))
  else:
    c = config.load('seed_keras_mlp')
    c.data.num_examples = 2 * case.steps * case.batch  # two blocks an epoch
    c.data.num_features = case.features
    c.model.hidden_units = case.hidden_units
    train = pipeline.Examples(sources.load(c.data, loss=c.loss).train)
  keras.utils.set_random_seed(0)
  keras.mixed_precision.set_global_policy(mixed_precision)
  with strategy.scope():
    model = models.build(c, train.split, input_shape=case.image or None,
                         input_dtype='uint8' if case.image else 'float32')
    optimizer = models.optimizer(c.optimizer)
  jit = setting['jit_compile']

  unit_seconds, stall = [], []
  if setting['engine'] == 'tfpipeline':
    loop = tf_loop.StepLoop(model, optimizer, c.loss, strategy,
                            global_batch_size=case.batch, jit_compile=jit)
    dataset_fn = pipeline.training_dataset_fn(
        train, case.batch, seed=0, steps_per_block=case.steps)
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    for _ in range(units + 1):
      start = time.perf_counter()
      waited = loop.multi_step_on_iterator(iterator).waited_s
      unit_seconds.append(time.perf_counter() - start)
      stall.append(100.0 * waited / unit_seconds[-1])
  else:
    dataset_fn = pipeline.training_dataset_fn(train, case.batch, seed=0)
    with strategy.scope():
      model.compile(optimizer, models.loss_fn(c.loss), jit_compile=jit,
                    steps_per_execution=setting['steps_per_execution'])
    stamps = []
    callback = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda *_: stamps.append(time.perf_counter()),
        on_epoch_end=lambda *_: unit_seconds.append(
            time.perf_counter() - stamps[-1]))
    model.fit(strategy.distribute_datasets_from_function(dataset_fn),
              epochs=units + 1, steps_per_epoch=case.steps, verbose=0,
              callbacks=[callback])

  steady = statistics.median(unit_seconds[1:])
  step_s = steady / case.steps
  result = {
      'case': case_name, **setting, 'device': device,
      'mixed_precision': mixed_precision,
      'replicas': strategy.num_replicas_in_sync, 'global_batch': case.batch,
      'examples_per_sec': case.batch / step_s,
      'ms_per_step': 1000 * step_s,
      'ms_per_step_min': 1000 * min(unit_seconds[1:]) / case.steps,
      'ms_per_step_max': 1000 * max(unit_seconds[1:]) / case.steps,
      'first_step_s': unit_seconds[0] - steady + step_s,
      'compile_s': max(unit_seconds[0] - steady, 0.0),
      'input_stall_pct': statistics.median(stall[1:]) if stall else None,
      'gflops': flops_per_example(model) * case.batch / step_s / 1e9,
  }
  if case_name.startswith('wide'):
    result['matmul_peak_gflops'] = _matmul_peak(tf, np)
  return result


def _convnet_data(case: Case, data_dir: str, *, streamed: bool):
  """The cifar10_cnn config and its training examples: random uint8
  images in memory, or (streamed) JPEG files in `data_dir`, flipped and
  cropped as the experiment does."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfpipeline import config  # pylint: disable=g-import-not-at-top
  from tfpipeline.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  c = config.load('cifar10_cnn')
  if streamed:
    from tfpipeline.bench import images  # pylint: disable=g-import-not-at-top
    images.prepared('jpeg32', data_dir)
    c.data.update(name='bench_images/jpeg32', data_dir=data_dir,
                  train_split='train', validation_split='train[:1%]',
                  test_split='train[:1%]')
    splits = sources.load(c.data, loss=c.loss)
    return c, pipeline.inputs(splits, c).train
  rows = 2 * case.steps * case.batch  # two blocks an epoch
  rng = np.random.default_rng(0)
  return c, pipeline.Examples(sources.Split(
      rng.integers(0, 256, (rows, *case.image), dtype=np.uint8),
      rng.integers(0, 10, (rows, 1)).astype(np.int32)))


def _matmul_peak(tf, np) -> float:
  """This device's float32 matmul rate, 2048 x 2048 (median of 10)."""
  n = 2048
  a = tf.constant(np.random.default_rng(0).random((n, n), np.float32))
  matmul = tf.function(lambda x: tf.matmul(x, x), jit_compile=True)
  matmul(a).numpy()
  times = []
  for _ in range(10):
    start = time.perf_counter()
    matmul(a).numpy()
    times.append(time.perf_counter() - start)
  return 2 * n ** 3 / statistics.median(times) / 1e9


def _label(result: dict) -> str:
  label = result['engine'] + (' xla' if result['jit_compile'] else '')
  if 'steps_per_execution' in result:
    label += f' spe={result["steps_per_execution"]}'
  return label


def print_table(results: list[dict]) -> None:
  header = (f'{"case":<14}{"setting":<26}{"ex/s":>12}{"ms/step":>9}'
            f'{"first s":>9}{"compile s":>10}{"stall %":>9}{"GFLOP/s":>9}'
            f'{"vs fit":>8}')
  print(header)
  print('-' * len(header))
  for r in results:
    if 'error' in r:
      print(f'{r["case"]:<14}{_label(r):<26}  failed: {r["error"][:80]}')
      continue
    stall = '-' if r['input_stall_pct'] is None else (
        f'{r["input_stall_pct"]:.1f}')
    print(f'{r["case"]:<14}{_label(r):<26}{r["examples_per_sec"]:>12,.0f}'
          f'{r["ms_per_step"]:>9.3f}{r["first_step_s"]:>9.2f}'
          f'{r["compile_s"]:>10.2f}{stall:>9}{r["gflops"]:>9.1f}'
          f'{r["vs_fit_best"]:>7.2f}x')
  for r in results:
    if 'matmul_peak_gflops' in r and r['engine'] == 'tfpipeline':
      print(f'{r["case"]} {_label(r)}: {r["gflops"]:.1f} GFLOP/s = '
            f'{100 * r["gflops"] / r["matmul_peak_gflops"]:.0f}% of the '
            f'measured matmul peak ({r["matmul_peak_gflops"]:.1f} GFLOP/s)')




def run_case(name: str, *, device: str, mixed_precision: str,
             units: int) -> list[dict]:
  """Every setting of case `name`, each in its own process, with its ratio
  to Keras fit's best setting."""
  results = []
  for setting in settings(CASES[name], device):
    print(f'{name}: {setting}', file=sys.stderr, flush=True)
    result = processes.run_json([
        sys.executable, '-m', 'tfpipeline.bench',
        f'--worker={json.dumps({"case": name, **setting})}',
        f'--device={device}', f'--mixed_precision={mixed_precision}',
        f'--units={units}'])
    results.append({'case': name, **setting, **result} if 'error' in result
                   else result)
  fit_best = max((r['examples_per_sec'] for r in results
                  if r.get('engine') == 'keras_fit' and 'error' not in r),
                 default=float('nan'))
  for r in results:
    if 'error' not in r:
      r['vs_fit_best'] = r['examples_per_sec'] / fit_best
  return results
