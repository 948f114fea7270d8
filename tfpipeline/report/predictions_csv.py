"""CSV tables of predictions: the test split's (report/predictions.csv) and
new data's (`python -m tfpipeline.predict`), written alike by
`write_predictions`."""

import csv
import pathlib
import re

import numpy as np

from tfpipeline import atomic_files
from tfpipeline.data import table as table_lib

# The group column's name: 'group:' and data.group. A group that is also a
# feature (diabetes's sex) would otherwise name two columns alike.
GROUP_PREFIX = 'group:'
# What a spreadsheet runs as a formula when a cell begins with it (OWASP,
# "CSV Injection").
_FORMULA_STARTS = ('=', '+', '-', '@', '\t', '\r')
_NUMBER = re.compile(r'[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?')


def float32_text(value) -> str:
  """The shortest text that reads back as the same float32: '21.72', not
  float64's '21.719999313354492'."""
  return str(np.float32(value))


def cell(value) -> str:
  """A label or group value as the user wrote it: floats as float32 text,
  whole numbers without '.0', bytes decoded."""
  if isinstance(value, bytes):
    return value.decode()
  if isinstance(value, (float, np.floating)):
    return (str(int(value)) if float(value).is_integer() else
            float32_text(value))
  return str(value.item() if isinstance(value, np.generic) else value)


def inert(text: str) -> str:
  """`text` as a spreadsheet shows it and never runs: a `'` before text
  that begins with =, +, -, @, tab or carriage return (OWASP's advice
  against CSV injection), unless the text is a number ('-1.5')."""
  if text.startswith(_FORMULA_STARTS) and not _NUMBER.fullmatch(text):
    return "'" + text
  return text


def names(name: str, width: int) -> list[str]:
  """Column names of a value `width` wide: `name`, or `name_0`, `name_1`..."""
  return [name] if width == 1 else [f'{name}_{i}' for i in range(width)]


def write_csv(path: pathlib.Path, header: list[str], rows) -> None:
  """`rows` (an iterable of lists of cells) under `header` (made `inert`),
  written to `path` as they come (a table of millions of rows is never one
  string), through a temporary file and a rename."""
  with atomic_files.replacing(path) as tmp, open(tmp, 'w', newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow([inert(name) for name in header])
    writer.writerows(rows)


def write_predictions(path: pathlib.Path, *, index, source_rows, predictions,
                      classifier: bool, label_name: str, labels,
                      group_name: str | None, groups, feature_names=(),
                      features=None) -> None:
  """One row per example, in order: `index` (its position in the split or
  input), `source_row` (where it is in the source: see
  `sources.Split.source_rows`), a table's features, the label and group
  where given, then `prediction` (`prediction_0`... for several outputs),
  and for a classifier of several classes `predicted_class`. Labels (numbers)
  and groups are written as the user wrote them, groups `inert`; floats at
  float32 precision.

  Args:
    path: the CSV file, replaced atomically.
    index: (n,) positions.
    source_rows: (n,) rows in the source.
    predictions: (n, ...) model outputs.
    classifier: whether the outputs are class probabilities.
    label_name: data.label.
    labels: (n, ...) labels, or None.
    group_name: data.group.
    groups: (n,) groups, or None.
    feature_names: a table's feature names, else ().
    features: `features(start, end)`, the features of examples start to
      end - 1 (read chunk by chunk), or None.
  """
  count = len(predictions)
  predictions = predictions.reshape(count, -1).astype(np.float32)
  labels = None if labels is None else labels.reshape(count, -1)
  several = classifier and predictions.shape[1] > 1
  header = (['index', 'source_row'] + list(feature_names) +
            (names(label_name, labels.shape[1]) if labels is not None
             else []) +
            ([GROUP_PREFIX + group_name] if groups is not None else []) +
            names('prediction', predictions.shape[1]) +
            (['predicted_class'] if several else []))
  classes = predictions.argmax(axis=1)

  def rows():
    for start in range(0, count, table_lib.CHUNK_ROWS):
      end = min(start + table_lib.CHUNK_ROWS, count)
      # Python lists: one NumPy call a column and chunk, not one a cell.
      ids, where, outputs, predicted = (
          np.asarray(values[start:end]).tolist()
          for values in (index, source_rows, predictions, classes))
      x = None if features is None else features(start, end).tolist()
      y = None if labels is None else labels[start:end].tolist()
      g = None if groups is None else groups[start:end].tolist()
      for i in range(end - start):
        row = [ids[i], where[i]]
        if x is not None:
          row += map(float32_text, x[i])
        if y is not None:
          row += map(cell, y[i])
        if g is not None:
          row.append(inert(cell(g[i])))
        row += map(float32_text, outputs[i])
        if several:
          row.append(predicted[i])
        yield row

  write_csv(path, header, rows())
