"""Checks every source's data passes, naming the row a bad value is in.

Each check raises UserError; `where(i)` names row i as the user finds it
(a CSV file's row, an NPZ array's index, a TFDS split's record), as the
source's `row_namer` makes it.
"""

import numpy as np

from tfpipeline.errors import UserError


def check_keys(keys, data_config, origin: str, *,
               for_prediction: bool = False) -> tuple[str, ...]:
  """data.features (default: every key but label and group), all present,
  and data.label and data.group, unless `for_prediction` (a trained
  model's input, where they are optional)."""
  label, group = data_config.label, data_config.group
  features = tuple(data_config.features) or tuple(
      k for k in keys if k not in (label, group))
  required = [('data.features', f) for f in features]
  if not for_prediction:
    required += [('data.label', label)] + (
        [('data.group', group)] if group else [])
  if label in features:
    raise UserError(f'{origin}: the label {label!r} (data.label) is also a '
                    f'feature (data.features), so the model would see the '
                    f'answer; leave it out of --config.data.features')
  for key, name in required:
    if name not in keys:
      fix = ('the model was trained on it' if for_prediction else
             f'set --config.{key}')
      raise UserError(f'{origin}: no column {name!r} (from {key}); it has '
                      f'{", ".join(keys)}; {fix}')
  return features


def check_finite(features: np.ndarray, labels: np.ndarray | None,
                 feature_names, label_name: str, where) -> None:
  """Refuses NaN and Inf in features and labels (rows of a table)."""
  count = len(features)
  checked = [] if labels is None else [
      ('label', labels.reshape(count, -1), (label_name,))]
  if np.issubdtype(features.dtype, np.floating):
    checked.insert(0, ('feature', features.reshape(count, -1),
                       feature_names))
  for what, values, names in checked:
    bad = ~np.isfinite(values.astype(np.float64))
    if bad.any():
      row, col = np.argwhere(bad)[0]
      name = names[col] if len(names) == values.shape[1] else (
          f'{names[0]}[{col}]' if len(names) == 1 else f'#{col}')
      raise UserError(
          f'{where(row)}, {what} {name!r} is {values[row, col]}; remove or '
          f'impute NaN/Inf values first')


def check_labels(labels: np.ndarray, label_name: str, loss: str,
                 output_units: int | None, where) -> None:
  """Refuses labels (n, k) the loss cannot take: class ids outside
  [0, output_units) for sparse categorical cross-entropy, labels outside
  {0, 1} for binary cross-entropy, categorical rows that are not
  probabilities over output_units classes."""
  def refuse(bad: np.ndarray, what: str, fix: str) -> None:
    if bad.any():
      row = int(np.argmax(bad))
      values = [f'{v:g}' for v in labels[row].astype(np.float64)]
      value = values[0] if len(values) == 1 else f'[{", ".join(values)}]'
      raise UserError(f'{where(row)}, label {label_name!r} is {value}: '
                      f'{what}; {fix}')

  if loss == 'sparse_categorical_crossentropy':
    ids = labels[:, 0].astype(np.float64)
    limit = output_units or np.inf
    refuse((ids != np.round(ids)) | (ids < 0) | (ids >= limit),
           f'loss={loss} needs class ids 0 to {output_units - 1}'
           if output_units else f'loss={loss} needs class ids 0, 1, 2...',
           'fix the label, or set --config.model.output_units to the number '
           'of classes')
  elif loss == 'binary_crossentropy':
    refuse(~np.isin(labels.astype(np.float64), (0.0, 1.0)).any(axis=1),
           f'loss={loss} needs labels 0 or 1',
           'fix the label, or use sparse_categorical_crossentropy for more '
           'classes')
  elif loss == 'categorical_crossentropy':
    if output_units and labels.shape[1] != output_units:
      raise UserError(f'data.label: {label_name!r} has {labels.shape[1]} '
                      f'values per example, model.output_units='
                      f'{output_units}: loss={loss} needs one-hot rows, one '
                      f'value per class; for class ids use '
                      f'sparse_categorical_crossentropy')
    values = labels.astype(np.float64)
    refuse((values < 0).any(axis=1) | (np.abs(values.sum(axis=1) - 1) > 1e-3),
           f'loss={loss} needs one-hot rows (or probabilities) that sum to 1',
           'fix the row, or use sparse_categorical_crossentropy for class ids')


def check_class_count(splits, loss: str, output_units: int | None) -> None:
  """A TFDS class label's number of classes (`splits.num_classes`) must fit
  the model's outputs (streamed labels are not scanned)."""
  classes = splits.num_classes
  if not (classes and output_units and 'crossentropy' in loss):
    return
  fits = classes == 2 if loss == 'binary_crossentropy' else (
      classes <= output_units)
  if not fits:
    raise UserError(
        f'data.label: {splits.label_name!r} has {classes} classes, but '
        f'loss={loss} with model.output_units={output_units} '
        f'{"takes 2" if loss == "binary_crossentropy" else "predicts fewer"};'
        f' set --config.model.output_units={classes}' + (
            ' and --config.loss=sparse_categorical_crossentropy'
            if loss == 'binary_crossentropy' else ''))
