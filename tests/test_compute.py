"""report.compute: MFU, energy and CO2e (estimate, codecarbon, devices,
workers)."""

import os
import types

import keras
import numpy as np
import pytest

from tfpipeline import config
from tfpipeline import jax_devices
from tfpipeline.report import compute

from data_configs import report_config


def test_mfu_is_achieved_over_the_peak():
  cpu = {'kind': 'CPU', 'model': 'x', 'replicas': 2}
  unknown = compute.utilisation(report_config(), cpu, 'float32', 5e9)
  assert unknown['mfu'] is None and unknown['precision'] == 'float32'
  given = compute.utilisation(report_config(peak_flops_per_s=2e11), cpu,
                              'mixed_bfloat16', 5e9)
  assert given['mfu'] == 5e9 / 2e11 and given['precision'] == 'bfloat16'
  assert given['peak_source'] == 'report.peak_flops_per_s'
  gpu = {'kind': 'GPU', 'model': 'NVIDIA H100 80GB HBM3', 'replicas': 2}
  h100 = compute.utilisation(report_config(), gpu, 'mixed_bfloat16', 1e14)
  assert h100['mfu'] == 1e14 / (2 * 989.4e12)


def test_energy_estimate_is_power_times_utilisation_times_time():
  report_config = config.get_config().report
  report_config.cpu_watts = 100.0
  report_config.pue = 1.5
  device = {'kind': 'CPU', 'count': 2}
  import os
  threads = os.cpu_count()
  times = {'wall_s': 36.0, 'process_cpu_s': 36.0 * threads / 2}
  energy = compute._energy(report_config, device, times)
  assert energy['method'] == 'estimate'
  assert energy['detail']['cpu_utilisation'] == pytest.approx(0.5)
  assert energy['kwh'] == pytest.approx(100 * 0.5 * 36 * 1.5 / 3.6e6)
  report_config.gpu_watts = 300.0
  gpus = compute._energy(report_config, {'kind': 'GPU', 'count': 4}, times)
  assert gpus['kwh'] == pytest.approx((50 + 1200) * 36 * 1.5 / 3.6e6)


def test_country_grid_intensity_comes_from_codecarbon_and_bad_codes_fail():
  from tfpipeline.errors import UserError
  report_config = config.get_config().report
  assert compute.grid_intensity(report_config)['g_per_kwh'] == 475.0
  report_config.country = 'FRA'
  france = compute.grid_intensity(report_config)
  assert 0 < france['g_per_kwh'] < 475 and 'France' in france['source']
  report_config.country = 'XYZ'
  with pytest.raises(UserError, match="report.country='XYZ'"):
    compute.grid_intensity(report_config)


def test_energy_meter_falls_back_to_the_estimate_when_codecarbon_fails(
    monkeypatch):
  import codecarbon

  def broken_tracker(**kwargs):
    raise OSError('no hardware access')

  monkeypatch.setattr(codecarbon, 'OfflineEmissionsTracker', broken_tracker)
  report_config = config.get_config().report
  report_config.energy_method = 'codecarbon'
  times = compute.EnergyMeter(report_config).stop()
  assert 'codecarbon' not in times
  assert times['codecarbon_error'] == 'OSError: no hardware access'
  energy = compute._energy(report_config, {'kind': 'CPU', 'count': 2}, times)
  assert energy['method'] == 'estimate'
  assert energy['codecarbon_error'] == times['codecarbon_error']


def test_energy_meter_with_codecarbon_records_its_measurement():
  report_config = config.get_config().report
  report_config.energy_method = 'codecarbon'
  times = compute.EnergyMeter(report_config).stop()
  measured = times['codecarbon']
  assert measured['tracking_mode'] == 'process'
  assert measured['energy_kwh']['total'] > 0
  assert times['wall_s'] > 0 and times['process_cpu_s'] > 0


class _Strategy:
  """What `compute.devices` reads of a tf.distribute strategy."""

  def __init__(self, kind, used, workers=1):
    self.extended = type('Extended', (), {'worker_devices': tuple(
        f'/job:worker/replica:0/task:0/device:{kind}:{i}'
        for i in range(used))})()
    self.num_replicas_in_sync = used * workers


def test_energy_counts_the_devices_used_and_tpu_chips(monkeypatch):
  import tensorflow as tf
  monkeypatch.setattr(tf.config, 'list_physical_devices',
                      lambda kind=None: [f'{kind}:{i}' for i in range(4)])
  monkeypatch.setattr(tf.config.experimental, 'get_device_details',
                      lambda device: {'device_name': 'NVIDIA H100 80GB HBM3'})
  gpu = compute.devices(_Strategy('GPU', 1))  # One of the host's four.
  assert (gpu['kind'], gpu['count'], gpu['replicas']) == ('GPU', 1, 1)
  times = {'wall_s': 10.0, 'process_cpu_s': 0.0}
  estimate = compute._energy(report_config(), gpu, times)
  assert estimate['detail']['accelerators'] == 1
  assert estimate['kwh'] == pytest.approx(10 * 300 / 3.6e6)
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v3-8')
  tpu = compute.devices(_Strategy('TPU', 8))  # 8 cores, 4 chips
  assert (tpu['model'], tpu['count'], tpu['replicas']) == ('TPU v3', 4, 8)
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v5litepod-8')
  assert compute.devices(_Strategy('TPU', 8))['count'] == 8


def _jax_devices(platform, device_kind, count, hosts=1):
  """A `JaxDevices` over `count` stand-ins for JAX devices, spread evenly
  over `hosts` processes, this process (JAX's process 0) the first."""
  devices = jax_devices.JaxDevices.__new__(jax_devices.JaxDevices)
  devices.platform = platform
  devices.mesh = types.SimpleNamespace(devices=np.array(
      [types.SimpleNamespace(device_kind=device_kind,
                             process_index=i * hosts // count)
       for i in range(count)]))
  return devices


def test_jax_devices_are_named_by_their_device_kind(monkeypatch):
  gpus = compute.devices(_jax_devices('gpu', 'NVIDIA H100 80GB HBM3', 2))
  assert {k: gpus[k] for k in ('kind', 'model', 'count', 'replicas',
                               'workers')} == {
      'kind': 'GPU', 'model': 'NVIDIA H100 80GB HBM3', 'count': 2,
      'replicas': 2, 'workers': 1}
  two_hosts = compute.devices(_jax_devices('gpu', 'NVIDIA H100 80GB HBM3', 8,
                                           hosts=2))
  assert {k: two_hosts[k] for k in ('count', 'replicas', 'workers')} == {
      'count': 4, 'replicas': 8, 'workers': 2}
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v3-8')
  tpu = compute.devices(_jax_devices('tpu', 'TPU v3', 8))  # 8 cores, 4 chips
  assert (tpu['model'], tpu['count'], tpu['replicas']) == ('TPU v3', 4, 8)
  cpu = compute.devices(_jax_devices('cpu', 'cpu', 1))
  assert (cpu['kind'], cpu['count']) == ('CPU', os.cpu_count())


def test_multi_worker_energy_and_co2e_cover_every_worker(monkeypatch):
  import tensorflow as tf
  monkeypatch.setattr(tf.config, 'list_physical_devices',
                      lambda kind=None: [f'{kind}:{i}' for i in range(2)])
  monkeypatch.setattr(tf.config.experimental, 'get_device_details',
                      lambda device: {'device_name': 'NVIDIA H100 80GB HBM3'})
  times = {'wall_s': 100.0, 'process_cpu_s': 0.0}
  settings = report_config(gpu_watts=300.0, pue=1.0, grid_gco2_per_kwh=400.0)
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, 'relu'),
                            keras.layers.Dense(1)])
  one = compute.section(model, _Strategy('GPU', 2), settings,
                        times, examples_seen=1000, train_seconds=50.0,
                        resumed_from_step=0, mixed_precision='float32')
  three = compute.section(model, _Strategy('GPU', 2, workers=3),
                          settings, times, examples_seen=1000,
                          train_seconds=50.0, resumed_from_step=0,
                          mixed_precision='float32')
  chief_kwh = 100 * 2 * 300 / 3.6e6  # Two GPUs, idle CPU.
  assert one['energy']['kwh'] == pytest.approx(chief_kwh)
  assert (one['devices']['workers'], one['energy']['workers']) == (1, 1)
  assert one['energy']['scope'] == 'this process, the only worker'
  assert three['devices']['workers'] == three['energy']['workers'] == 3
  assert three['devices']['replicas'] == 6
  assert three['energy']['chief_kwh'] == pytest.approx(chief_kwh)
  assert three['energy']['kwh'] == pytest.approx(3 * chief_kwh)
  assert three['energy']['co2e_kg'] == pytest.approx(3 * chief_kwh * 0.4)
  assert "3 x the chief's estimate" in three['energy']['scope']
  assert three['energy']['scope'] in three['scope']
  # Examples and FLOPs were global already: the same in both.
  assert three['training_flops'] == one['training_flops']
