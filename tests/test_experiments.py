"""The image and text experiments: catalogue datasets' real loading code on
tfds.testing.mock_data (nothing can download here), one tiny epoch each."""

import json

import pytest

from conftest import mock_catalogue

from tfpipeline import config


@pytest.mark.parametrize('experiment, model_input', [
    ('mnist_convnet', ((None, 28, 28, 1), 'uint8')),
    ('cifar10_cnn', ((None, 32, 32, 3), 'uint8')),
    ('imdb_text', ((None,), 'string')),
])
def test_catalogue_experiment_trains_on_mock_data(tmp_path, experiment,
                                                  model_input):
  import tfpipeline
  c = config.load(experiment)
  c.train.epochs = 1
  c.train.global_batch_size = 32
  c.report.energy_method = 'estimate'
  with mock_catalogue(num_examples=64):
    metrics = tfpipeline.run(c, tmp_path / 'run', strategy='cpu')
  assert set(metrics) == {'loss', 'accuracy'} | (
      {'auc'} if experiment == 'imdb_text' else set())
  written = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert written['data']['name'] == c.data.name
  model = tfpipeline.load_model(tmp_path / 'run')
  assert (model.input_shape, model.inputs[0].dtype) == model_input
  report = json.loads((tmp_path / 'run' / 'report' / 'report.json').read_text())
  assert report['fairness']['evaluated'] is False
  assert report['compute']['forward_flops_per_example']['matmul_agrees']
  attributions = report['attributions']
  assert attributions['kind'] == ('text' if experiment == 'imdb_text'
                                  else 'image')
  assert attributions['completeness_error'] <= 0.05
  # cifar10_cnn exports its best epoch's weights (of one here).
  assert (report['training']['exported_weights'] == 'best epoch') == (
      experiment == 'cifar10_cnn')
