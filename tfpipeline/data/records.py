"""Random access to a prepared TFDS dataset's records, whatever its format.

A split is read by index through TFDS's ArrayRecord data source: one batched
`__getitems__` per index batch returns the serialized examples, which are
parsed (`tf.io.parse_example`) and decoded (each feature's own TFDS
decoder) inside the tf.data graph, so nothing is held in memory but the
batches in flight.

A dataset prepared only as TFRecord (TFDS's default) has no random access.
It is converted once, shard by shard, with TFDS's file adapters, into an
ArrayRecord copy beside it (`<version dir>.array_record/`), which later runs
find and reuse. TFDS's own converter (`tfds convert_format`) needs Apache
Beam, which tfpipeline does not depend on; the few lines here use the same
adapters. The copy appears by one rename, so a killed conversion leaves no
half-written dataset (its scratch directory goes at the next conversion).
"""

import dataclasses
import json
import pathlib
import shutil

from absl import logging
import numpy as np

from tfpipeline import atomic_files
from tfpipeline.errors import UserError
from tfpipeline.errors import first_line

CONVERTED_SUFFIX = '.array_record'


@dataclasses.dataclass(frozen=True)
class Records:
  """One split of a prepared TFDS dataset, readable by index.

  Attributes:
    info: the dataset's `tfds.core.DatasetInfo` (ArrayRecord copy's, if
      converted).
    split: the TFDS split expression ('train', 'train[:90%]', ...).
    keys: the feature keys read, in order (features, label, group).
  """
  info: object
  split: str
  keys: tuple[str, ...]
  source: object  # tfds ArrayRecordDataSource yielding serialized examples

  def __len__(self) -> int:
    return len(self.source)

  def serialized(self, rows: np.ndarray) -> np.ndarray:
    """Serialized tf.train.Example bytes of `rows`, an object array."""
    records = self.source.__getitems__(np.asarray(rows).reshape(-1).tolist())
    result = np.empty(len(records), dtype=object)
    result[:] = records
    return result

  def decode(self, serialized):
    """In-graph: a batch of serialized examples -> {key: decoded batch}."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow_datasets.core import example_parser  # pylint: disable=g-import-not-at-top
    features = self.info.features
    parser = example_parser.ExampleParser(
        {key: features[key].get_serialized_info() for key in self.keys})
    parsed = tf.io.parse_example(serialized, parser.flat_feature_specs)
    return {key: features[key].decode_batch_example(parsed[key])
            for key in self.keys}

  def dataset(self, batch_size: int):
    """tf.data: {key: decoded batch} of every row in order, `batch_size` at
    a time."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.data.Dataset.range(len(self)).batch(batch_size).map(
        self.read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def read(self, rows):
    """In-graph: {key: decoded batch} of the examples at `rows` (1-D)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    serialized = tf.numpy_function(self.serialized, [rows], tf.string,
                                   stateful=False)
    serialized.set_shape(rows.shape)
    return self.decode(serialized)

  def read_all(self) -> dict[str, np.ndarray]:
    """Every example's `keys`, in memory (for tables)."""
    batches = list(self.dataset(4096).as_numpy_iterator())
    return {key: np.concatenate([batch[key] for batch in batches])
            for key in self.keys}

  def files(self) -> list[pathlib.Path]:
    """The record files this split reads (none known without split
    metadata, as under `tfds.testing.mock_data`)."""
    from tensorflow_datasets.core.data_sources import base  # pylint: disable=g-import-not-at-top
    if not self.info.splits:
      return []
    names = {instruction.filename for instruction in
             base.file_instructions(self.info, self.split)}
    return sorted(pathlib.Path(self.info.data_dir) / name for name in names)


def open_split(builder, split: str, keys: tuple[str, ...]) -> Records:
  """Random access to `split` of a prepared `builder`, converted if needed.

  Raises:
    UserError: not a split, a record file is missing, truncated or corrupt
      (named), or the ArrayRecord copy cannot be written beside the data.
  """
  from tensorflow_datasets.core import decode  # pylint: disable=g-import-not-at-top
  builder = _random_access(builder)
  try:
    source = builder.as_data_source(
        split=split, deserialize_method=decode.DeserializeMethod.RAW_BYTES)
  except (ValueError, KeyError) as e:
    raise UserError(f'{split!r} is not a split of {builder.name!r} (it has '
                    f'{", ".join(builder.info.splits)}): '
                    f'{first_line(e)}') from None
  except (RuntimeError, OSError, NotImplementedError) as e:
    raise UserError(f'{builder.data_dir}: cannot open the record files of '
                    f'split {split!r} ({first_line(e)}); they are missing, '
                    f'corrupt or truncated: prepare the dataset again') from None
  records = Records(builder.info, split, keys, source)
  _check_files(records)
  return records


def _check_files(records: Records) -> None:
  """Every file is there with the records the metadata promises."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  shard_lengths = {}
  for split_info in records.info.splits.values():
    for path, length in zip(split_info.filepaths, split_info.shard_lengths):
      shard_lengths[pathlib.Path(path).name] = length
  for path in records.files():
    if not path.is_file():
      raise UserError(f'{path}: record file missing; prepare the dataset '
                      f'again')
    try:
      reader = array_record_module.ArrayRecordReader(str(path))
      count = reader.num_records()
      reader.close()
    except (RuntimeError, OSError, ValueError) as e:
      raise UserError(f'{path}: not a readable ArrayRecord file '
                      f'({first_line(e)}); the file is corrupt or truncated: '
                      f'prepare the dataset again') from None
    expected = shard_lengths.get(path.name)
    if expected is not None and count != expected:
      raise UserError(f'{path}: {count} records, the dataset metadata says '
                      f'{expected}; the file is truncated: prepare the '
                      f'dataset again')


def _random_access(builder):
  """`builder`, or the builder of an ArrayRecord copy of its TFRecord files."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  source = pathlib.Path(builder.data_dir)
  if (builder.info.file_format != tfds.core.FileFormat.TFRECORD or
      not any(source.glob('*.tfrecord-*'))):
    return builder
  converted = source.with_name(source.name + CONVERTED_SUFFIX)
  if (converted / 'dataset_info.json').is_file():
    atomic_files.remove_stale(converted)  # Killed while another completed.
  else:
    _convert(source, converted)
  return tfds.builder_from_directory(str(converted))


def _convert(source: pathlib.Path, target: pathlib.Path) -> None:
  """Writes an ArrayRecord copy of the TFRecord dataset in `source`; another
  process's complete copy, written meanwhile, is as good."""
  shards = sorted(source.glob('*.tfrecord-*'))
  logging.info('converting %d TFRecord files in %s to ArrayRecord (random '
               'access), once, into %s', len(shards), source, target)
  try:
    with atomic_files.scratch(target) as scratch:
      new = scratch / target.name
      new.mkdir()
      _write_array_records(source, new, shards)
      atomic_files.publish(new, target,
                        lambda d: (d / 'dataset_info.json').is_file())
  except OSError as e:
    raise UserError(f'{source}: the dataset is TFRecord only and its '
                    f'ArrayRecord copy cannot be written beside it '
                    f'({e.strerror}); prepare it with `tfds build '
                    f'--file_format=array_record`, or make {target.parent} '
                    f'writable') from None


def _write_array_records(source: pathlib.Path, new: pathlib.Path,
                         shards: list[pathlib.Path]) -> None:
  """Writes the ArrayRecord copy of `shards` and the metadata in `source`
  into the directory `new`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import file_adapters  # pylint: disable=g-import-not-at-top
  formats = file_adapters.FileFormat
  reader = file_adapters.ADAPTER_FOR_FORMAT[formats.TFRECORD]
  writer = file_adapters.ADAPTER_FOR_FORMAT[formats.ARRAY_RECORD]
  for shard in shards:
    examples = ((i, record.numpy()) for i, record in
                enumerate(reader.make_tf_data(shard)))
    name = shard.name.replace('.tfrecord-', '.array_record-')
    try:
      writer.write_examples(new / name, examples)
    except tf.errors.DataLossError as e:
      raise UserError(f'{shard}: corrupt or truncated TFRecord file '
                      f'({first_line(e)}); prepare the dataset again') from None
  for metadata in source.glob('*.json'):
    shutil.copy2(metadata, new / metadata.name)
  info_path = new / 'dataset_info.json'
  info = json.loads(info_path.read_text())
  info['fileFormat'] = formats.ARRAY_RECORD.value
  info.pop('alternativeFileFormats', None)
  info_path.write_text(json.dumps(info, indent=2))
