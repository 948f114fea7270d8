"""`python -m tfpipeline.predict MODEL_DIR --input=FILE --output=FILE.csv`
(also `tfpipeline-predict`): a trained model's predictions on new data.

    python -m tfpipeline.predict /tmp/runs/diabetes --input=new.csv \
        --output=predictions.csv
    python -m tfpipeline.predict /tmp/runs/digits --input=tfds:test \
        --output=digits_test.csv --format=tflite

--input is a CSV (.csv, .csv.gz), NPZ or Parquet file (or directory of
Parquet parts) with the columns (keys) the model was trained on, or
tfds:SPLIT, a split of the run's TFDS dataset. The label and group
columns are optional; where present they are copied to the output.

The output has one row per input row: `index` (its position in the input),
`source_row` (a CSV file's row, the header being row 1; a Parquet row
over all parts; an NPZ index; a TFDS record's index in SPLIT), the label
and `group:NAME` when present, then `prediction` (regression; binary
classification: the probability of class 1), or one `prediction_<class>`
probability per class and `predicted_class`: the columns of the report's
predictions.csv, less the features.

The model (model.keras, or with --format the run's model.tflite or
model.onnx) is checked against the run's MANIFEST.json; model.keras is
loaded in Keras safe mode. Exit codes: 0 written; 2 bad input (one line;
nothing written); 1 the run's model file or config.json changed since
training; 3 stopped by SIGTERM or SIGINT (nothing written).
"""

import json
import pathlib
import sys

from absl import flags

from tfpipeline import commands
from tfpipeline import console
from tfpipeline import errors
from tfpipeline import integrity
from tfpipeline.report import predictions_csv
from tfpipeline.errors import UserError

_INPUT = flags.DEFINE_string(
    'input', None, 'CSV (.csv, .csv.gz), NPZ (.npz) or Parquet (.parquet, or '
    'a directory of parts) with the columns the model was trained on, or '
    'tfds:SPLIT for a split of the run\'s TFDS dataset (e.g. tfds:test).')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'CSV file to write (replaced atomically).')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', 1024, 'Examples per model call.', lower_bound=1)
_FORMAT = flags.DEFINE_enum(
    'format', 'keras', ['keras', 'tflite', 'onnx'],
    'The model file that predicts: model.keras, or the run\'s model.tflite '
    '(LiteRT) or model.onnx (ONNX Runtime), when export.formats had it; '
    "those need pip install 'tfpipeline[export]'.")

_TFDS_PREFIX = 'tfds:'


def input_config(run_config, input_name: str):
  """The run's data config, reading `input_name` (a file or tfds:SPLIT)."""
  from tfpipeline.data.sources import core  # pylint: disable=g-import-not-at-top
  data = run_config.data
  if input_name.startswith(_TFDS_PREFIX):
    if not core.get(data.source).named_splits:
      raise UserError(f'--input={input_name}: the model was trained on '
                      f'data.source={data.source}, not a TFDS dataset; give '
                      f'a CSV or NPZ file')
    data.test_split = input_name[len(_TFDS_PREFIX):]
    return data
  path = pathlib.Path(input_name)
  suffixes = [suffix.lower() for suffix in path.suffixes[-2:]]
  if path.is_dir() or suffixes[-1:] == ['.parquet']:
    data.source = 'parquet'
  elif suffixes[-1:] == ['.csv'] or suffixes == ['.csv', '.gz']:
    data.source = 'csv'
  elif suffixes[-1:] == ['.npz']:
    data.source = 'npz'
  else:
    raise UserError(f'--input={input_name}: expected a .csv, .csv.gz, .npz '
                    f'or .parquet file, a directory of Parquet parts, or '
                    f'tfds:SPLIT')
  data.path = input_name
  return data


def predict(model, split, data_config, batch_size: int):
  """The model's outputs on every example of `split` (from
  `sources.read_rows`), with the label and group read beside them:
  (predictions (n, k), labels (n, ...) or None, groups (n,) or None)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if not split.streamed:
    parts = {'predictions': [], 'labels': [], 'groups': []}
    for chunk in split.chunks(batch_size):
      parts['predictions'].append(model.predict_on_batch(chunk['features']))
      for key in ('labels', 'groups'):
        if key in chunk:
          parts[key].append(chunk[key])
    arrays = {key: np.concatenate(values) if values else None
              for key, values in parts.items()}
    return arrays['predictions'], arrays['labels'], arrays['groups']
  records = split.records
  feature, extra = records.keys[0], records.keys[1:]
  parts = {key: [] for key in records.keys}
  for batch in records.dataset(batch_size).as_numpy_iterator():
    parts[feature].append(model.predict_on_batch(batch[feature]))
    for key in extra:
      parts[key].append(batch[key])
  arrays = {key: np.concatenate(values) for key, values in parts.items()}
  return (arrays[feature], arrays.get(data_config.label),
          arrays.get(data_config.group))


def _changed(error: ValueError) -> None:
  """Exit 1: a file of the run is not the one it wrote."""
  print(f'error: {error}; nothing predicted', file=sys.stderr)
  sys.exit(1)


def main(argv: list[str]) -> int:
  model_dir = commands.finished_run(argv[1:], 'predict', integrity.MANIFEST)
  for flag in (_INPUT, _OUTPUT):
    if not flag.value:
      raise UserError(f'--{flag.name} is required: python -m '
                      f'tfpipeline.predict MODEL_DIR --input=FILE '
                      f'--output=FILE.csv')
  output = pathlib.Path(_OUTPUT.value)
  if not output.parent.is_dir():
    raise UserError(f'--output={output}: no directory {output.parent}; '
                    f'create it first')
  if output.exists() and output.resolve() == pathlib.Path(
      _INPUT.value).resolve():
    raise UserError(f'--output={output} is the input file; give another '
                    f'path')
  try:
    integrity.check_listed(model_dir, 'config.json')
  except ValueError as e:
    _changed(e)
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  run_config = config_dict.ConfigDict(
      json.loads((model_dir / 'config.json').read_text()))
  data = input_config(run_config, _INPUT.value)

  console.quiet()
  from tfpipeline.data import sources  # pylint: disable=g-import-not-at-top
  split = sources.read_rows(data)  # A file's bad cell fails before TF loads.
  from tfpipeline import export  # pylint: disable=g-import-not-at-top
  try:
    model = export.load(model_dir, _FORMAT.value)  # Checked; Keras: safe mode.
  except ValueError as e:
    _changed(e)
  predictions, labels, groups = predict(model, split, data, _BATCH_SIZE.value)
  source_rows = split.source_rows()
  predictions_csv.write_predictions(
      output, index=range(len(source_rows)), source_rows=source_rows,
      predictions=predictions, classifier='crossentropy' in run_config.loss,
      label_name=data.label, labels=labels, group_name=data.group,
      groups=groups)
  print(f'wrote {len(predictions)} predictions to {output}', file=sys.stderr)
  return 0


def cli() -> None:
  """Console script `tfpipeline-predict`."""
  errors.stop_on_signals('stopped; nothing was written')
  commands.run_absl(main)


if __name__ == '__main__':
  cli()
