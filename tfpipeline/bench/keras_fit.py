"""Model-only throughput of an experiment's Keras model under Keras `fit`.

For accelerators where TensorFlow cannot be installed: it runs on any Keras
backend (`KERAS_BACKEND=jax` with a JAX that sees the GPU), and imports no
TensorFlow and nothing of tfpipeline but its config, the datasheet peaks
of `accelerators` and the report's analytic FLOP count. It builds the experiment's `model.layers` between an
image input and the softmax head, trains on random images held on the
device (`--feed=host`: in host memory), and reports per dtype policy:
median ms/step, images/s, time to first step, and MFU (analytic training
FLOPs, 3 x the forward multiply-adds of the report's count, over a
peak). It measures the model and XLA, not
tfpipeline's own loop or input pipeline: `python -m tfpipeline.bench` does
that, with TensorFlow.

    KERAS_BACKEND=jax python -m tfpipeline.bench.keras_fit --ceilings
    KERAS_BACKEND=jax python -m tfpipeline.bench.keras_fit --batch=256,1024
    KERAS_BACKEND=jax python -m tfpipeline.bench.keras_fit --case=mnist_convnet

Each timed unit is one epoch of `--steps` steps with `steps_per_execution`
= steps (on JAX a host loop of per-step jitted calls, on TensorFlow one
compiled loop). The first epoch, compilation included, gives the time to
first step; the median of the next `--units` gives ms/step. "feed" times the
input side alone: a batch's shuffled gather (and, with `--feed=host`, its
copy to the device). On JAX, "scan" times the same steps of Keras's own
`train_step` in one jitted `lax.scan` over the data on the device: the step
without fit's host loop, which is what bounds the small models here.

`--case=mnist_convnet` is keras.io's "Simple MNIST convnet" instead: 60,000
images, validation_split=0.1, batch 128, adam, each epoch timed whole
(training and validation, as keras.io's log times it). `--ceilings` (JAX
only) first times 8192^3 matmuls: the measured peaks MFU is also given
against.
"""

import json
import math
import os
import platform
import statistics
import time

from absl import app
from absl import flags
import numpy as np

from tfpipeline import accelerators
from tfpipeline import config as config_lib
from tfpipeline.report import flops

_CONFIG = flags.DEFINE_string('config', 'cifar10_cnn',
                              'Experiment name or path (--case=experiment).')
_CASE = flags.DEFINE_enum('case', 'experiment', ['experiment', 'mnist_convnet'],
                          "experiment: --config's model; mnist_convnet: "
                          "keras.io's Simple MNIST convnet.")
_BATCH = flags.DEFINE_list('batch', None, 'Global batch sizes (default: '
                           'train.global_batch_size; mnist_convnet: 128).')
_PRECISION = flags.DEFINE_list('precision', ['float32', 'mixed_bfloat16'],
                               'Keras dtype policies.')
_STEPS = flags.DEFINE_integer('steps', 100, 'Steps per timed unit (one '
                              'epoch); mnist_convnet: 422, fixed.',
                              lower_bound=1)
_UNITS = flags.DEFINE_integer('units', 10, 'Timed units after the first.',
                              lower_bound=1)
_INPUT_SHAPE = flags.DEFINE_list('input_shape', ['32', '32', '3'],
                                 'Image shape (--case=experiment).')
_INPUT_DTYPE = flags.DEFINE_string('input_dtype', 'uint8',
                                   'Image dtype (--case=experiment).')
_FEED = flags.DEFINE_enum('feed', 'device', ['device', 'host'],
                          'Where the arrays given to fit live.')
_CEILINGS = flags.DEFINE_bool('ceilings', False, 'JAX only: time 8192^3 '
                              'matmuls first, for MFU against measured peaks.')
_OUT = flags.DEFINE_string('out', 'bench_keras.json', 'Where to write JSON.')


def _case() -> dict:
  """What to build and feed: the experiment's model or keras.io's MNIST."""
  if _CASE.value == 'mnist_convnet':
    # The experiments/mnist_convnet.py model: keras.io's, on uint8 pixels.
    return {'name': 'mnist_convnet',
            'layers': config_lib.load('mnist_convnet').model.layers,
            'input_shape': (28, 28, 1), 'input_dtype': 'uint8',
            'classes': 10, 'loss': 'categorical_crossentropy',
            'metrics': ['accuracy'], 'optimizer': ('adam', 0.001, 0.0),
            'batches': [int(b) for b in _BATCH.value or [128]],
            'examples': 60000, 'validation_split': 0.1}
  c = config_lib.load(_CONFIG.value)
  o = c.optimizer
  return {'name': _CONFIG.value, 'layers': c.model.layers,
          'input_shape': tuple(int(d) for d in _INPUT_SHAPE.value),
          'input_dtype': _INPUT_DTYPE.value,
          'classes': c.model.output_units, 'loss': c.loss, 'metrics': None,
          'optimizer': (o.name, o.learning_rate, o.momentum),
          'batches': [int(b) for b in
                      _BATCH.value or [c.train.global_batch_size]],
          'examples': None, 'validation_split': 0.0}


def _build(keras, case: dict):
  """The model: input, the case's layers, a float32 softmax head."""
  inputs = keras.Input(shape=case['input_shape'], dtype=case['input_dtype'])
  x = inputs
  for name, kwargs in case['layers']:
    x = getattr(keras.layers, name)(**kwargs)(x)
  outputs = keras.layers.Dense(case['classes'], activation='softmax',
                               dtype='float32')(x)
  return keras.Model(inputs, outputs)


def _optimizer(keras, name: str, learning_rate: float, momentum: float):
  """The config's optimizer at its base learning rate (no schedule)."""
  optimizers = {'adam': keras.optimizers.Adam,
                'adamw': keras.optimizers.AdamW, 'sgd': keras.optimizers.SGD,
                'rmsprop': keras.optimizers.RMSprop}
  kwargs = {'momentum': momentum} if name in ('sgd', 'rmsprop') else {}
  return optimizers[name](learning_rate=learning_rate, **kwargs)


def _data(case: dict, n: int):
  """n random images and labels (one-hot for categorical_crossentropy)."""
  rng = np.random.default_rng(0)
  shape = (n,) + case['input_shape']
  if np.issubdtype(np.dtype(case['input_dtype']), np.integer):
    x = rng.integers(0, 256, size=shape, dtype=case['input_dtype'])
  else:
    x = rng.random(shape).astype(case['input_dtype'])
  y = rng.integers(0, case['classes'], size=n)
  if case['loss'] == 'categorical_crossentropy':
    y = np.eye(case['classes'], dtype='float32')[y]
  return x, y


def _feed_ms_per_step(keras, x, y, batch: int, steps: int) -> float:
  """Input side alone, as fit's array adapter does it: a shuffled gather
  (on the host, then a copy to the device, if x is a NumPy array) per batch.
  Median of 3 passes of `steps`."""
  on_host = isinstance(x, np.ndarray)
  passes = []
  for _ in range(3):
    order = np.random.permutation(len(x))
    start = time.perf_counter()
    for i in range(steps):
      index = order[i * batch:(i + 1) * batch]
      if on_host:
        xb = keras.ops.convert_to_tensor(x[index])
        yb = keras.ops.convert_to_tensor(y[index])
      else:
        xb = keras.ops.take(x, index, axis=0)
        yb = keras.ops.take(y, index, axis=0)
    keras.ops.convert_to_numpy(xb[:1]), keras.ops.convert_to_numpy(yb[:1])
    passes.append(time.perf_counter() - start)
  return 1000 * statistics.median(passes) / steps


def _measure(keras, case: dict, batch: int, policy: str) -> dict:
  """Trains one (batch, dtype policy) setting with fit; times its epochs."""
  keras.backend.clear_session()
  keras.utils.set_random_seed(0)
  keras.mixed_precision.set_global_policy(policy)
  model = _build(keras, case)
  mnist = case['validation_split'] > 0
  steps = (math.ceil(case['examples'] * (1 - case['validation_split']) /
                     batch) if mnist else _STEPS.value)
  model.compile(_optimizer(keras, *case['optimizer']), case['loss'],
                metrics=case['metrics'], jit_compile=True,
                steps_per_execution=1 if mnist else steps)
  x, y = _data(case, case['examples'] or steps * batch)
  if _FEED.value == 'device':
    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
  stamps, seconds = [], []

  def epoch_end(unused_epoch, logs):
    float(logs['loss'])  # The loss is the last step's: waits for the device.
    seconds.append(time.perf_counter() - stamps[-1])

  timer = keras.callbacks.LambdaCallback(
      on_epoch_begin=lambda *_: stamps.append(time.perf_counter()),
      on_epoch_end=epoch_end)
  model.fit(x, y, batch_size=batch, epochs=_UNITS.value + 1, verbose=0,
            validation_split=case['validation_split'], callbacks=[timer])
  steady = statistics.median(seconds[1:])
  step_s = steady / steps
  train_examples = len(x) - int(len(x) * case['validation_split'])
  forward = flops.analytic_flops(model)['multiply_adds']
  result = {
      'case': case['name'], 'precision': policy, 'batch': batch,
      'steps_per_epoch': steps, 'train_examples_per_epoch': train_examples,
      'validation_examples_per_epoch': len(x) - train_examples,
      'ms_per_step': 1000 * step_s,
      'ms_per_step_min': 1000 * min(seconds[1:]) / steps,
      'ms_per_step_max': 1000 * max(seconds[1:]) / steps,
      'images_per_sec': train_examples / steady,
      'epoch_s': steady, 'epoch_s_all': seconds,
      'first_step_s': seconds[0] - steady + step_s,
      'compile_s': max(seconds[0] - steady, 0.0),
      'feed_ms_per_step': _feed_ms_per_step(keras, x, y, batch, min(steps, 50)),
      'forward_flops_per_image': forward,
      'train_flops_per_image': 3 * forward,
      'params': model.count_params(), 'feed': _FEED.value,
  }
  result['tflops'] = result['train_flops_per_image'] * (
      result['images_per_sec']) / 1e12
  if keras.backend.backend() == 'jax':
    result['scan_ms_per_step'], result['scan_last_loss'] = _scan_ms_per_step(
        model, x, y, batch, min(steps, len(x) // batch))
    result['scan_images_per_sec'] = batch / result['scan_ms_per_step'] * 1e3
    result['scan_tflops'] = result['train_flops_per_image'] * (
        result['scan_images_per_sec']) / 1e12
  return result


def _scan_ms_per_step(model, x, y, batch: int, steps: int) -> tuple:
  """JAX only: `steps` of the model's `train_step` in one jitted `lax.scan`
  over batches on the device, state donated as fit does. Median ms/step of
  `--units` calls after one (compiling) call, and the last step's loss."""
  import jax  # pylint: disable=g-import-not-at-top
  n = steps * batch
  xs = jax.numpy.reshape(x[:n], (steps, batch) + tuple(x.shape[1:]))
  ys = jax.numpy.reshape(y[:n], (steps, batch) + tuple(y.shape[1:]))
  state = tuple([v.value for v in variables] for variables in (
      model.trainable_variables, model.non_trainable_variables,
      model.optimizer.variables, model.metrics_variables))

  def body(state, data):
    logs, state = model.train_step(state, data)
    return state, logs['loss']

  run = jax.jit(lambda state, data: jax.lax.scan(body, state, data),
                donate_argnums=0)
  seconds = []
  for _ in range(_UNITS.value + 1):
    start = time.perf_counter()
    state, losses = run(state, (xs, ys))
    losses.block_until_ready()
    seconds.append(time.perf_counter() - start)
  return (1000 * statistics.median(seconds[1:]) / steps,
          float(losses[-1]))


def _matmul_ceilings(n: int = 8192, repeats: int = 20, calls: int = 5) -> dict:
  """JAX n^3 matmul rates on random data, median of `repeats` timings of
  `calls` back-to-back products after 3 warm-ups, and each one's relative
  error against float64 on 64 rows."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  result = {'n': n, 'repeats': repeats, 'calls_per_repeat': calls,
            'jax_default_matmul_precision':
                str(jax.config.jax_default_matmul_precision)}
  keys = jax.random.split(jax.random.key(0), 2)
  for name, dtype, precision in (('float32_highest', jnp.float32, 'highest'),
                                 ('float32_default', jnp.float32, None),
                                 ('float32_tensorfloat32', jnp.float32,
                                  'tensorfloat32'),
                                 ('bfloat16', jnp.bfloat16, None)):
    a = jax.random.normal(keys[0], (n, n), dtype)
    b = jax.random.normal(keys[1], (n, n), dtype)
    with jax.default_matmul_precision(precision):
      matmul = jax.jit(jnp.matmul)
      for _ in range(3):
        out = matmul(a, b).block_until_ready()
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
          out = matmul(a, b)
        out.block_until_ready()
        times.append((time.perf_counter() - start) / calls)
    rows = np.asarray(a[:64].astype(jnp.float32), np.float64)
    ref = rows @ np.asarray(b.astype(jnp.float32), np.float64)
    got = np.asarray(out[:64].astype(jnp.float32), np.float64)
    result[name] = {
        'tflops': 2 * n ** 3 / statistics.median(times) / 1e12,
        'tflops_best': 2 * n ** 3 / min(times) / 1e12,
        'rel_err': float(np.linalg.norm(got - ref) / np.linalg.norm(ref))}
    del a, b, out
  return result


def _machine(keras) -> dict:
  machine = {'platform': platform.platform(), 'python':
             platform.python_version(), 'keras': keras.__version__,
             'backend': keras.backend.backend()}
  if machine['backend'] == 'jax':
    import jax  # pylint: disable=g-import-not-at-top
    machine.update(jax=jax.__version__,
                   device=str(jax.devices()[0].device_kind),
                   jax_default_matmul_precision=str(
                       jax.config.jax_default_matmul_precision))
  return machine


def _add_mfu(result: dict, ceilings: dict | None, device: str) -> None:
  """MFU against the device's datasheet peaks (none for a device the table
  lacks) and, if measured, the matmul ceilings. JAX and TensorFlow both run
  float32 convolutions and matmuls as TF32 on the GPU by default."""
  bf16 = result['precision'] == 'mixed_bfloat16'
  tflops = result['tflops']
  peaks = {key: accelerators.gpu_peak_tflops(device, key)
           for key in (('bfloat16',) if bf16 else ('tf32', 'float32'))}
  result['mfu_datasheet'] = {key: tflops / peak
                             for key, peak in peaks.items() if peak}
  if ceilings:
    key = 'bfloat16' if bf16 else 'float32_default'
    result['mfu_measured'] = {key: tflops / ceilings[key]['tflops']}
    if 'scan_tflops' in result:
      result['scan_mfu_measured'] = {
          key: result['scan_tflops'] / ceilings[key]['tflops']}


def _print_table(machine: dict, ceilings: dict | None, results: list) -> None:
  print(f'== table: Keras {machine["keras"]} on {machine["backend"]}'
        f'{" " + machine.get("jax", "") if "jax" in machine else ""}, '
        f'{machine.get("device", machine["platform"])}, feed={_FEED.value}')
  if ceilings:
    print(f'matmul {ceilings["n"]}^3 TFLOP/s (median of '
          f'{ceilings["repeats"]}x{ceilings["calls_per_repeat"]}; rel err vs '
          f'float64): ' + ', '.join(
              f'{k} {ceilings[k]["tflops"]:.1f} ({ceilings[k]["rel_err"]:.0e})'
              for k in ('float32_highest', 'float32_default',
                        'float32_tensorfloat32', 'bfloat16')) +
          f'; jax_default_matmul_precision='
          f'{ceilings["jax_default_matmul_precision"]}')
  header = (f'{"case":<15}{"precision":<16}{"batch":>6}{"ms/step":>9}'
            f'{"images/s":>11}{"epoch s":>9}{"first s":>9}{"feed ms":>9}'
            f'{"TFLOP/s":>9}{"MFU meas":>9}{"MFU sheet":>16}{"scan ms":>9}')
  print(header)
  for r in results:
    measured = next(iter(r.get('mfu_measured', {}).values()), None)
    sheet = ', '.join(f'{100 * v:.1f}% {k}'
                      for k, v in list(r['mfu_datasheet'].items())[:1]) or '-'
    print(f'{r["case"]:<15}{r["precision"]:<16}{r["batch"]:>6}'
          f'{r["ms_per_step"]:>9.3f}{r["images_per_sec"]:>11,.0f}'
          f'{r["epoch_s"]:>9.3f}{r["first_step_s"]:>9.2f}'
          f'{r["feed_ms_per_step"]:>9.3f}{r["tflops"]:>9.1f}'
          f'{"-" if measured is None else f"{100 * measured:.1f}%":>9}'
          f'{sheet:>16}'
          f'{r.get("scan_ms_per_step", float("nan")):>9.3f}')
  print('== end')


def main(argv):
  del argv
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import keras  # pylint: disable=g-import-not-at-top
  case = _case()
  machine = _machine(keras)
  ceilings = None
  if _CEILINGS.value:
    if machine['backend'] != 'jax':
      raise app.UsageError('--ceilings needs KERAS_BACKEND=jax')
    ceilings = _matmul_ceilings()
  results = []
  for batch in case['batches']:
    for policy in _PRECISION.value:
      print(f'{case["name"]}: batch {batch}, {policy}', flush=True)
      result = _measure(keras, case, batch, policy)
      _add_mfu(result, ceilings, machine.get('device', ''))
      results.append(result)
  with open(_OUT.value, 'w', encoding='utf-8') as f:
    json.dump({'machine': machine, 'ceilings': ceilings, 'results': results},
              f, indent=2)
  print(f'wrote {_OUT.value}')
  _print_table(machine, ceilings, results)


if __name__ == '__main__':
  app.run(main)
