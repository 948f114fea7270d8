"""Experiment configs: the embedded default, loading by name or path, checks.

An experiment is a Python file with `get_config()` returning an
`ml_collections.ConfigDict` (the big_vision / Flax convention). This module's
own `get_config()` is the embedded default: the diabetes regression, every key
documented. Experiments in `experiments/` start from it and change what
differs, so every config has every key and overrides always find their field.

This module imports no TensorFlow: `--help` and config errors stay fast.
"""

import importlib.util
import json
import os
import pathlib
import sys
import traceback

from ml_collections import config_dict

from tfpipeline import config_checks
# Integrated Gradients baselines by kind of data, as the checks take them.
from tfpipeline.config_checks import IG_BASELINES  # pylint: disable=unused-import
from tfpipeline.errors import UserError

# Keys a resumed run may change: they do not change what the steps compute.
RESUMABLE_CHANGES = frozenset({
    'train.epochs', 'train.steps_per_loop', 'train.checkpoint_every_steps',
    'train.keep_checkpoints', 'train.nan_policy', 'data.data_dir',
    'data.download', 'data.max_memory_mb'})
# Prefixes of keys a resumed run may change: they act after training.
RESUMABLE_PREFIXES = ('report.', 'export.')

# Where bare experiment names are looked up, in this order: the working
# directory, a source checkout, an installed package's data files.
_EXPERIMENT_DIRS = (
    pathlib.Path.cwd() / 'experiments',
    pathlib.Path(__file__).resolve().parent.parent / 'experiments',
    pathlib.Path(sys.prefix) / 'share' / 'tfpipeline' / 'experiments',
)


def get_config() -> config_dict.ConfigDict:
  """The embedded default experiment: diabetes progression regression.

  The seeds' model (Dense 64 relu, Dense 1), adam, mse, on the 442-patient
  diabetes data that scikit-learn ships, read through the package's TFDS
  builder with a fixed train/validation/test split, reported by sex.
  """
  c = config_dict.ConfigDict()

  c.data = config_dict.ConfigDict()
  c.data.source = 'tfds'  # synthetic | csv | npz | parquet | tfds
  c.data.name = 'diabetes'  # TFDS dataset name (catalogue or this package's)
  c.data.data_dir = config_dict.placeholder(str)  # TFDS data_dir; None: TFDS default
  c.data.download = True  # tfds: may download and prepare a missing dataset
  c.data.train_split = 'train'  # tfds split names; slicing works: 'train[:80%]'
  c.data.validation_split = 'validation'
  c.data.test_split = 'test'
  c.data.path = config_dict.placeholder(str)  # csv (.csv, .csv.gz) / npz file; parquet file or directory of parts
  # The columns: () / '' / 'auto' take the dataset's own (this package's
  # TFDS datasets name theirs: diabetes trains on its ten columns, predicts
  # progression, groups by sex; a catalogue dataset: its supervised keys).
  c.data.features = ()  # columns / keys; (): the dataset's, else every column but label, group
  c.data.label = ''  # label column / key; '': the TFDS dataset's (required for files)
  c.data.group = config_dict.FieldReference('auto', field_type=str)  # fairness groups; auto: the dataset's, if any; None: no groups
  c.data.validation_fraction = 0.15  # files (csv, npz, parquet): held out, seeded
  c.data.test_fraction = 0.15
  c.data.split_seed = 0
  c.data.max_memory_mb = 0  # csv, parquet: a larger table (as float32) is memory-mapped from a cache beside it; 0: half the RAM
  c.data.num_examples = 1000  # synthetic: training rows
  c.data.num_eval_examples = 200  # synthetic: validation rows and test rows
  c.data.num_features = 10  # synthetic
  c.data.num_targets = 1  # synthetic
  c.data.distribution = 'uniform'  # synthetic: uniform [0, 1) | normal
  c.data.augment = ()  # training only: random_flip, random_crop (images)
  c.data.crop_padding = 4  # random_crop: pad by this many pixels, crop back
  c.data.vocab_size = 0  # text: tokens incl. padding and OOV (required for text)
  c.data.sequence_length = 0  # text: tokens per example (pad or truncate); 0: 128

  c.model = config_dict.ConfigDict()
  c.model.layers = ()  # ((Keras layer class, kwargs), ...); () = the MLP below
  c.model.hidden_units = (64,)  # MLP widths, used when model.layers is ()
  c.model.activation = 'relu'
  c.model.output_units = 1
  c.model.output_activation = 'auto'  # auto: from the loss (linear/sigmoid/softmax)
  c.model.normalize_inputs = True  # Normalization layer, training-split statistics
  c.model.standardize_targets = True  # regression: learn on standardised labels

  c.train = config_dict.ConfigDict()
  c.train.backend = 'tensorflow'  # tensorflow | jax: Keras's backend (README, "Backends")
  c.train.epochs = 50
  c.train.global_batch_size = 32
  c.train.steps_per_loop = 0  # steps per device call; 0: 100, 1000 on a TPU
  # XLA on the step: True | False | 'auto' (on, but off for convolutions on
  # a CPU, where XLA's convolutions are slower than TensorFlow's own).
  c.train.jit_compile = config_dict.FieldReference('auto', field_type=object)
  c.train.mixed_precision = 'auto'  # auto (float32; TPU: mixed_bfloat16) | float32 | mixed_bfloat16 | mixed_float16
  c.train.seed = 0
  c.train.deterministic = False  # op determinism: bit-identical reruns
  c.train.checkpoint_every_steps = 1000  # also at the end and on preemption
  c.train.keep_checkpoints = 3
  c.train.nan_policy = 'stop'  # stop | rollback (to the last checkpoint, lr / 2)
  # The validation metric watched at epoch ends, by early stopping, keep_best
  # and optimizer.reduce_on_plateau (README, "Epoch-end policies").
  c.train.early_stopping = config_dict.ConfigDict()
  c.train.early_stopping.metric = 'val_loss'  # val_loss or val_NAME of a metric the run evaluates
  c.train.early_stopping.mode = 'auto'  # auto (max for accuracy, auc, r2) | min | max
  c.train.early_stopping.patience = 0  # epochs without improvement before stopping; 0: off
  c.train.early_stopping.min_delta = 0.0  # an improvement is larger than this
  c.train.keep_best = False  # export the best epoch's weights, not the last
  c.train.label_smoothing = 0.0  # classification losses: targets 1 - s, + s / classes
  # Classification losses: each example's training loss times its class's
  # weight. '': none; 'balanced': n / (classes * count) from the training
  # split's labels; or one weight per class, by class id: (1.0, 4.0).
  c.train.class_weight = config_dict.FieldReference('', field_type=object)
  c.train.profile_steps = (0, 0)  # (start, stop): profile those steps to tensorboard/; (0, 0): off

  c.optimizer = config_dict.ConfigDict()
  c.optimizer.name = 'adam'  # adam | adamw | sgd | rmsprop
  c.optimizer.learning_rate = 0.001
  c.optimizer.schedule = 'constant'  # constant | exponential_decay | cosine_decay
  c.optimizer.decay_steps = 1000
  c.optimizer.decay_epochs = 0.0  # > 0: decay_steps = this many epochs' steps
  c.optimizer.decay_rate = 0.5  # exponential_decay: factor per decay_steps
  c.optimizer.momentum = 0.0  # sgd, rmsprop
  c.optimizer.weight_decay = 0.004  # adamw
  # Gradient clipping, as Keras's optimizer arguments (at most one; 0: off),
  # applied to the whole batch's gradient under every strategy.
  c.optimizer.clipnorm = 0.0  # each variable's gradient to this L2 norm
  c.optimizer.global_clipnorm = 0.0  # all gradients together to this L2 norm
  c.optimizer.clipvalue = 0.0  # each gradient element to [-clipvalue, clipvalue]
  # Gradient accumulation: a step sums the gradients of k forward and
  # backward passes of train.global_batch_size each, one after another, and
  # updates once: the step's batch is k times train.global_batch_size.
  c.optimizer.gradient_accumulation_steps = 1  # k; 1: off
  c.optimizer.warmup_steps = 0  # linear warm-up from 0 in front of the schedule
  c.optimizer.warmup_epochs = 0.0  # > 0: warmup_steps = this many epochs' steps
  c.optimizer.reduce_on_plateau = config_dict.ConfigDict()
  c.optimizer.reduce_on_plateau.patience = 0  # epochs without improvement; 0: off
  c.optimizer.reduce_on_plateau.factor = 0.1  # the learning rate's multiplier
  c.optimizer.reduce_on_plateau.min_learning_rate = 0.0

  c.loss = 'mse'

  c.privacy = config_dict.ConfigDict()
  c.privacy.dp = False  # DP-SGD: per-example clipping and Gaussian noise
  c.privacy.l2_norm_clip = 1.0  # each example's gradient L2 norm, at most
  c.privacy.noise_multiplier = 1.1  # noise std / l2_norm_clip
  c.privacy.target_epsilon = 0.0  # > 0: calibrate noise_multiplier to it
  c.privacy.delta = 1e-5  # the (epsilon, delta) guarantee's delta

  c.export = config_dict.ConfigDict()
  # Besides model.keras: saved_model (saved_model/), tflite (model.tflite),
  # onnx (model.onnx); each tflite and onnx file is checked against
  # model.keras on the test split (README, "Exports").
  c.export.formats = ('saved_model',)
  c.export.tflite_quantization = 'none'  # none | dynamic_range | float16

  c.report = config_dict.ConfigDict()
  c.report.attribution_examples = 100  # test examples explained (IG)
  c.report.ig_steps = 50  # Integrated Gradients: trapezoid intervals
  c.report.ig_baseline = 'auto'  # auto | table: mean (training split), zeros | image: black, blurred | text: padding
  c.report.fairness_min_ratio = 0.8  # flag a metric whose worst/best group ratio is lower
  c.report.energy_method = 'auto'  # auto (codecarbon if installed) | codecarbon | estimate
  c.report.cpu_watts = 0.0  # whole CPU at full load; 0: 4 W per thread (codecarbon's fallback)
  c.report.gpu_watts = 300.0  # per GPU at full load (a datacentre GPU's typical TDP)
  c.report.tpu_watts = 200.0  # per TPU chip at full load
  c.report.peak_flops_per_s = 0.0  # all devices' peak, for MFU; 0: datasheet peaks of known GPUs and TPUs
  c.report.pue = 1.0  # datacentre power usage effectiveness; 1.0: the machine alone
  c.report.country = ''  # ISO 3166 alpha-3 code (FRA, USA...): grid intensity via codecarbon
  c.report.grid_gco2_per_kwh = 475.0  # used when country is ''; 475: world average
  c.report.intended_use = ''  # model card: stated by the owner; '' is reported as not stated
  c.report.owners = ''  # model card: who is responsible for the model
  return c


def experiment_path(name_or_path: str) -> pathlib.Path:
  """Resolves `--config`: a file path, or a bare name found in experiments/."""
  path = pathlib.Path(name_or_path)
  if path.suffix == '.py' or os.sep in name_or_path:
    if not path.is_file():
      raise UserError(f'--config: no experiment file {path}; give a path to a '
                      f'.py file with get_config() or a name from '
                      f'{", ".join(available_experiments()) or "experiments/"}')
    return path
  for directory in _EXPERIMENT_DIRS:
    candidate = directory / f'{name_or_path}.py'
    if candidate.is_file():
      return candidate
  raise UserError(f'--config: unknown experiment {name_or_path!r}; available: '
                  f'{", ".join(available_experiments()) or "none found"}')


def available_experiments() -> list[str]:
  """Bare experiment names that `--config` accepts."""
  names = set()
  for directory in _EXPERIMENT_DIRS:
    if directory.is_dir():
      names.update(p.stem for p in directory.glob('*.py')
                   if not p.stem.startswith('_'))
  return sorted(names)


def load(name_or_path: str | None = None) -> config_dict.ConfigDict:
  """Loads an experiment's `get_config()`; None gives the embedded default."""
  if name_or_path is None:
    return get_config()
  path = experiment_path(name_or_path)
  spec = importlib.util.spec_from_file_location(f'experiment_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # A user's file: any error is bad input.
    raise _experiment_error(path, 'failed to load', e) from e
  if not hasattr(module, 'get_config'):
    raise UserError(f'--config: {path} has no get_config() function')
  try:
    config = module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    raise _experiment_error(path, 'get_config() raised', e) from e
  if not isinstance(config, config_dict.ConfigDict):
    raise UserError(f'--config: {path}: get_config() returned a '
                    f'{type(config).__name__}, not an ml_collections '
                    f'ConfigDict; start from tfpipeline.config.get_config()')
  return config


def _experiment_error(path: pathlib.Path, what: str,
                      error: Exception) -> UserError:
  """A UserError naming the experiment file's line where `error` arose:
  a syntax error's own line, else the innermost frame in that file."""
  line = error.lineno if isinstance(error, SyntaxError) else None
  for frame in traceback.extract_tb(error.__traceback__):
    if pathlib.Path(frame.filename).resolve() == path.resolve():
      line = frame.lineno
  where = f'{path}, line {line}' if line else str(path)
  message = str(error).strip().splitlines()[0] if str(error).strip() else ''
  return UserError(f'--config: {where}: {what}: {type(error).__name__}'
                   f'{": " + message if message else ""}; fix the experiment '
                   f'file')


def validate(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """Checks every value a run depends on; raises UserError naming the key.

  Experiments start from `get_config()`, so a config must have exactly its
  keys: the rest of the package relies on all of them being there. Then
  their values, section by section (`config_checks`).
  """
  if not isinstance(config, config_dict.ConfigDict):
    raise UserError(f'get_config() must return an ml_collections.ConfigDict, '
                    f'got {type(config).__name__}')
  keys = flatten(config.to_dict())
  default_keys = flatten(get_config().to_dict())
  unknown = [key for key in keys if key not in default_keys]
  if unknown:
    raise UserError(f'unknown config key {unknown[0]}: not in the embedded '
                    f'default; check the spelling (see README, "Config keys")')
  missing = [key for key in default_keys if key not in keys]
  if missing:
    raise UserError(f'config key {missing[0]} is missing: build experiments '
                    f'on tfpipeline.config.get_config()')
  config_checks.check_sections(config)
  return config


def resolve_for_device(config: config_dict.ConfigDict, *, on_tpu: bool,
                       on_cpu: bool = False) -> config_dict.ConfigDict:
  """A copy with the device-dependent defaults made concrete.

  TPUs get bfloat16 and many steps per device call (each call has a high
  fixed cost there); other devices float32 and 100 steps per call. XLA is
  on, except for a model with convolutions on CPUs: XLA's CPU convolutions
  trained the cifar10_cnn convnet 4x slower than TensorFlow's own kernels,
  and 170x slower in the fused multi-step loop (BUILD_NOTES.md).
  """
  config = config.copy_and_resolve_references()
  if config.train.jit_compile == 'auto':
    with config.ignore_type():  # 'auto' -> a bool
      config.train.jit_compile = not (on_cpu and any(
          'Conv' in str(spec[0]) for spec in config.model.layers
          if isinstance(spec, (tuple, list)) and spec))
  if config.train.mixed_precision == 'auto':
    config.train.mixed_precision = 'mixed_bfloat16' if on_tpu else 'float32'
  if not config.train.steps_per_loop:
    config.train.steps_per_loop = 1000 if on_tpu else 100
  return config


def step_batch_size(config: config_dict.ConfigDict) -> int:
  """Examples per optimizer step across all replicas: train.global_batch_size
  times optimizer.gradient_accumulation_steps."""
  return (config.train.global_batch_size *
          config.optimizer.gradient_accumulation_steps)


def steps_per_epoch(config: config_dict.ConfigDict, train_rows: int) -> int:
  """Full steps' batches per epoch: an epoch's last partial batch is
  dropped."""
  return train_rows // step_batch_size(config)


def total_steps(config: config_dict.ConfigDict, train_rows: int) -> int:
  """Training steps of the whole run."""
  return config.train.epochs * steps_per_epoch(config, train_rows)


def with_epochs_as_steps(config: config_dict.ConfigDict,
                         train_rows: int) -> config_dict.ConfigDict:
  """`config` whose optimizer.decay_epochs and warmup_epochs, when set, are
  decay_steps and warmup_steps: that many epochs of `train_rows`' full
  batches (config.json records both)."""
  optimizer = config.optimizer
  if not (optimizer.decay_epochs or optimizer.warmup_epochs):
    return config
  config = config.copy_and_resolve_references()
  per_epoch = steps_per_epoch(config, train_rows)
  if optimizer.decay_epochs:
    config.optimizer.decay_steps = max(1, round(optimizer.decay_epochs *
                                                per_epoch))
  if optimizer.warmup_epochs:
    config.optimizer.warmup_steps = max(1, round(optimizer.warmup_epochs *
                                                 per_epoch))
  return config


def to_json(config: config_dict.ConfigDict) -> str:
  """The resolved config as stable, human-readable JSON."""
  return json.dumps(config.to_dict(), indent=2, sort_keys=True) + '\n'



def flatten(tree: dict, prefix: str = '') -> dict:
  """`tree` as one level: {"a.b.c": leaf}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value
  return flat


def result_changes(saved_json: str, config: config_dict.ConfigDict) -> list:
  """Keys whose new value would change what a resumed run computes.

  Returns (key, saved value, new value) triples, RESUMABLE_CHANGES excluded.
  A key that the saved config lacks (a run written before the key existed)
  is unchanged at its default, with which the run was trained.
  """
  saved = flatten(json.loads(saved_json))
  new = flatten(json.loads(to_json(config)))
  defaults = flatten(json.loads(to_json(get_config())))
  saved = {**{key: value for key, value in defaults.items()
              if key not in saved}, **saved}
  return [(key, saved.get(key), new.get(key))
          for key in sorted(set(saved) | set(new))
          if key not in RESUMABLE_CHANGES and
          not key.startswith(RESUMABLE_PREFIXES) and
          saved.get(key) != new.get(key)]
