"""Whole runs on streamed TFDS data: images in both file formats, text;
strategy equality, exact resume, exported models, bad input."""

import base64
import csv
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, assert_weights_close, read_jsonl, run_cli
from in_process import run_main

# 1,257 training digits, batch 64: 19 steps an epoch; a device call every
# 5 steps and a checkpoint every 10. (Flips would not suit digits; the
# pipeline tests cover them.)
DIGITS = ('--config=digits_cnn', '--config.train.epochs=6',
          '--config.train.global_batch_size=64',
          '--config.train.steps_per_loop=5',
          '--config.train.checkpoint_every_steps=10',
          "--config.data.augment=('random_crop',)",
          '--config.data.crop_padding=1')
# No dropout or batch statistics: they differ per replica by design.
REPLICA_FREE_LAYERS = (
    "--config.model.layers=(('Rescaling', {'scale': 0.00392156862745098}), "
    "('Conv2D', {'filters': 8, 'kernel_size': 3, 'activation': 'relu'}), "
    "('MaxPooling2D', {'pool_size': 2}), ('Flatten', {}))")


def _weights(model_dir):
  import tfpipeline
  return tfpipeline.load_model(model_dir).get_weights()


def _run(model_dir, digits_dir, *args):
  result = run_cli(*DIGITS, f'--model_dir={model_dir}',
                   f'--config.data.data_dir={digits_dir}', *args)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_digits_run_streams_images_and_writes_everything(tmp_path,
                                                          digits_dir):
  model_dir = tmp_path / 'run'
  result = _run(model_dir, digits_dir)
  assert 'digits: 1257 training, 269 validation, 271 test examples' in (
      result.stderr)
  import tfpipeline
  model = tfpipeline.load_model(model_dir)
  assert model.input_shape == (None, 8, 8, 1)
  assert model.inputs[0].dtype == 'uint8'
  metrics = json.loads((model_dir / 'metrics.json').read_text())
  assert metrics['accuracy'] > 0.8  # 6 epochs; the full run reaches 0.99
  with open(model_dir / 'report' / 'predictions.csv') as f:
    rows = list(csv.reader(f))
  assert rows[0] == (['index', 'source_row', 'label', 'group:parity'] +
                     [f'prediction_{i}' for i in range(10)] +
                     ['predicted_class'])
  assert [int(r[0]) for r in rows[1:]] == list(range(271))
  assert [int(r[1]) for r in rows[1:]] == list(range(271))  # TFDS records
  assert {r[3] for r in rows[1:]} == {'even', 'odd'}
  report = json.loads((model_dir / 'report' / 'report.json').read_text())
  assert report['fairness']['evaluated']
  flops = report['compute']['forward_flops_per_example']
  assert flops['matmul_agrees'] and flops['analytic_matmul'] == (
      2 * 8 * 8 * 9 * (1 * 32 + 32 * 32) + 2 * 512 * 128 + 2 * 128 * 10)
  assert flops['pooling_agrees'] and flops['analytic_pooling'] == 4 * 4 * 32 * 4
  # Which pixels drove each class: IG from black, complete within 5%.
  ig = report['attributions']
  assert (ig['kind'], ig['baseline'], ig['examples']) == ('image', 'black', 100)
  assert ig['completeness_error'] <= 0.05
  predicted = np.array([int(r[14]) for r in rows[1:101]])
  assert {k: v['examples'] for k, v in ig['class_maps'].items()} == {
      str(c): int(n) for c, n in zip(*np.unique(predicted,
                                                return_counts=True))}
  assert all(np.asarray(v['map']).shape == (8, 8)
             for v in ig['class_maps'].values())
  page = (model_dir / 'report' / 'report.html').read_text()
  for png in ('attributions.png', 'attribution_examples.png'):
    data = (model_dir / 'report' / png).read_bytes()
    assert base64.b64encode(data).decode() in page
  data = report['provenance']['data']
  assert data['train']['split'] == 'train' and len(
      data['train']['files_sha256']) == 1
  verify = subprocess.run([sys.executable, '-m', 'tfpipeline.verify',
                           str(model_dir)], cwd=REPO, capture_output=True)
  assert verify.returncode == 0
  # The model takes raw pixels: its predictions on the stored test images
  # are those in predictions.csv.
  from tfpipeline import config
  from tfpipeline.data import sources
  c = config.load('digits_cnn')
  c.data.data_dir = str(digits_dir)
  test = sources.load(c.data, loss=c.loss).test.records.read_all()
  recorded = np.array([[float(v) for v in r[4:14]] for r in rows[1:]])
  np.testing.assert_allclose(model.predict(test['image'], verbose=0),
                             recorded, atol=1e-5)
  # tfpipeline.predict streams the same split through the model.
  output = tmp_path / 'scored.csv'
  scored = run_main(str(model_dir), '--input=tfds:test', f'--output={output}',
                    command='predict')
  assert scored.returncode == 0, scored.stderr[-3000:]
  with open(output) as f:
    scored_rows = list(csv.reader(f))
  assert scored_rows[0] == rows[0]  # Written alike (no table features).
  assert [r[:4] for r in scored_rows[1:]] == [r[:4] for r in rows[1:]]
  probabilities = np.array([[float(v) for v in r[4:14]]
                            for r in scored_rows[1:]])
  np.testing.assert_allclose(probabilities, recorded, atol=1e-5)
  assert [int(r[14]) for r in scored_rows[1:]] == list(
      probabilities.argmax(axis=1))


def test_digits_cnn_as_shipped_reaches_97_percent(tmp_path,
                                                  digits_array_record_dir):
  model_dir = tmp_path / 'run'
  result = run_cli('--config=digits_cnn', f'--model_dir={model_dir}',
                   f'--config.data.data_dir={digits_array_record_dir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((model_dir / 'metrics.json').read_text())[
      'accuracy'] >= 0.97
  # Convolutions on a CPU: train.jit_compile=auto resolved to no XLA.
  assert json.loads((model_dir / 'config.json').read_text())['train'][
      'jit_compile'] is False


def test_mirrored_streamed_and_augmented_equals_one_device(
    tmp_path, digits_array_record_dir):
  one_device_digits = tmp_path / 'one'
  _run(one_device_digits, digits_array_record_dir, '--strategy=cpu',
       REPLICA_FREE_LAYERS)
  model_dir = tmp_path / 'run'
  _run(model_dir, digits_array_record_dir, '--strategy=mirrored',
       '--cpu_devices=2', REPLICA_FREE_LAYERS)
  assert_weights_close(_weights(model_dir), _weights(one_device_digits),
                       atol=1e-5)
  losses = [r['loss'] for r in read_jsonl(model_dir / 'metrics.jsonl')]
  reference = [r['loss'] for r in read_jsonl(
      one_device_digits / 'metrics.jsonl')]
  np.testing.assert_allclose(losses, reference, rtol=1e-5)


# XLA has no deterministic max-pooling gradient (TF 2.21): refused up front.
DETERMINISTIC = ('--config.train.deterministic=True',
                 '--config.train.jit_compile=False')


def test_sigkill_then_rerun_is_bit_identical(tmp_path,
                                             digits_array_record_dir):
  digits_dir = digits_array_record_dir
  args = (*DIGITS, f'--config.data.data_dir={digits_dir}', *DETERMINISTIC)
  reference = tmp_path / 'reference'
  _run(reference, digits_dir, *DETERMINISTIC)
  model_dir = tmp_path / 'run'
  process = subprocess.Popen(
      [sys.executable, '-m', 'tfpipeline.train', f'--model_dir={model_dir}',
       *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  log = model_dir / 'metrics.jsonl'
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and process.poll() is None:
    if log.exists() and len(log.read_text().splitlines()) >= 6:
      process.send_signal(signal.SIGKILL)
      break
    time.sleep(0.02)
  assert process.wait(timeout=300) == -signal.SIGKILL
  result = _run(model_dir, digits_dir, *DETERMINISTIC)
  assert 'resuming from the checkpoint at step' in result.stderr
  assert_weights_close(_weights(model_dir), _weights(reference))


TEXT = ('--config.data.source=tfds', '--config.data.name=tiny_reviews',
        "--config.data.features=('text',)", '--config.data.label=label',
        '--config.data.group=length', '--config.data.vocab_size=40',
        '--config.data.sequence_length=16', '--config.loss=binary_crossentropy',
        '--config.model.normalize_inputs=False', '--config.train.epochs=60',
        "--config.model.layers=(('Embedding', {'input_dim': 40, "
        "'output_dim': 8}), ('GlobalAveragePooling1D', {}))")


def test_text_run_exports_a_model_of_raw_strings(tmp_path, text_dir):
  model_dir = tmp_path / 'run'
  result = run_cli(f'--model_dir={model_dir}',
                   f'--config.data.data_dir={text_dir}', *TEXT)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((model_dir / 'metrics.json').read_text())
  assert metrics['accuracy'] >= 0.9
  import tensorflow as tf
  import tfpipeline
  model = tfpipeline.load_model(model_dir)
  assert type(model.layers[0]).__name__ == 'TextVectorization'
  reviews = tf.constant(['Great superb lovely film!', 'Awful, boring, bad.'])
  probabilities = model.predict(reviews, verbose=0)[:, 0]
  assert probabilities[0] > 0.5 > probabilities[1]
  serving = tf.saved_model.load(str(model_dir / 'saved_model'))
  np.testing.assert_allclose(
      serving.signatures['serving_default'](reviews)['output_0'].numpy()[:, 0],
      probabilities, atol=1e-6)
  # Which words drove the predictions: the sentiment words, each way.
  ig = json.loads((model_dir / 'report' / 'report.json').read_text())[
      'attributions']
  assert (ig['kind'], ig['baseline']) == ('text', 'padding')
  assert ig['completeness_error'] <= 1e-3
  sentiment = {'1': {'great', 'superb', 'lovely', 'good', 'fine'},
               '0': {'bad', 'awful', 'dull', 'boring', 'poor'}}
  for label, words in sentiment.items():
    top = [row['token'] for row in ig['token_ranking'][label]['for'][:5]]
    assert set(top) == words, (label, top)
  # Raw strings from a file score like the TFDS split's.
  np.savez(tmp_path / 'reviews.npz', text=np.array(
      ['Great superb lovely film!', 'Awful, boring, bad.']))
  scored = run_main(str(model_dir), f'--input={tmp_path / "reviews.npz"}',
                    f'--output={tmp_path / "scored.csv"}', command='predict')
  assert scored.returncode == 0, scored.stderr[-3000:]
  with open(tmp_path / 'scored.csv') as f:
    assert [float(r['prediction']) for r in csv.DictReader(f)] == (
        pytest.approx(probabilities.tolist(), abs=1e-6))
  card = json.loads((model_dir / 'report' / 'report.json').read_text())[
      'model_card']
  assert 'Tokens driving each predicted class (Integrated Gradients): 0: ' in (
      card['training_data'])
  page = (model_dir / 'report' / 'report.html').read_text()
  first = ig['sentences'][0]
  assert f'>{first["tokens"][0]}</span>' in page


@pytest.mark.parametrize('args, message', [
    (("--config.data.features=('pixels',)",), "no column 'pixels'"),
    (('--config.data.vocab_size=40', '--config.data.name=tiny_reviews',
      "--config.data.features=('text',)", '--config.data.group=length',
      "--config.data.augment=('random_crop',)"),
     r"data.augment=\('random_crop',\): image ops need image features"),
    (('--config.data.name=tiny_reviews', "--config.data.features=('text',)",
      '--config.data.group=length'), 'data.vocab_size: .* holds strings'),
    (('--config.data.vocab_size=40', '--config.data.name=tiny_reviews',
      "--config.data.features=('text',)", '--config.data.group=length',
      '--config.privacy.dp=True'),
     'privacy.dp=True: .* tokenized by a vocabulary adapted on the training '
     'split and exported with the model, outside the DP guarantee'),
    (("--config.model.layers=(('Conv2D', {'filters': 4}),)",),
     r"model.layers\[0\]: .*kernel_size"),
    (("--config.model.layers=(('Dense', {'units': 4}),)",),
     r"model.layers\[0\]: the layers output shape \(None, 8, 8, 4\)"),
    (("--config.model.layers=(('Lambda', {}),)",),
     r"model.layers\[0\]: 'Lambda' is not a built-in Keras layer"),
    (("--config.model.layers=(('Rescaling', {'scale': 1 / 255}),)",),
     r"model.layers\[0\] is the text .*must be a Python literal"),
    (('--config.model.normalize_inputs=True',),
     'model.normalize_inputs=True standardises table columns'),
    (('--config.report.ig_baseline=mean',),
     r"report.ig_baseline='mean' is not a baseline for .*image.*; use auto or "
     r"one of black, blurred"),
    (('--config.train.deterministic=True', '--config.train.jit_compile=True'),
     r'no deterministic XLA gradient for MaxPooling2D \(layer 3 of the '
     r'model\).*jit_compile=False'),
])
def test_bad_streamed_input_exits_2_and_writes_nothing(
    tmp_path, digits_array_record_dir, text_dir, args, message):
  data_dir = (text_dir if 'tiny_reviews' in ''.join(args) else
              digits_array_record_dir)
  model_dir = tmp_path / 'run'
  result = run_main(f'--model_dir={model_dir}', '--config=digits_cnn',
                    f'--config.data.data_dir={data_dir}', *args)
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert re.search(message, result.last_line), result.last_line
  assert not model_dir.exists()


def test_truncated_record_file_exits_2_naming_it(tmp_path):
  import tfds_fixtures
  tfds_fixtures.prepare('digits', tmp_path / 'data', 'array_record')
  shard = next((tmp_path / 'data' / 'digits' / '1.0.0').glob('*test*'))
  shard.write_bytes(shard.read_bytes()[:1000])
  result = run_main(f'--model_dir={tmp_path / "run"}', '--config=digits_cnn',
                    f'--config.data.data_dir={tmp_path / "data"}')
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert shard.name in result.last_line
  assert not (tmp_path / 'run').exists()


def test_a_streamed_label_the_loss_cannot_take_exits_2_naming_it(tmp_path):
  import tfds_fixtures
  tfds_fixtures.prepare('numbered_images', tmp_path / 'data', 'array_record')
  result = run_cli(f'--model_dir={tmp_path / "run"}', '--config=digits_cnn',
                   f'--config.data.data_dir={tmp_path / "data"}',
                   '--config.data.name=numbered_images',
                   '--config.data.group=', '--config.model.output_units=2',
                   '--config.train.global_batch_size=8')
  assert result.returncode == 2, result.stderr[-3000:]
  # TF's warnings echoing the error, with its traceback, are held back.
  assert 'Traceback' not in result.stderr and 'UserError' not in result.stderr
  assert re.fullmatch(
      r"error: TFDS dataset 'numbered_images': train row \d+, label 'label' "
      r'is 7: loss=sparse_categorical_crossentropy needs class ids 0 to 1; '
      r'fix the label, or set --config.model.output_units to the number of '
      r'classes', result.last_line), result.last_line
