"""Data sources: synthetic, CSV, NPZ and TFDS, read into checked splits.

Every source returns the same `Splits`: float32 features, labels and optional
groups for train, validation and test. Reading everything once up front is
what lets bad data be refused (naming the file, row and column) before a run
writes anything, and gives the model its training-split statistics. The
sources are tabular, so the splits fit in memory; the tf.data pipelines in
`tfpipeline.data.pipeline` are built from them.
"""

import csv
import dataclasses
import pathlib

import numpy as np

from tfpipeline import integrity
from tfpipeline.errors import UserError


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: features (n, d) float32, labels (n, k), groups (n,) or None."""
  features: np.ndarray
  labels: np.ndarray
  groups: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.features)


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


def load(data_config, *, loss: str) -> Splits:
  """Reads and checks the configured source. Raises UserError on bad data."""
  reader = {'synthetic': _synthetic, 'csv': _csv, 'npz': _npz,
            'tfds': _tfds}[data_config.source]
  splits = reader(data_config)
  for name in ('train', 'validation', 'test'):
    split = getattr(splits, name)
    if len(split) == 0:
      raise UserError(f'data: the {name} split is empty; add rows or change '
                      f'data.validation_fraction / data.test_fraction')
    _check_finite(split, name, splits, data_config)
  return dataclasses.replace(
      splits, **{name: _labels_for_loss(getattr(splits, name), loss)
                 for name in ('train', 'validation', 'test')})


def _labels_for_loss(split: Split, loss: str) -> Split:
  """Integer class ids for sparse categorical loss, float32 otherwise."""
  if loss == 'sparse_categorical_crossentropy':
    labels = split.labels.reshape(len(split), -1)[:, :1].astype(np.int32)
  else:
    labels = split.labels.reshape(len(split), -1).astype(np.float32)
  return dataclasses.replace(split, labels=labels)


def _check_finite(split: Split, split_name: str, splits: Splits, data_config):
  for what, values, names in (
      ('feature', split.features, splits.feature_names),
      ('label', split.labels.reshape(len(split), -1), (splits.label_name,))):
    bad = ~np.isfinite(values.astype(np.float64))
    if bad.any():
      row, col = np.argwhere(bad)[0]
      name = names[col] if len(names) == values.shape[1] else f'#{col}'
      raise UserError(
          f'{_describe(data_config)}: {split_name} row {row}, {what} {name!r} '
          f'is {values[row, col]}; remove or impute NaN/Inf values first')


def _describe(data_config) -> str:
  if data_config.source in ('csv', 'npz'):
    return str(data_config.path)
  if data_config.source == 'tfds':
    return f'TFDS dataset {data_config.name!r}'
  return 'synthetic data'


def _split_rows(n: int, data_config) -> tuple[np.ndarray, ...]:
  """Seeded permutation into train, validation and test row indices."""
  order = np.random.default_rng(data_config.split_seed).permutation(n)
  n_test = int(round(n * data_config.test_fraction))
  n_val = int(round(n * data_config.validation_fraction))
  return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def _select(columns: dict, row_count: int, data_config,
            origin: str) -> tuple[Split, tuple[str, ...]]:
  """Picks data.features, data.label and data.group out of named columns.

  Columns are arrays of shape (n,) or (n, k); features are concatenated.
  Returns the split and one name per feature column: the key, or 'key[i]'
  for the columns of a key with several.
  """
  label, group = data_config.label, data_config.group
  features = tuple(data_config.features) or tuple(
      c for c in columns if c not in (label, group))
  for key, name in [('data.features', f) for f in features] + [
      ('data.label', label)] + ([('data.group', group)] if group else []):
    if name not in columns:
      raise UserError(f'{origin}: no column {name!r} (from {key}); it has '
                      f'{", ".join(columns)}; set --config.{key}')
  blocks = [np.asarray(columns[f], np.float64).reshape(row_count, -1)
            for f in features]
  names = tuple(name if block.shape[1] == 1 else f'{name}[{i}]'
                for name, block in zip(features, blocks)
                for i in range(block.shape[1]))
  x = np.concatenate(blocks, axis=1).astype(np.float32)
  y = np.asarray(columns[label]).reshape(row_count, -1)
  g = np.asarray(columns[group]).reshape(row_count) if group else None
  return Split(x, y, g), names


def _table_splits(columns: dict, row_count: int, data_config,
                  origin: str) -> Splits:
  """One table split into train, validation and test by seeded rows."""
  whole, features = _select(columns, row_count, data_config, origin)
  parts = [Split(whole.features[rows], whole.labels[rows],
                 None if whole.groups is None else whole.groups[rows])
           for rows in _split_rows(row_count, data_config)]
  return Splits(*parts, feature_names=features, label_name=data_config.label,
                group_name=data_config.group, origin=_file_origin(
                    data_config.source, pathlib.Path(data_config.path)))


def _file_origin(source: str, path: pathlib.Path) -> dict:
  return {'source': source, 'path': str(path.resolve()),
          'sha256': integrity.sha256_file(path)}


def _synthetic(data_config) -> Splits:
  """Random inputs and targets, as in the seeds' Keras and PyTorch examples."""
  rng = np.random.default_rng(data_config.split_seed)
  draw = rng.random if data_config.distribution == 'uniform' else (
      rng.standard_normal)

  def split(rows: int) -> Split:
    x = draw((rows, data_config.num_features)).astype(np.float32)
    y = draw((rows, data_config.num_targets)).astype(np.float32)
    return Split(x, y)

  return Splits(
      split(data_config.num_examples), split(data_config.num_eval_examples),
      split(data_config.num_eval_examples),
      feature_names=tuple(f'x{i}' for i in range(data_config.num_features)),
      label_name='y', group_name=None,
      origin={'source': 'synthetic', 'seed': data_config.split_seed,
              'distribution': data_config.distribution})


def _open(path: pathlib.Path, mode: str):
  try:
    return open(path, mode, newline='' if 'b' not in mode else None)
  except FileNotFoundError:
    raise UserError(f'data.path: {path} does not exist; check the path') from None
  except OSError as e:
    raise UserError(f'data.path: cannot read {path}: {e.strerror}') from None


def _csv(data_config) -> Splits:
  """A CSV file with a header row; every used column must be numeric,
  except the group column, which may hold labels such as 'female'."""
  path = pathlib.Path(data_config.path)
  with _open(path, 'r') as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if not header:
      raise UserError(f'{path}: empty file; expected a header row and data')
    rows = list(reader)
  header = [h.strip() for h in header]
  columns = {name: [] for name in header}
  for line, row in enumerate(rows, start=2):
    if len(row) != len(header):
      raise UserError(f'{path}, row {line}: {len(row)} cells, header has '
                      f'{len(header)}; fix the row')
    for name, cell in zip(header, row):
      columns[name].append(cell.strip())
  numeric = set(data_config.features or header) | {data_config.label}
  numeric.discard(data_config.group)
  for name in numeric & set(header):
    columns[name] = _parse_numbers(columns[name], path, name)
  return _table_splits(columns, len(rows), data_config, str(path))


def _parse_numbers(cells: list[str], path, column: str) -> np.ndarray:
  try:
    return np.asarray(cells, dtype=np.float64)
  except ValueError:
    for line, cell in enumerate(cells, start=2):
      try:
        float(cell)
      except ValueError:
        raise UserError(f'{path}, row {line}, column {column!r}: {cell!r} is '
                        f'not a number; fix the cell or drop the '
                        f'column') from None
    raise


def _npz(data_config) -> Splits:
  """A NumPy .npz archive: one array per feature, label and group key."""
  path = pathlib.Path(data_config.path)
  with _open(path, 'rb') as f:
    try:
      with np.load(f, allow_pickle=False) as archive:
        columns = {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as e:
      raise UserError(f'data.path: {path} is not a readable .npz archive '
                      f'({e}); save it with numpy.savez') from None
  lengths = {key: len(value) for key, value in columns.items()}
  if len(set(lengths.values())) > 1:
    raise UserError(f'{path}: arrays differ in length ({lengths}); every '
                    f'array needs one entry per example')
  return _table_splits(columns, next(iter(lengths.values()), 0), data_config,
                       str(path))


def _tfds(data_config) -> Splits:
  """A TFDS dataset: the catalogue's, or one of this package's builders."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfpipeline.data import tfds_builders  # pylint: disable=g-import-not-at-top,unused-import

  name = data_config.name
  try:
    builder = tfds.builder(name, data_dir=data_config.data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f'data.name: no TFDS dataset {name!r}; see the TFDS '
                    f'catalogue for names') from None
  if not builder.is_prepared():
    if not data_config.download:
      raise UserError(f'data.name: TFDS dataset {name!r} is not prepared in '
                      f'{builder.data_dir_root}; run `tfds build {name} '
                      f'--data_dir=...` or set --config.data.download=True')
    try:
      builder.download_and_prepare()
    except Exception as e:  # Network, disk and source errors alike.
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise UserError(f'data.name: cannot download or prepare TFDS dataset '
                      f'{name!r} ({type(e).__name__}: {first_line}); prepare '
                      f'it with `tfds build {name}` where it can be fetched, '
                      f'then pass --config.data.data_dir') from None

  def read(key: str) -> tuple[dict, int]:
    split_name = data_config[key]
    try:
      dataset = builder.as_dataset(split=split_name)
    except (ValueError, KeyError) as e:
      raise UserError(f'data.{key}: {split_name!r} is not a split of {name!r} '
                      f'(it has {", ".join(builder.info.splits)}); {e}') from None
    if not isinstance(dataset.element_spec, dict):
      raise UserError(f'data.name: {name!r} examples are not a dict of '
                      f'features; it cannot be read as columns')
    # Fixed-size batches: batch_size=-1 needs split sizes in the metadata.
    batches = list(tfds.as_numpy(dataset.batch(4096)))
    columns = {k: np.concatenate([b[k] for b in batches]) if batches else
               np.zeros((0,)) for k in dataset.element_spec}
    return columns, sum(len(next(iter(b.values()))) for b in batches)

  origin = f'TFDS dataset {name!r}'
  selected = [_select(*read(key), data_config, origin)
              for key in ('train_split', 'validation_split', 'test_split')]
  return Splits(*(split for split, _ in selected),
                feature_names=selected[0][1], label_name=data_config.label,
                group_name=data_config.group,
                origin={'source': 'tfds', 'name': name,
                        'version': str(builder.info.version),
                        'splits': [data_config[key] for key in (
                            'train_split', 'validation_split', 'test_split')]})
