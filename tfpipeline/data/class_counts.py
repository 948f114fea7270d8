"""How many examples of a split each class has (train.class_weight=balanced).

A table's labels, in memory or memory-mapped, are counted a chunk of rows
at a time (the labels alone are read). A streamed TFDS split is read once
through tf.data for its label key alone, its images or text not decoded,
and its labels are refused as training would refuse them, naming the
record. Memory stays flat whatever the split's size.
"""

import dataclasses

import numpy as np

from tfpipeline import config_checks
from tfpipeline.data import sources
from tfpipeline.data import table as table_lib
from tfpipeline.data.splits import Split

# Streamed records read per tf.data batch.
_STREAM_BATCH = 4096


def _class_ids(labels: np.ndarray, loss: str) -> np.ndarray:
  """Labels (n, k) as the loss takes them -> (n,) int class ids: a one-hot
  (or probability) row's most likely class, else the label itself."""
  labels = labels.reshape(len(labels), -1)
  if loss == 'categorical_crossentropy':
    return labels.argmax(axis=1)
  return labels[:, 0].astype(np.int64)


def count(splits, split_name: str, data_config, *, loss: str,
          output_units: int) -> np.ndarray:
  """Examples per class id (`config_checks.class_count` of them) in split
  `split_name` of `splits`.

  Raises:
    UserError: a streamed label the loss cannot take (a table's were
      checked as it was loaded).
  """
  split = getattr(splits, split_name)
  if split.streamed:
    check = sources.streamed_label_check(
        data_config, split_name, splits.label_name, loss, output_units)
    batches = _streamed_labels(split, splits.label_name, check)
  else:
    batches = _table_labels(split)
  classes = config_checks.class_count(loss, output_units)
  counts = np.zeros(classes, np.int64)
  for labels in batches:
    counts += np.bincount(_class_ids(labels, loss), minlength=classes)
  return counts


def _table_labels(split: Split):
  """The split's labels, a chunk of rows at a time, read in row order (a
  memory-mapped table's pages sequentially)."""
  rows = np.sort(split.rows)
  for start in range(0, len(rows), table_lib.CHUNK_ROWS):
    yield split.table.labels[rows[start:start + table_lib.CHUNK_ROWS]]


def _streamed_labels(split: Split, label_name: str, check):
  """The split's labels in record order, read for the label key alone,
  each batch through `check(labels, rows)`."""
  records = dataclasses.replace(split.records, keys=(label_name,))
  start = 0
  for batch in records.dataset(_STREAM_BATCH).as_numpy_iterator():
    labels = batch[label_name]
    yield check(labels, np.arange(start, start + len(labels)))
    start += len(labels)
