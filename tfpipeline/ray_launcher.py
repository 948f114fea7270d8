"""--launcher=ray: Ray Train places the workers of a multi-worker run.

The driver (`launch`) checks what it can before any Ray cluster starts,
then starts a local cluster (no address) or joins one (`auto`, an
address), and runs Ray Train's `DataParallelTrainer` over N workers, with a
backend that sets TF_CONFIG on each as Ray's `TensorflowTrainer` does
(without importing TensorFlow into Ray's processes); each worker runs the same command a hand-started
worker runs, `python -m tfpipeline.train ... --strategy=multi_worker`, as a
child process (worker 0, Ray's rank 0, is the chief). A child, not
`tfpipeline.run` in the Ray worker: Ray runs the training function in a
thread, where no signal handler can be installed (tfpipeline's preemption
watch and TensorFlow's PreemptionCheckpointHandler both install one), and
Keras takes one backend per process. The child dies with its Ray worker
(Linux's parent-death signal), so a worker Ray kills takes its training
process with it.

A worker that dies or exits non-zero fails the attempt: Ray stops the
worker group and, up to `max_failures` times, starts a new one, which
resumes from the chief's newest checkpoint in model_dir at the exact next
step. The controller appends each failed attempt to the run's audit log
(the chief appends its own outcome, as in any run); a killed chief cannot.

Console: the chief's lines, and only the warnings and errors of the other
workers (they run with --verbosity=-1); Ray prefixes each with its worker.
"""

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys

from absl import logging

from tfpipeline import ray_local
from tfpipeline.errors import Preempted
from tfpipeline.errors import UserError
from tfpipeline.errors import WorkersFailed
from tfpipeline.errors import first_line

def parse_resources(text: str) -> dict[str, float]:
  """--resources_per_worker: a JSON object or a k=v list ('CPU=2,GPU=1').

  Raises:
    UserError: neither, or a value that is not a non-negative number.
  """
  text = text.strip()
  try:
    resources = (json.loads(text) if text.startswith('{') else dict(
        item.split('=', 1) for item in text.split(',') if item.strip()))
    resources = {name.strip(): float(value)
                 for name, value in resources.items()}
  except (ValueError, TypeError, AttributeError):
    resources = None
  if not resources or any(value < 0 for value in resources.values()):
    raise UserError(f'--resources_per_worker={text}: expected a JSON object '
                    f'or a list like CPU=2,GPU=1 of non-negative numbers')
  return resources


def worker_argv(argv: list[str], launcher_flags: tuple[str, ...]) -> list[str]:
  """The command line of each worker: `argv` (flags after the program,
  --flagfile expanded) without the launcher's flags and --strategy, and
  with --strategy=multi_worker."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
  dropped = set(launcher_flags) | {'strategy'}
  kept, skip_value = [], False
  for arg in argv:
    if skip_value:
      skip_value = False
      continue
    name = arg.lstrip('-').split('=', 1)[0]
    if arg.startswith('-') and name in dropped:
      skip_value = '=' not in arg  # --name value
      continue
    kept.append(arg)
  return kept + ['--strategy=multi_worker']


@dataclasses.dataclass(frozen=True)
class Cluster:
  """Where and how the workers run.

  Attributes:
    num_workers: training processes (Ray Train workers).
    address: None to start a local cluster; 'auto' or an address to join.
    resources: Ray resources of each worker ({'CPU': 1} by default).
    max_failures: failed attempts Ray retries (-1: without end).
  """
  num_workers: int
  address: str | None = None
  resources: dict | None = None
  max_failures: int = 0

  @property
  def per_worker(self) -> dict[str, float]:
    return self.resources or {'CPU': 1}


def launch(argv: list[str], model_dir: str, cluster: Cluster) -> None:
  """Runs `argv` (a worker's command line, `worker_argv`) on the cluster's
  workers until the chief completes.

  Raises:
    UserError: a worker's bad input (its one line), or a local cluster too
      small for the workers.
    Preempted: the workers were stopped (exit 3) and not retried.
    WorkersFailed: any other failure, once the retries are spent.
  """
  with _connected(cluster) as storage:
    from ray import train  # pylint: disable=g-import-not-at-top
    from ray.train.v2.api import data_parallel_trainer  # pylint: disable=g-import-not-at-top
    trainer = data_parallel_trainer.DataParallelTrainer(
        _run_worker,
        train_loop_config={'argv': argv, 'cwd': os.getcwd()},
        backend_config=_tf_config_backend(),
        scaling_config=train.ScalingConfig(
            num_workers=cluster.num_workers,
            resources_per_worker=cluster.per_worker,
            use_gpu=bool(cluster.per_worker.get('GPU'))),
        run_config=train.RunConfig(
            name='tfpipeline', storage_path=storage,
            failure_config=train.FailureConfig(
                max_failures=cluster.max_failures),
            callbacks=[_audited_attempts(os.path.abspath(model_dir))]))
    try:
      trainer.fit()
    except train.TrainingFailedError as e:
      raise _outcome(e) from None
  logging.info('wrote %s (%d workers under Ray; its audit log lists every '
               'attempt)', model_dir, cluster.num_workers)


@contextlib.contextmanager
def _connected(cluster: Cluster):
  """Ray initialised for this process (`ray_local.connected`); yields a
  directory for Ray Train's own records, removed after. Failed attempts
  are reported by _audit_failure."""
  need = cluster.num_workers * cluster.per_worker.get('CPU', 1)
  with ray_local.connected(
      cluster.address, max(os.cpu_count() or 1, math.ceil(need))) as scratch:
    if not cluster.address:
      import ray  # pylint: disable=g-import-not-at-top
      _check_fits(ray.cluster_resources(), cluster)
    yield os.path.join(scratch, 'results')


def _check_fits(available: dict, cluster: Cluster) -> None:
  """A local cluster has every resource the workers ask for (Ray would
  wait for them forever)."""
  for name, amount in cluster.per_worker.items():
    if amount * cluster.num_workers > available.get(name, 0):
      raise UserError(
          f'--resources_per_worker: {cluster.num_workers} workers need '
          f'{amount * cluster.num_workers:g} {name}, and this machine has '
          f'{available.get(name, 0):g}; ask for less, or join a cluster with '
          f'--ray_address')


def _tf_config_backend():
  """A Ray Train backend that sets TF_CONFIG on each worker (a free port on
  its node; worker i is task i), as Ray's TensorflowTrainer does, without
  importing TensorFlow into the driver, Ray's controller and its workers
  (12 s each on a 2-core machine: BUILD_NOTES.md)."""
  import ray  # pylint: disable=g-import-not-at-top
  from ray.train import backend  # pylint: disable=g-import-not-at-top

  class TfConfigBackend(backend.Backend):

    def on_start(self, worker_group, backend_config):
      del backend_config
      addresses = worker_group.execute(_free_address)
      ray.get([worker_group.execute_single_async(
          index, _set_tf_config, addresses, index)
               for index in range(len(worker_group))])

  class TfConfig(backend.BackendConfig):

    @property
    def backend_cls(self):
      return TfConfigBackend

  return TfConfig()


def _free_address() -> str:
  """host:port of a port free now on this Ray worker's node, below Linux's
  ephemeral range (32768-60999) and above Ray's workers' (10002-19999):
  in an early run here, a free ephemeral port (what Ray's TensorflowTrainer
  picks) was taken before TensorFlow's server bound it, seconds later."""
  import ray  # pylint: disable=g-import-not-at-top
  for port in random.sample(range(20000, 32768), 100):
    with socket.socket() as s:
      try:
        s.bind(('', port))
      except OSError:
        continue
    return f'{ray.util.get_node_ip_address()}:{port}'
  raise OSError('no free port in 20000-32767 for TensorFlow\'s server')


def _set_tf_config(addresses: list[str], index: int) -> None:
  os.environ['TF_CONFIG'] = json.dumps(
      {'cluster': {'worker': addresses},
       'task': {'type': 'worker', 'index': index}})


class WorkerExit(Exception):
  """A worker's command ended with a non-zero exit code (its last line)."""

  def __init__(self, rank: int, code: int, line: str):
    super().__init__(rank, code, line)
    self.rank, self.code, self.line = rank, code, line

  def __str__(self) -> str:
    how = (f'killed by {signal.Signals(-self.code).name}' if self.code < 0
           else f'exit {self.code}')
    return f'worker {self.rank} {how}: {self.line}'


def _run_worker(loop_config: dict) -> None:
  """Ray Train's function on each worker: the worker's command as a child
  that dies with this process, its lines shown; rank 0 (the chief) logs
  every line, the others (--verbosity=-1) their warnings and errors."""
  from ray import train  # pylint: disable=g-import-not-at-top
  rank = train.get_context().get_world_rank()
  child = ray_local.start_train(
      loop_config['argv'] + ([] if rank == 0 else ['--verbosity=-1']),
      cwd=loop_config['cwd'], dies_by=signal.SIGKILL, stderr=subprocess.PIPE)
  last = ''
  for line in child.stderr:
    last = line.strip() or last
    sys.stderr.write(line)
    sys.stderr.flush()
  if child.wait():
    raise WorkerExit(rank, child.returncode, last)


def _outcome(error) -> Exception:
  """The exception that gives the driver its exit code: a worker's bad
  input (2), preemption (3), or a failure (1)."""
  exits = [_cause(e) for e in getattr(error, 'worker_failures', {}).values()]
  exits = [e for e in exits if isinstance(e, WorkerExit)]
  for code, kind in ((2, UserError), (3, Preempted)):
    for worker_exit in exits:
      if worker_exit.code == code:
        return kind(worker_exit.line.removeprefix('error: ').removeprefix(
            'preempted: '))
  detail = str(exits[0]) if exits else str(error).strip().splitlines()[0]
  return WorkersFailed(f'the workers failed under Ray ({detail}); the audit '
                       f'log lists each attempt')


def _audited_attempts(model_dir: str):
  """A Ray Train callback (run by its controller) that appends each failed
  attempt to the audit log of `model_dir`, once the chief has made it."""
  from ray import train  # pylint: disable=g-import-not-at-top

  class AuditedAttempts(train.UserCallback):

    def after_exception(self, run_context, worker_exceptions):
      del run_context
      _audit_failure(model_dir, worker_exceptions)

  return AuditedAttempts()


def _audit_failure(model_dir: str, worker_exceptions: dict) -> None:
  """Says which workers failed (on the console, through Ray) and appends it
  to the audit log (if the chief has made `model_dir`)."""
  from tfpipeline import integrity  # pylint: disable=g-import-not-at-top
  from tfpipeline.report import provenance  # pylint: disable=g-import-not-at-top
  errors = {rank: _cause(error) for rank, error in worker_exceptions.items()}
  causes = '; '.join(
      str(errors[rank]) if isinstance(errors[rank], WorkerExit) else
      f'worker {rank}: {first_line(errors[rank])}' for rank in sorted(errors))
  print(f'attempt failed: {causes}', file=sys.stderr, flush=True)
  if not os.path.isdir(model_dir):
    return
  integrity.append_audit(pathlib.Path(model_dir), {
      'launcher': 'ray', 'user': provenance.user(),
      'host': provenance.host(), 'command': sys.argv,
      'outcome': f'failed: {causes}', 'finished_utc': provenance.utc_now()})


def _cause(error: BaseException) -> BaseException:
  """The exception a Ray worker raised, out of Ray's wrapping."""
  return getattr(error, 'cause', None) or error
