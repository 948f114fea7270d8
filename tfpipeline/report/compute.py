"""Compute, energy and carbon of a run.

FLOPs come from the model's graph (the TF profiler's float-operation count
of the frozen forward pass) and are checked against the analytic count for
Dense layers. Energy is measured by codecarbon's offline tracker where it is
installed, else estimated as power x utilisation x time x PUE; both are
turned into CO2e with the same grid intensity (a country's, from
codecarbon's energy-mix table, or `report.grid_gco2_per_kwh`).
"""

import datetime
import importlib.util
import math
import os
import pathlib
import platform
import threading
import time

from absl import logging
import numpy as np

from tfpipeline import accelerators
from tfpipeline.errors import UserError

# The graph ops that Dense and convolution layers become (Conv1D and
# SeparableConv*'s pointwise step are Conv2D, depthwise steps
# DepthwiseConv2dNative; the profiler gives grouped convolutions no count:
# their analytic count stands alone), and those of 1-D and 2-D max and
# average pooling (it counts no 3-D pooling, and global pooling's Mean is
# shared with normalization layers).
_MULTIPLY_ADD_OPS = ('MatMul', 'BatchMatMulV2', 'BatchMatMulV3', 'Conv2D',
                     'Conv3D', 'DepthwiseConv2dNative')
_POOLING_OPS = ('MaxPool', 'AvgPool')
# codecarbon's fallback for a CPU it does not know: 4 W per thread.
WATTS_PER_CPU_THREAD = 4.0
JOULES_PER_KWH = 3.6e6


class EnergyMeter:
  """Wall time, process CPU time and (with codecarbon) measured energy.

  Start it when the run starts and `stop()` it before the report. Importing,
  creating and starting codecarbon's tracker takes about 1.9 s (hardware
  detection, py-cpuinfo's own subprocess), so that happens on a background
  thread while TensorFlow starts and the data loads. If the tracker fails,
  the report falls back to the estimate and says why.
  """

  def __init__(self, report_config):
    self._tracker, self._result, self._starting = None, None, None
    self._error = None
    self._started_utc = datetime.datetime.now(datetime.timezone.utc)
    self._wall = time.perf_counter()
    self._cpu = time.process_time()
    if energy_method(report_config.energy_method) == 'codecarbon':
      self._starting = threading.Thread(
          target=self._start_codecarbon, args=(report_config,), daemon=True)
      self._starting.start()

  def _start_codecarbon(self, report_config) -> None:
    try:
      from codecarbon import OfflineEmissionsTracker  # pylint: disable=g-import-not-at-top
      tracker = OfflineEmissionsTracker(
          # Offline mode needs a country; CO2e is computed here, not by it.
          country_iso_code=report_config.country or 'USA',
          tracking_mode='process', pue=report_config.pue,
          force_cpu_power=report_config.cpu_watts or None,
          save_to_file=False, log_level='error', allow_multiple_runs=True)
      tracker.start()
      self._tracker = tracker
    except Exception as e:  # pylint: disable=broad-except
      self._error = f'{type(e).__name__}: {e}'

  def stop(self) -> dict:
    """Start time, seconds of wall and CPU time, and codecarbon's energy
    when it measured. Later calls return the first call's result."""
    if self._result is not None:
      return self._result
    result = {'started_utc': self._started_utc.isoformat(timespec='seconds'),
              'wall_s': time.perf_counter() - self._wall,
              'process_cpu_s': time.process_time() - self._cpu}
    if self._starting is not None:
      self._starting.join()
    if self._tracker is not None:
      self._tracker.stop()
      data = self._tracker.final_emissions_data
      result['codecarbon'] = {
          'version': data.codecarbon_version,
          'tracking_mode': data.tracking_mode,
          'cpu_model': data.cpu_model, 'gpu_model': data.gpu_model,
          'cpu_power_w': data.cpu_power, 'gpu_power_w': data.gpu_power,
          'ram_power_w': data.ram_power,
          'energy_kwh': {'cpu': data.cpu_energy, 'gpu': data.gpu_energy,
                         'ram': data.ram_energy,
                         'total': data.energy_consumed},
          'duration_s': data.duration}
    elif self._error:
      logging.warning('codecarbon failed (%s); the report estimates energy',
                      self._error)
      result['codecarbon_error'] = self._error
    self._result = result
    return result


def energy_method(requested: str) -> str:
  """'codecarbon' or 'estimate' for `report.energy_method`."""
  if requested == 'estimate':
    return 'estimate'
  if importlib.util.find_spec('codecarbon') is None:
    if requested == 'codecarbon':
      raise UserError('report.energy_method=codecarbon: codecarbon is not '
                      'installed; pip install codecarbon, or use auto or '
                      'estimate')
    return 'estimate'
  return 'codecarbon'


def analytic_flops(model) -> dict:
  """Forward-pass FLOPs per example by formula, from the layers' shapes.

  Imports no TensorFlow (`bench.keras_fit` runs on any Keras backend). Dense
  does 2 x inputs x units per position of its input (batch, *positions,
  inputs); convolutions 2 x output positions x kernel size (window x input
  channels / groups x filters); depthwise ones 2 x output positions x
  window x channels x depth multiplier; separable ones their depthwise and
  pointwise (1 x 1) steps; each adds its bias per output value. Pooling
  counts one operation per window element per output (global pooling: per
  input element). An Embedding is a lookup: no FLOPs.

  Returns:
    `multiply_adds` (Dense and convolutions), `biases`, `pooling` and
    `checked_pooling` (the 1-D and 2-D pooling the graph also counts).
  """
  import keras  # pylint: disable=g-import-not-at-top
  layers = keras.layers
  convolutions = (layers.Conv1D, layers.Conv2D, layers.Conv3D,
                  layers.DepthwiseConv1D, layers.DepthwiseConv2D)
  separable = (layers.SeparableConv1D, layers.SeparableConv2D)
  checked_pooling = (layers.MaxPooling1D, layers.MaxPooling2D,
                     layers.AveragePooling1D, layers.AveragePooling2D)
  windowed_pooling = checked_pooling + (layers.MaxPooling3D,
                                        layers.AveragePooling3D)
  global_pooling = (layers.GlobalAveragePooling1D,
                    layers.GlobalAveragePooling2D,
                    layers.GlobalAveragePooling3D, layers.GlobalMaxPooling1D,
                    layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D)
  count = dict.fromkeys(('multiply_adds', 'biases', 'pooling',
                         'checked_pooling'), 0)
  for layer in model.layers:
    if isinstance(layer, (layers.Dense,) + convolutions + separable):
      kernels = ([layer.depthwise_kernel, layer.pointwise_kernel]
                 if isinstance(layer, separable) else [layer.kernel])
      values = math.prod(layer.output.shape[1:])
      channels_first = getattr(layer, 'data_format', '') == 'channels_first'
      positions = values // layer.output.shape[1 if channels_first else -1]
      count['multiply_adds'] += 2 * positions * sum(
          math.prod(kernel.shape) for kernel in kernels)
      count['biases'] += values if layer.use_bias else 0
    elif isinstance(layer, windowed_pooling):
      pooled = math.prod(layer.output.shape[1:]) * math.prod(layer.pool_size)
      count['pooling'] += pooled
      count['checked_pooling'] += (pooled if isinstance(layer, checked_pooling)
                                   else 0)
    elif isinstance(layer, global_pooling):
      count['pooling'] += math.prod(layer.input.shape[1:])
  return count


def forward_flops(model) -> dict:
  """Forward-pass FLOPs per example: the graph's count and the formula's.

  The graph count is the TF profiler's float operations of the frozen
  inference function at batch 1 (MatMul counts 2 x m x k x n, Conv2D 2 x
  output pixels x kernel size x input channels x filters). The analytic
  count is `analytic_flops`'; its multiply-adds must equal the graph's
  MatMul, Conv and DepthwiseConv operations, its 1-D and 2-D pooling the
  graph's MaxPool and AvgPool (an Embedding's index checks, two per token,
  stay in the graph's total only).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import

  spec = tf.TensorSpec([1, *model.input_shape[1:]], model.inputs[0].dtype)
  concrete = tf.function(lambda x: model(x, training=False)
                         ).get_concrete_function(spec)
  frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options['output'] = 'none'
  verbosity = tf.compat.v1.logging.get_verbosity()
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)  # Deprecations.
  try:
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph,
                                            options=options)
  finally:
    tf.compat.v1.logging.set_verbosity(verbosity)
  op_types = {op.name: op.type for op in frozen.graph.get_operations()}
  # The profile is a tree of name scopes (a separable convolution's
  # depthwise op sits under its pointwise Conv2D): each node's own count.
  nodes, ops = list(profile.children), []
  while nodes:
    node = nodes.pop()
    ops.append((op_types.get(node.name), node.float_ops))
    nodes.extend(node.children)

  def graph_count(kinds):
    return int(sum(flops for kind, flops in ops if kind in kinds))

  analytic = analytic_flops(model)
  graph_matmul, graph_pooling = (graph_count(_MULTIPLY_ADD_OPS),
                                 graph_count(_POOLING_OPS))
  return {
      'graph_total': int(profile.total_float_ops),
      'graph_matmul': graph_matmul,
      'analytic': int(analytic['multiply_adds'] + analytic['biases'] +
                      analytic['pooling']),
      'analytic_matmul': int(analytic['multiply_adds']),
      'matmul_agrees': graph_matmul == analytic['multiply_adds'],
      'graph_pooling': graph_pooling,
      'analytic_pooling': int(analytic['pooling']),
      'pooling_agrees': graph_pooling == analytic['checked_pooling'],
      'method': 'tf.compat.v1.profiler float_operation on the frozen '
                'forward graph, batch 1',
  }


def devices(strategy) -> dict:
  """The kind and count of the devices this process trained on.

  `count` is the accelerators the strategy used (not every one the host
  has) and, for a TPU, its chips (TPU v2 and v3 show two cores a chip),
  since power is per chip; on a CPU, its threads. `workers` is the
  processes that trained alike: a multi-worker strategy's replicas over
  this worker's devices (a TPU strategy lists every core it drives).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  names = list(strategy.extended.worker_devices)
  kinds = [name.rsplit('/', 1)[-1].split(':')[-2].upper() for name in names]
  kind = 'TPU' if 'TPU' in kinds else 'GPU' if 'GPU' in kinds else 'CPU'
  used = kinds.count(kind)
  if kind == 'GPU':
    details = tf.config.experimental.get_device_details(
        tf.config.list_physical_devices('GPU')[0])
    model, count = details.get('device_name', 'GPU'), used
  elif kind == 'TPU':
    generation = accelerators.tpu_generation()
    model = f'TPU {generation}' if generation else 'TPU'
    count = max(1, used // accelerators.tpu_cores_per_chip(generation))
  else:
    model, count = _cpu_model(), os.cpu_count() or 1
  return {'kind': kind, 'model': model, 'count': count,
          'replicas': strategy.num_replicas_in_sync,
          'workers': max(1, strategy.num_replicas_in_sync //
                         max(1, len(names))),
          'host': platform.node()}


def _cpu_model() -> str:
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def grid_intensity(report_config) -> dict:
  """gCO2e per kWh: the country's (codecarbon's table) or the configured."""
  if not report_config.country:
    return {'g_per_kwh': report_config.grid_gco2_per_kwh,
            'source': 'report.grid_gco2_per_kwh'}
  try:
    from codecarbon.input import DataSource  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f'report.country={report_config.country!r} needs '
                    f'codecarbon (its energy-mix table); pip install '
                    f'codecarbon, or set report.grid_gco2_per_kwh and '
                    f"report.country=''") from None
  mix = DataSource().get_global_energy_mix_data()
  code = report_config.country.upper()
  if code not in mix:
    raise UserError(f'report.country={report_config.country!r} is not in '
                    f"codecarbon's energy-mix table; give an ISO 3166 alpha-3 "
                    f'code such as FRA, or set report.grid_gco2_per_kwh')
  return {'g_per_kwh': float(mix[code]['carbon_intensity']),
          'source': f"codecarbon's energy mix for {mix[code]['country_name']} "
                    f"({mix[code].get('year', 'year not stated')})"}


def matmul_precision(kind: str, mixed_precision: str) -> str:
  """What the matmuls run in: 'bfloat16', 'float16', 'tf32' or 'float32'."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if mixed_precision != 'float32':
    return mixed_precision.removeprefix('mixed_')
  if kind == 'GPU' and tf.config.experimental.tensor_float_32_execution_enabled():
    return 'tf32'
  return 'float32'


def utilisation(report_config, device: dict, mixed_precision: str,
                achieved_flops_per_s: float) -> dict:
  """MFU: achieved FLOP/s over the peak of the devices that trained."""
  precision = matmul_precision(device['kind'], mixed_precision)
  if report_config.peak_flops_per_s:
    peak, source = report_config.peak_flops_per_s, 'report.peak_flops_per_s'
  else:
    peak, source = accelerators.peak_flops_per_s(
        device['kind'], device['model'], precision, device['replicas'])
  return {'precision': precision, 'peak_flops_per_s': peak,
          'peak_source': source,
          'mfu': achieved_flops_per_s / peak if peak else None}


def section(model, strategy, report_config, times: dict, *, examples_seen: int,
            train_seconds: float, resumed_from_step: int,
            mixed_precision: str) -> dict:
  """The report's `compute` section."""
  flops = forward_flops(model)
  device = devices(strategy)
  training_flops = 3 * flops['graph_total'] * examples_seen
  achieved = training_flops / max(train_seconds, 1e-9)
  energy = _all_workers(_energy(report_config, device, times),
                        device['workers'])
  intensity = grid_intensity(report_config)
  energy['grid_gco2_per_kwh'] = intensity['g_per_kwh']
  energy['grid_source'] = intensity['source']
  energy['co2e_kg'] = energy['kwh'] * intensity['g_per_kwh'] / 1000
  return {
      'trainable_parameters': int(sum(  # Shapes: no copy to the host.
          int(np.prod(v.shape)) for v in model.trainable_variables)),
      'forward_flops_per_example': flops,
      'examples_seen': examples_seen,
      'training_flops': training_flops,
      'training_flops_method': '3 x forward FLOPs x examples seen (forward '
                               '+ backward ~ 2x forward)',
      'train_wall_s': train_seconds,
      'run_wall_s': times['wall_s'],
      'achieved_flops_per_s': achieved,
      'utilisation': utilisation(report_config, device, mixed_precision,
                                 achieved),
      'devices': device,
      'energy': energy,
      'scope': _scope(resumed_from_step, energy['scope']),
  }


def _scope(resumed_from_step: int, energy_scope: str) -> str:
  """What run_wall_s, examples_seen and the energy cover."""
  scope = ('tfpipeline.run() from its start to the report; Python and '
           'TensorFlow start-up before it are not counted; examples seen '
           f"and FLOPs are all workers'; energy and CO2e: {energy_scope}")
  if resumed_from_step:
    scope += (f'; resumed from step {resumed_from_step}: earlier attempts '
              f'are not counted')
  return scope


def _all_workers(energy: dict, workers: int) -> dict:
  """The chief's energy made the run's: only the chief has a meter, so
  every other worker is taken to draw what the chief drew (same machines,
  same steps), and `scope` says so."""
  if workers == 1:
    return {**energy, 'chief_kwh': energy['kwh'], 'workers': 1,
            'scope': 'this process, the only worker'}
  return {**energy, 'kwh': energy['kwh'] * workers,
          'chief_kwh': energy['kwh'], 'workers': workers,
          'scope': f"estimated for all {workers} workers: {workers} x the "
                   f"chief's {energy['method']} (only the chief measures; "
                   f'the others are assumed to draw as much)'}


def _energy(report_config, device: dict, times: dict) -> dict:
  pue = report_config.pue
  if 'codecarbon' in times:
    measured = times['codecarbon']
    return {
        'method': 'codecarbon',
        'kwh': measured['energy_kwh']['total'],
        'pue': pue,
        'detail': measured,
        'uncertainty': (
            'codecarbon measures power with RAPL (CPU), NVML (GPU) where '
            'readable and otherwise estimates it from TDP or CPU load; '
            'it logs which. RAM is estimated from its size. Treat the '
            'figure as +/-30% at best, a factor of 2 when estimated.'),
    }
  wall, cpu_s = times['wall_s'], times['process_cpu_s']
  threads = os.cpu_count() or 1
  cpu_watts = report_config.cpu_watts or WATTS_PER_CPU_THREAD * threads
  cpu_utilisation = min(1.0, cpu_s / max(wall * threads, 1e-9))
  accelerator_watts = {'GPU': report_config.gpu_watts,
                       'TPU': report_config.tpu_watts}.get(device['kind'], 0.0)
  accelerators = device['count'] if device['kind'] != 'CPU' else 0
  joules = wall * (cpu_watts * cpu_utilisation +
                   accelerator_watts * accelerators) * pue
  estimate = {
      'method': 'estimate',
      'kwh': joules / JOULES_PER_KWH,
      'pue': pue,
      'detail': {
          'cpu_watts': cpu_watts,
          'cpu_watts_source': ('report.cpu_watts' if report_config.cpu_watts
                               else f'{WATTS_PER_CPU_THREAD:g} W x {threads} '
                               f'threads (codecarbon\'s fallback)'),
          'cpu_utilisation': cpu_utilisation,
          'accelerator_watts_each': accelerator_watts,
          'accelerators': accelerators,
          'formula': '(cpu_watts x cpu_utilisation + accelerator_watts x '
                     'accelerators) x wall_s x pue / 3.6e6',
      },
      'uncertainty': (
          'estimated, not measured: nominal power, CPU utilisation from this '
          "process's CPU time, accelerators assumed fully busy; memory, "
          'storage and network not counted. Expect a factor of 2 either '
          'way; set report.cpu_watts / gpu_watts / pue for your machine.'),
  }
  if 'codecarbon_error' in times:
    estimate['codecarbon_error'] = times['codecarbon_error']
  return estimate
