"""Named columns (an NPZ archive's arrays, a TFDS split's features) picked
into one checked table: the configured features, label and group."""

import numpy as np

from tfpipeline.data import checks
from tfpipeline.data.splits import IMAGE, TENSOR, TEXT, Layout
from tfpipeline.data.table import Table


def shaped_kind(shape: tuple, dtype: np.dtype) -> str | None:
  """IMAGE, TENSOR or TEXT for one key's per-example shape and dtype; None
  when the key is tabular (scalars or a vector of numbers)."""
  if dtype.kind in 'OSU':
    return TEXT
  if len(shape) >= 2:
    return IMAGE if len(shape) == 3 else TENSOR
  return None


def checked_table(columns: dict, row_count: int, data_config, origin: str,
                  where, *, for_prediction: bool = False
                  ) -> tuple[Table, Layout]:
  """`_select`'s table and layout, its NaN and Inf refused by `where`."""
  table, layout = _select(columns, row_count, data_config, origin,
                          for_prediction=for_prediction)
  checks.check_finite(table.features, table.labels, layout.names,
                      data_config.label, where)
  return table, layout


def _select(columns: dict, row_count: int, data_config, origin: str, *,
            for_prediction: bool = False) -> tuple[Table, Layout]:
  """Picks data.features, data.label and data.group out of named columns
  (`for_prediction`: label and group where present, else None).

  Columns are arrays of shape (n,) or (n, ...). One key of images, tensors
  or strings is kept as it is; otherwise the features are concatenated into
  float32 columns, named by key, or 'key[i]' for a key with several, and
  `columns` is emptied (its memory freed).
  """
  features = checks.check_keys(list(columns), data_config, origin,
                               for_prediction=for_prediction)
  label, group = data_config.label, data_config.group
  y = (np.asarray(columns[label]).reshape(row_count, -1)
       if label in columns else None)
  g = (np.asarray(columns[group]).reshape(row_count)
       if group in columns else None)
  if len(features) == 1:
    x = np.asarray(columns[features[0]])
    kind = shaped_kind(x.shape[1:], x.dtype)
    if kind:
      if kind == TEXT:
        x = x.astype(str).astype(object)
      return Table.in_memory(x, y, g), Layout(
          features, features, kind, x.shape[1:],
          'string' if kind == TEXT else x.dtype.name)
  blocks = [np.asarray(columns[f], np.float32).reshape(row_count, -1)
            for f in features]
  names = tuple(name if block.shape[1] == 1 else f'{name}[{i}]'
                for name, block in zip(features, blocks)
                for i in range(block.shape[1]))
  x = np.concatenate(blocks, axis=1)
  # The columns are copied into x: free them, so a table peaks at twice
  # its size.
  del blocks
  columns.clear()
  return Table.in_memory(x, y, g), Layout(features, names,
                                          shape=(x.shape[1],))
