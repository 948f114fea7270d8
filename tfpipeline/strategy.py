"""tf.distribute strategy selection and accelerator start-up.

A string-keyed factory in the manner of TensorFlow Model Garden's
`distribute_utils`: it validates its arguments and turns every "not here"
into a UserError that says what to check.
"""

import os

from absl import logging
import tensorflow as tf

from tfpipeline import cluster
from tfpipeline.errors import UserError

STRATEGIES = ('auto', 'cpu', 'gpu', 'mirrored', 'multi_worker', 'tpu')


def split_cpu(num_devices: int) -> None:
  """Splits the CPU into `num_devices` logical devices (before TF starts)."""
  if num_devices <= 1:
    return
  cpu = tf.config.list_physical_devices('CPU')[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
  except RuntimeError:
    raise UserError('--cpu_devices must be set before TensorFlow starts its '
                    'runtime; call tfpipeline.run in a fresh process') from None


def create(name: str = 'auto', *, tpu: str = 'local',
           cpu_devices: int = 1) -> tf.distribute.Strategy:
  """Returns the strategy for `name` (one of STRATEGIES).

  Args:
    name: 'auto' picks a TPU if one is found, else MirroredStrategy over
      several GPUs (or over `cpu_devices` logical CPUs), else one device.
    tpu: TPU address for 'tpu': 'local' (TPU VM, Colab) or 'grpc://host:port'.
    cpu_devices: logical CPU devices to split the CPU into (for mirrored).
  """
  if name not in STRATEGIES:
    raise UserError(f'--strategy={name}: expected one of {", ".join(STRATEGIES)}')
  split_cpu(cpu_devices)
  # Physical devices: listing logical ones would start the runtime, and
  # MultiWorkerMirroredStrategy must configure collectives before that.
  gpus = tf.config.list_physical_devices('GPU')
  if name == 'auto':
    if _tpu_present():
      name = 'tpu'
    elif len(gpus) > 1 or (not gpus and cpu_devices > 1):
      name = 'mirrored'
    else:
      name = 'gpu' if gpus else 'cpu'
  if name == 'cpu':
    strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  elif name == 'gpu':
    if not gpus:
      raise UserError('--strategy=gpu: no GPU is visible to TensorFlow; check '
                      'nvidia-smi, CUDA_VISIBLE_DEVICES and that '
                      'tensorflow[and-cuda] is installed')
    strategy = tf.distribute.OneDeviceStrategy('/gpu:0')
  elif name == 'mirrored':
    devices = tf.config.list_logical_devices('GPU' if gpus else 'CPU')
    # GPUs keep TF's default (NCCL). Between CPU devices the default,
    # ReductionToOneDevice, cost 0.56 ms a step against 0.40 ms for
    # HierarchicalCopyAllReduce (seeds' model, batch 256; BUILD_NOTES.md).
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in devices], cross_device_ops=None if gpus else (
            tf.distribute.HierarchicalCopyAllReduce()))
  elif name == 'multi_worker':
    cluster.check_multi_worker()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  else:
    strategy = _tpu_strategy(tpu)
  logging.info('strategy %s (%s) with %d replica(s)', name,
               type(strategy).__name__, strategy.num_replicas_in_sync)
  return strategy


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
  return isinstance(strategy, tf.distribute.TPUStrategy)


def is_cpu(strategy: tf.distribute.Strategy) -> bool:
  """Whether every device the strategy computes on is a CPU."""
  return all('CPU' in device.upper()
             for device in strategy.extended.worker_devices)


# PCI vendor id of Google's TPU chips, as libtpu and JAX detect them.
_GOOGLE_PCI_VENDOR = '0x1ae0'
_TPU_ENVIRONMENT = ('TPU_NAME', 'COLAB_TPU_ADDR', 'TPU_ACCELERATOR_TYPE')


def _tpu_present(dev: str = '/dev',
                 pci: str = '/sys/bus/pci/devices') -> bool:
  """Whether this host has a TPU, without probing cloud metadata servers.

  TPU VMs up to v4 expose /dev/accel*; v5e and later expose VFIO devices,
  which GPU VMs with VFIO passthrough have too, so /dev/vfio counts only
  with a Google PCI device beside it.
  """
  if any(os.environ.get(name) for name in _TPU_ENVIRONMENT):
    return True
  devices = _listdir(dev)
  if any(name.startswith('accel') for name in devices):
    return True
  return 'vfio' in devices and any(
      _read(os.path.join(pci, device, 'vendor')) == _GOOGLE_PCI_VENDOR
      for device in _listdir(pci))


def _read(path: str) -> str:
  try:
    with open(path, encoding='ascii') as f:
      return f.read().strip()
  except (OSError, UnicodeDecodeError):
    return ''


def _listdir(path: str) -> list[str]:
  try:
    return os.listdir(path)
  except OSError:
    return []


def _tpu_strategy(address: str) -> tf.distribute.TPUStrategy:
  """Connects (remote addresses only), initialises the TPU system once."""
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu='' if address == 'local' else address)
    if address not in ('', 'local'):
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, RuntimeError, tf.errors.OpError) as e:
    raise UserError(
        f'--strategy=tpu: no TPU found at --tpu={address} ({type(e).__name__}'
        f'); check that this is a TPU VM or a Colab TPU runtime (Runtime > '
        f'Change runtime type), or pass --tpu=grpc://host:port for a remote '
        f'TPU') from None
  return tf.distribute.TPUStrategy(resolver)
