"""A table of examples, in memory or memory-mapped, read by row index.

A `Table` holds one row per example: `features` (n, ...) as stored (float32
columns, or an NPZ key's images or strings), `labels` (n, k) as stored, and
groups as int32 codes into `group_values`. Its arrays live in memory, or are
memory-mapped from the table's random-access cache (`table_cache`) when the
table is larger than data.max_memory_mb: both are NumPy arrays, read alike.
Splits are sets of row indices into one table, never copies of its rows.
"""

import dataclasses
from typing import Iterator

import numpy as np

# Rows per chunk when a whole split is scanned (statistics, checks, hashes):
# 64k rows of 20 float32 columns are 5 MiB.
CHUNK_ROWS = 1 << 16


@dataclasses.dataclass(frozen=True)
class Table:
  """Rows of examples; see the module docstring.

  Attributes:
    features: (n, ...) one example's features per row.
    labels: (n, k), or None (data to predict, without a label).
    group_codes: (n,) int32 codes into `group_values`, or None.
    group_values: the distinct groups (strings or numbers), or None.
  """
  features: np.ndarray
  labels: np.ndarray | None
  group_codes: np.ndarray | None = None
  group_values: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.features)

  @classmethod
  def in_memory(cls, features, labels, groups=None) -> 'Table':
    """A table of arrays; `groups` (n,) values, encoded here."""
    if groups is None:
      return cls(np.asarray(features), None if labels is None else
                 np.asarray(labels))
    values, codes = np.unique(np.asarray(groups), return_inverse=True)
    return cls(np.asarray(features), None if labels is None else
               np.asarray(labels), codes.astype(np.int32), values)

  def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Copies of `rows`: 'features', 'labels' and 'groups' (values) where
    the table has them. A memory-mapped table is read in row order."""
    rows = np.asarray(rows, np.int64)
    order = None
    if isinstance(self.features, np.memmap) and len(rows) > 1:
      order = np.argsort(rows, kind='stable')  # Sequential reads, then back.
      rows = rows[order]
    result = {'features': self.features[rows]}
    if self.labels is not None:
      result['labels'] = self.labels[rows]
    if self.group_codes is not None:
      result['groups'] = self.group_values[self.group_codes[rows]]
    if order is not None:
      inverse = np.empty_like(order)
      inverse[order] = np.arange(len(order))
      result = {key: value[inverse] for key, value in result.items()}
    return result


def chunks(table: Table, rows: np.ndarray,
           size: int = CHUNK_ROWS) -> Iterator[dict[str, np.ndarray]]:
  """`table.take` of `rows`, `size` rows at a time, in order."""
  for start in range(0, len(rows), size):
    yield table.take(rows[start:start + size])


def moments(table: Table, rows: np.ndarray,
            key: str) -> tuple[np.ndarray, np.ndarray]:
  """Mean and (population) variance of column `key` ('features', 'labels')
  over `rows`, per column, in one pass of float64 chunks (Chan et al.'s
  pairwise update: no cancellation on columns far from zero)."""
  count, mean, m2 = 0, None, None
  for chunk in chunks(table, rows):
    values = chunk[key].reshape(len(chunk[key]), -1).astype(np.float64)
    n = len(values)
    chunk_mean = values.mean(axis=0)
    chunk_m2 = ((values - chunk_mean) ** 2).sum(axis=0)
    if mean is None:
      count, mean, m2 = n, chunk_mean, chunk_m2
      continue
    delta = chunk_mean - mean
    total = count + n
    mean = mean + delta * n / total
    m2 = m2 + chunk_m2 + delta ** 2 * count * n / total
    count = total
  return mean, m2 / count
