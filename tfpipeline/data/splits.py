"""The split types every source returns: `Split`, `Splits` and their kinds.

A `Split` is a set of row indices into a `table.Table` (in memory or
memory-mapped), or streamed `records.Records` read by index. `Splits` holds
train, validation and test with what the features are: their names, kind,
shape and dtype. A table is split into the three by a seeded permutation of
its rows (`table_splits`): index sets into one table, never copies.
"""

import dataclasses

import numpy as np

from tfpipeline.data import records as records_lib
from tfpipeline.data import table as table_lib
from tfpipeline.data.table import Table

# What a run's features are: float32 columns, or one key's image (rank 3),
# other fixed-shape tensor, or string.
TABLE, IMAGE, TENSOR, TEXT = 'table', 'image', 'tensor', 'text'


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of examples: `rows` of a `table` (in memory or memory-mapped;
  for a file, `rows` are the file's row indices), or streamed `records`,
  read by index (TFDS images, tensors and text). `first_row` numbers the
  table's row 0 as the user finds it: 2 for a CSV file (its header is row
  1)."""
  table: Table | None = None
  rows: np.ndarray | None = None
  records: records_lib.Records | None = None
  first_row: int = 0
  # `moments` by key: a run builds its model more than once.
  _moments: dict = dataclasses.field(default_factory=dict, compare=False,
                                     repr=False)

  @classmethod
  def of(cls, features, labels, groups=None) -> 'Split':
    """Every row of arrays: a split of its own in-memory table."""
    table = Table.in_memory(features, labels, groups)
    return cls(table, np.arange(len(table)))

  def __len__(self) -> int:
    if self.records is not None:
      return len(self.records)
    return len(self.rows)

  @property
  def streamed(self) -> bool:
    return self.records is not None

  def source_rows(self, positions=None) -> np.ndarray:
    """Where the examples at `positions` (default: all) are in their source,
    as errors name them: a CSV file's row as a spreadsheet numbers it (the
    header is row 1; the file's line unless a quoted cell holds a line
    break), a Parquet row over all parts in order, an NPZ array's index, a
    TFDS record's index in the split as configured (synthetic data: the
    position)."""
    if self.records is not None:
      every = np.arange(len(self.records))
      return every if positions is None else every[positions]
    return (self.rows if positions is None else
            self.rows[positions]) + self.first_row

  def take(self, positions=None) -> dict[str, np.ndarray]:
    """Copies of the split's examples at `positions` (default: all):
    'features', 'labels' and 'groups' where the table has them."""
    return self.table.take(self.rows if positions is None else
                           self.rows[positions])

  def chunks(self, size: int = table_lib.CHUNK_ROWS):
    """`take` of every example, `size` at a time, in order."""
    return table_lib.chunks(self.table, self.rows, size)

  def moments(self, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and variance of 'features' or 'labels', in one
    streaming pass (once per key)."""
    if key not in self._moments:
      self._moments[key] = table_lib.moments(self.table, self.rows, key)
    return self._moments[key]


@dataclasses.dataclass(frozen=True)
class Splits:
  train: Split
  validation: Split
  test: Split
  feature_names: tuple[str, ...]
  label_name: str
  group_name: str | None
  # What the rows were read from, for provenance: the source and its
  # identity (file sha256; TFDS name, version and splits; synthetic seed).
  origin: dict = dataclasses.field(default_factory=dict)
  kind: str = TABLE
  # One example's features as stored: (d,) for a table, (H, W, C) for an
  # image, () for text; and their dtype ('float32', 'uint8', 'string').
  feature_shape: tuple[int, ...] = ()
  feature_dtype: str = 'float32'
  # The keys or columns the features were read from (data.features).
  feature_keys: tuple[str, ...] = ()
  # A TFDS ClassLabel label's number of classes.
  num_classes: int | None = None


@dataclasses.dataclass(frozen=True)
class Layout:
  """How the selected features look: their names, kind, shape and dtype."""
  keys: tuple[str, ...]
  names: tuple[str, ...]
  kind: str = TABLE
  shape: tuple[int, ...] = ()
  dtype: str = 'float32'

  def splits(self, parts, data_config, origin: dict) -> Splits:
    return Splits(*parts, feature_names=self.names,
                  label_name=data_config.label, group_name=data_config.group,
                  origin=origin, kind=self.kind, feature_shape=self.shape,
                  feature_dtype=self.dtype, feature_keys=self.keys)


def table_splits(table: Table, layout: Layout, data_config, origin: dict, *,
                 first_row: int = 0) -> Splits:
  """One table split into train, validation and test by seeded rows: index
  sets into the table, not copies."""
  parts = [Split(table, rows, first_row=first_row)
           for rows in _split_rows(len(table), data_config)]
  return layout.splits(parts, data_config, origin)


def _split_rows(n: int, data_config) -> tuple[np.ndarray, ...]:
  """Seeded permutation into train, validation and test row indices."""
  order = np.random.default_rng(data_config.split_seed).permutation(n)
  n_test = int(round(n * data_config.test_fraction))
  n_val = int(round(n * data_config.validation_fraction))
  return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]
