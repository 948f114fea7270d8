"""Devices of a run on the JAX backend: a one-axis mesh, data parallel.

The --strategy names map onto JAX's platforms: `cpu`, `gpu` and `tpu` take
that platform's local devices, `auto` (and `mirrored`) JAX's default one
(TPU, else GPU, else CPU). Several devices share each global batch over a
`jax.sharding.Mesh` with one axis, 'data': the training state is replicated
on every device and each block of batches, shaped (steps, batch, ...), is
split along its batch axis (axis 1). XLA's partitioner (GSPMD) then inserts
the gradient all-reduce itself.

`jax.sharding` is used directly rather than `keras.distribution.DataParallel`:
DataParallel's data layout shards axis 0 of an input, which in a block is the
step axis, and the engine keeps the state outside Keras's variables anyway
(measured: BUILD_NOTES.md, "Issue 20 (JAX backend): first measurements").

`JaxDevices` answers what the runner asks of a tf.distribute strategy
(`num_replicas_in_sync`, `scope()`), so the rest of the run is backend-blind.
"""

import contextlib
import os

from absl import logging

from tfpipeline.errors import UserError

_PLATFORMS = {'cpu': 'cpu', 'gpu': 'gpu', 'tpu': 'tpu'}
# Names that take JAX's default platform, every local device of it.
_DEFAULT_PLATFORM = ('auto', 'mirrored')
_DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'


class JaxDevices:
  """The run's devices as a one-axis ('data') mesh.

  Attributes:
    mesh: the `jax.sharding.Mesh`.
    platform: 'cpu', 'gpu' or 'tpu'.
  """

  def __init__(self, devices):
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    self.mesh = jax.sharding.Mesh(np.array(devices), ('data',))
    self.platform = devices[0].platform

  @property
  def devices(self) -> list:
    return list(self.mesh.devices.flat)

  @property
  def num_replicas_in_sync(self) -> int:
    return self.mesh.devices.size

  def scope(self):
    """Nothing to enter: the engine places the state itself."""
    return contextlib.nullcontext()

  def replicated(self):
    """The sharding of the training state: a whole copy on every device."""
    import jax  # pylint: disable=g-import-not-at-top
    return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

  def split_batches(self):
    """The sharding of a block (steps, batch, ...): batch axis split."""
    import jax  # pylint: disable=g-import-not-at-top
    return jax.sharding.NamedSharding(
        self.mesh, jax.sharding.PartitionSpec(None, 'data'))


def create(name: str = 'auto', *, tpu: str = 'local', cpu_devices: int = 1,
           deterministic: bool = False) -> JaxDevices:
  """The devices for --strategy `name` on the JAX backend.

  Args:
    name: one of strategy.STRATEGIES; 'multi_worker' is not supported yet.
    tpu: must be 'local': JAX drives the TPU chips of its own host.
    cpu_devices: split the host CPU into this many JAX devices (with
      `cpu`, or `auto` on a host without accelerators).
    deterministic: ask XLA for deterministic GPU kernels.

  Raises:
    UserError: the platform is absent, or JAX already started without the
      requested CPU devices.
  """
  from tfpipeline import strategy as tf_strategy  # pylint: disable=g-import-not-at-top
  if name not in tf_strategy.STRATEGIES:
    raise UserError(f'--strategy={name}: expected one of '
                    f'{", ".join(tf_strategy.STRATEGIES)}')
  if name == 'multi_worker':
    raise UserError('--strategy=multi_worker with --backend=jax is not '
                    'supported yet (several hosts need jax.distributed); '
                    'train on one host, or use --backend=tensorflow')
  if tpu != 'local':
    raise UserError(f'--tpu={tpu}: on the JAX backend a TPU is driven from '
                    f'its own host (a TPU VM, a Colab TPU); run there and '
                    f'leave --tpu=local')
  _set_xla_flags(cpu_devices, deterministic)
  _keep_tensorflow_on_the_host()
  import jax  # pylint: disable=g-import-not-at-top
  if name in _DEFAULT_PLATFORM:
    devices = jax.local_devices()
  else:
    platform = _PLATFORMS[name]
    try:
      devices = jax.local_devices(backend=platform)
    except RuntimeError:
      devices = []
    if not devices:
      raise UserError(
          f'--strategy={name}: JAX sees no {platform.upper()}; check that '
          f'this host has one and that jax is installed for it '
          f"(pip install 'jax[cuda13]' or 'jax[tpu]')")
  if devices[0].platform == 'cpu':
    if len(devices) < cpu_devices:
      raise UserError(
          f'--cpu_devices={cpu_devices}: JAX started with {len(devices)} '
          f'CPU device(s) before this run set {_DEVICE_COUNT_FLAG}; run in a '
          f'fresh process')
    devices = devices[:cpu_devices]
  result = JaxDevices(devices)
  logging.info('JAX devices: %d %s', len(devices), result.platform.upper())
  return result


def is_tpu(devices: JaxDevices) -> bool:
  return devices.platform == 'tpu'


def is_cpu(devices: JaxDevices) -> bool:
  return devices.platform == 'cpu'


def _set_xla_flags(cpu_devices: int, deterministic: bool) -> None:
  """XLA reads XLA_FLAGS when JAX starts its first backend (at its first
  device query, not at import); `create` checks afterwards that it took."""
  wanted = []
  if cpu_devices > 1:
    wanted.append(f'{_DEVICE_COUNT_FLAG}={cpu_devices}')
  if deterministic:
    wanted.append('--xla_gpu_deterministic_ops=true')
  names = {flag.split('=')[0] for flag in wanted}
  kept = [flag for flag in os.environ.get('XLA_FLAGS', '').split()
          if flag.split('=')[0] not in names]
  if wanted:
    os.environ['XLA_FLAGS'] = ' '.join(kept + wanted)


def _keep_tensorflow_on_the_host() -> None:
  """tf.data runs on the host; TensorFlow must not take an accelerator
  (its GPU allocator would reserve the memory JAX needs)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TensorFlow's runtime already started.
    if tf.config.get_visible_devices('GPU'):
      logging.warning('TensorFlow already holds a GPU beside JAX')
