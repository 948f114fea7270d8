"""Resume checks what a run trains on: its data and its engine."""

import json

import pytest

from tfpipeline import config, run_identity
from tfpipeline.errors import UserError


def _identity(sha256='a' * 64, engine='tfpipeline', train=96, path='/d.csv'):
  return {'engine': engine,
          'data': {'source': 'csv', 'path': path, 'sha256': sha256},
          'rows': {'train': train, 'validation': 12, 'test': 12}}


def test_other_data_is_refused_unless_allowed_then_both_are_recorded(
    tmp_path):
  run_identity.record(tmp_path, _identity(), 0)
  run_identity.check(tmp_path, _identity(), allow_change=False)
  # A moved copy of the same data (data.path is the config's to check).
  run_identity.check(tmp_path, _identity(path='/elsewhere/d.csv'),
                     allow_change=False)
  edited = _identity(sha256='b' * 64)
  with pytest.raises(UserError, match=(
      f"--model_dir={tmp_path} holds a run trained on other data: "
      f"data.sha256 was '{'a' * 64}', now '{'b' * 64}'; use a new "
      "--model_dir, or pass --allow_config_change")):
    run_identity.check(tmp_path, edited, allow_change=False)
  with pytest.raises(UserError, match='rows.train was 96, now 95; use'):
    run_identity.check(tmp_path, _identity(train=95), allow_change=False)
  with pytest.raises(UserError, match="now 'b+' and 1 more; use"):
    run_identity.check(tmp_path, _identity(sha256='b' * 64, train=95),
                       allow_change=False)
  run_identity.check(tmp_path, edited, allow_change=True)
  run_identity.record(tmp_path, edited, 40)
  run_identity.record(tmp_path, edited, 60)  # The same data: no new version.
  versions = run_identity.versions(tmp_path)
  assert [(v['from_step'], v['data']['sha256']) for v in versions] == [
      (0, 'a' * 64), (40, 'b' * 64)]


def test_a_switch_of_engine_is_refused_even_when_changes_are_allowed(
    tmp_path):
  run_identity.record(tmp_path, _identity(), 0)
  for allow_change in (False, True):
    with pytest.raises(UserError, match=(
        'holds a run trained with --engine=tfpipeline; resume it with '
        '--engine=tfpipeline')):
      run_identity.check(tmp_path, _identity(engine='keras_fit'),
                         allow_change=allow_change)


def test_a_restart_from_step_0_forgets_versions_that_trained_nothing(
    tmp_path):
  run_identity.record(tmp_path, _identity(), 0)
  run_identity.record(tmp_path, _identity(sha256='c' * 64), 0)
  assert [v['data']['sha256'] for v in run_identity.versions(tmp_path)] == [
      'c' * 64]


def test_runs_before_identity_json_are_not_checked_and_damage_is_named(
    tmp_path):
  run_identity.check(tmp_path, _identity(engine='keras_fit'),
                     allow_change=False)
  (tmp_path / run_identity.FILE).write_text('{"versions": ')
  with pytest.raises(UserError, match='identity.json is damaged'):
    run_identity.check(tmp_path, _identity(), allow_change=False)


def _csv_config(path):
  c = config.get_config()
  c.data.source = 'csv'
  c.data.path = str(path)
  c.data.features = ('a', 'b')
  c.data.label = 'y'
  c.data.group = 'group'
  c.train.epochs = 2
  c.train.global_batch_size = 16
  return c


def test_a_csv_edited_between_runs_is_refused_then_resumed_when_allowed(
    tmp_path, regression_csv):
  import tfpipeline
  model_dir = tmp_path / 'run'
  tfpipeline.run(_csv_config(regression_csv), model_dir, strategy='cpu')
  first = json.loads((model_dir / 'identity.json').read_text())['versions']
  assert [v['engine'] for v in first] == ['tfpipeline']
  assert sum(first[0]['rows'].values()) == 120  # The file's rows.
  steps = 2 * (first[0]['rows']['train'] // 16)  # Of the first run.
  lines = regression_csv.read_text().splitlines()
  lines[5] = lines[5].replace('.', '.9', 1)  # One value edited in place.
  regression_csv.write_text('\n'.join(lines) + '\n')
  before = {p: p.read_bytes() for p in model_dir.rglob('*') if p.is_file()}
  longer = _csv_config(regression_csv)
  longer.train.epochs = 3
  with pytest.raises(UserError, match=(
      r'holds a run trained on other data: data.sha256 was')):
    tfpipeline.run(longer, model_dir, strategy='cpu')
  with pytest.raises(UserError, match='--engine=tfpipeline'):
    tfpipeline.run(longer, model_dir, strategy='cpu', engine='keras_fit',
                   allow_config_change=True)
  assert before == {p: p.read_bytes() for p in model_dir.rglob('*')
                    if p.is_file()}
  tfpipeline.run(longer, model_dir, strategy='cpu', allow_config_change=True)
  versions = json.loads((model_dir / 'identity.json').read_text())['versions']
  assert [v['from_step'] for v in versions] == [0, steps]
  assert versions[0]['data']['sha256'] != versions[1]['data']['sha256']
  report = json.loads((model_dir / 'report' / 'report.json').read_text())
  assert report['provenance']['data_versions'] == versions
  assert (f"from step {steps}: source=csv, sha256="
          f"{versions[1]['data']['sha256']}") in (
              model_dir / 'report' / 'report.md').read_text()
