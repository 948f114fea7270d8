"""Data sources: synthetic, CSV, Parquet, NPZ and TFDS, read into checked splits.

Every source returns the same `Splits`: features, labels and optional groups
for train, validation and test. Features keep their shape and dtype: a
table's columns (several keys, concatenated into float32 columns), or one
key's image (H, W, C), fixed-shape tensor or string, as stored.

Tables and NPZ arrays are read once into a `table.Table` and checked (the
file, row and column of a bad cell are named) before a run writes anything;
the splits are row indices into that one table. A CSV or Parquet table
larger than data.max_memory_mb is memory-mapped from a cache beside the data
instead (`table_cache`). A TFDS dataset of images, tensors or text is
streamed: its splits hold `records.Records`, read by index batch in the
tf.data pipeline. Either way a run's memory does not grow with the dataset
beyond its budget. The tf.data pipelines in `tfpipeline.data.pipeline` are
built from every kind.

Each source is a module of this package behind one interface (`core`);
this module's functions pick the configured one (`core.get`) and run the
checks every source shares (`tfpipeline.data.checks`).
"""

import numpy as np

from tfpipeline.data import checks
from tfpipeline.data import table as table_lib
from tfpipeline.data.sources import core
# The split types, where callers have always found them.
from tfpipeline.data.splits import IMAGE, TABLE, TENSOR, TEXT  # pylint: disable=unused-import
from tfpipeline.data.splits import Split, Splits
from tfpipeline.errors import UserError


def load(data_config, *, loss: str, output_units: int | None = None) -> Splits:
  """Reads and checks the configured source. Raises UserError on bad data:
  NaN or Inf, or labels the loss cannot take (with `output_units`, the
  model's outputs: class ids below it, one-hot rows that wide).

  The splits name the columns used, the dataset's own where the config
  leaves them to it (see `core.Source.with_columns`).
  """
  source = core.get(data_config.source)
  splits = source.load(data_config, lambda labels, label_name, where: (
      checks.check_labels(labels, label_name, loss, output_units, where)))
  checks.check_class_count(splits, loss, output_units)
  checked = set()  # File splits share one table: checked once.
  for name in ('train', 'validation', 'test'):
    split = getattr(splits, name)
    if len(split) == 0:
      raise UserError(f'data: the {name} split is empty; add rows or change '
                      f'data.validation_fraction / data.test_fraction')
    if (split.streamed or source.checks_labels_as_read or
        id(split.table) in checked):
      continue
    checked.add(id(split.table))
    where = source.row_namer(data_config, name)
    labels = split.table.labels
    for start in range(0, len(labels), table_lib.CHUNK_ROWS):
      chunk = labels[start:start + table_lib.CHUNK_ROWS]
      checks.check_labels(chunk.reshape(len(chunk), -1), splits.label_name,
                          loss, output_units,
                          lambda i, start=start: where(start + i))
  return splits


def read_rows(data_config) -> Split:
  """Every example of data.path (CSV, NPZ, Parquet) or data.test_split (TFDS),
  in order and unsplit, for a trained model to predict.

  data.features must be there, as in training; data.label and data.group
  are read where present (else None; streamed: not among `records.keys`).
  Cells are checked as in training (numbers, no NaN or Inf). `rows` holds
  each example's index in the file or split.
  """
  return core.get(data_config.source).read_rows(data_config)


def title(data_config) -> str:
  """The data as the run's log names it: the file's path, the dataset's
  name."""
  return core.get(data_config.source).title(data_config)


def streamed_label_check(data_config, split_name: str, label_name: str,
                         loss: str, output_units: int | None):
  """`check(labels, rows) -> labels` for a streamed split's batches, read
  as training goes (no pass before it): refuses labels the loss cannot take
  as `load` does a table's, naming the record."""
  where = core.get(data_config.source).row_namer(data_config, split_name)

  def check(labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    checks.check_labels(labels.reshape(len(labels), -1), label_name, loss,
                        output_units, lambda i: where(rows[i]))
    return labels

  return check
