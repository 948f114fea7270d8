"""Exports for devices and other runtimes (export.formats): model.tflite
and model.onnx written, listed in the manifest, checked against
model.keras and recorded in the report; `predict --format` scores with
them; a model a converter cannot take costs a line of the report, not the
run. (The JAX backend's: tests/test_jax_report.py.)"""

import csv
import json
import shutil

import keras
import numpy as np
import pytest

from conftest import foreign_lines, run_cli
from in_process import run_main

from tfpipeline import export
from tfpipeline.data import pipeline
from tfpipeline.data.splits import Split

EVERY_FORMAT = "--config.export.formats=('saved_model','tflite','onnx')"


@pytest.fixture(scope='module')
def exported(tmp_path_factory, tfds_dir):
  """The default experiment, 2 epochs, exported in every format."""
  model_dir = tmp_path_factory.mktemp('export') / 'run'
  result = run_cli(f'--model_dir={model_dir}', '--config.train.epochs=2',
                   f'--config.data.data_dir={tfds_dir}', EVERY_FORMAT)
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir, result


def test_exports_are_listed_checked_and_reported(exported):
  model_dir, result = exported
  listed = json.loads((model_dir / 'MANIFEST.json').read_text())['files']
  assert {'model.keras', 'saved_model/saved_model.pb', 'model.tflite',
          'model.onnx'} <= set(listed)
  report = json.loads((model_dir / 'report' / 'report.json').read_text())
  assert report['schema_version'] == 4
  assert set(report['exports']) == {'tflite', 'onnx'}
  for name, check in report['exports'].items():
    assert check['path'] == f'model.{name}' and check['ok'], check
    assert check['examples'] == 67  # The whole test split.
    assert check['relative_tolerance'] == 1e-4
    assert 0 <= check['max_abs_diff'] <= check['tolerance'] < 0.1
    assert report['provenance']['artefacts_sha256'][check['path']] == (
        listed[check['path']])
    assert f"export {check['path']}: max |difference| from model.keras" in (
        result.stderr)
  assert report['exports']['tflite']['quantization'] == 'none'
  page = (model_dir / 'report' / 'report.md').read_text()
  assert '## Exports' in page and '| onnx | model.onnx |' in page
  # No converter's, LiteRT's or ONNX Runtime's lines on the console.
  assert not foreign_lines(result.stderr)


def test_exports_predict_like_model_keras(exported, tfds_dir):
  import onnxruntime
  import tfpipeline
  from ai_edge_litert import interpreter
  from tfpipeline import config
  from tfpipeline.data import sources
  model_dir, _ = exported
  data_config = config.get_config().data
  data_config.data_dir = str(tfds_dir)
  features = sources.load(data_config, loss='mse').test.take()['features']
  want = tfpipeline.load_model(model_dir).predict(features, verbose=0)

  tflite = interpreter.Interpreter(model_path=str(model_dir / 'model.tflite'))
  index = tflite.get_input_details()[0]['index']
  tflite.resize_tensor_input(index, features.shape)
  tflite.allocate_tensors()
  tflite.set_tensor(index, features)
  tflite.invoke()
  onnx = onnxruntime.InferenceSession(str(model_dir / 'model.onnx'),
                                      providers=['CPUExecutionProvider'])
  for got in (tflite.get_tensor(tflite.get_output_details()[0]['index']),
              onnx.run(None, {'features': features})[0]):
    np.testing.assert_allclose(got, want, rtol=0,
                               atol=1e-4 * np.abs(want).max())


def _predictions(model_dir, tmp_path, format_name):
  output = tmp_path / f'{format_name}.csv'
  result = run_main(str(model_dir), '--input=tfds:test', f'--output={output}',
                    f'--format={format_name}', command='predict')
  assert result.returncode == 0, result.stderr[-3000:]
  with open(output, newline='') as f:
    return np.array([float(row['prediction']) for row in csv.DictReader(f)])


@pytest.mark.parametrize('format_name', ['tflite', 'onnx'])
def test_predict_scores_with_an_export(exported, tmp_path, format_name):
  model_dir, _ = exported
  want = _predictions(model_dir, tmp_path, 'keras')
  np.testing.assert_allclose(_predictions(model_dir, tmp_path, format_name),
                             want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_predict_refuses_a_missing_or_changed_export(exported, tmp_path):
  copy = tmp_path / 'copy'
  shutil.copytree(exported[0], copy)
  (copy / 'model.onnx').unlink()
  with open(copy / 'model.tflite', 'ab') as f:
    f.write(b'\0')
  args = (str(copy), '--input=tfds:test', f'--output={tmp_path / "p.csv"}')
  result = run_main(*args, '--format=onnx', command='predict')
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.last_line == (
      f'error: {copy} has no model.onnx: its run did not export onnx '
      f'(export.formats), or could not (see report/report.json, exports)')
  result = run_main(*args, '--format=tflite', command='predict')
  assert result.returncode == 1, result.stderr[-3000:]
  assert result.last_line.startswith(f'error: {copy / "model.tflite"} '
                                     f'changed since the run wrote it')
  assert not (tmp_path / 'p.csv').exists()


def test_a_missing_runtime_is_refused_before_training(tmp_path, monkeypatch):
  import importlib.util
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *args: (
      None if name == 'onnxruntime' else find_spec(name, *args)))
  result = run_main(f'--model_dir={tmp_path / "run"}', EVERY_FORMAT)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.last_line == (
      "error: export.formats: 'onnx' needs onnxruntime, which is not "
      "installed; pip install 'tfpipeline[export]' (in a checkout: pip "
      "install -e '.[export]')")
  assert not (tmp_path / 'run').exists()


def _text_model(directory):
  """A tokenizer in front of a tiny model, saved as model.keras; its test
  split of raw strings."""
  texts = np.array(['good film', 'bad plot', 'a fine story', 'dull'],
                   dtype=object)
  tokenizer = keras.layers.TextVectorization(max_tokens=10,
                                             output_sequence_length=4)
  tokenizer.adapt(texts)
  model = keras.Sequential([keras.Input((4,), dtype='int64'),
                            keras.layers.Embedding(10, 2),
                            keras.layers.GlobalAveragePooling1D(),
                            keras.layers.Dense(1, activation='sigmoid')])
  export.save(model, directory, tokenizer, formats=())
  return model, pipeline.Examples(
      Split.of(texts, np.zeros((4, 1), np.float32)), vectorizer=tokenizer)


def test_a_model_the_converters_cannot_take_costs_one_line(tmp_path):
  model, test = _text_model(tmp_path)
  (tmp_path / 'model.onnx').write_bytes(b'an earlier run\'s export')
  section = export.portable(model, tmp_path, test, formats=('tflite', 'onnx'),
                            quantization='none')
  assert section == {
      'tflite': {'path': None, 'ok': False, 'error': (
          "tflite: the model needs TensorFlow ops outside TFLite's builtins "
          '(RaggedTensorToTensor, StaticRegexReplace, StringLower, '
          'StringSplitV2)')},
      'onnx': {'path': None, 'ok': False, 'error': (
          'onnx: ValueError: no ONNX equivalent of the TensorFlow ops '
          'LookupTableFindV2, StaticRegexReplace, StringSplitV2')}}
  # Neither half a file nor the earlier export is left.
  assert sorted(p.name for p in tmp_path.iterdir()) == ['model.keras']


@pytest.mark.parametrize('quantization, relative_tolerance, size', [
    ('dynamic_range', 5e-2, 0.5), ('float16', 1e-2, 0.6)])
def test_quantized_tflite_is_smaller_and_checked_within_its_tolerance(
    tmp_path, quantization, relative_tolerance, size):
  rng = np.random.default_rng(0)
  features = rng.normal(size=(64, 32)).astype(np.float32)
  model = keras.Sequential([keras.Input((32,)),
                            keras.layers.Dense(256, activation='relu'),
                            keras.layers.Dense(3, activation='softmax')])
  export.save(model, tmp_path, formats=())
  test = pipeline.Examples(Split.of(features, np.zeros((64, 1), np.float32)))
  checks = {}
  for name in ('none', quantization):
    checks[name] = export.portable(model, tmp_path, test, formats=('tflite',),
                                   quantization=name)['tflite']
    checks[name]['bytes'] = (tmp_path / 'model.tflite').stat().st_size
  quantized, float32 = checks[quantization], checks['none']
  assert quantized['ok'] and quantized['quantization'] == quantization
  assert quantized['relative_tolerance'] == relative_tolerance
  assert float32['max_abs_diff'] < quantized['max_abs_diff'] <= (
      quantized['tolerance'])
  assert quantized['bytes'] < size * float32['bytes'], (quantized, float32)
