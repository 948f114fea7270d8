"""data.source=csv and parquet: a table in a file, read batch by batch.

A UTF-8 CSV file (or .csv.gz) with a header row, or a Parquet file or
directory of part files: the features and label float32, the group text
unless a feature. Read into memory, or, above data.max_memory_mb, into its
memory-mapped cache on disk (`table_cache`, reused when there), every
batch's NaN, Inf and labels refused first, by the file's row.
"""

import json
import pathlib

from absl import logging
import numpy as np

from tfpipeline import atomic_files
from tfpipeline import integrity
from tfpipeline.data import checks
from tfpipeline.data import files
from tfpipeline.data import splits as splits_lib
from tfpipeline.data import table_cache
from tfpipeline.data.sources import core
from tfpipeline.errors import UserError

# A CSV file's first data row: row 1 is the header.
CSV_FIRST_ROW = 2


class TableFile(core.FileSource):
  """A CSV file (`csv`), or a Parquet file or directory of parts."""

  checks_labels_as_read = True  # Before a cache is written.

  def __init__(self, name: str, *, csv: bool):
    super().__init__(name)
    self.csv = csv
    # The number the user finds the table's row 0 under.
    self.first_row = CSV_FIRST_ROW if csv else 0

  def row_namer(self, data_config, split_name: str) -> core.RowNamer:
    if self.csv:
      origin = self.describe(data_config)
      return lambda i: f'{origin}, row {i + CSV_FIRST_ROW}'
    parts = files.parquet_parts(pathlib.Path(data_config.path))
    return lambda i: files.parquet_row(parts, int(i))

  def load(self, data_config,
           check_labels: core.LabelCheck) -> splits_lib.Splits:
    data_config = self.with_columns(data_config)
    table, layout, origin = self._table(
        data_config, check_labels=lambda labels, where: check_labels(
            labels, data_config.label, where))
    return splits_lib.table_splits(
        table, layout, data_config,
        origin or self.origin(pathlib.Path(data_config.path)),
        first_row=self.first_row)

  def read_rows(self, data_config) -> splits_lib.Split:
    table, _, _ = self._table(data_config, for_prediction=True)
    return splits_lib.Split(table, np.arange(len(table)),
                            first_row=self.first_row)

  def _table(self, data_config, *, for_prediction: bool = False,
             check_labels=None):
    """The file as a table (see the module docstring); with
    `check_labels(labels, where)`, every batch's labels refused first.

    Returns:
      The table, its layout, and the file's origin (`origin`) when the
      cache needed its sha256, else None.
    """
    path = pathlib.Path(data_config.path)
    if self.csv:
      names = files.csv_header(path)
    else:
      parts = files.parquet_parts(path)
      names = files.parquet_names(parts)
    features = checks.check_keys(names, data_config, str(path),
                                 for_prediction=for_prediction)
    label, group = data_config.label, data_config.group
    label = label if label in names else None
    group = group if group and group in names else None
    numbers = set(features) | ({label} - {None})
    texts = ({group} - {None}) - numbers
    if self.csv:
      rows_bound = files.csv_row_bound(path)
      read = lambda: files.csv_batches(path, names, numbers, texts)
    else:
      rows_bound = files.parquet_rows(parts)
      read = lambda: files.parquet_batches(parts, numbers, texts)
    where = self.row_namer(data_config, '')

    def fill(writer: table_cache.TableWriter) -> None:
      for batch in read():
        x = np.stack([batch[name] for name in features], axis=1)
        if not len(x):
          continue
        y = None if label is None else batch[label].reshape(-1, 1)
        where_in_batch = lambda i, start=writer.rows: where(start + i)
        checks.check_finite(x, y, features, label, where_in_batch)
        if check_labels:
          check_labels(y, where_in_batch)
        writer.append(x, y, None if group is None else batch[group])
      if not writer.rows:
        raise UserError(f'{path}: ' + ('a header row and no data rows'
                                       if self.csv else 'no rows') +
                        '; add rows')

    layout = splits_lib.Layout(features, features, shape=(len(features),))
    shape = {'rows_bound': rows_bound, 'width': len(features),
             'labelled': label is not None, 'grouped': group is not None}
    size = rows_bound * (len(features) + 2) * 4
    if size <= table_cache.memory_budget(
        data_config.get('max_memory_mb', 0)):
      writer = table_cache.TableWriter(**shape)
      fill(writer)
      return writer.table(), layout, None
    origin = self.origin(path)
    selection = {'features': list(features), 'label': label, 'group': group}
    sha256 = origin.get('sha256') or integrity.sha256_text(json.dumps(
        origin['parts_sha256'], sort_keys=True))
    directory = table_cache.path_for(path, sha256, selection)
    table = table_cache.open_cached(directory)
    if table is not None:
      logging.info('reading %s from its memory-mapped cache %s', path,
                   directory)
      atomic_files.remove_stale(directory)  # Killed while another completed.
      return table, layout, origin
    return table_cache.build(directory, fill, **shape, metadata={
        'source': str(path), 'sha256': sha256, **selection}), layout, origin


SOURCES = {'csv': TableFile('csv', csv=True),
           'parquet': TableFile('parquet', csv=False)}
