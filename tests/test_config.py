"""tfpipeline.config: loading experiments, overrides' targets, validation."""

import json
import re

import pytest

from conftest import REPO
from tfpipeline import config
from tfpipeline.errors import UserError


def test_embedded_default_is_the_diabetes_experiment():
  c = config.validate(config.get_config())
  # The columns are the dataset's own (see test_sources).
  assert (c.data.source, c.data.name, c.data.features, c.data.label,
          c.data.group) == ('tfds', 'diabetes', (), '', 'auto')
  assert c.model.hidden_units == (64,) and c.model.output_units == 1
  assert (c.optimizer.name, c.loss) == ('adam', 'mse')
  assert config.load(None).to_dict() == c.to_dict()
  assert config.load('diabetes').to_dict() == c.to_dict()


def test_bare_names_resolve_to_experiment_files():
  assert {'diabetes', 'seed_keras_mlp', 'seed_torch_mlp'} <= set(
      config.available_experiments())
  path = config.experiment_path('seed_keras_mlp')
  assert path.name == 'seed_keras_mlp.py' and path.parent.name == 'experiments'


def test_seed_experiments_match_the_seed_examples():
  keras_mlp = config.validate(config.load('seed_keras_mlp'))
  assert (keras_mlp.data.num_examples, keras_mlp.data.num_features,
          keras_mlp.data.num_targets) == (100, 10, 1)
  assert keras_mlp.model.hidden_units == (64,)
  assert (keras_mlp.optimizer.name, keras_mlp.loss, keras_mlp.train.epochs,
          keras_mlp.train.global_batch_size) == ('adam', 'mse', 100, 32)
  torch_mlp = config.validate(config.load('seed_torch_mlp'))
  assert torch_mlp.model.hidden_units == (50,)
  assert torch_mlp.model.output_units == 10
  assert (torch_mlp.optimizer.name, torch_mlp.optimizer.learning_rate,
          torch_mlp.loss, torch_mlp.train.epochs) == ('sgd', 0.01, 'mse', 100)


def test_experiment_file_by_path(tmp_path):
  path = tmp_path / 'mine.py'
  path.write_text('from tfpipeline import config\n'
                  'def get_config():\n'
                  '  c = config.get_config()\n'
                  '  c.train.epochs = 7\n'
                  '  return c\n')
  assert config.load(str(path)).train.epochs == 7


@pytest.mark.parametrize('text, fragment', [
    ('def get_config(:\n', 'failed to load'),
    ('x = 1\n', 'no get_config()'),
])
def test_broken_experiment_files(tmp_path, text, fragment):
  path = tmp_path / 'broken.py'
  path.write_text(text)
  with pytest.raises(UserError, match=fragment):
    config.load(str(path))


def test_unknown_experiment_lists_the_available_ones():
  with pytest.raises(UserError, match=r"unknown experiment 'nope'.*diabetes"):
    config.load('nope')


@pytest.mark.parametrize('key, value, fragment', [
    ('train.epochs', 0, 'train.epochs=0'),
    ('train.global_batch_size', -4, 'train.global_batch_size=-4'),
    ('loss', 'hinge', "loss='hinge'"),
    ('optimizer.name', 'lion', "optimizer.name='lion'"),
    ('optimizer.learning_rate', -0.1, 'optimizer.learning_rate=-0.1'),
    ('data.source', 'sql', "data.source='sql'"),
    ('data.test_fraction', 0.9, 'data.test_fraction=0.9'),
    ('model.hidden_units', (64, 0), 'model.hidden_units=(64, 0)'),
    ('train.mixed_precision', 'float16', "train.mixed_precision='float16'"),
    ('privacy.noise_multiplier', 0.0, 'privacy.noise_multiplier=0.0'),
    ('privacy.delta', 1.0, 'privacy.delta=1.0'),
    ('report.ig_baseline', 'median', "report.ig_baseline='median'"),
    ('report.pue', 0.5, 'report.pue=0.5'),
    ('report.country', 'France', "report.country='France'"),
    ('report.fairness_min_ratio', 1.5, 'report.fairness_min_ratio=1.5'),
    ('report.peak_flops_per_s', -1.0, 'report.peak_flops_per_s=-1.0'),
    ('train.seed', -1, 'train.seed=-1'),
    ('train.seed', 2**32, f'train.seed={2**32}'),
    ('data.split_seed', -3, 'data.split_seed=-3'),
    ('optimizer.decay_epochs', -1.0, 'optimizer.decay_epochs=-1.0'),
    ('train.early_stopping.metric', 'val_accuracy',
     "train.early_stopping.metric='val_accuracy' is invalid: expected one of "
     'val_loss, val_mae, val_rmse, val_r2'),
    ('train.early_stopping.mode', 'up', "train.early_stopping.mode='up'"),
    ('train.early_stopping.patience', -1, 'train.early_stopping.patience=-1'),
    ('train.early_stopping.min_delta', -0.5,
     'train.early_stopping.min_delta=-0.5'),
    ('optimizer.warmup_steps', -2, 'optimizer.warmup_steps=-2'),
    ('optimizer.gradient_accumulation_steps', 0,
     'optimizer.gradient_accumulation_steps=0'),
    ('train.label_smoothing', 0.1,
     'train.label_smoothing=0.1 is invalid: expected 0.0 with loss=mse'),
    ('train.label_smoothing', 1.0, 'train.label_smoothing=1.0'),
    ('train.class_weight', (1.0, 4.0),
     "train.class_weight=(1.0, 4.0) is invalid: expected '' with loss=mse"),
    ('train.class_weight', 'even',
     "train.class_weight='even' is invalid: expected '' (none), 'balanced', "
     'or a tuple of one finite, non-negative weight per class'),
    ('train.class_weight', (1.0, -4.0), 'train.class_weight=(1.0, -4.0)'),
    ('train.class_weight', (0, 0.0), 'train.class_weight=(0, 0.0)'),
    ('train.profile_steps', (5, 5), 'train.profile_steps=(5, 5)'),
    ('optimizer.reduce_on_plateau.factor', 1.0,
     'optimizer.reduce_on_plateau.factor=1.0'),
    ('optimizer.reduce_on_plateau.min_learning_rate', -1.0,
     'optimizer.reduce_on_plateau.min_learning_rate=-1.0'),
])
def test_invalid_values_name_their_key(key, value, fragment):
  c = config.get_config()
  section, _, name = key.rpartition('.')
  (c[section] if section else c)[name] = value
  with pytest.raises(UserError, match=fragment.replace('(', r'\(').replace(
      ')', r'\)').replace('.', r'\.')) as error:
    config.validate(c)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('loss, units, weights, expected', [
    ('binary_crossentropy', 1, (1.0, 2.0, 3.0),
     '2 weights, one per class of loss=binary_crossentropy'),
    ('sparse_categorical_crossentropy', 3, (1.0, 2.0),
     '3 weights, one per class of loss=sparse_categorical_crossentropy with '
     'model.output_units=3'),
])
def test_class_weights_are_one_per_class(loss, units, weights, expected):
  c = config.get_config()
  c.loss, c.model.output_units = loss, units
  c.train.class_weight = weights
  with pytest.raises(UserError, match=re.escape(
      f'train.class_weight={weights} is invalid: expected {expected}')):
    config.validate(c)
  c.train.class_weight = (1.0,) * (units if units > 1 else 2)
  config.validate(c)


def test_dp_refuses_balanced_class_weights():
  c = config.get_config()
  c.loss, c.model.output_units = 'binary_crossentropy', 1
  c.privacy.dp, c.model.normalize_inputs = True, False
  c.train.class_weight = 'balanced'
  with pytest.raises(UserError, match="train.class_weight='balanced' is "
                     "invalid: expected given weights or '' with privacy.dp"):
    config.validate(c)
  c.train.class_weight = (1.0, 3.0)  # Public weights are the config's.
  config.validate(c)


def test_csv_needs_a_path():
  c = config.get_config()
  c.data.source = 'csv'
  with pytest.raises(UserError, match='data.path'):
    config.validate(c)


def test_unknown_and_missing_keys_are_refused():
  c = config.get_config()
  c.train.epochz = 3
  with pytest.raises(UserError, match='unknown config key train.epochz'):
    config.validate(c)
  c = config.get_config()
  del c.train['seed']
  with pytest.raises(UserError, match='train.seed is missing'):
    config.validate(c)
  with pytest.raises(UserError, match='ConfigDict'):
    config.validate({'train': {}})


def test_json_is_the_resolved_config_with_overrides():
  c = config.validate(config.get_config())
  c.train.epochs = 3
  written = json.loads(config.to_json(c))
  assert written['train']['epochs'] == 3
  assert written['model']['hidden_units'] == [64]
  assert written['data']['group'] == 'auto' and written['data']['path'] is None
  assert set(written) == {'data', 'model', 'train', 'optimizer', 'loss',
                          'privacy', 'export', 'report'}


def test_result_changes_ignore_what_a_resume_may_change():
  saved = config.to_json(config.validate(config.get_config()))
  c = config.validate(config.get_config())
  c.train.epochs, c.train.steps_per_loop, c.data.data_dir = 99, 7, '/elsewhere'
  assert config.result_changes(saved, c) == []
  c.model.hidden_units, c.loss = (32,), 'mae'
  assert config.result_changes(saved, c) == [
      ('loss', 'mse', 'mae'), ('model.hidden_units', [64], [32])]


def test_a_run_saved_before_a_key_existed_resumes_at_its_default():
  old = json.loads(config.to_json(config.validate(config.get_config())))
  del old['train']['early_stopping'], old['optimizer']['warmup_steps']
  c = config.validate(config.get_config())
  assert config.result_changes(json.dumps(old), c) == []
  c.train.early_stopping.patience = 3
  assert config.result_changes(json.dumps(old), c) == [
      ('train.early_stopping.patience', 0, 3)]


def test_device_defaults_resolve_for_tpus_and_the_rest():
  c = config.validate(config.get_config())
  assert (c.train.mixed_precision, c.train.steps_per_loop) == ('auto', 0)
  tpu = config.resolve_for_device(c, on_tpu=True)
  assert (tpu.train.mixed_precision, tpu.train.steps_per_loop) == (
      'mixed_bfloat16', 1000)
  other = config.resolve_for_device(c, on_tpu=False)
  assert (other.train.mixed_precision, other.train.steps_per_loop) == (
      'float32', 100)
  assert c.train.mixed_precision == 'auto'  # The caller's config is unchanged.
  c.train.mixed_precision, c.train.steps_per_loop = 'mixed_float16', 7
  explicit = config.resolve_for_device(c, on_tpu=True)
  assert (explicit.train.mixed_precision, explicit.train.steps_per_loop) == (
      'mixed_float16', 7)


@pytest.mark.parametrize('experiment, on_cpu, xla', [
    ('diabetes', True, True), ('digits_cnn', True, False),
    ('digits_cnn', False, True), ('imdb_text', True, True)])
def test_xla_is_on_except_for_convolutions_on_a_cpu(experiment, on_cpu, xla):
  c = config.validate(config.load(experiment))
  assert c.train.jit_compile == 'auto'
  resolved = config.resolve_for_device(c, on_tpu=False, on_cpu=on_cpu)
  assert resolved.train.jit_compile is xla
  c.train.jit_compile = True  # An explicit choice stands.
  assert config.resolve_for_device(
      c, on_tpu=False, on_cpu=on_cpu).train.jit_compile is True


@pytest.mark.parametrize('setting, key', [
    ({'schedule': 'cosine_decay'}, "optimizer.schedule='cosine_decay'"),
    ({'warmup_steps': 10}, 'optimizer.warmup_steps=10'),
    ({'warmup_epochs': 0.5}, 'optimizer.warmup_epochs=0.5')])
def test_rate_setters_refuse_a_computed_rate(setting, key):
  c = config.get_config()
  c.optimizer.reduce_on_plateau.patience = 2
  c.optimizer.update(setting)
  with pytest.raises(UserError, match=re.escape(key) + '.*reduce_on_plateau'):
    config.validate(c)
  c.optimizer.reduce_on_plateau.patience = 0
  c.train.nan_policy = 'rollback'
  with pytest.raises(UserError, match=re.escape(key) + '.*nan_policy'):
    config.validate(c)


def test_dp_refuses_float16_loss_scaling():
  c = config.get_config()
  c.privacy.dp = True
  c.train.mixed_precision = 'mixed_float16'
  with pytest.raises(UserError, match='with privacy.dp'):
    config.validate(c)


def test_report_keys_may_change_on_resume_training_keys_may_not():
  c = config.get_config()
  saved = config.to_json(c)
  c.report.ig_steps = 20
  c.report.country = 'FRA'
  assert config.result_changes(saved, c) == []
  c.privacy.dp = True
  assert config.result_changes(saved, c) == [('privacy.dp', False, True)]
  c.privacy.dp = False
  c.train.class_weight = 'balanced'  # It changes what each step computes.
  assert config.result_changes(saved, c) == [
      ('train.class_weight', '', 'balanced')]


def test_steps_drop_each_epochs_partial_batch():
  c = config.get_config()  # batch 32, 50 epochs
  assert config.steps_per_epoch(c, 309) == 9
  assert config.total_steps(c, 309) == 450
  c.train.global_batch_size = 309
  assert config.total_steps(c, 309) == 50


def test_decay_and_warmup_epochs_become_the_runs_steps():
  c = config.get_config()  # 9 steps an epoch on 309 rows
  assert config.with_epochs_as_steps(c, 309) is c  # Unset: the steps stand.
  c.optimizer.decay_epochs = 2.5
  c.optimizer.warmup_epochs = 0.5
  resolved = config.with_epochs_as_steps(c, 309)
  assert resolved.optimizer.decay_steps == 22  # 22.5, rounded half to even
  assert resolved.optimizer.warmup_steps == 4  # 4.5, rounded half to even
  assert c.optimizer.decay_steps == 1000  # The caller's config is kept.
  assert c.optimizer.warmup_steps == 0
  # The cifar10 experiment warms up over 5 of its 100 epochs of 175 steps
  # and decays over the other 95.
  cifar = config.with_epochs_as_steps(config.load('cifar10_cnn'), 45_000)
  assert (cifar.optimizer.warmup_steps, cifar.optimizer.decay_steps) == (
      875, 16_625)


def test_config_and_its_checks_import_no_tensorflow():
  import subprocess
  import sys
  code = ('import sys; from tfpipeline import config; '
          'config.validate(config.get_config()); '
          'print(sorted(m for m in ("tensorflow", "keras", '
          '"tensorflow_datasets") if m in sys.modules))')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                          capture_output=True, text=True, check=True)
  assert result.stdout.strip() == '[]'
