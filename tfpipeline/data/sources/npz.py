"""data.source=npz: a NumPy .npz archive of named arrays, one row per
example, read into memory and split by seeded rows."""

import pathlib

import numpy as np

from tfpipeline.data import files
from tfpipeline.data import splits as splits_lib
from tfpipeline.data.sources import columns as columns_lib
from tfpipeline.data.sources import core


class Npz(core.FileSource):
  """Arrays of shape (n,) or (n, ...): the features a table of float32
  columns, or one key's images, tensors or strings kept as they are."""

  def row_namer(self, data_config, split_name: str) -> core.RowNamer:
    return lambda i: f'{self.describe(data_config)}, index {i}'

  def load(self, data_config,
           check_labels: core.LabelCheck) -> splits_lib.Splits:
    data_config = self.with_columns(data_config)
    path = pathlib.Path(data_config.path)
    columns, count = files.read_npz(path)
    table, layout = columns_lib.checked_table(
        columns, count, data_config, str(path), self.row_namer(data_config, ''))
    return splits_lib.table_splits(table, layout, data_config,
                                   self.origin(path))

  def read_rows(self, data_config) -> splits_lib.Split:
    columns, count = files.read_npz(pathlib.Path(data_config.path))
    table, _ = columns_lib.checked_table(
        columns, count, data_config, self.describe(data_config),
        self.row_namer(data_config, data_config.test_split),
        for_prediction=True)
    return splits_lib.Split(table, np.arange(count))


SOURCES = {'npz': Npz('npz')}
