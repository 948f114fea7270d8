"""The data source interface, and `get(name)`: data.source to its source.

One module per source (big_vision's `datasets/core.py` and one file per
dataset): `synthetic`, `npz`, `table_file` (CSV and Parquet) and
`tfds_dataset`. Each owns what is particular to it: the config keys it
needs, reading its splits (`load`) and a trained model's input
(`read_rows`), and how errors name it and its rows. Sources are imported
when first asked for; none imports TensorFlow at the top, so
`tfpipeline.config_checks` asks them for their keys and losses.

To add a source: a module here with a `Source` subclass and a `SOURCES`
dict of its instances by data.source name, and its names in `_MODULES`.
"""

import abc
import importlib
import pathlib
from typing import Callable

from ml_collections import config_dict

from tfpipeline import integrity
from tfpipeline.data import files
from tfpipeline.errors import UserError

# data.source -> the module in this package that reads it.
_MODULES = {'synthetic': 'synthetic', 'csv': 'table_file', 'npz': 'npz',
            'parquet': 'table_file', 'tfds': 'tfds_dataset'}
NAMES = tuple(_MODULES)

# `check(ok, key, value, expected)`: refuses a config key, as
# `tfpipeline.config` words it, unless ok.
ConfigCheck = Callable[[bool, str, object, str], None]
# `where(i)`: row i of a table as the user finds it, for errors.
RowNamer = Callable[[int], str]
# `check_labels(labels, label_name, where)`: refuses labels (n, k) the
# loss cannot take.
LabelCheck = Callable[[object, str, RowNamer], None]


def get(name: str) -> 'Source':
  """The source that reads data.source=`name` (one of NAMES)."""
  module = importlib.import_module(f'{__package__}.{_MODULES[name]}')
  return module.SOURCES[name]


class Source(abc.ABC):
  """One kind of data: its config keys, splits, rows and names."""

  # Whether splits are named in the config (data.*_split), so that
  # `predict --input=tfds:SPLIT` reads one.
  named_splits = False
  # Whether `load` refuses bad labels itself, batch by batch as it reads
  # (else `sources.load` scans each table's labels once loaded).
  checks_labels_as_read = False

  def __init__(self, name: str):
    self.name = name

  def check_config(self, data_config, check: ConfigCheck) -> None:
    """Refuses, through `check`, data.* keys this source needs and lacks."""

  def check_loss(self, loss: str, check: ConfigCheck) -> None:
    """Refuses, through `check`, a loss this source's labels cannot take."""

  @abc.abstractmethod
  def describe(self, data_config) -> str:
    """The data as errors name it: the file's path, the TFDS dataset."""

  def title(self, data_config) -> str:
    """The data as the run's log names it."""
    return self.describe(data_config)

  @abc.abstractmethod
  def row_namer(self, data_config, split_name: str) -> RowNamer:
    """`where(i)`: row i of split `split_name`'s table, as errors name it."""

  @abc.abstractmethod
  def load(self, data_config, check_labels: LabelCheck):
    """The checked `splits.Splits` of the configured data; the config's
    columns left to the dataset (`with_columns`) resolved."""

  def with_columns(self, data_config, declared=((), '', None)):
    """A copy of `data_config` whose features, label and group left to the
    dataset (`()`, `''`, `'auto'`) are the `declared` (features, label,
    group) of a TFDS dataset; files declare none: every column but label
    and group, and no group."""
    features, label, group = declared
    data_config = config_dict.ConfigDict(data_config.to_dict())
    if not data_config.features:
      data_config.features = tuple(features)
    if not data_config.label:
      if not label:
        raise UserError(f'data.label: {self.describe(data_config)} names no '
                        f'label; set --config.data.label=KEY')
      data_config.label = label
    if data_config.group == 'auto':
      data_config.group = group
    return data_config

  def read_rows(self, data_config):
    """Every example of the input a trained model predicts, in order and
    unsplit, as one `splits.Split` (see `sources.read_rows`)."""
    raise NotImplementedError(f'data.source={self.name} has no rows to '
                              f'predict on')


class FileSource(Source):
  """Data in a file at data.path, with a label column named by data.label."""

  def check_config(self, data_config, check: ConfigCheck) -> None:
    check(bool(data_config.path), 'data.path', data_config.path,
          f'the path of the {self.name} file')
    check(bool(data_config.label), 'data.label', data_config.label,
          f'the label column with data.source={self.name}')

  def describe(self, data_config) -> str:
    return str(data_config.path)

  def origin(self, path: pathlib.Path) -> dict:
    """The file's path and sha256, for provenance; a directory of Parquet
    parts: each part's."""
    origin = {'source': self.name, 'path': str(path.resolve())}
    if path.is_dir():
      origin['parts_sha256'] = {
          str(part.relative_to(path)): integrity.sha256_file(part)
          for part in files.parquet_parts(path)}
    else:
      origin['sha256'] = integrity.sha256_file(path)
    return origin
