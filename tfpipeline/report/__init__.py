"""The responsibility report every run writes to `model_dir/report/`.

report.json has six sections: compute (FLOPs, time, energy, CO2e), fairness
(per-group test metrics), attributions (Integrated Gradients), privacy
(DP-SGD budget), provenance (what produced the model) and model_card. It is
rendered to report.md and a self-contained report.html with PNG plots, and
the test split's predictions go to predictions.csv for anyone to audit.
`python -m tfpipeline.report MODEL_DIR` renders a finished run again.
"""

import csv
import io
import json
import pathlib

import numpy as np

from tfpipeline import artifacts
from tfpipeline import config as config_lib
from tfpipeline import integrity
from tfpipeline.report import attributions
from tfpipeline.report import compute
from tfpipeline.report import fairness
from tfpipeline.report import model_card
from tfpipeline.report import privacy
from tfpipeline.report import provenance
from tfpipeline.report import render

SCHEMA_VERSION = 1
# Files written before the report, whose hashes the report itself shows.
_TRAINED_ARTEFACTS = ('config.json', 'metrics.json', 'model.keras',
                      'saved_model/saved_model.pb')


def write(model_dir: pathlib.Path, *, config, splits, model, strategy,
          test_predictions: np.ndarray, test_metrics: dict, times: dict,
          train_seconds: float, start_step: int) -> dict:
  """Writes report/ (json, md, html, png, predictions.csv); returns the json.

  Args:
    model_dir: the run directory, with config.json, metrics and the model.
    config: the resolved config of the run.
    splits: the data splits the model was trained and tested on.
    model: the trained Keras model.
    strategy: the tf.distribute strategy it trained under.
    test_predictions: the model's outputs on the test split.
    test_metrics: as in metrics.json.
    times: `compute.EnergyMeter.stop()`'s result.
    train_seconds: wall time of the training loop in this process.
    start_step: the step this process resumed from (0 for a fresh run).
  """
  train, test = splits.train, splits.test
  batch = config.train.global_batch_size
  total_steps = config_lib.total_steps(config, len(train))
  sample = test.features[:config.report.attribution_examples]
  report = {
      'schema_version': SCHEMA_VERSION,
      'compute': compute.section(
          model, strategy, config.report, times,
          examples_seen=(total_steps - start_step) * batch,
          train_seconds=train_seconds, resumed_from_step=start_step),
      'fairness': fairness.section(
          test.labels, test_predictions, test.groups,
          group_name=splits.group_name, loss=config.loss,
          min_ratio=config.report.fairness_min_ratio),
      'attributions': attributions.section(
          model, sample, list(splits.feature_names),
          train_mean=train.features.mean(axis=0),
          baseline_kind=config.report.ig_baseline,
          steps=config.report.ig_steps,
          classification='crossentropy' in config.loss),
      'privacy': privacy.section(config.privacy, batch_size=batch,
                                 train_rows=len(train), steps=total_steps),
      'provenance': provenance.section(
          config, (model_dir / 'config.json').read_text(), splits,
          started=times['started_utc']),
  }
  report['provenance']['artefacts_sha256'] = {
      name: integrity.sha256_file(model_dir / name)
      for name in _TRAINED_ARTEFACTS if (model_dir / name).is_file()}
  report['model_card'] = model_card.section(
      config, report, test_metrics=test_metrics,
      model_summary=_summary(model))

  report_dir = model_dir / 'report'
  report_dir.mkdir(exist_ok=True)
  artifacts.write_text(report_dir / 'report.json',
                       json.dumps(report, indent=2) + '\n')
  artifacts.write_text(report_dir / 'predictions.csv',
                       _predictions_csv(splits, test_predictions))
  render.render(model_dir)
  return report


def _summary(model) -> str:
  """'Normalization(10) -> Dense(64, relu) -> Dense(1) -> Rescaling'."""
  parts = [f'Input({model.input_shape[-1]})']
  for layer in model.layers:
    kind = type(layer).__name__
    if kind == 'Dense':
      activation = layer.get_config()['activation']
      parts.append(f'Dense({layer.units}' + (
          f', {activation})' if activation != 'linear' else ')'))
    else:
      parts.append(kind)
  return 'Sequential: ' + ' -> '.join(parts)


def _predictions_csv(splits, predictions: np.ndarray) -> str:
  """The test split: features, label(s), group and prediction(s)."""
  test = splits.test
  labels = test.labels.reshape(len(test), -1)
  predictions = predictions.reshape(len(test), -1)
  label_names = ([splits.label_name] if labels.shape[1] == 1 else
                 [f'{splits.label_name}_{i}' for i in range(labels.shape[1])])
  prediction_names = (['prediction'] if predictions.shape[1] == 1 else
                      [f'prediction_{i}' for i in range(predictions.shape[1])])
  group = ([f'group:{splits.group_name}'] if test.groups is not None else [])
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(list(splits.feature_names) + label_names + group +
                  prediction_names)
  groups = (fairness.group_names(test.groups) if test.groups is not None
            else None)
  for i in range(len(test)):
    writer.writerow(
        [repr(float(v)) for v in test.features[i]] +
        [repr(v.item()) for v in labels[i]] +
        ([groups[i]] if groups is not None else []) +
        [repr(float(v)) for v in predictions[i]])
  return buffer.getvalue()
