"""The config's values checked section by section (`config.validate`).

Each section (data, model, train, optimizer, loss, privacy, export, report)
is a table of keys, each with its rule: one of some choices, a positive
number, a fraction... Then its cross-field rules, small named functions:
the splits leave rows to train, the source's own keys (`data.sources`), a
NaN rollback's constant learning rate, the loss and the labels (and a
weight per class), what DP-SGD must not publish, a quantization with its
format. A failed check raises UserError naming the key, its value and what
is expected. No TensorFlow is imported.
"""

import math

from tfpipeline.backend import BACKENDS
from tfpipeline.data.sources import core as sources
from tfpipeline.errors import UserError

DISTRIBUTIONS = ('uniform', 'normal')
OPTIMIZERS = ('adam', 'adamw', 'sgd', 'rmsprop')
SCHEDULES = ('constant', 'exponential_decay', 'cosine_decay')
LOSSES = ('mse', 'mae', 'huber', 'binary_crossentropy',
          'categorical_crossentropy', 'sparse_categorical_crossentropy')
MIXED_PRECISION = ('auto', 'float32', 'mixed_bfloat16', 'mixed_float16')
NAN_POLICIES = ('stop', 'rollback')
MONITOR_MODES = ('auto', 'min', 'max')
# Validation metrics where more is better (train.early_stopping.mode=auto).
_HIGHER_IS_BETTER = ('val_accuracy', 'val_auc', 'val_r2')
# Integrated Gradients baselines by kind of data; report.ig_baseline=auto
# takes the first.
IG_BASELINES = {'table': ('mean', 'zeros'), 'image': ('black', 'blurred'),
                'text': ('padding',)}
AUGMENT_OPS = ('random_flip', 'random_crop')
ENERGY_METHODS = ('auto', 'codecarbon', 'estimate')
# What a run exports besides model.keras (`export`).
EXPORT_FORMATS = ('saved_model', 'tflite', 'onnx')
TFLITE_QUANTIZATIONS = ('none', 'dynamic_range', 'float16')


def class_count(loss: str, output_units: int) -> int:
  """The classes a classification loss tells apart: 2 for binary
  cross-entropy's one output, else one per output unit."""
  return 2 if loss == 'binary_crossentropy' else output_units


def evaluation_metrics(loss: str, output_units: int) -> tuple[str, ...]:
  """The metrics a run evaluates for the task `loss` implies, beside the
  loss: each epoch's validation record has val_loss and val_NAME of each."""
  if loss == 'binary_crossentropy':
    return ('accuracy', 'auc')
  if loss in ('categorical_crossentropy', 'sparse_categorical_crossentropy'):
    return ('accuracy',)
  return ('mae', 'rmse', 'r2') if output_units == 1 else ('mae', 'rmse')


def monitor_mode(metric: str, mode: str) -> str:
  """'min' or 'max': train.early_stopping.mode, 'auto' resolved for
  `metric`."""
  if mode != 'auto':
    return mode
  return 'max' if metric in _HIGHER_IS_BETTER else 'min'


def check_sections(config) -> None:
  """Checks each section's table, then its cross-field rules, in order;
  `config` has every key of the embedded default."""
  for table, rules in _SECTIONS:
    for key, (ok, expected) in table:
      value = _get(config, key)
      _check(ok(value), key, value, expected)
    for rule in rules:
      rule(config)


def _check(ok: bool, key: str, value, expected: str) -> None:
  if not ok:
    raise UserError(f'config key {key}={value!r} is invalid: expected '
                    f'{expected} (set it with --config.{key}=...)')


def _get(config, key: str):
  for part in key.split('.'):
    config = config[part]
  return config


# A table's rule for one key: (ok(value), what is expected instead).
def _one_of(choices) -> tuple:
  return lambda value: value in choices, 'one of ' + ', '.join(choices)


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _number(number_type=int, *, allow_zero: bool = False) -> tuple:
  def ok(value) -> bool:
    return (isinstance(value, number_type) and not isinstance(value, bool)
            and (value >= 0 if allow_zero else value > 0))
  return ok, (f'a {"non-negative" if allow_zero else "positive"} '
              f'{number_type.__name__}')


def _between(low: float, high: float, expected: str, *,
             inclusive: bool = False, low_inclusive: bool = False) -> tuple:
  """A float from low to high (excluded, unless `inclusive`; `low` alone
  included with `low_inclusive`)."""
  def ok(value) -> bool:
    if not isinstance(value, float):
      return False
    if inclusive:
      return low <= value <= high
    return (low <= value if low_inclusive else low < value) and value < high
  return ok, expected


_POSITIVE = _number()
_NON_NEGATIVE = _number(allow_zero=True)
_POSITIVE_FLOAT = _number(float)
_NON_NEGATIVE_FLOAT = _number(float, allow_zero=True)
_BOOL = (lambda value: isinstance(value, bool), 'True or False')
_FRACTION = _between(0, 1, 'a fraction between 0 and 1')
# NumPy's and Keras's range of seeds.
_SEED = (lambda value: _is_int(value) and 0 <= value < 2**32,
         'an int from 0 to 2**32 - 1')
_AUGMENT = (lambda value: isinstance(value, (tuple, list)) and all(
    op in AUGMENT_OPS for op in value), f'a tuple of {", ".join(AUGMENT_OPS)}')
_CLASS_WEIGHT = (lambda value: value in ('', 'balanced') or (
    isinstance(value, (tuple, list)) and bool(value) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and
        0 <= w < math.inf for w in value) and any(w > 0 for w in value)),
                 "'' (none), 'balanced', or a tuple of one finite, "
                 'non-negative weight per class, at least one positive, e.g. '
                 '(1.0, 4.0)')
_VOCAB_SIZE = (lambda value: _is_int(value) and (value == 0 or value >= 3),
               '0 (no text) or the number of tokens, padding and OOV '
               'included (>= 3)')

_DATA = (
    ('data.source', _one_of(sources.NAMES)),
    ('data.distribution', _one_of(DISTRIBUTIONS)),
    ('data.num_examples', _POSITIVE),
    ('data.num_eval_examples', _POSITIVE),
    ('data.num_features', _POSITIVE),
    ('data.num_targets', _POSITIVE),
    ('data.validation_fraction', _FRACTION),
    ('data.test_fraction', _FRACTION),
    ('data.augment', _AUGMENT),
    ('data.crop_padding', _NON_NEGATIVE),
    ('data.sequence_length', _NON_NEGATIVE),
    ('data.max_memory_mb', _NON_NEGATIVE),
    ('data.vocab_size', _VOCAB_SIZE),
    ('data.split_seed', _SEED),
    ('data.download', _BOOL),
)


def _data_leaves_rows_to_train(config) -> None:
  _check(config.data.validation_fraction + config.data.test_fraction < 1,
         'data.test_fraction', config.data.test_fraction,
         'a fraction that, with data.validation_fraction, leaves rows to train')


def _data_has_the_sources_keys(config) -> None:
  sources.get(config.data.source).check_config(config.data, _check)


_LAYERS = (lambda value: isinstance(value, (tuple, list)),
           "a tuple of (Keras layer class name, kwargs dict) pairs, e.g. "
           "(('Conv2D', {'filters': 32, 'kernel_size': 3}), ('Flatten', {}))")
_WIDTHS = (lambda value: isinstance(value, (tuple, list)) and all(
    isinstance(u, int) and u > 0 for u in value),
           'a tuple of positive ints, e.g. (64, 32)')

_MODEL = (
    ('model.layers', _LAYERS),
    ('model.hidden_units', _WIDTHS),
    ('model.output_units', _POSITIVE),
)

_TRAIN = (
    ('train.backend', _one_of(BACKENDS)),
    ('train.epochs', _POSITIVE),
    ('train.global_batch_size', _POSITIVE),
    ('train.checkpoint_every_steps', _POSITIVE),
    ('train.keep_checkpoints', _POSITIVE),
    ('train.steps_per_loop', _NON_NEGATIVE),
    ('train.seed', _SEED),
    ('train.deterministic', _BOOL),
    ('train.mixed_precision', _one_of(MIXED_PRECISION)),
    ('train.jit_compile', (lambda value: value in (True, False, 'auto'),
                           "True, False or 'auto'")),
    ('train.nan_policy', _one_of(NAN_POLICIES)),
    ('train.early_stopping.metric', (lambda value: isinstance(value, str),
                                     'a validation metric such as val_loss')),
    ('train.early_stopping.mode', _one_of(MONITOR_MODES)),
    ('train.early_stopping.patience', _NON_NEGATIVE),
    ('train.early_stopping.min_delta', _NON_NEGATIVE_FLOAT),
    ('train.keep_best', _BOOL),
    ('train.label_smoothing', _between(0, 1, 'a fraction from 0 to 1, 1 '
                                       'excluded', low_inclusive=True)),
    ('train.class_weight', _CLASS_WEIGHT),
    ('train.profile_steps', (lambda value: (
        isinstance(value, (tuple, list)) and len(value) == 2 and
        all(_is_int(step) for step in value) and
        (tuple(value) == (0, 0) or 0 <= value[0] < value[1])),
                             '(start, stop) steps with 0 <= start < stop, or '
                             '(0, 0): off')),
)


def _smoothing_needs_classes(config) -> None:
  if config.train.label_smoothing:
    _check('crossentropy' in config.loss, 'train.label_smoothing',
           config.train.label_smoothing,
           f'0.0 with loss={config.loss}: label smoothing is for the '
           f'cross-entropy losses')


def _class_weights_fit_the_classes(config) -> None:
  """Class weights weigh a cross-entropy loss's examples: given, one per
  class."""
  weights = config.train.class_weight
  if not weights:
    return
  _check('crossentropy' in config.loss, 'train.class_weight', weights,
         f"'' with loss={config.loss}: class weights are for the "
         f'cross-entropy losses')
  if weights == 'balanced':
    return
  classes = class_count(config.loss, config.model.output_units)
  _check(len(weights) == classes, 'train.class_weight', tuple(weights),
         f'{classes} weights, one per class of loss={config.loss}' + (
             '' if config.loss == 'binary_crossentropy' else
             f' with model.output_units={config.model.output_units}'))


def _monitored_metric_is_validated(config) -> None:
  """The metric early stopping, keep_best and reduce_on_plateau watch is
  one that each epoch's validation records."""
  metrics = ('val_loss', *(f'val_{name}' for name in evaluation_metrics(
      config.loss, config.model.output_units)))
  metric = config.train.early_stopping.metric
  _check(metric in metrics, 'train.early_stopping.metric', metric,
         f'one of {", ".join(metrics)} (what loss={config.loss} validates)')

_OPTIMIZER = (
    ('optimizer.name', _one_of(OPTIMIZERS)),
    ('optimizer.schedule', _one_of(SCHEDULES)),
    ('optimizer.learning_rate', _POSITIVE_FLOAT),
    ('optimizer.decay_steps', _POSITIVE),
    ('optimizer.decay_epochs', _NON_NEGATIVE_FLOAT),
    ('optimizer.decay_rate', _POSITIVE_FLOAT),
    ('optimizer.momentum', _NON_NEGATIVE_FLOAT),
    ('optimizer.weight_decay', _NON_NEGATIVE_FLOAT),
    ('optimizer.clipnorm', _NON_NEGATIVE_FLOAT),
    ('optimizer.global_clipnorm', _NON_NEGATIVE_FLOAT),
    ('optimizer.clipvalue', _NON_NEGATIVE_FLOAT),
    ('optimizer.gradient_accumulation_steps', _POSITIVE),
    ('optimizer.warmup_steps', _NON_NEGATIVE),
    ('optimizer.warmup_epochs', _NON_NEGATIVE_FLOAT),
    ('optimizer.reduce_on_plateau.patience', _NON_NEGATIVE),
    ('optimizer.reduce_on_plateau.factor', _FRACTION),
    ('optimizer.reduce_on_plateau.min_learning_rate', _NON_NEGATIVE_FLOAT),
)


CLIPPING = ('clipnorm', 'global_clipnorm', 'clipvalue')


def clipping(optimizer_config) -> dict[str, float]:
  """The clipping arguments set ({} if none), as Keras's optimizers take
  them."""
  return {name: optimizer_config[name] for name in CLIPPING
          if optimizer_config[name]}


def _one_clipping(config) -> None:
  """Keras's optimizers take at most one way to clip."""
  chosen = list(clipping(config.optimizer))
  if len(chosen) > 1:
    _check(False, f'optimizer.{chosen[1]}', config.optimizer[chosen[1]],
           f'0.0 with optimizer.{chosen[0]} set: clip one way only')


def _rate_setters_have_a_constant_rate(config) -> None:
  """A NaN rollback halves the learning rate and a plateau reduces it: a
  rate that a schedule or a warm-up computes each step cannot be set."""
  optimizer = config.optimizer
  for key, on, why in (
      ('train.nan_policy', config.train.nan_policy == 'rollback',
       'train.nan_policy=rollback (it halves the learning rate)'),
      ('optimizer.reduce_on_plateau.patience',
       optimizer.reduce_on_plateau.patience > 0,
       'optimizer.reduce_on_plateau (it multiplies the learning rate)')):
    if not on:
      continue
    _check(optimizer.schedule == 'constant', 'optimizer.schedule',
           optimizer.schedule, f"'constant' with {why}")
    warmup = ('optimizer.warmup_epochs', optimizer.warmup_epochs) if (
        optimizer.warmup_epochs) else ('optimizer.warmup_steps',
                                       optimizer.warmup_steps)
    _check(not warmup[1], warmup[0], warmup[1], f'0 with {why}; set '
           f'{key} off, or train without a warm-up')


def _jax_trains_without_loss_scaling(config) -> None:
  if config.train.backend == 'jax':
    _check(config.train.mixed_precision != 'mixed_float16',
           'train.mixed_precision', config.train.mixed_precision,
           "float32, mixed_bfloat16 or auto with train.backend='jax' (the "
           'JAX engine has no loss scaling, which float16 needs; bfloat16, '
           'what TPUs and recent GPUs use, needs none)')


_LOSS = (('loss', _one_of(LOSSES)),)


def _loss_fits_the_labels(config) -> None:
  """The outputs the loss needs, and labels the source can give it."""
  if config.loss == 'binary_crossentropy':
    _check(config.model.output_units == 1, 'model.output_units',
           config.model.output_units, '1 with loss=binary_crossentropy')
  if config.loss == 'sparse_categorical_crossentropy':
    _check(config.model.output_units > 1, 'model.output_units',
           config.model.output_units, 'the number of classes (> 1)')
  sources.get(config.data.source).check_loss(config.loss, _check)


_PRIVACY = (
    ('privacy.dp', _BOOL),
    ('privacy.l2_norm_clip', _POSITIVE_FLOAT),
    ('privacy.noise_multiplier', _POSITIVE_FLOAT),
    ('privacy.target_epsilon', _NON_NEGATIVE_FLOAT),
    ('privacy.delta', _between(0, 1, 'a probability between 0 and 1')),
)


def _dp_publishes_nothing_exact(config) -> None:
  """Statistics of the training split outside DP-SGD's noise would be
  published exactly, in the model or the report."""
  if not config.privacy.dp:
    return
  _check(not config.model.normalize_inputs, 'model.normalize_inputs', True,
         'False with privacy.dp: the Normalization layer would export the '
         "training split's exact mean and variance, outside the DP "
         'guarantee; scale inputs with public constants instead (a '
         'Rescaling, or a Normalization with given mean and variance, in '
         'model.layers)')
  _check(not config.model.standardize_targets or
         'crossentropy' in config.loss, 'model.standardize_targets', True,
         "False with privacy.dp: the output layer would export the training "
         "labels' exact mean and standard deviation, outside the DP "
         'guarantee')
  _check(config.report.ig_baseline != 'mean', 'report.ig_baseline', 'mean',
         "zeros or auto with privacy.dp: the report would publish the "
         "training split's exact means as the baseline")
  _check(config.train.class_weight != 'balanced', 'train.class_weight',
         'balanced', "given weights or '' with privacy.dp: balanced weights "
         "are computed from the training split's exact class counts, "
         'outside the DP guarantee, and the report publishes them')
  _check(config.train.mixed_precision != 'mixed_float16',
         'train.mixed_precision', config.train.mixed_precision,
         'float32 or mixed_bfloat16 with privacy.dp (loss scaling would '
         'scale the clipped per-example gradients)')


_FORMATS = (lambda value: isinstance(value, (tuple, list)) and all(
    name in EXPORT_FORMATS for name in value) and len(set(value)) == len(
        value), f'a tuple of distinct formats among {", ".join(EXPORT_FORMATS)}'
            ", e.g. ('saved_model', 'tflite', 'onnx')")

_EXPORT = (
    ('export.formats', _FORMATS),
    ('export.tflite_quantization', _one_of(TFLITE_QUANTIZATIONS)),
)


def _quantization_needs_tflite(config) -> None:
  if config.export.tflite_quantization != 'none':
    _check('tflite' in config.export.formats, 'export.formats',
           tuple(config.export.formats),
           f"formats including 'tflite' with export.tflite_quantization="
           f"{config.export.tflite_quantization} (or set it to 'none')")


_PUE = (lambda value: isinstance(value, float) and value >= 1,
        'a number >= 1.0')
_COUNTRY = (lambda value: isinstance(value, str) and (
    value == '' or (len(value) == 3 and value.isalpha())),
            "an ISO 3166 alpha-3 code such as 'FRA', or ''")

_REPORT = (
    ('report.attribution_examples', _POSITIVE),
    ('report.ig_steps', _POSITIVE),
    ('report.ig_baseline', _one_of(('auto', *(
        name for names in IG_BASELINES.values() for name in names)))),
    ('report.peak_flops_per_s', _NON_NEGATIVE_FLOAT),
    ('report.energy_method', _one_of(ENERGY_METHODS)),
    ('report.fairness_min_ratio', _between(0, 1, 'a ratio between 0 and 1',
                                           inclusive=True)),
    ('report.cpu_watts', _NON_NEGATIVE_FLOAT),
    ('report.gpu_watts', _NON_NEGATIVE_FLOAT),
    ('report.tpu_watts', _NON_NEGATIVE_FLOAT),
    ('report.grid_gco2_per_kwh', _NON_NEGATIVE_FLOAT),
    ('report.pue', _PUE),
    ('report.country', _COUNTRY),
)

# Each section: its table of keys, then its cross-field rules, in order.
_SECTIONS = (
    (_DATA, (_data_leaves_rows_to_train, _data_has_the_sources_keys)),
    (_MODEL, ()),
    (_TRAIN, (_jax_trains_without_loss_scaling,)),
    (_OPTIMIZER, (_one_clipping, _rate_setters_have_a_constant_rate)),
    (_LOSS, (_loss_fits_the_labels, _monitored_metric_is_validated,
             _smoothing_needs_classes, _class_weights_fit_the_classes)),
    (_PRIVACY, (_dp_publishes_nothing_exact,)),
    (_EXPORT, (_quantization_needs_tflite,)),
    (_REPORT, ()),
)
