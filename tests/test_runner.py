"""tfpipeline.runner checks that need no training."""

import pytest

from tfpipeline import config, engines, runner
from tfpipeline.errors import UserError


def test_batch_must_fit_the_data_and_split_over_replicas():
  c = config.get_config()
  c.train.global_batch_size = 32
  runner._check_batch(c, 309, 2)
  with pytest.raises(UserError, match="20 training rows are fewer than one "
                     r"step's batch \(train.global_batch_size=32\)"):
    runner._check_batch(c, 20, 1)
  with pytest.raises(UserError, match='over 3 replicas; use a multiple of 3'):
    runner._check_batch(c, 309, 3)
  c.optimizer.gradient_accumulation_steps = 16  # Steps of 512 rows.
  with pytest.raises(UserError, match=(
      r"309 training rows are fewer than one step's batch \("
      r'train.global_batch_size=32 x optimizer.gradient_accumulation_steps='
      r'16\)')):
    runner._check_batch(c, 309, 2)


def test_tpu_batches_need_8_examples_per_core():
  c = config.get_config()
  c.train.global_batch_size = 32
  with pytest.raises(UserError, match=r'over 8 replicas \(8 per TPU core\); '
                     r'use a multiple of 64, e.g. 64'):
    runner._check_batch(c, 1000, 8, per_replica_multiple=8)
  c.train.global_batch_size = 128
  runner._check_batch(c, 1000, 8, per_replica_multiple=8)


def test_keras_fit_refuses_to_clip_each_replicas_part():
  c = config.get_config()
  c.optimizer.clipnorm = 1.0
  engines.check_replicas('keras_fit', c, 1)
  engines.check_replicas('tfpipeline', c, 2)
  with pytest.raises(UserError, match=r'optimizer.clipnorm with '
                     r'--engine=keras_fit on 2 replicas: Keras fit clips each '
                     r"replica's part"):
    engines.check_replicas('keras_fit', c, 2)


def test_a_run_builds_its_model_once(tmp_path, monkeypatch):
  """The checks before any write use the model the run trains (a fresh run
  built a throwaway one first)."""
  import tfpipeline
  from tfpipeline import models
  built = []
  build = models.build
  monkeypatch.setattr(models, 'build', lambda *args, **kwargs: built.append(
      build(*args, **kwargs)) or built[-1])
  c = config.load('seed_keras_mlp')
  c.train.epochs = 1
  c.report.energy_method = 'estimate'
  tfpipeline.run(c, tmp_path / 'run', strategy='cpu')
  assert len(built) == 1
  assert (tmp_path / 'run' / 'MANIFEST.json').is_file()


def test_a_run_records_its_decay_epochs_as_steps(tmp_path):
  import json
  import tfpipeline
  c = config.load('seed_keras_mlp')  # 100 training rows: 3 steps an epoch
  c.train.epochs = 1
  c.optimizer.schedule = 'cosine_decay'
  c.optimizer.decay_epochs = 3.0
  c.report.energy_method = 'estimate'
  tfpipeline.run(c, tmp_path / 'run', strategy='cpu')
  written = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert written['optimizer']['decay_epochs'] == 3.0
  assert written['optimizer']['decay_steps'] == 3 * (100 // 32)
