"""Command line: `python -m tfpipeline.train` (also `tfpipeline-train`).

    python -m tfpipeline.train --model_dir=/tmp/runs/diabetes
    python -m tfpipeline.train --config=seed_keras_mlp --config.train.epochs=3
    python -m tfpipeline.train --config=digits_cnn \\
        --config.export.formats="('saved_model','tflite','onnx')"

export.formats adds model.tflite and model.onnx (pip install
'tfpipeline[export]'), each checked against model.keras on the test split
(export.tflite_quantization: none, dynamic_range, float16); see README,
"Exports for devices and other runtimes", and tfpipeline/config.py for
every config key.

Trainer options, as Keras's callbacks and optimizer arguments, on every
engine and resumed exactly: --config.train.early_stopping.patience=5 (and
.metric, .mode, .min_delta), --config.train.keep_best=True,
--config.optimizer.reduce_on_plateau.patience=2 (and .factor,
.min_learning_rate), --config.optimizer.warmup_epochs=2,
--config.optimizer.clipnorm (global_clipnorm, clipvalue),
--config.optimizer.gradient_accumulation_steps=4 (a step: 4 passes of
train.global_batch_size, gradients summed),
--config.train.label_smoothing, --config.train.profile_steps="(100, 200)";
see README, "Early stopping, the best model, plateaus and warm-up".
Class weights for the cross-entropy losses, by class id:
--config.train.class_weight="(1.0, 4.0)", or =balanced (n / (classes x
count) from the training split's labels); see README, "Class weights".

A --model_dir that holds a run is resumed from its newest checkpoint.

The console shows tfpipeline's own lines, plain: the strategy, the data, one
line per epoch (loss, validation metrics, examples/s, and the share of the
last device call spent waiting for input, "stall", when that call took a
second or more), the test metrics and where the outputs went. Within an
epoch, on a terminal, a live bar (steps, examples/s, loss, ETA); elsewhere
(a pipe, a file) a progress line at least every 30 s. Warnings and errors
always show, with absl's prefix (level, time, thread, file:line).
--verbosity=1 adds TensorFlow's, TFDS's and codecarbon's lines, every line
in absl's format, without the bar; TF_CPP_MIN_LOG_LEVEL, when set, decides
TensorFlow's C++ lines.

Exit codes: 0 done; 2 bad input (one-line message, nothing written); 3
stopped by SIGTERM/SIGINT at any moment (in training: checkpoint saved;
rerun the same command); 1 any other failure.
"""

import pathlib
import sys

from absl import app
from absl import flags

from tfpipeline import backend
from tfpipeline import config_flag
from tfpipeline import console
from tfpipeline import engines
from tfpipeline import errors
from tfpipeline.errors import CheckpointError
from tfpipeline.errors import Preempted
from tfpipeline.errors import UserError
from tfpipeline.errors import WorkersFailed

_CONFIG = config_flag.define()
_MODEL_DIR = config_flag.define_model_dir(
    '/tmp/tfpipeline',
    'Directory for every output: config.json, metrics, checkpoints, '
    'TensorBoard logs, model.keras, saved_model/ (and model.tflite, '
    'model.onnx with config.export.formats). New or empty, or a run to '
    'resume.')
_STRATEGY = flags.DEFINE_enum(
    'strategy', 'auto', ['auto', 'cpu', 'gpu', 'mirrored', 'multi_worker',
                         'tpu'],
    'tf.distribute strategy. auto: TPU if found, else MirroredStrategy over '
    'several GPUs (or --cpu_devices logical CPUs), else one device. '
    'multi_worker: one process per host, described by TF_CONFIG (on '
    '--backend=jax also a cluster JAX detects: Cloud TPU, SLURM, Open MPI, '
    'Kubernetes). On --backend=jax the names pick JAX devices.')
_TPU = flags.DEFINE_string(
    'tpu', 'local', "TPU address with --strategy=tpu: 'local' (TPU VM, Colab) "
    'or grpc://host:port.')
_CPU_DEVICES = flags.DEFINE_integer(
    'cpu_devices', 1, 'Split the CPU into this many logical devices, so '
    '--strategy=mirrored runs on a CPU-only machine.', lower_bound=1)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False,
    'Resume a run in --model_dir even if the config changes what its steps '
    'compute (model, data, optimizer...) or its data changed (an edited '
    'file, another TFDS version: identity.json then lists both). Changing '
    'epochs, steps_per_loop, checkpointing or nan_policy is always allowed; '
    'changing --engine never is.')
_BACKEND = flags.DEFINE_enum(
    'backend', None, list(backend.BACKENDS),
    "Keras's backend (default: the config's train.backend, 'tensorflow'). "
    'jax: the own loop as jitted JAX programs, the path TPUs (TPU VMs, Colab '
    "TPUs) and GPU images with JAX take; needs pip install 'tfpipeline[jax]'."
    ' tf.data feeds both. A run resumes on the backend it started on.')
_LAUNCHER = flags.DEFINE_enum(
    'launcher', 'local', ['local', 'ray'],
    "local: this process runs (one worker of) the run. ray: Ray Train starts "
    '--num_workers workers running this command with '
    '--strategy=multi_worker (TF_CONFIG set by Ray, worker 0 the chief), '
    'restarts them from the newest checkpoint when one fails '
    "(--max_failures); needs pip install 'tfpipeline[ray]'. See README, "
    '"More than one machine".')
_NUM_WORKERS = flags.DEFINE_integer(
    'num_workers', 2, 'With --launcher=ray: training processes (one a '
    'machine, or a GPU).', lower_bound=1)
_RAY_ADDRESS = flags.DEFINE_string(
    'ray_address', None, 'With --launcher=ray: the Ray cluster to join '
    "('auto': the one this machine belongs to, or host:port). Default: a "
    'local cluster on this machine for this run, with no dashboard or job '
    'API and a token generated for it.')
_RESOURCES_PER_WORKER = flags.DEFINE_string(
    'resources_per_worker', None, 'With --launcher=ray: Ray resources of '
    'each worker, a JSON object or a list like CPU=4,GPU=1. Default: CPU=1.')
_MAX_FAILURES = flags.DEFINE_integer(
    'max_failures', 0, 'With --launcher=ray: how many failed attempts (a '
    'worker killed or lost, or preempted: exit 3) Ray retries, restarting '
    'every worker from the newest checkpoint; -1: without end.',
    lower_bound=-1)
_LAUNCHER_FLAGS = ('launcher', 'num_workers', 'ray_address',
                   'resources_per_worker', 'max_failures')
_ENGINE = flags.DEFINE_enum(
    'engine', 'tfpipeline', list(engines.NAMES),
    "Training engine: tfpipeline's XLA multi-step loop, or Keras model.fit "
    '(the reference).')


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with exit code 2 and one line for any bad flag."""
  try:
    return config_flag.parse(argv)
  except UserError as e:
    _exit_bad_input(str(e))


def _exit_bad_input(message: str) -> None:
  console.last_line(f'error: {message}')
  sys.exit(2)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _exit_bad_input(f'unexpected arguments {argv[1:]}; flags look like '
                    f'--name=value')
  console.quiet()
  try:
    if _LAUNCHER.value == 'ray':
      _launch_on_ray()
    else:
      _run_here()
  except UserError as e:
    _exit_bad_input(str(e))
  except Preempted as e:
    console.last_line(f'preempted: {e}')
    sys.exit(3)
  except (FloatingPointError, CheckpointError, WorkersFailed) as e:
    console.last_line(f'error: {e}')
    sys.exit(1)


def _run_here() -> None:
  """This process runs the run (or, with TF_CONFIG, one of its workers)."""
  for name in _LAUNCHER_FLAGS[1:]:
    if flags.FLAGS[name].present:
      raise UserError(f'--{name} needs --launcher=ray')
  from tfpipeline.runner import run  # pylint: disable=g-import-not-at-top
  run(_CONFIG.value, _MODEL_DIR.value, strategy=_STRATEGY.value,
      tpu=_TPU.value, cpu_devices=_CPU_DEVICES.value, engine=_ENGINE.value,
      backend=_BACKEND.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)


def _launch_on_ray() -> None:
  """Checks what a worker's chief would check, then runs the command on
  Ray's workers (ray_launcher)."""
  from tfpipeline import ray_launcher  # pylint: disable=g-import-not-at-top
  from tfpipeline import ray_local  # pylint: disable=g-import-not-at-top
  from tfpipeline import runner  # pylint: disable=g-import-not-at-top
  if _STRATEGY.value not in ('auto', 'multi_worker'):
    raise UserError(f'--strategy={_STRATEGY.value}: with --launcher=ray '
                    f'every worker runs --strategy=multi_worker; drop '
                    f'--strategy')
  ray_local.check_installed('--launcher=ray')
  cluster = ray_launcher.Cluster(
      _NUM_WORKERS.value, _RAY_ADDRESS.value,
      _RESOURCES_PER_WORKER.value and ray_launcher.parse_resources(
          _RESOURCES_PER_WORKER.value), _MAX_FAILURES.value)
  config = runner.checked_config(_CONFIG.value, backend=_BACKEND.value,
                                 engine=_ENGINE.value)
  # Each worker has at least one replica (JAX on CPUs: --cpu_devices).
  runner.check_batch_split(config, cluster.num_workers * (
      _CPU_DEVICES.value if config.train.backend == 'jax' else 1))
  runner.check_chief_inputs(config, pathlib.Path(_MODEL_DIR.value))
  ray_launcher.launch(
      ray_launcher.worker_argv(sys.argv[1:], _LAUNCHER_FLAGS),
      _MODEL_DIR.value, cluster)


def cli() -> None:
  """Console script `tfpipeline-train`."""
  errors.stop_on_signals()  # Exit 3, not 143, from the first second.
  try:
    app.run(main, flags_parser=_parse_flags)
  except errors.Interrupted as e:
    print(e, file=sys.stderr)
    sys.exit(3)


if __name__ == '__main__':
  cli()
