"""End to end: `python -m tfpipeline.train` in a subprocess, artefacts checked;
bad input through the command's own cli() in this process."""

import csv
import json
import re

import numpy as np
import pytest

from conftest import read_jsonl, run_cli
from in_process import run_main

# Also run on TF 2.20 in CI: the default run and what it writes, Keras fit's
# engine, bad input.
smoke = pytest.mark.smoke

ARTEFACTS = {'config.json', 'metrics.jsonl', 'metrics.json', 'tensorboard',
             'model.keras', 'saved_model', 'checkpoints', 'report',
             'MANIFEST.json', 'audit.jsonl'}
RECORD_KEYS = {'step', 'epoch', 'loss', 'examples_per_sec', 'input_stall_pct',
               'wall_s'}


@smoke
def test_default_run_writes_every_artefact(diabetes_run):
  model_dir, result = diabetes_run
  assert ARTEFACTS <= {p.name for p in model_dir.iterdir()}
  assert not [p for p in model_dir.iterdir() if p.name.startswith('.')]
  written = json.loads((model_dir / 'config.json').read_text())
  assert written['data']['name'] == 'diabetes'
  assert written['train']['epochs'] == 50
  # Device-dependent defaults are recorded as resolved on this CPU.
  assert written['train']['mixed_precision'] == 'float32'
  assert written['train']['steps_per_loop'] == 100
  assert 'epoch 50/50' in result.stderr


@smoke
def test_default_console_shows_only_the_packages_lines(diabetes_run):
  model_dir, result = diabetes_run
  # Through a pipe: plain lines, without a bar's control characters, and
  # none of absl's, TensorFlow's C++, TFDS's or Keras's (a healthy run
  # logs no warning, the only lines that keep absl's prefix).
  assert '\x1b' not in result.stderr and '\r' not in result.stderr
  for line in result.stderr.splitlines():
    assert not re.match(r'([IWEF]\d{4} |\d{4}-\d\d-\d\d )', line), line
  # An epoch line shows the input stall only when its device call took a
  # second or more (in a 9-step call the stall means nothing; metrics.jsonl
  # has it always). The call's time is its examples over its throughput.
  epochs = [line for line in result.stderr.splitlines()
            if line.startswith('epoch ')]
  records = read_jsonl(model_dir / 'metrics.jsonl')
  call_s = [9 * 32 / r['examples_per_sec'] for r in records]
  assert len(epochs) == 50
  assert [('stall' in line) for line in epochs] == [s >= 1.0 for s in call_s]


@smoke
def test_default_run_reaches_r2_on_the_test_split(diabetes_run):
  model_dir, _ = diabetes_run
  metrics = json.loads((model_dir / 'metrics.json').read_text())
  assert metrics['r2'] >= 0.35, metrics
  assert metrics['rmse'] == pytest.approx(np.sqrt(metrics['loss']), rel=1e-4)


@smoke
def test_metrics_jsonl_logs_every_epoch_and_the_loss_falls(diabetes_run):
  model_dir, _ = diabetes_run
  records = read_jsonl(model_dir / 'metrics.jsonl')
  assert [r['epoch'] for r in records] == list(range(1, 51))
  assert records[-1]['step'] == 50 * (309 // 32)
  assert all(RECORD_KEYS | {'val_loss', 'val_r2'} <= set(r) for r in records)
  assert records[-1]['loss'] < 0.5 * records[0]['loss']
  assert records[-1]['val_loss'] < records[0]['val_loss']
  assert all(r['examples_per_sec'] > 0 and 0 <= r['input_stall_pct'] <= 100
             for r in records)


@smoke
def test_tensorboard_reads_the_scalars(diabetes_run):
  from tensorboard.backend.event_processing import event_accumulator
  model_dir, _ = diabetes_run
  events = event_accumulator.EventAccumulator(
      str(model_dir / 'tensorboard'), size_guidance={'tensors': 0})
  events.Reload()
  assert {'loss', 'val_loss', 'val_r2', 'examples_per_sec'} <= set(
      events.Tags()['tensors'])
  losses = events.Tensors('loss')
  assert len(losses) == 50 and losses[-1].step == 50 * (309 // 32)


@smoke
def test_saved_models_take_raw_features_and_agree(diabetes_run, tfds_dir):
  import tensorflow as tf
  import tfpipeline
  from tfpipeline import config
  from tfpipeline.data import sources
  model_dir, _ = diabetes_run
  data_config = config.get_config().data
  data_config.data_dir = str(tfds_dir)
  test = sources.load(data_config, loss='mse').test.take()
  model = tfpipeline.load_model(model_dir)  # Verified, safe mode.
  predictions = model.predict(test['features'], verbose=0)
  serving = tf.saved_model.load(str(model_dir / 'saved_model'))
  served = serving.signatures['serving_default'](
      tf.constant(test['features']))
  np.testing.assert_allclose(next(iter(served.values())).numpy(), predictions,
                             rtol=1e-5, atol=1e-3)
  labels = test['labels']
  residual = ((labels - predictions) ** 2).sum()
  r2 = 1 - residual / ((labels - labels.mean()) ** 2).sum()
  metrics = json.loads((model_dir / 'metrics.json').read_text())
  assert r2 == pytest.approx(metrics['r2'], abs=1e-4)


@pytest.mark.parametrize('experiment, label_shape', [
    ('seed_keras_mlp', 1), ('seed_torch_mlp', 10)])
def test_seed_experiments_train(tmp_path, experiment, label_shape):
  model_dir = tmp_path / 'run'
  result = run_cli(f'--config={experiment}', f'--model_dir={model_dir}',
                   '--config.train.epochs=8')
  assert result.returncode == 0, result.stderr[-3000:]
  records = read_jsonl(model_dir / 'metrics.jsonl')
  assert len(records) == 8
  assert records[-1]['loss'] < records[0]['loss']
  assert ARTEFACTS <= {p.name for p in model_dir.iterdir()}
  written = json.loads((model_dir / 'config.json').read_text())
  assert written['train']['epochs'] == 8
  assert written['model']['output_units'] == label_shape


@smoke
def test_csv_experiment_with_keras_fit_engine(tmp_path, regression_csv):
  experiment = tmp_path / 'linear.py'
  experiment.write_text(
      'from tfpipeline import config\n'
      'def get_config():\n'
      '  c = config.get_config()\n'
      "  c.data.source = 'csv'\n"
      f"  c.data.path = {str(regression_csv)!r}\n"
      "  c.data.name = 'linear'\n"
      "  c.data.features = ('a', 'b')\n"
      "  c.data.label = 'y'\n"
      "  c.data.group = 'group'\n"
      '  c.train.epochs = 12\n'
      '  c.train.global_batch_size = 16\n'
      '  c.optimizer.learning_rate = 0.05\n'
      '  return c\n')
  for engine in ('tfpipeline', 'keras_fit'):
    model_dir = tmp_path / engine
    result = run_cli(f'--config={experiment}', f'--model_dir={model_dir}',
                     f'--engine={engine}')
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((model_dir / 'metrics.json').read_text())
    assert metrics['r2'] > 0.95, (engine, metrics)
    assert len(read_jsonl(model_dir / 'metrics.jsonl')) == 12


def test_npz_source_and_flagfile(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(200, 3)).astype(np.float32)
  np.savez(tmp_path / 'data.npz', x=x, y=x @ [1.0, -1.0, 0.5])
  flagfile = tmp_path / 'flags.txt'
  flagfile.write_text('\n'.join([
      '--config=seed_keras_mlp', '--config.data.source=npz',
      f'--config.data.path={tmp_path / "data.npz"}',
      "--config.data.features=('x',)", '--config.data.label=y',
      '--config.train.epochs=3', f'--model_dir={tmp_path / "run"}',
      '--verbosity=1']))
  result = run_cli(f'--flagfile={flagfile}')
  assert result.returncode == 0, result.stderr[-3000:]
  # --verbosity=1 brings the libraries' lines back, and absl's full format.
  assert 'Assets written to' in result.stderr
  assert re.search(r'^I\d{4} [\d:.]+ +\d+ run_log\.py:\d+\] epoch 3/3  step ',
                   result.stderr, re.MULTILINE)
  written = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert written['data']['source'] == 'npz'
  assert written['data']['features'] == ['x']
  # One key, three columns: the report names each column.
  report = json.loads((tmp_path / 'run' / 'report' / 'report.json').read_text())
  assert sorted(r['feature'] for r in report['attributions']['ranking']) == [
      'x[0]', 'x[1]', 'x[2]']


def test_python_api_returns_the_test_metrics(tmp_path):
  import tfpipeline
  from tfpipeline import config
  c = config.load('seed_keras_mlp')
  c.train.epochs = 2
  metrics = tfpipeline.run(c, tmp_path / 'run', strategy='cpu')
  assert metrics == json.loads((tmp_path / 'run' / 'metrics.json').read_text())
  assert set(metrics) == {'loss', 'mae', 'rmse', 'r2'}


def _bad_csv(tmp_path, regression_csv, edit):
  lines = regression_csv.read_text().splitlines()
  path = tmp_path / 'bad.csv'
  path.write_text('\n'.join(edit(lines)) + '\n')
  return ['--config.data.source=csv', f'--config.data.path={path}',
          "--config.data.features=('a','b')", '--config.data.label=y',
          '--config.data.group=group']


def _experiment(tmp_path, body):
  path = tmp_path / 'careless.py'
  path.write_text('from tfpipeline import config\n'
                  'def get_config():\n'
                  '  c = config.get_config()\n' + body)
  return [f'--config={path}']


BAD_INPUTS = {
    'experiment raises': (lambda t, c: _experiment(
        t, "  c.train.epochs = int('x')\n  return c\n"),
                          "careless.py, line 4: get_config() raised: "
                          "ValueError: invalid literal"),
    'experiment returns a dict': (lambda t, c: _experiment(
        t, '  return c.to_dict()\n'),
                                  'get_config() returned a dict, not an '
                                  'ml_collections ConfigDict'),
    'class weights, one too many': (
        lambda t, c: ['--config.loss=binary_crossentropy',
                      '--config.train.class_weight=(1.0, 2.0, 0.5)'],
        'train.class_weight=(1.0, 2.0, 0.5) is invalid: expected 2 weights'),
    'balanced weights for a class without examples': (lambda t, c: _bad_csv(
        t, c, lambda l: l[:1] + [f'{r.rsplit(",", 1)[0]},{i % 3}'
                                 for i, r in enumerate(l[1:])]) + [
        '--config.loss=sparse_categorical_crossentropy',
        '--config.model.output_units=4', '--config.train.class_weight=balanced'],
        "train.class_weight='balanced': class 3 of label 'y' has no training "
        'example (of 84)'),
    'class id out of range': (lambda t, c: _bad_csv(
        t, c, lambda l: l[:1] + [
            f'{r.rsplit(",", 1)[0]},{7 if i == 10 else i % 5}'
            for i, r in enumerate(l[1:])]) + [
        '--config.loss=sparse_categorical_crossentropy',
        '--config.model.output_units=5'], "bad.csv, row 12, label 'y' is 7: "
                              'loss=sparse_categorical_crossentropy needs '
                              'class ids 0 to 4'),
    'CR line ends': (lambda t, c: _bad_csv(t, c, lambda l: ['\r'.join(l)]),
                     'row 1: a line ends in a lone carriage return'),
    'duplicate column': (lambda t, c: _bad_csv(
        t, c, lambda l: ['a,b,a,y'] + l[1:]), "column 'a' appears twice"),
    'label among the features': (lambda t, c: [
        "--config.data.features=('age','bmi')", '--config.data.label=age'],
                                 "the label 'age' (data.label) is also a "
                                 'feature'),
    'unknown experiment': (lambda t, c: ['--config=no_such_experiment'],
                           "unknown experiment 'no_such_experiment'"),
    'unknown config key': (lambda t, c: ['--config.train.epochz=3'],
                           "'epochz'"),
    'wrong value type': (lambda t, c: ['--config.train.epochs=many'],
                         '--config.train.epochs=many'),
    'invalid value': (lambda t, c: ['--config.train.global_batch_size=0'],
                      'train.global_batch_size=0'),
    'missing file': (lambda t, c: ['--config.data.source=csv',
                                   f'--config.data.path={t}/none.csv',
                                   '--config.data.label=y'],
                     'none.csv does not exist'),
    'unreadable file': (lambda t, c: ['--config.data.source=npz',
                                      f'--config.data.path={c}',
                                      '--config.data.label=y'],
                        'not a readable .npz archive'),
    'non-numeric cell': (lambda t, c: _bad_csv(
        t, c, lambda l: l[:4] + ['1.0,x1,a,2.0'] + l[5:]),
                         "bad.csv, row 5, column 'b': 'x1' is not a number"),
    'missing column': (lambda t, c: _bad_csv(
        t, c, lambda l: ['a,b,group,target'] + l[1:]),
                       "no column 'y'"),
    'NaN feature': (lambda t, c: _bad_csv(
        t, c, lambda l: l[:9] + ['nan,1.0,a,2.0'] + l[10:]),
                    "bad.csv, row 10, feature 'a' is nan"),
    'Inf label': (lambda t, c: _bad_csv(
        t, c, lambda l: l[:9] + ['1.0,1.0,a,-inf'] + l[10:]),
                  "bad.csv, row 10, label 'y' is -inf"),
    'fewer rows than a batch': (lambda t, c: _bad_csv(t, c, lambda l: l) + [
        '--config.train.global_batch_size=128'],
                                "fewer than one step's batch"),
    'TFDS not prepared': (lambda t, c: [
        '--config.data.name=mnist', f'--config.data.data_dir={t}/tfds',
        '--config.data.download=False', "--config.data.features=('image',)",
        '--config.data.label=label'], "'mnist' is not prepared"),
    'bad strategy': (lambda t, c: ['--strategy=quantum'], '--strategy=quantum'),
    'unknown activation': (lambda t, c: ['--config.model.activation=relux'],
                           'model.activation: Could not interpret activation'),
    'unknown output activation': (
        lambda t, c: ['--config.model.output_activation=soft'],
        'model.output_activation: Could not interpret activation'),
    'negative seed': (lambda t, c: ['--config.train.seed=-1'],
                      'train.seed=-1 is invalid'),
    'early stopping on a metric not validated': (
        lambda t, c: ['--config.train.early_stopping.metric=val_accuracy'],
        "train.early_stopping.metric='val_accuracy' is invalid: expected "
        'one of val_loss, val_mae, val_rmse, val_r2'),
    'two ways to clip': (
        lambda t, c: ['--config.optimizer.clipnorm=1.0',
                      '--config.optimizer.clipvalue=0.5'],
        'optimizer.clipvalue=0.5 is invalid: expected 0.0 with '
        'optimizer.clipnorm set'),
    'a plateau under a schedule': (
        lambda t, c: ['--config.optimizer.reduce_on_plateau.patience=2',
                      '--config.optimizer.schedule=cosine_decay'],
        "optimizer.schedule='cosine_decay' is invalid: expected 'constant' "
        'with optimizer.reduce_on_plateau'),
    'model_dir is a file': (lambda t, c: [f'--model_dir={c}'],
                            'is a file; give a directory'),
    'multi_worker without TF_CONFIG': (lambda t, c: ['--strategy=multi_worker'],
                                       'needs TF_CONFIG'),
    'unknown export format': (
        lambda t, c: ["--config.export.formats=('saved_model','tfjs')"],
        "export.formats=('saved_model', 'tfjs') is invalid"),
    'unknown quantization': (
        lambda t, c: ["--config.export.formats=('tflite',)",
                      '--config.export.tflite_quantization=int4'],
        "export.tflite_quantization='int4' is invalid"),
    'quantization without tflite': (
        lambda t, c: ['--config.export.tflite_quantization=float16'],
        "expected formats including 'tflite'"),
}


@smoke
@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path, regression_csv, case, monkeypatch):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  make_args, fragment = BAD_INPUTS[case]
  model_dir = tmp_path / 'run'
  result = run_main(f'--model_dir={model_dir}', *make_args(tmp_path,
                                                           regression_csv))
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.last_line.startswith('error: ')
  assert fragment in result.last_line
  assert 'Traceback' not in result.stderr
  assert not model_dir.exists()


@pytest.mark.parametrize('loss, units, label, smoothing, class_weight', [
    ('binary_crossentropy', 1, lambda a, b: (a + b > 0).astype(int), 0.1,
     '(1.0, 2.0)'),
    ('sparse_categorical_crossentropy', 3,
     lambda a, b: np.digitize(a - b, [-0.7, 0.7]), 0.0, 'balanced'),
])
def test_table_classification_end_to_end(tmp_path, loss, units, label,
                                         smoothing, class_weight):
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=400), rng.normal(size=400)
  y = label(a, b)
  path = tmp_path / 'classes.csv'
  path.write_text('a,b,side,y\n' + ''.join(
      f'{x1:.5f},{x2:.5f},{"LR"[i % 2]},{t}\n'
      for i, (x1, x2, t) in enumerate(zip(a, b, y))))
  model_dir = tmp_path / 'run'
  # One flag per column role: the features are every other column.
  result = run_cli(f'--model_dir={model_dir}', '--config.data.source=csv',
                   f'--config.data.path={path}',
                   '--config.data.label=y', '--config.data.group=side',
                   f'--config.loss={loss}', f'--config.model.output_units={units}',
                   '--config.train.epochs=30',
                   f'--config.train.label_smoothing={smoothing}',
                   f'--config.train.class_weight={class_weight}')
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((model_dir / 'metrics.json').read_text())
  assert metrics['accuracy'] >= 0.9
  report = json.loads((model_dir / 'report' / 'report.json').read_text())
  assert report['training']['label_smoothing'] == smoothing
  training = report['model_card']['model_details']['training']
  if class_weight == 'balanced':  # n / (3 count) of the training split's.
    from tfpipeline import config
    from tfpipeline.data import sources
    data = config.get_config().data
    data.update(json.loads((model_dir / 'config.json').read_text())['data'])
    counts = np.bincount(sources.load(data, loss=loss).train.take()[
        'labels'][:, 0].astype(int), minlength=3)
    weights = counts.sum() / (3 * counts)
    assert not np.allclose(weights, 400 / (3 * np.bincount(y)))  # All rows'.
    assert 'balanced class weights ' in training
  else:
    weights = [1.0, 2.0]
    assert 'class weights 1, 2' in training
  assert report['training']['class_weight'] == (
      'balanced' if class_weight == 'balanced' else 'given')
  np.testing.assert_allclose(report['training']['class_weights'], weights,
                             rtol=1e-12)
  if smoothing:  # Targets 0.95 and 0.05, weights >= 1: no loss below their
    # entropy.
    floor = -(0.95 * np.log(0.95) + 0.05 * np.log(0.05))
    assert min(r['loss'] for r in read_jsonl(
        model_dir / 'metrics.jsonl')) >= floor - 1e-6
  assert set(metrics) == ({'loss', 'accuracy', 'auc'} if units == 1
                          else {'loss', 'accuracy'})
  assert sorted(report['fairness']['by_group']) == ['L', 'R']
  assert report['attributions']['output'].startswith(
      'output 0' if units == 1 else 'predicted class')
  assert {r['feature'] for r in report['attributions']['ranking']} == {'a', 'b'}
  with open(model_dir / 'report' / 'predictions.csv') as f:
    header = f.readline().strip().split(',')
  assert header == ['index', 'source_row', 'a', 'b', 'y', 'group:side'] + (
      ['prediction'] if units == 1 else
      [f'prediction_{i}' for i in range(3)] + ['predicted_class'])
  written = json.loads((model_dir / 'config.json').read_text())
  assert (written['data']['features'], written['data']['group']) == (
      ['a', 'b'], 'side')

  # The trained model scores the file's rows: probabilities, and the class.
  output = tmp_path / 'scored.csv'
  result = run_main(str(model_dir), f'--input={path}', f'--output={output}',
                    command='predict')
  assert result.returncode == 0, result.stderr[-3000:]
  with open(output) as f:
    rows = list(csv.DictReader(f))
  assert [r['y'] for r in rows] == [str(t) for t in y]
  assert [r['group:side'] for r in rows] == ['LR'[i % 2] for i in range(400)]
  if units == 1:
    assert list(rows[0]) == ['index', 'source_row', 'y', 'group:side',
                             'prediction']
    predicted = np.array([float(r['prediction']) >= 0.5 for r in rows])
  else:
    assert list(rows[0]) == ['index', 'source_row', 'y', 'group:side',
                             'prediction_0', 'prediction_1', 'prediction_2',
                             'predicted_class']
    probabilities = np.array([[float(r[f'prediction_{c}']) for c in range(3)]
                              for r in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    predicted = np.array([int(r['predicted_class']) for r in rows])
    np.testing.assert_array_equal(predicted, probabilities.argmax(axis=1))
  assert (predicted == y).mean() >= 0.9


def test_existing_run_is_left_untouched(tmp_path):
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  (model_dir / 'metrics.json').write_text('{"r2": 0.5}')
  result = run_main('--config=seed_keras_mlp', f'--model_dir={model_dir}')
  assert result.returncode == 2
  assert 'holds files but no run' in result.last_line
  assert [p.name for p in model_dir.iterdir()] == ['metrics.json']
  assert (model_dir / 'metrics.json').read_text() == '{"r2": 0.5}'
