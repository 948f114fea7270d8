"""The responsibility report every run writes to `model_dir/report/`.

report.json has eight sections: training (label smoothing, class weights,
how it ended: early stopping, the exported epoch), compute (FLOPs, time,
energy, CO2e), fairness (per-group test metrics), attributions (Integrated
Gradients), privacy (DP-SGD budget), provenance (what produced the model),
exports (the TFLite and ONNX files checked against model.keras) and
model_card. It is rendered to report.md and a self-contained report.html
with PNG plots, and the test split's predictions go to predictions.csv for
anyone to audit.
`python -m tfpipeline.report MODEL_DIR` renders a finished run again.
"""

import json
import pathlib

import numpy as np

from tfpipeline import atomic_files
from tfpipeline import class_weights
from tfpipeline import config as config_lib
from tfpipeline import integrity
from tfpipeline import run_identity
from tfpipeline.data import sources
from tfpipeline.report import attributions
from tfpipeline.report import compute
from tfpipeline.report import fairness
from tfpipeline.report import model_card
from tfpipeline.report import plots
from tfpipeline.report import predictions_csv
from tfpipeline.report import privacy
from tfpipeline.report import provenance
from tfpipeline.report import render

SCHEMA_VERSION = 4  # 4: the training and exports sections
# Files written before the report, whose hashes the report itself shows.
_TRAINED_ARTEFACTS = ('config.json', 'metrics.json', 'model.keras',
                      'saved_model/saved_model.pb', 'model.tflite',
                      'model.onnx')


def write(run, trained, test_evaluation, test_metrics: dict, exports: dict,
          *, times: dict) -> dict:
  """Writes report/ (json, md, html, png, predictions.csv); returns the json.

  Args:
    run: the `RunContext`: config, data, strategy; its `output_dir` holds
      config.json, the metrics and the model.
    trained: the trained model and how this process trained it
      (`run_context.Trained`).
    test_evaluation: the model's outputs on the test split, with its labels
      and groups (an `evaluation.Evaluation`).
    test_metrics: as in metrics.json.
    exports: `export.portable`'s checks of the TFLite and ONNX files.
    times: `compute.EnergyMeter.stop()`'s result.
  """
  config, splits, inputs = run.config, run.splits, run.inputs
  model, strategy, start_step = trained.model, run.strategy, trained.start_step
  model_dir = run.output_dir
  train, test = splits.train, test_evaluation
  report_dir = model_dir / 'report'
  report_dir.mkdir(exist_ok=True)
  batch = config_lib.step_batch_size(config)
  end_step = trained.end_step
  report = {
      'schema_version': SCHEMA_VERSION,
      'training': {**trained.training,
                   'label_smoothing': config.train.label_smoothing,
                   'global_batch_size': config.train.global_batch_size,
                   'gradient_accumulation_steps':
                       config.optimizer.gradient_accumulation_steps,
                   'class_weight': class_weights.mode(
                       config.train.class_weight),
                   'class_weights': run.class_weights and list(
                       run.class_weights)},
      'compute': compute.section(
          model, strategy, config.report, times,
          examples_seen=(end_step - start_step) * batch,
          train_seconds=trained.seconds, resumed_from_step=start_step,
          mixed_precision=config.train.mixed_precision),
      'fairness': fairness.section(
          test.labels, test.predictions, test.groups,
          group_name=splits.group_name, loss=config.loss,
          min_ratio=config.report.fairness_min_ratio),
      'attributions': _attributions(model, splits, inputs, config,
                                    report_dir, strategy),
      'privacy': privacy.section(config.privacy, batch_size=batch,
                                 train_rows=len(train), steps=end_step),
      'provenance': provenance.section(
          config, (model_dir / 'config.json').read_text(), splits,
          started=times['started_utc']),
  }
  # Every version of the data the run trained on, from the step it was used.
  report['provenance']['data_versions'] = run_identity.versions(model_dir)
  report['provenance']['artefacts_sha256'] = {
      name: integrity.sha256_file(model_dir / name)
      for name in _TRAINED_ARTEFACTS if (model_dir / name).is_file()}
  report['exports'] = exports
  report['model_card'] = model_card.section(
      config, report, test_metrics=test_metrics,
      model_summary=_summary(model))

  atomic_files.write_text(report_dir / 'report.json',
                       json.dumps(report, indent=2) + '\n')
  _write_predictions(report_dir / 'predictions.csv', splits, test_evaluation,
                     config.loss)
  render.render(model_dir)
  return report


def _summary(model) -> str:
  """'Input(10) -> Normalization -> Dense(64, relu) -> Dense(1) -> ...'."""
  shape = 'x'.join(str(d) for d in model.input_shape[1:]) or 'scalar'
  dtype = model.inputs[0].dtype
  parts = [f'Input({shape})' if dtype == 'float32' else
           f'Input({shape} {dtype})']
  for layer in model.layers:
    kind = type(layer).__name__
    if kind == 'Dense':
      activation = layer.get_config()['activation']
      parts.append(f'Dense({layer.units}' + (
          f', {activation})' if activation != 'linear' else ')'))
    else:
      parts.append(kind)
  return 'Sequential: ' + ' -> '.join(parts)


def _attributions(model, splits, inputs, config, report_dir,
                  strategy) -> dict:
  """The attributions section; an image report's example figure too."""
  from tfpipeline.data import pipeline  # pylint: disable=g-import-not-at-top
  batch = next(iter(pipeline.evaluation_dataset(
      inputs.test, config.report.attribution_examples)))
  table = splits.kind == sources.TABLE
  result, drawing = attributions.section(
      model, {k: v.numpy() for k, v in batch.items()}, kind=splits.kind,
      report_config=config.report,
      classification='crossentropy' in config.loss,
      private=config.privacy.dp,
      train_mean=(splits.train.moments('features')[0].astype(np.float32)
                  if table and not config.privacy.dp else None),
      feature_names=list(splits.feature_names),
      vocabulary=(inputs.vectorizer.get_vocabulary() if inputs.vectorizer
                  else None), strategy=strategy)
  if drawing:
    with atomic_files.replacing(report_dir / render.EXAMPLES_PNG) as tmp:
      tmp.write_bytes(plots.attribution_examples_png(**drawing))
  return result


def _write_predictions(path: pathlib.Path, splits, test, loss: str) -> None:
  """The test split (`predictions_csv.write_predictions`), a table's features read
  chunk by chunk as the rows are written; images and text are identified
  by their rows alone."""
  table = splits.kind == sources.TABLE
  predictions_csv.write_predictions(
      path, index=test.index, source_rows=splits.test.source_rows(test.index),
      predictions=test.predictions, classifier='crossentropy' in loss,
      label_name=splits.label_name, labels=test.labels,
      group_name=splits.group_name, groups=test.groups,
      feature_names=splits.feature_names if table else (),
      features=(lambda start, end: splits.test.take(
          test.index[start:end])['features']) if table else None)
