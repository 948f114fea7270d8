"""The default run's report, predictions, manifest and audit log, end to end;
`python -m tfpipeline.report` and `python -m tfpipeline.verify`."""

import csv
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

pytestmark = pytest.mark.smoke  # Also run on TF 2.20 in CI.

SECTIONS = {'training', 'compute', 'fairness', 'attributions', 'privacy',
            'provenance', 'exports', 'model_card'}
MODEL_CARD = ['model_details', 'intended_use', 'factors', 'metrics',
              'evaluation_data', 'training_data', 'ethical_considerations',
              'caveats_and_recommendations']


def _module(name, *args):
  return subprocess.run([sys.executable, '-m', name, *map(str, args)],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, 'PYTHONPATH': str(REPO)})


def _sha256(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def report(diabetes_run):
  model_dir, _ = diabetes_run
  return json.loads((model_dir / 'report' / 'report.json').read_text())


def test_report_files_and_sections(diabetes_run, report):
  model_dir, result = diabetes_run
  names = {p.name for p in (model_dir / 'report').iterdir()}
  assert names == {'report.json', 'report.md', 'report.html', 'loss.png',
                   'groups.png', 'attributions.png', 'predictions.csv'}
  for png in ('loss.png', 'groups.png', 'attributions.png'):
    assert (model_dir / 'report' / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert SECTIONS | {'schema_version'} == set(report)
  assert report['exports'] == {}  # The default exports no TFLite or ONNX.
  assert list(report['model_card']) == MODEL_CARD
  assert 'report: ' in result.stderr and 'report.html' in result.stderr


def test_html_is_one_self_contained_page(diabetes_run):
  model_dir, _ = diabetes_run
  page = (model_dir / 'report' / 'report.html').read_text()
  sources = re.findall(r'(?:src|href)="([^"]*)"', page)
  assert len(sources) == 3
  assert all(s.startswith('data:image/png;base64,') for s in sources)
  for heading in ('Compute and carbon', 'Fairness', 'Feature attributions',
                  'Privacy', 'Provenance and integrity', 'Model card'):
    assert f'>{heading}</h' in page
  markdown = (model_dir / 'report' / 'report.md').read_text()
  assert '![loss curves](loss.png)' in markdown


def test_predictions_csv_is_the_models_test_predictions(diabetes_run,
                                                         tfds_dir):
  import tfpipeline
  from tfpipeline import config
  from tfpipeline.data import sources
  model_dir, _ = diabetes_run
  with open(model_dir / 'report' / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  data_config = config.get_config().data
  data_config.data_dir = str(tfds_dir)
  test = sources.load(data_config, loss='mse').test
  assert len(rows) == len(test) == 67
  assert list(rows[0]) == ['index', 'source_row', 'age', 'sex', 'bmi', 'bp',
                           's1', 's2', 's3', 's4', 's5', 's6', 'progression',
                           'group:sex', 'prediction']
  assert [int(r['index']) for r in rows] == list(range(67))
  # The test split is a TFDS split of its own: its records, in order.
  assert [int(r['source_row']) for r in rows] == list(range(67))
  # float32 values at float32 precision ('21.72'), reading back exactly.
  assert all(len(r[c].replace('-', '').replace('.', '')) <= 9
             for r in rows for c in ('age', 'bmi', 'progression', 'prediction'))
  np.testing.assert_array_equal(
      np.asarray([[r[c] for c in list(rows[0])[2:12]] for r in rows],
                 np.float32), test.take()['features'])
  np.testing.assert_array_equal(
      np.asarray([r['progression'] for r in rows], np.float32),
      test.take()['labels'][:, 0])
  model = tfpipeline.load_model(model_dir)
  np.testing.assert_allclose(
      [float(r['prediction']) for r in rows],
      model.predict(test.take()['features'], verbose=0)[:, 0], rtol=1e-5)


def test_fairness_by_sex_recomputes_from_predictions_csv(diabetes_run, report):
  model_dir, _ = diabetes_run
  with open(model_dir / 'report' / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  fairness = report['fairness']
  assert fairness['group'] == 'sex' and set(fairness['by_group']) == {'1', '2'}
  for group, metrics in fairness['by_group'].items():
    errors = np.array([float(r['prediction']) - float(r['progression'])
                       for r in rows if r['group:sex'] == group])
    assert metrics['count'] == len(errors)
    assert metrics['mse'] == pytest.approx(np.mean(errors ** 2), rel=1e-5)
    assert metrics['mae'] == pytest.approx(np.mean(np.abs(errors)), rel=1e-5)
  mse = [m['mse'] for m in fairness['by_group'].values()]
  assert fairness['gaps']['mse']['ratio'] == pytest.approx(min(mse) / max(mse))
  assert fairness['gaps']['mse']['flagged'] == (min(mse) / max(mse) < 0.8)


def test_compute_section(report):
  compute = report['compute']
  assert compute['trainable_parameters'] == 10 * 64 + 64 + 64 + 1
  flops = compute['forward_flops_per_example']
  assert flops['matmul_agrees'] and flops['graph_matmul'] == 2 * (640 + 64)
  assert compute['examples_seen'] == 50 * (309 // 32) * 32
  assert compute['training_flops'] == 3 * flops['graph_total'] * 14400
  assert compute['achieved_flops_per_s'] == pytest.approx(
      compute['training_flops'] / compute['train_wall_s'])
  assert compute['devices']['kind'] == 'CPU'
  assert compute['utilisation'] == {
      'precision': 'float32', 'peak_flops_per_s': None,
      'peak_source': 'unknown peak: CPUs have no datasheet peak here; '
      'set report.peak_flops_per_s', 'mfu': None}
  assert 0 < compute['train_wall_s'] < compute['run_wall_s']
  assert compute['scope'].startswith('tfpipeline.run() from its start')
  assert 'resumed' not in compute['scope']
  assert compute['scope'].endswith(
      "examples seen and FLOPs are all workers'; energy and CO2e: this "
      'process, the only worker')
  assert compute['devices']['workers'] == compute['energy']['workers'] == 1
  assert compute['energy']['chief_kwh'] == compute['energy']['kwh']
  energy = compute['energy']
  assert energy['method'] in ('codecarbon', 'estimate') and energy['kwh'] > 0
  assert energy['co2e_kg'] == pytest.approx(energy['kwh'] * 475 / 1000)
  assert energy['uncertainty']


def test_attributions_section(report):
  attributions = report['attributions']
  assert attributions['examples'] == 67 and attributions['steps'] == 50
  assert attributions['completeness_error'] < 0.05
  assert (attributions['kind'], attributions['baseline']) == ('table', 'mean')
  features = {r['feature'] for r in attributions['ranking']}
  assert features == {'age', 'sex', 'bmi', 'bp', 's1', 's2', 's3', 's4', 's5',
                      's6'}
  importance = [r['mean_abs_attribution'] for r in attributions['ranking']]
  assert importance == sorted(importance, reverse=True)
  assert np.asarray(attributions['per_example']).shape == (67, 10)


def test_provenance_and_model_card(diabetes_run, report):
  model_dir, _ = diabetes_run
  provenance = report['provenance']
  assert provenance['config_sha256'] == _sha256(model_dir / 'config.json')
  assert provenance['data']['name'] == 'diabetes'
  assert provenance['data']['version'] == '1.0.0'
  assert provenance['data']['test']['rows'] == 67
  import tensorflow as tf
  assert provenance['packages']['tensorflow'] == tf.__version__
  assert tf.__version__ in provenance['packages']['tensorflow_wheel']
  assert provenance['seeds'] == {'train.seed': 0, 'data.split_seed': 0}
  assert provenance['backend'] == 'tensorflow'
  assert 'jax' not in provenance['packages']
  for name, sha in provenance['artefacts_sha256'].items():
    assert _sha256(model_dir / name) == sha
  assert report['privacy']['dp_sgd'] is False
  card = report['model_card']
  assert card['model_details']['backend'] == 'tensorflow'
  assert card['model_details']['software'].endswith(
      f'on TensorFlow {tf.__version__}')
  assert card['intended_use'].startswith('Not known to the run')
  assert card['metrics']['test'] == json.loads(
      (model_dir / 'metrics.json').read_text())


def test_manifest_and_audit_log_of_the_run(diabetes_run):
  model_dir, _ = diabetes_run
  files = json.loads((model_dir / 'MANIFEST.json').read_text())['files']
  assert {'model.keras', 'config.json', 'report/report.html',
          'saved_model/saved_model.pb'} <= set(files)
  assert files['model.keras'] == _sha256(model_dir / 'model.keras')
  entries = [json.loads(l) for l in
             (model_dir / 'audit.jsonl').read_text().splitlines()]
  assert len(entries) == 1 and entries[0]['outcome'] == 'completed'
  assert entries[0]['manifest_sha256'] == _sha256(model_dir / 'MANIFEST.json')
  assert entries[0]['config_sha256'] == _sha256(model_dir / 'config.json')
  verified = _module('tfpipeline.verify', model_dir)
  assert verified.returncode == 0, verified.stdout + verified.stderr
  assert verified.stdout.startswith(f'OK: {len(files)} files')


def test_verify_names_every_changed_missing_and_added_file(diabetes_run,
                                                           tmp_path):
  model_dir = tmp_path / 'copy'
  shutil.copytree(diabetes_run[0], model_dir)
  with open(model_dir / 'model.keras', 'r+b') as f:  # One flipped byte.
    f.seek(100)
    byte = f.read(1)
    f.seek(100)
    f.write(bytes([byte[0] ^ 1]))
  (model_dir / 'report' / 'groups.png').unlink()
  (model_dir / 'notes.txt').write_text('added')
  result = _module('tfpipeline.verify', model_dir)
  assert result.returncode == 1
  assert result.stdout.splitlines() == [
      f'{model_dir}: changed: model.keras',
      f'{model_dir}: missing: report/groups.png',
      f'{model_dir}: added: notes.txt',
      f'FAILED: 3 problem(s) in {model_dir}']
  import tfpipeline
  with pytest.raises(ValueError, match='model.keras changed since the run'):
    tfpipeline.load_model(model_dir)


def test_verify_without_a_run_is_bad_input(tmp_path):
  result = _module('tfpipeline.verify', tmp_path)
  assert result.returncode == 2
  assert result.stderr.strip() == (f'error: {tmp_path} has no MANIFEST.json; '
                                   f'give the --model_dir of a finished run')
  usage = _module('tfpipeline.verify')
  assert usage.returncode == 2 and usage.stderr.strip() == (
      'error: usage: python -m tfpipeline.verify MODEL_DIR')
  (tmp_path / 'MANIFEST.json').write_text('{"not": "a manifest"}')
  unreadable = _module('tfpipeline.verify', tmp_path)
  assert unreadable.returncode == 1
  assert 'changed: MANIFEST.json (unreadable: KeyError' in unreadable.stdout


def test_report_command_renders_the_same_bytes(diabetes_run, tmp_path):
  model_dir = tmp_path / 'copy'
  shutil.copytree(diabetes_run[0], model_dir)
  before = {p.name: p.read_bytes() for p in (model_dir / 'report').iterdir()}
  for p in (model_dir / 'report').glob('*.png'):
    p.unlink()
  (model_dir / 'report' / 'report.html').unlink()
  result = _module('tfpipeline.report', model_dir)
  assert result.returncode == 0, result.stderr
  after = {p.name: p.read_bytes() for p in (model_dir / 'report').iterdir()}
  assert after == before
  assert _module('tfpipeline.verify', model_dir).returncode == 0
  missing = _module('tfpipeline.report', tmp_path / 'nothing')
  assert missing.returncode == 2
  assert missing.stderr.strip() == (
      f'error: {tmp_path / "nothing"} has no report/report.json; give the '
      f'--model_dir of a finished run')


def test_a_schema_2_report_still_renders(diabetes_run, tmp_path):
  """Written before the JAX backend: no backend, no FLOP cross-check (and
  before the exports: none)."""
  model_dir = tmp_path / 'copy'
  shutil.copytree(diabetes_run[0], model_dir)
  path = model_dir / 'report' / 'report.json'
  report = json.loads(path.read_text())
  del report['training'], report['provenance']['backend']
  del report['compute']['forward_flops_per_example']['cross_check']
  del report['exports']
  path.write_text(json.dumps({**report, 'schema_version': 2}))
  from tfpipeline.report import render
  render.render(model_dir)
  page = (model_dir / 'report' / 'report.md').read_text()
  assert 'Keras on its tensorflow backend' in page


def _csv_with_groups(path):
  """A CSV whose group cells a spreadsheet would run, and negative numbers."""
  groups = ['=HYPERLINK("http://example.com","x")', '-1', '@SUM(A1)',
            '+cmd', 'plain', '\tTAB']
  with open(path, 'w', newline='') as f:
    csv.writer(f, lineterminator='\n').writerows(
        [['a', 'b', 'g', 'y']] + [[i - 10.5, (i * 7) % 5, groups[i % 6],
                                   (i % 3) - 1.25] for i in range(40)])
  return path.read_text().splitlines(), groups


def test_report_predictions_join_back_to_the_csv_lines(tmp_path):
  from tfpipeline import config
  from tfpipeline import evaluation
  from tfpipeline import report as report_lib
  from tfpipeline.data import sources
  lines, groups = _csv_with_groups(tmp_path / 'data.csv')
  data_config = config.get_config().data
  data_config.update({'source': 'csv', 'path': str(tmp_path / 'data.csv'),
                      'features': ('a', 'b'), 'label': 'y', 'group': 'g'})
  splits = sources.load(data_config, loss='mse')
  test = splits.test.take()
  count = len(splits.test)
  predictions = -np.arange(count, dtype=np.float32)[:, None] / 8
  report_lib._write_predictions(
      tmp_path / 'predictions.csv', splits, evaluation.Evaluation(
          predictions, test['labels'], test['groups'], np.arange(count)),
      'mse')
  with open(tmp_path / 'predictions.csv', newline='') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['index', 'source_row', 'a', 'b', 'y', 'group:g',
                     'prediction']
  assert [int(r[0]) for r in rows[1:]] == list(range(count))
  # source_row is the file's line (the header is line 1), as errors name
  # rows: that line holds the row's features, label and group.
  source_lines = [int(r[1]) for r in rows[1:]]
  assert source_lines != sorted(source_lines)  # A shuffled split.
  inert = {g: ("'" + g if g[0] in '=@+\t' else g) for g in groups}
  for row in rows[1:]:
    a, b, g, y = next(csv.reader([lines[int(row[1]) - 1]]))
    assert [float(row[2]), float(row[3]), float(row[4])] == [
        float(a), float(b), float(y)]
    assert row[5] == inert[g]  # Formulas neutralised, numbers ('-1') not.
    assert float(row[6]) == -int(row[0]) / 8
  assert {r[5] for r in rows[1:]} <= set(inert.values())
  assert any(r[2].startswith('-') and r[6].startswith('-') for r in rows[1:])


def test_markdown_shows_names_from_the_data_literally():
  from markdown_it import MarkdownIt
  from tfpipeline.report import render
  feature, group = 'a|b*c_<x>', '=HYPERLINK("http://x","[y](z)")'
  texts = {'heading': f'{feature} #', 'text': f'# {group} `code` ~~s~~ $m$',
           'ordered': '1. not a list', 'bullet': '- not a list either',
           'token': '<b>&amp;'}
  markdown = render._markdown([
      render._Heading(texts['heading']), render._Text(texts['text']),
      render._Text(texts['ordered']), render._Text(texts['bullet']),
      render._Text('an item', bullet=True),
      render._Table(['sex|group', 'mse'], [[group, '-1.5'], [feature, '2']]),
      render._Tokens('Test example 0', [texts['token'], feature], [0.5, -1])])
  page = MarkdownIt('commonmark').enable(['table', 'strikethrough']).render(
      markdown)
  assert set(re.findall(r'<(\w+)', page)) == {
      'h2', 'p', 'ul', 'li', 'table', 'thead', 'tbody', 'tr', 'th', 'td'}
  cells = re.findall(r'<t[hd]>(.*?)</t[hd]>', page)
  assert cells == [html.escape(c) for c in ('sex|group', 'mse', group, '-1.5',
                                            feature, '2')]
  paragraphs = re.findall(r'<(?:h2|p|li)>(.*?)</(?:h2|p|li)>', page)
  assert paragraphs == [html.escape(t) for t in (
      texts['heading'], texts['text'], texts['ordered'], texts['bullet'],
      'an item', f"Test example 0: {texts['token']}(+0.5) {feature}(-1)")]


def test_plots_show_names_from_the_data_as_text():
  from tfpipeline.report import plots
  name = r'$\notacommand$'  # Mathtext that matplotlib cannot parse.
  metrics = {'count': 3.0, 'mse': 1.0}
  pngs = [plots.group_plot({
      'group': name, 'by_group': {name: metrics, 'b': {**metrics, 'mse': 2.0}},
      'gaps': {'mse': {}}, 'min_ratio': 0.8}), plots.attribution_plot({
          'ranking': [{'feature': name, 'mean_abs_attribution': 1.0}],
          'examples': 3})]
  assert all(png.startswith(b'\x89PNG\r\n\x1a\n') for png in pngs)
