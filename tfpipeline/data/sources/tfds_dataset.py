"""data.source=tfds: a prepared TFDS dataset, the catalogue's or this
package's (`tfds_builders`), read by index: a table into memory, one per
TFDS split; images, tensors and text streamed (`records`)."""

import dataclasses

from absl import logging
import numpy as np

from tfpipeline import console
from tfpipeline.data import checks
from tfpipeline.data import records as records_lib
from tfpipeline.data import splits as splits_lib
from tfpipeline.data.sources import columns as columns_lib
from tfpipeline.data.sources import core
from tfpipeline.data.splits import TEXT, Split
from tfpipeline.errors import UserError

_SPLIT_KEYS = ('train_split', 'validation_split', 'test_split')


class TfdsDataset(core.Source):
  """The dataset data.name in data.data_dir, split by its own named splits
  (data.train_split, data.validation_split, data.test_split)."""

  named_splits = True

  def check_config(self, data_config, check: core.ConfigCheck) -> None:
    check(bool(data_config.name), 'data.name', data_config.name,
          'a TFDS dataset name')

  def describe(self, data_config) -> str:
    return f'TFDS dataset {data_config.name!r}'

  def title(self, data_config) -> str:
    return data_config.name

  def row_namer(self, data_config, split_name: str) -> core.RowNamer:
    origin = self.describe(data_config)
    return lambda i: f'{origin}: {split_name} row {i}'

  def load(self, data_config,
           check_labels: core.LabelCheck) -> splits_lib.Splits:
    builder = _prepared_builder(data_config)
    name, info = data_config.name, builder.info
    data_config = self.with_columns(data_config,
                                    _declared_columns(name, info))
    origin = self.describe(data_config)
    features = checks.check_keys(list(info.features), data_config, origin)
    keys = features + (data_config.label,) + (
        (data_config.group,) if data_config.group else ())
    parts = []
    for key in _SPLIT_KEYS:
      try:
        parts.append(records_lib.open_split(builder, data_config[key], keys))
      except UserError as e:
        raise UserError(f'data.{key}: {e}') from None
    tfds_origin = {
        'source': 'tfds', 'name': name, 'version': str(info.version),
        'data_dir': str(builder.data_dir),
        'splits': [data_config[key] for key in _SPLIT_KEYS],
        'split_sizes': {
            split: {'examples': info.splits[split].num_examples,
                    'bytes': info.splits[split].num_bytes}
            for split in sorted(info.splits)}}
    feature = info.features[features[0]]
    kind = len(features) == 1 and columns_lib.shaped_kind(
        tuple(feature.shape), np.dtype(feature.np_dtype))
    if not kind:  # A table: read into memory, one table per TFDS split.
      tables = [columns_lib.checked_table(
                    records.read_all(), len(records), data_config, origin,
                    self.row_namer(data_config, split_name))
                for split_name, records in zip(('train', 'validation',
                                                'test'), parts)]
      splits = tables[0][1].splits(
          [Split(table, np.arange(len(table))) for table, _ in tables],
          data_config, tfds_origin)
    else:
      shape = tuple(feature.shape)
      if None in shape:
        raise UserError(f'data.features: {features[0]!r} of {origin} has '
                        f'shape {shape}: its examples differ in size; resize '
                        f'them to one shape when preparing the dataset')
      dtype = 'string' if kind == TEXT else np.dtype(feature.np_dtype).name
      splits = splits_lib.Layout(features, features, kind, shape, dtype).splits(
          [Split(records=records) for records in parts],
          data_config, tfds_origin)
    return dataclasses.replace(splits, num_classes=getattr(
        info.features[data_config.label], 'num_classes', None))

  def read_rows(self, data_config) -> Split:
    """data.test_split, streamed when its features are one key of images,
    tensors or text, else read into a table."""
    origin = self.describe(data_config)
    builder = _prepared_builder(data_config)
    info = builder.info
    features = checks.check_keys(list(info.features), data_config, origin,
                                 for_prediction=True)
    keys = features + tuple(key for key in (data_config.label,
                                            data_config.group)
                            if key and key in info.features)
    records = records_lib.open_split(builder, data_config.test_split, keys)
    feature = info.features[features[0]]
    if len(features) == 1 and columns_lib.shaped_kind(
        tuple(feature.shape), np.dtype(feature.np_dtype)):
      return Split(records=records, rows=np.arange(len(records)))
    count = len(records)
    table, _ = columns_lib.checked_table(
        records.read_all(), count, data_config, origin,
        self.row_namer(data_config, data_config.test_split),
        for_prediction=True)
    return Split(table, np.arange(count))


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


SOURCES = {'tfds': TfdsDataset('tfds')}
