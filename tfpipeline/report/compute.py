"""Compute, energy and carbon of a run.

FLOPs come from `flops.forward_flops`: the backend's own count of the
forward pass, checked against the analytic count. Energy is measured by
codecarbon's offline tracker where it is installed, else estimated as
power x utilisation x time x PUE; both are turned into CO2e with the same
grid intensity (a country's, from codecarbon's energy-mix table, or
`report.grid_gco2_per_kwh`).
"""

import datetime
import importlib.util
import os
import pathlib
import platform
import threading
import time

from absl import logging
import numpy as np

from tfpipeline import accelerators
from tfpipeline.errors import UserError
from tfpipeline.report import flops as flops_lib

# codecarbon's fallback for a CPU it does not know: 4 W per thread.
WATTS_PER_CPU_THREAD = 4.0
JOULES_PER_KWH = 3.6e6
# jax_default_matmul_precision values that keep float32 matmuls float32.
_JAX_FLOAT32_PRECISIONS = ('highest', 'float32', 'F32_F32_F32')


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


def devices(strategy) -> dict:
  """The kind and count of the devices this process trained on.

  `count` is the accelerators the strategy used (not every one the host
  has) and, for a TPU, its chips (TPU v2 and v3 show two cores a chip),
  since power is per chip; on a CPU, its threads. `workers` is the
  processes that trained alike: a multi-worker strategy's replicas over
  this worker's devices (a TPU strategy lists every core it drives).

  Args:
    strategy: a tf.distribute strategy, or the JAX backend's
      `jax_devices.JaxDevices` (its devices' `device_kind` names them).
  """
  from tfpipeline import jax_devices  # pylint: disable=g-import-not-at-top
  on_jax = isinstance(strategy, jax_devices.JaxDevices)
  if on_jax:
    local = strategy.devices
    kind, used = strategy.platform.upper(), len(local)
  else:
    local = list(strategy.extended.worker_devices)
    kinds = [name.rsplit('/', 1)[-1].split(':')[-2].upper() for name in local]
    kind = 'TPU' if 'TPU' in kinds else 'GPU' if 'GPU' in kinds else 'CPU'
    used = kinds.count(kind)
  if kind == 'CPU':
    model, count = _cpu_model(), os.cpu_count() or 1
  else:
    model = local[0].device_kind if on_jax else _tensorflow_device_name(kind)
    count = used if kind == 'GPU' else max(1, used // (
        accelerators.tpu_cores_per_chip(accelerators.tpu_generation())))
  return {'kind': kind, 'model': model, 'count': count,
          'replicas': strategy.num_replicas_in_sync,
          'workers': max(1, strategy.num_replicas_in_sync //
                         max(1, len(local))),
          'host': platform.node()}


def _tensorflow_device_name(kind: str) -> str:
  """A GPU's name as TensorFlow reports it ('NVIDIA H100 80GB HBM3'), or
  the TPU's generation ('TPU v4')."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if kind == 'GPU':
    details = tf.config.experimental.get_device_details(
        tf.config.list_physical_devices('GPU')[0])
    return details.get('device_name', 'GPU')
  generation = accelerators.tpu_generation()
  return f'TPU {generation}' if generation else 'TPU'


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
  """What the matmuls run in: 'bfloat16', 'float16', 'tf32' or 'float32'.

  float32 matmuls on a GPU run as TF32 by default on both backends
  (TensorFlow's `tensor_float_32_execution_enabled`, JAX's default
  precision), where the GPU has it.
  """
  if mixed_precision != 'float32':
    return mixed_precision.removeprefix('mixed_')
  if kind != 'GPU':
    return 'float32'
  import keras  # pylint: disable=g-import-not-at-top
  if keras.backend.backend() == 'jax':
    import jax  # pylint: disable=g-import-not-at-top
    full = jax.config.jax_default_matmul_precision in _JAX_FLOAT32_PRECISIONS
    return 'float32' if full else 'tf32'
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return ('tf32' if tf.config.experimental.tensor_float_32_execution_enabled()
          else 'float32')


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
  flops = flops_lib.forward_flops(model)
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
