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

Several hosts (`multi_worker`: TPU pod slices, GPU hosts) are one JAX
program: `join_cluster` starts `jax.distributed` from TF_CONFIG, the same
cluster description the TensorFlow backend reads (and Vertex AI and
Kubeflow's TFJob set), or else from JAX's own detection of its cluster
(Cloud TPU, SLURM, Open MPI, Kubernetes). The mesh then spans every host's
devices, ordered by process, so each host feeds its own contiguous slice of
every global batch; process 0 is the chief.

`JaxDevices` answers what the runner asks of a tf.distribute strategy
(`num_replicas_in_sync`, `scope()`), so the rest of the run is backend-blind.
"""

import contextlib
import os

from absl import logging

from tfpipeline import checkpointing
from tfpipeline import cluster
from tfpipeline.errors import Preempted
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
    """This process's devices (on one host, all of the mesh's)."""
    return [device for device in self.mesh.devices.flat
            if device.process_index == self.process_index]

  @property
  def num_replicas_in_sync(self) -> int:
    return self.mesh.devices.size

  @property
  def process_index(self) -> int:
    import jax  # pylint: disable=g-import-not-at-top
    return jax.process_index()

  @property
  def process_count(self) -> int:
    import jax  # pylint: disable=g-import-not-at-top
    return jax.process_count()

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

  def split_batch(self):
    """The sharding of one batch (batch, ...): batch axis split."""
    import jax  # pylint: disable=g-import-not-at-top
    return jax.sharding.NamedSharding(self.mesh,
                                      jax.sharding.PartitionSpec('data'))

  def preemption_watch(self):
    """`checkpointing.PreemptionWatch`'s interface: on one host, this
    process's signals; on several, JAX's preemption sync point, so every
    host saves at the same step and stops."""
    if self.process_count > 1:
      return _ClusterPreemptionWatch()
    return checkpointing.PreemptionWatch()


class _ClusterPreemptionWatch:
  """Stops every host of a run at the first loop end after any one of them
  is signalled (JAX's preemption service, started by `jax.distributed`,
  takes SIGTERM).

  The service sets the sync point one past the largest step any host has
  shown it, and answers True for that step only; Orbax also shows it each
  saved step. So each loop end shows every step since the last one, as a
  loop that checks each step would: the sync point is then a step every
  host shows at its next loop end. (Shown loop counts instead, the sync
  point became Orbax's step + 1, which no loop count reaches: the run went
  on to its end.)"""

  def __init__(self):
    self._shown = None  # The last step shown to the service.

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    pass

  def check(self, save, step: int) -> None:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    first = step if self._shown is None else self._shown + 1
    self._shown = step if self._shown is None else max(step, self._shown)
    if any(multihost_utils.reached_preemption_sync_point(shown)
           for shown in range(first, step + 1)):
      save(step)
      raise Preempted(f'a host was preempted at step {step}: checkpoint '
                      f'saved; rerun the same command to resume')


def create(name: str = 'auto', *, tpu: str = 'local', cpu_devices: int = 1,
           deterministic: bool = False) -> JaxDevices:
  """The devices for --strategy `name` on the JAX backend.

  Args:
    name: one of strategy.STRATEGIES; 'multi_worker' joins the cluster
      (`join_cluster`) and spans every host's devices.
    tpu: must be 'local': JAX drives the TPU chips of its own host.
    cpu_devices: split the host CPU into this many JAX devices (with
      `cpu`, or `auto` on a host without accelerators).
    deterministic: ask XLA for deterministic GPU kernels.

  Raises:
    UserError: the platform is absent, no cluster is described, or JAX
      already started without the requested CPU devices.
  """
  from tfpipeline import strategy as tf_strategy  # pylint: disable=g-import-not-at-top
  if name not in tf_strategy.STRATEGIES:
    raise UserError(f'--strategy={name}: expected one of '
                    f'{", ".join(tf_strategy.STRATEGIES)}')
  if tpu != 'local':
    raise UserError(f'--tpu={tpu}: on the JAX backend a TPU is driven from '
                    f'its own host (a TPU VM, a Colab TPU); run there and '
                    f'leave --tpu=local')
  _set_xla_flags(cpu_devices, deterministic)
  _keep_tensorflow_on_the_host()
  import jax  # pylint: disable=g-import-not-at-top
  if name == 'multi_worker':
    join_cluster()
  if name in _DEFAULT_PLATFORM + ('multi_worker',):
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
  if name == 'multi_worker':  # Every host's, ordered by process.
    devices = sorted(jax.devices(devices[0].platform),
                     key=lambda device: (device.process_index, device.id))
  result = JaxDevices(devices)
  logging.info('JAX devices: %d %s on %d host(s)', len(devices),
               result.platform.upper(), result.process_count)
  return result


def join_cluster() -> None:
  """Starts `jax.distributed` (once a process) from TF_CONFIG or, without
  it, from JAX's detection of its cluster; before JAX's first computation.

  Raises:
    UserError: TF_CONFIG is unusable, or no cluster is described.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized():
    return
  if cluster.tf_config() is not None:
    address, count, process_id = cluster.jax_processes()
    jax.distributed.initialize(address, count, process_id)
  else:
    try:
      jax.distributed.initialize()
    except (ValueError, RuntimeError) as e:
      raise UserError(
          f'--strategy=multi_worker with --backend=jax: no cluster found '
          f'({str(e).strip()}); set TF_CONFIG as for the TensorFlow backend '
          f'(the chief or worker 0 hosts the coordinator), or run where JAX '
          f'detects its cluster (Cloud TPU slices, SLURM, Open MPI, '
          f'Kubernetes)') from None
  logging.info('joined the JAX cluster as process %d of %d',
               jax.process_index(), jax.process_count())


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
