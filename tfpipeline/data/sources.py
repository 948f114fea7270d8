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
"""

import dataclasses
import json
import pathlib

from absl import logging
from ml_collections import config_dict
import numpy as np

from tfpipeline import artifacts
from tfpipeline import console
from tfpipeline import integrity
from tfpipeline.data import files
from tfpipeline.data import records as records_lib
from tfpipeline.data import table as table_lib
from tfpipeline.data import table_cache
from tfpipeline.data.table import Table
from tfpipeline.errors import UserError

# What a run's features are: float32 columns, or one key's image (rank 3),
# other fixed-shape tensor, or string.
TABLE, IMAGE, TENSOR, TEXT = 'table', 'image', 'tensor', 'text'
# A CSV file's first data row: row 1 is the header.
CSV_FIRST_ROW = 2


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of examples: `rows` of a `table` (in memory or memory-mapped;
  for a file, `rows` are the file's row indices), or streamed `records`,
  read by index (TFDS images, tensors and text). `first_row` numbers the
  table's row 0 as the user finds it: CSV_FIRST_ROW for a CSV file."""
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


def load(data_config, *, loss: str, output_units: int | None = None) -> Splits:
  """Reads and checks the configured source. Raises UserError on bad data:
  NaN or Inf, or labels the loss cannot take (with `output_units`, the
  model's outputs: class ids below it, one-hot rows that wide).

  The splits name the columns used, the dataset's own where the config
  leaves them to it (see `with_columns`).
  """
  files_read = data_config.source in ('csv', 'parquet')
  if data_config.source == 'tfds':
    splits = _tfds(data_config)
  elif files_read:  # Labels checked as read, before a cache is written.
    data_config = with_columns(data_config)
    splits = _file(data_config, lambda labels, where: _check_labels(
        labels, data_config.label, loss, output_units, where))
  else:
    reader = {'synthetic': _synthetic, 'npz': _npz}
    splits = reader[data_config.source](with_columns(data_config))
  _check_class_count(splits, loss, output_units)
  checked = set()  # File splits share one table: checked once.
  for name in ('train', 'validation', 'test'):
    split = getattr(splits, name)
    if len(split) == 0:
      raise UserError(f'data: the {name} split is empty; add rows or change '
                      f'data.validation_fraction / data.test_fraction')
    if split.streamed or files_read or id(split.table) in checked:
      continue
    checked.add(id(split.table))
    where = _row_namer(data_config, name)
    labels = split.table.labels
    for start in range(0, len(labels), table_lib.CHUNK_ROWS):
      chunk = labels[start:start + table_lib.CHUNK_ROWS]
      _check_labels(chunk.reshape(len(chunk), -1), splits.label_name, loss,
                    output_units, lambda i, start=start: where(start + i))
  return splits


def read_rows(data_config) -> Split:
  """Every example of data.path (CSV, NPZ, Parquet) or data.test_split (TFDS),
  in order and unsplit, for a trained model to predict.

  data.features must be there, as in training; data.label and data.group
  are read where present (else None; streamed: not among `records.keys`).
  Cells are checked as in training (numbers, no NaN or Inf). `rows` holds
  each example's index in the file or split.
  """
  origin = _describe(data_config)
  if data_config.source in ('csv', 'parquet'):
    table, _, _ = _file_table(data_config, for_prediction=True)
    return Split(table, np.arange(len(table)),
                 first_row=_first_row(data_config))
  if data_config.source == 'tfds':
    builder = _prepared_builder(data_config)
    info = builder.info
    features = _check_keys(list(info.features), data_config, origin,
                           for_prediction=True)
    keys = features + tuple(key for key in (data_config.label,
                                            data_config.group)
                            if key and key in info.features)
    records = records_lib.open_split(builder, data_config.test_split, keys)
    feature = info.features[features[0]]
    if len(features) == 1 and _shaped_kind(tuple(feature.shape),
                                           np.dtype(feature.np_dtype)):
      return Split(records=records, rows=np.arange(len(records)))
    columns, count = records.read_all(), len(records)
  else:
    columns, count = files.read_npz(pathlib.Path(data_config.path))
  table, _ = _checked_table(columns, count, data_config, origin,
                            _row_namer(data_config, data_config.test_split),
                            for_prediction=True)
  return Split(table, np.arange(count))


def with_columns(data_config, declared=((), '', None)):
  """A copy of `data_config` whose features, label and group left to the
  dataset (`()`, `''`, `'auto'`) are the `declared` (features, label, group)
  of a TFDS dataset; files declare none: every column but label and group,
  and no group."""
  features, label, group = declared
  data_config = config_dict.ConfigDict(data_config.to_dict())
  if not data_config.features:
    data_config.features = tuple(features)
  if not data_config.label:
    if not label:
      raise UserError(f'data.label: {_describe(data_config)} names no label; '
                      f'set --config.data.label=KEY')
    data_config.label = label
  if data_config.group == 'auto':
    data_config.group = group
  return data_config


def _check_finite(features: np.ndarray, labels: np.ndarray | None,
                  feature_names, label_name: str, where) -> None:
  """Refuses NaN and Inf in features and labels (rows of a table); `where(i)`
  names row i as the user finds it (a CSV file's row, a TFDS split's
  index)."""
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


def _first_row(data_config) -> int:
  """The number the user finds a table's row 0 under (`Split.first_row`)."""
  return CSV_FIRST_ROW if data_config.source == 'csv' else 0


def _row_namer(data_config, split_name: str):
  """`where(i)`: row i of the table of `split_name` as the user finds it: a
  CSV file's line, an NPZ array's index, a Parquet part's row, a TFDS
  split's index."""
  origin = _describe(data_config)
  if data_config.source == 'csv':
    return lambda i: f'{origin}, row {i + CSV_FIRST_ROW}'
  if data_config.source == 'npz':
    return lambda i: f'{origin}, index {i}'
  if data_config.source == 'parquet':
    parts = files.parquet_parts(pathlib.Path(data_config.path))
    return lambda i: files.parquet_row(parts, int(i))
  return lambda i: f'{origin}: {split_name} row {i}'


def _check_labels(labels: np.ndarray, label_name: str, loss: str,
                  output_units: int | None, where) -> None:
  """Refuses labels the loss cannot take: class ids outside
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


def streamed_label_check(data_config, split_name: str, label_name: str,
                         loss: str, output_units: int | None):
  """`check(labels, rows) -> labels` for a streamed split's batches, read
  as training goes (no pass before it): refuses labels the loss cannot take
  as `load` does a table's, naming the record."""
  where = _row_namer(data_config, split_name)

  def check(labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    _check_labels(labels.reshape(len(labels), -1), label_name, loss,
                  output_units, lambda i: where(rows[i]))
    return labels

  return check


def _check_class_count(splits: Splits, loss: str,
                       output_units: int | None) -> None:
  """A TFDS class label's number of classes must fit the model's outputs
  (streamed labels are not scanned)."""
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


def _describe(data_config) -> str:
  if data_config.source in ('csv', 'npz', 'parquet'):
    return str(data_config.path)
  if data_config.source == 'tfds':
    return f'TFDS dataset {data_config.name!r}'
  return 'synthetic data'


def _shaped_kind(shape: tuple, dtype: np.dtype) -> str | None:
  """IMAGE, TENSOR or TEXT for one key's per-example shape and dtype; None
  when the key is tabular (scalars or a vector of numbers)."""
  if dtype.kind in 'OSU':
    return TEXT
  if len(shape) >= 2:
    return IMAGE if len(shape) == 3 else TENSOR
  return None


def _split_rows(n: int, data_config) -> tuple[np.ndarray, ...]:
  """Seeded permutation into train, validation and test row indices."""
  order = np.random.default_rng(data_config.split_seed).permutation(n)
  n_test = int(round(n * data_config.test_fraction))
  n_val = int(round(n * data_config.validation_fraction))
  return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


@dataclasses.dataclass(frozen=True)
class _Layout:
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


def _check_keys(keys, data_config, origin: str, *,
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


def _select(columns: dict, row_count: int, data_config, origin: str, *,
            for_prediction: bool = False) -> tuple[Table, _Layout]:
  """Picks data.features, data.label and data.group out of named columns
  (`for_prediction`: label and group where present, else None).

  Columns are arrays of shape (n,) or (n, ...). One key of images, tensors
  or strings is kept as it is; otherwise the features are concatenated into
  float32 columns, named by key, or 'key[i]' for a key with several, and
  `columns` is emptied (its memory freed).
  """
  features = _check_keys(list(columns), data_config, origin,
                         for_prediction=for_prediction)
  label, group = data_config.label, data_config.group
  y = (np.asarray(columns[label]).reshape(row_count, -1)
       if label in columns else None)
  g = (np.asarray(columns[group]).reshape(row_count)
       if group in columns else None)
  if len(features) == 1:
    x = np.asarray(columns[features[0]])
    kind = _shaped_kind(x.shape[1:], x.dtype)
    if kind:
      if kind == TEXT:
        x = x.astype(str).astype(object)
      return Table.in_memory(x, y, g), _Layout(
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
  return Table.in_memory(x, y, g), _Layout(features, names,
                                           shape=(x.shape[1],))


def _checked_table(columns: dict, row_count: int, data_config, origin: str,
                   where, *, for_prediction: bool = False):
  """`_select`'s table and layout, its NaN and Inf refused by `where`."""
  table, layout = _select(columns, row_count, data_config, origin,
                          for_prediction=for_prediction)
  _check_finite(table.features, table.labels, layout.names,
                data_config.label, where)
  return table, layout


def _table_splits(table: Table, layout: _Layout, data_config,
                  origin: dict) -> Splits:
  """One table split into train, validation and test by seeded rows: index
  sets into the table, not copies."""
  parts = [Split(table, rows, first_row=_first_row(data_config))
           for rows in _split_rows(len(table), data_config)]
  return layout.splits(parts, data_config, origin)


def _file_origin(source: str, path: pathlib.Path) -> dict:
  """The file's path and sha256; a directory of Parquet parts: each
  part's."""
  origin = {'source': source, 'path': str(path.resolve())}
  if path.is_dir():
    origin['parts_sha256'] = {
        str(part.relative_to(path)): integrity.sha256_file(part)
        for part in files.parquet_parts(path)}
  else:
    origin['sha256'] = integrity.sha256_file(path)
  return origin


def _synthetic(data_config) -> Splits:
  """Random inputs and targets, as in the seeds' Keras and PyTorch examples."""
  rng = np.random.default_rng(data_config.split_seed)
  draw = rng.random if data_config.distribution == 'uniform' else (
      rng.standard_normal)

  def split(rows: int) -> Split:
    x = draw((rows, data_config.num_features)).astype(np.float32)
    y = draw((rows, data_config.num_targets)).astype(np.float32)
    return Split.of(x, y)

  return Splits(
      split(data_config.num_examples), split(data_config.num_eval_examples),
      split(data_config.num_eval_examples),
      feature_names=tuple(f'x{i}' for i in range(data_config.num_features)),
      label_name='y', group_name=None,
      origin={'source': 'synthetic', 'seed': data_config.split_seed,
              'distribution': data_config.distribution},
      feature_shape=(data_config.num_features,))


def _file(data_config, check_labels) -> Splits:
  """A CSV or Parquet table, split; `check_labels(labels, where)` refuses
  a batch's labels."""
  table, layout, origin = _file_table(data_config, check_labels=check_labels)
  return _table_splits(table, layout, data_config, origin or _file_origin(
      data_config.source, pathlib.Path(data_config.path)))


def _file_table(data_config, *, for_prediction: bool = False,
                check_labels=None):
  """A UTF-8 CSV file (or .csv.gz) with a header row, or a Parquet file or
  directory of part files, as a table: the features and label float32, the
  group text unless a feature. Read batch by batch into memory, or, above
  data.max_memory_mb, into its cache on disk (reused when there), every
  batch's NaN and Inf (and with `check_labels(labels, where)`, its labels)
  refused first.

  Returns:
    The table, its layout, and the file's origin (`_file_origin`) when the
    cache needed its sha256, else None.
  """
  path = pathlib.Path(data_config.path)
  csv_file = data_config.source == 'csv'
  if csv_file:
    names = files.csv_header(path)
  else:
    parts = files.parquet_parts(path)
    names = files.parquet_names(parts)
  features = _check_keys(names, data_config, str(path),
                         for_prediction=for_prediction)
  label, group = data_config.label, data_config.group
  label = label if label in names else None
  group = group if group and group in names else None
  numbers = set(features) | ({label} - {None})
  texts = ({group} - {None}) - numbers
  if csv_file:
    rows_bound = files.csv_row_bound(path)
    read = lambda: files.csv_batches(path, names, numbers, texts)
  else:
    rows_bound = files.parquet_rows(parts)
    read = lambda: files.parquet_batches(parts, numbers, texts)
  where = _row_namer(data_config, '')

  def fill(writer: table_cache.TableWriter) -> None:
    for batch in read():
      x = np.stack([batch[name] for name in features], axis=1)
      if not len(x):
        continue
      y = None if label is None else batch[label].reshape(-1, 1)
      where_in_batch = lambda i, start=writer.rows: where(start + i)
      _check_finite(x, y, features, label, where_in_batch)
      if check_labels:
        check_labels(y, where_in_batch)
      writer.append(x, y, None if group is None else batch[group])
    if not writer.rows:
      raise UserError(f'{path}: ' + ('a header row and no data rows'
                                     if csv_file else 'no rows') +
                      '; add rows')

  layout = _Layout(features, features, shape=(len(features),))
  shape = {'rows_bound': rows_bound, 'width': len(features),
           'labelled': label is not None, 'grouped': group is not None}
  size = rows_bound * (len(features) + 2) * 4
  if size <= table_cache.memory_budget(
      data_config.get('max_memory_mb', 0)):
    writer = table_cache.TableWriter(**shape)
    fill(writer)
    return writer.table(), layout, None
  origin = _file_origin(data_config.source, path)
  selection = {'features': list(features), 'label': label, 'group': group}
  sha256 = origin.get('sha256') or integrity.sha256_text(json.dumps(
      origin['parts_sha256'], sort_keys=True))
  directory = table_cache.path_for(path, sha256, selection)
  table = table_cache.open_cached(directory)
  if table is not None:
    logging.info('reading %s from its memory-mapped cache %s', path,
                 directory)
    artifacts.remove_stale(directory)  # Killed while another completed.
    return table, layout, origin
  return table_cache.build(directory, fill, **shape, metadata={
      'source': str(path), 'sha256': sha256, **selection}), layout, origin


def _npz(data_config) -> Splits:
  path = pathlib.Path(data_config.path)
  columns, count = files.read_npz(path)
  table, layout = _checked_table(columns, count, data_config, str(path),
                                 _row_namer(data_config, ''))
  return _table_splits(table, layout, data_config,
                       _file_origin(data_config.source, path))


def _tfds(data_config) -> Splits:
  """A prepared TFDS dataset, the catalogue's or this package's, read by
  index: a table into memory, images, tensors and text streamed."""
  builder = _prepared_builder(data_config)
  name, info = data_config.name, builder.info
  data_config = with_columns(data_config, _declared_columns(name, info))
  origin = f'TFDS dataset {name!r}'
  features = _check_keys(list(info.features), data_config, origin)
  keys = features + (data_config.label,) + (
      (data_config.group,) if data_config.group else ())
  split_keys = ('train_split', 'validation_split', 'test_split')
  parts = []
  for key in split_keys:
    try:
      parts.append(records_lib.open_split(builder, data_config[key], keys))
    except UserError as e:
      raise UserError(f'data.{key}: {e}') from None
  tfds_origin = {'source': 'tfds', 'name': name, 'version': str(info.version),
                 'data_dir': str(builder.data_dir),
                 'splits': [data_config[key] for key in split_keys],
                 'split_sizes': {
                     split: {'examples': info.splits[split].num_examples,
                             'bytes': info.splits[split].num_bytes}
                     for split in sorted(info.splits)}}
  feature = info.features[features[0]]
  kind = len(features) == 1 and _shaped_kind(
      tuple(feature.shape), np.dtype(feature.np_dtype))
  if not kind:  # A table: read into memory, one table per TFDS split.
    tables = [_checked_table(records.read_all(), len(records), data_config,
                             origin, _row_namer(data_config, name))
              for name, records in zip(('train', 'validation', 'test'),
                                       parts)]
    splits = tables[0][1].splits(
        [Split(table, np.arange(len(table))) for table, _ in tables],
        data_config, tfds_origin)
  else:
    shape = tuple(feature.shape)
    if None in shape:
      raise UserError(f'data.features: {features[0]!r} of {origin} has shape '
                      f'{shape}: its examples differ in size; resize them to '
                      f'one shape when preparing the dataset')
    dtype = 'string' if kind == TEXT else np.dtype(feature.np_dtype).name
    splits = _Layout(features, features, kind, shape, dtype).splits(
        [Split(records=records) for records in parts],
        data_config, tfds_origin)
  return dataclasses.replace(splits, num_classes=getattr(
      info.features[data_config.label], 'num_classes', None))


def _declared_columns(name: str, info) -> tuple:
  """(features, label, group) a TFDS dataset trains on by default: this
  package's datasets name theirs, a catalogue dataset has supervised keys."""
  from tfpipeline.data import tfds_builders  # pylint: disable=g-import-not-at-top
  name = name.split(':')[0].split('/')[0]  # Without version or config.
  if name in tfds_builders.COLUMNS:
    return tfds_builders.COLUMNS[name]
  keys = info.supervised_keys
  if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    return (keys[0],), keys[1], None
  return (), '', None


def _prepared_builder(data_config):
  """The TFDS builder of data.name, prepared (downloaded if allowed)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfpipeline.data import tfds_builders  # pylint: disable=g-import-not-at-top,unused-import

  if console.is_quiet():
    tfds.disable_progress_bar()
  name = data_config.name
  try:
    with console.library_chatter_held_back():
      builder = tfds.builder(name, data_dir=data_config.data_dir)
      prepared = builder.is_prepared()
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f'data.name: no TFDS dataset {name!r} (in the catalogue '
                    f'or prepared in data.data_dir); see the TFDS catalogue '
                    f'for names') from None
  if not prepared:
    if not data_config.download:
      raise UserError(f'data.name: TFDS dataset {name!r} is not prepared in '
                      f'{builder.data_dir_root}; run `tfds build {name} '
                      f'--data_dir=...` or set --config.data.download=True')
    # Prepared with random access, so nothing needs converting later.
    logging.info('preparing TFDS dataset %r in %s (once: later runs read '
                 'it from there)', name, builder.data_dir_root)
    try:
      with console.library_chatter_held_back():
        builder = tfds.builder(name, data_dir=data_config.data_dir,
                               file_format='array_record')
        builder.download_and_prepare()
    except Exception as e:  # Network, disk and source errors alike.
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise UserError(f'data.name: cannot download or prepare TFDS dataset '
                      f'{name!r} ({type(e).__name__}: {first_line}); prepare '
                      f'it with `tfds build {name}` where it can be fetched, '
                      f'then pass --config.data.data_dir') from None
  return builder
