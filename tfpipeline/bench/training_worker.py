"""One setting of a training case, measured in the fresh process that runs
it (`python -m tfpipeline.bench --worker=...`; see `training`).

Keras's backend is the setting's, selected before Keras loads. The devices
are a tf.distribute strategy on TensorFlow and a JAX mesh (`jax_devices`)
on JAX, where TensorFlow only runs tf.data on the host. The own loop is the
backend's engine (`engines.create`, --engine=tfpipeline) over a run of the
case's config, called block by block as the trainer calls it; Keras fit
trains the same model on the same pipeline's batches, one an element. A
timing unit is one block or one fit epoch of the case's steps; the first,
compilation included, gives the time to the first step, the median of the
others the time of a step.
"""

import os
import pathlib
import statistics
import tempfile
import time

from tfpipeline import backend as backend_lib
from tfpipeline.bench import peaks
from tfpipeline.bench import training
from tfpipeline.bench.training import Case


def measure(case_name: str, setting: dict, *, device: str,
            mixed_precision: str, units: int, data_dir: str) -> dict:
  """Runs one setting in this process (which must be fresh); `data_dir`
  holds the streamed convnet's images."""
  case = training.CASES[case_name]
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  backend = setting['backend']
  backend_lib.select(backend)
  devices = _devices(case, backend, device)
  import keras  # pylint: disable=g-import-not-at-top
  from tfpipeline import models  # pylint: disable=g-import-not-at-top
  from tfpipeline.data import pipeline  # pylint: disable=g-import-not-at-top

  config, splits = _data(case, data_dir,
                         streamed=setting.get('streamed', False))
  config.train.update(backend=backend, global_batch_size=case.batch,
                      steps_per_loop=case.steps, seed=0,
                      jit_compile=setting['jit_compile'],
                      mixed_precision=mixed_precision)
  keras.utils.set_random_seed(0)
  keras.mixed_precision.set_global_policy(mixed_precision)
  if (backend == 'jax' and setting['engine'] == 'keras_fit' and
      devices.num_replicas_in_sync > 1):  # The engine places its own state.
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices.devices))
  inputs = pipeline.inputs(splits, config)
  with devices.scope():
    model = models.build(config, splits.train, input_shape=inputs.shape,
                         input_dtype=inputs.dtype)
  if setting['engine'] == 'tfpipeline':
    seconds, steps, stall = _own_loop_units(config, devices, splits, inputs,
                                            model, units)
  else:
    seconds, steps = _fit_units(config, devices, inputs, model, case,
                                setting['steps_per_execution'], units)
    stall = []

  per_step = [s / k for s, k in zip(seconds[1:], steps[1:])]
  step_s = statistics.median(per_step)
  result = {
      'case': case_name, **setting, 'device': device,
      'mixed_precision': mixed_precision,
      'replicas': devices.num_replicas_in_sync, 'global_batch': case.batch,
      'unit_steps': steps,
      'examples_per_sec': case.batch / step_s,
      'ms_per_step': 1000 * step_s,
      'ms_per_step_min': 1000 * min(per_step),
      'ms_per_step_max': 1000 * max(per_step),
      'first_step_s': seconds[0] - step_s * (steps[0] - 1),
      'compile_s': max(seconds[0] - step_s * steps[0], 0.0),
      'input_stall_pct': statistics.median(stall) if stall else None,
      'gflops': training.flops_per_example(model) * case.batch / step_s / 1e9,
  }
  if case_name.startswith('wide'):
    result['matmul_peak_gflops'] = peaks.matmul_gflops(backend, device,
                                                       mixed_precision)
  if device == 'gpu':
    result['device_name'], tflops = peaks.datasheet(backend, mixed_precision)
    if tflops:
      result['datasheet_tflops'] = tflops
      result['mfu_datasheet'] = result['gflops'] / 1000 / tflops
  return result


def _devices(case: Case, backend: str, device: str):
  """The case's devices: one, or `case.replicas` (logical CPUs, or every
  GPU), as a strategy on TensorFlow and a mesh on JAX."""
  cpu_devices = case.replicas if device == 'cpu' else 1
  if backend == 'jax':
    from tfpipeline import jax_devices  # pylint: disable=g-import-not-at-top
    devices = jax_devices.create(device, cpu_devices=cpu_devices)
    if case.replicas == 1:
      devices = jax_devices.JaxDevices(devices.devices[:1])
    return devices
  from tfpipeline import strategy  # pylint: disable=g-import-not-at-top
  return strategy.create('mirrored' if case.replicas > 1 else device,
                         cpu_devices=cpu_devices)


def _own_loop_units(config, devices, splits, inputs, model,
                    units: int) -> tuple[list, list, list]:
  """Seconds and steps of `units` + 1 blocks of the backend's own engine,
  and each timed block's input stall %."""
  from tfpipeline import engines  # pylint: disable=g-import-not-at-top
  from tfpipeline.run_context import RunContext  # pylint: disable=g-import-not-at-top
  seconds, steps, stall = [], [], []
  with tempfile.TemporaryDirectory() as model_dir:
    run = RunContext.own_loop(config, pathlib.Path(model_dir), devices,
                              splits, inputs)
    engine = engines.create(run, model)
    for _ in range(units + 1):
      start = time.perf_counter()
      block = engine.run_block(lambda step, loss: None)
      seconds.append(time.perf_counter() - start)
      steps.append(block.steps)
      if len(seconds) > 1 and block.waited_s is not None:
        stall.append(100.0 * block.waited_s / seconds[-1])
  return seconds, steps, stall


def _fit_units(config, devices, inputs, model, case: Case,
               steps_per_execution: int, units: int) -> tuple[list, list]:
  """Seconds and steps of `units` + 1 Keras fit epochs of `case.steps`."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfpipeline import models  # pylint: disable=g-import-not-at-top
  from tfpipeline.data import pipeline  # pylint: disable=g-import-not-at-top
  dataset_fn = pipeline.training_dataset_fn(inputs.train, case.batch, seed=0)
  if config.train.backend == 'jax':  # Keras distributes the batches itself.
    batches = dataset_fn(tf.distribute.InputContext())
  else:
    batches = devices.distribute_datasets_from_function(dataset_fn)
  with devices.scope():
    model.compile(models.optimizer(config.optimizer,
                                   config.train.mixed_precision),
                  models.loss_fn(config.loss),
                  jit_compile=config.train.jit_compile,
                  steps_per_execution=steps_per_execution)
  stamps, seconds = [], []

  def epoch_end(unused_epoch, logs):
    float(logs['loss'])  # The last step's loss: waits for the device.
    seconds.append(time.perf_counter() - stamps[-1])

  timer = keras.callbacks.LambdaCallback(
      on_epoch_begin=lambda *_: stamps.append(time.perf_counter()),
      on_epoch_end=epoch_end)
  model.fit(batches, epochs=units + 1, steps_per_epoch=case.steps, verbose=0,
            callbacks=[timer])
  return seconds, [case.steps] * len(seconds)


def _data(case: Case, data_dir: str, *, streamed: bool):
  """The case's config and splits: the seeds' synthetic table of two
  blocks, or the cifar10_cnn experiment on random uint8 images in memory
  (two blocks; not augmented) or streamed from JPEG files in `data_dir`
  (flipped and cropped, as the experiment does)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfpipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  from tfpipeline.data import sources  # pylint: disable=g-import-not-at-top
  rows = 2 * case.steps * case.batch
  if not case.image:
    config = config_lib.load('seed_keras_mlp')
    config.data.update(num_examples=rows, num_features=case.features)
    config.model.hidden_units = case.hidden_units
    return config, sources.load(config.data, loss=config.loss)
  config = config_lib.load('cifar10_cnn')
  if streamed:
    from tfpipeline.bench import images  # pylint: disable=g-import-not-at-top
    images.prepared('jpeg32', data_dir)
    config.data.update(name='bench_images/jpeg32', data_dir=data_dir,
                       train_split='train', validation_split='train[:1%]',
                       test_split='train[:1%]')
    return config, sources.load(config.data, loss=config.loss)
  config.data.augment = ()
  rng = np.random.default_rng(0)
  split = sources.Split.of(
      rng.integers(0, 256, (rows, *case.image), dtype=np.uint8),
      rng.integers(0, 10, (rows, 1)).astype(np.int32))
  return config, sources.Splits(
      split, split, split, feature_names=('image',), label_name='label',
      group_name=None, kind=sources.IMAGE, feature_shape=case.image,
      feature_dtype='uint8')
