"""A table's arrays, filled batch by batch, in memory or in a cache on disk.

A CSV or Parquet table is read in Arrow record batches into preallocated
arrays, so a run holds the table once (float32) and never the parsed file
beside it. A table whose float32 size exceeds data.max_memory_mb is written
instead, once, into a random-access cache beside the data: raw float32 and
int32 arrays (features, labels, group codes) appended batch by batch in
constant memory, and `table.json` (their shapes, the group names), in a
directory named by the source's sha256 and the columns read. Later runs
memory-map it: a row batch is read from the page cache or the disk, so
memory stays flat whatever the table's size. The cache appears by one
rename, only once every cell has been read and checked: a refused
conversion leaves nothing, a killed one a scratch directory that the next
conversion removes. Processes converting one table at once (workers, runs
sharing a disk) all read the first complete cache.
"""

import hashlib
import json
import os
import pathlib

from absl import logging
import numpy as np

from tfpipeline import atomic_files
from tfpipeline.data.table import Table
from tfpipeline.errors import UserError

SUFFIX = '.table'
_FORMAT_VERSION = 1
_RAW = '.bin'  # Raw little-endian arrays; shapes in table.json.
_CGROUP = pathlib.Path('/sys/fs/cgroup')
_PROC_CGROUP = pathlib.Path('/proc/self/cgroup')
_DTYPES = {'features': np.dtype('<f4'), 'labels': np.dtype('<f4'),
           'group_codes': np.dtype('<i4')}


class TableWriter:
  """Appends rows to a table's arrays: preallocated in memory for at least
  `rows_bound` rows, or (with `directory`) appended to raw files there, in
  constant memory, for `open_cached` to memory-map."""

  def __init__(self, rows_bound: int, width: int, *, labelled: bool,
               grouped: bool, directory: pathlib.Path | None = None):
    self._width = width
    names = ['features'] + ['labels'] * labelled + ['group_codes'] * grouped
    self._files = ({name: open(directory / f'{name}{_RAW}', 'xb')
                    for name in names} if directory else None)
    self._arrays = None if directory else {
        name: np.empty(shape, dtype) for name, (shape, dtype) in {
            'features': ((rows_bound, width), np.float32),
            'labels': ((rows_bound, 1), np.float32),
            'group_codes': ((rows_bound,), np.int32)}.items()
        if name in names}
    self._directory = directory
    self._group_index = {}
    self.rows = 0

  def append(self, features: np.ndarray, labels: np.ndarray | None,
             groups: np.ndarray | None) -> None:
    """Rows `features` (b, width) float32, `labels` (b, 1) and `groups`
    (b,) values (None where the table has none)."""
    batch = {'features': features, 'labels': labels}
    if groups is not None:
      values, codes = np.unique(groups, return_inverse=True)
      mapping = np.array([self._group_index.setdefault(
          value.item() if isinstance(value, np.generic) else value,
          len(self._group_index)) for value in values], np.int32)
      batch['group_codes'] = mapping[codes]
    end = self.rows + len(features)
    for name in (self._files or self._arrays):
      if self._files:
        self._files[name].write(np.ascontiguousarray(
            batch[name], _DTYPES[name]).tobytes())
      else:
        self._arrays[name][self.rows:end] = batch[name]
    self.rows = end

  def group_values(self) -> np.ndarray | None:
    """The distinct groups, in code order."""
    if 'group_codes' not in (self._files or self._arrays):
      return None
    return _group_values(list(self._group_index))

  def table(self) -> Table:
    """The rows written, in memory (views, no copy)."""
    arrays = {name: array[:self.rows] for name, array in self._arrays.items()}
    return Table(arrays['features'], arrays.get('labels'),
                 arrays.get('group_codes'), self.group_values())

  def close(self) -> None:
    """Closes the files (on disk); a second call does nothing."""
    for f in (self._files or {}).values():
      f.close()

  def finish(self, metadata: dict) -> None:
    """Syncs and closes the files and writes table.json (on disk only)."""
    for f in self._files.values():
      f.flush()
      os.fsync(f.fileno())
    self.close()
    values = self.group_values()
    (self._directory / 'table.json').write_text(json.dumps({
        **metadata, 'format_version': _FORMAT_VERSION, 'rows': self.rows,
        'width': self._width, 'arrays': sorted(self._files),
        'group_values': None if values is None else values.tolist()},
                                                           indent=2) + '\n')


def _group_values(values: list) -> np.ndarray:
  """Group values as an array: float32 numbers, or strings (objects)."""
  if all(isinstance(v, (int, float)) for v in values):
    return np.asarray(values, np.float32)
  array = np.empty(len(values), dtype=object)
  array[:] = values
  return array


def memory_budget(max_memory_mb: int) -> int:
  """Bytes a table may take in memory: data.max_memory_mb, or (0) half of
  what this process may use: the machine's RAM or its container's limit
  (Docker, Kubernetes, Colab: a cgroup's), whichever is smaller."""
  if max_memory_mb:
    return max_memory_mb << 20
  ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return min([ram, *_cgroup_limits()]) // 2


def _cgroup_limits() -> list[int]:
  """The memory limits set on this process's cgroup and its ancestors
  (cgroup v2's memory.max, v1's memory.limit_in_bytes)."""
  try:
    lines = _PROC_CGROUP.read_text().splitlines()
  except OSError:
    return []
  limits = []
  for line in lines:
    _, controllers, group = line.split(':', 2)
    if not controllers:  # The v2 hierarchy.
      root, name = _CGROUP, 'memory.max'
    elif 'memory' in controllers.split(','):
      root, name = _CGROUP / 'memory', 'memory.limit_in_bytes'
    else:
      continue
    # Inside a container the group's path may not be mounted: its root is.
    parts = pathlib.PurePosixPath(group).parts[1:]
    for depth in range(len(parts), -1, -1):
      try:
        limit = (root.joinpath(*parts[:depth]) / name).read_text().strip()
      except OSError:
        continue
      if limit.isdigit():  # v2 says 'max' where there is none.
        limits.append(int(limit))
  return limits


def path_for(source: pathlib.Path, sha256: str,
             selection: dict) -> pathlib.Path:
  """The cache directory of `source` (a file or a directory of parts) for
  the columns in `selection`: beside it, named by its sha256."""
  columns = hashlib.sha256(json.dumps(selection, sort_keys=True).encode())
  source = source.resolve()
  return source.with_name(f'{source.name}.{sha256[:16]}.'
                          f'{columns.hexdigest()[:8]}{SUFFIX}')


def open_cached(directory: pathlib.Path) -> Table | None:
  """The memory-mapped table in `directory`, or None if there is none (or
  it is damaged: `build` replaces it)."""
  try:
    metadata = json.loads((directory / 'table.json').read_text())
  except (OSError, ValueError):
    return None
  if metadata.get('format_version') != _FORMAT_VERSION:
    return None
  rows, width = metadata['rows'], metadata['width']
  shapes = {'features': (rows, width), 'labels': (rows, 1),
            'group_codes': (rows,)}
  try:
    arrays = {name: np.memmap(directory / f'{name}{_RAW}', _DTYPES[name],
                              'r', shape=shapes[name])
              for name in metadata['arrays']}
  except (OSError, ValueError) as e:  # A file missing or cut short.
    logging.warning('the cache %s is unreadable (%s); converting again',
                    directory, e)
    return None
  values = metadata['group_values']
  return Table(arrays['features'], arrays.get('labels'),
               arrays.get('group_codes'),
               None if values is None else _group_values(values))


def build(directory: pathlib.Path, fill, *, rows_bound: int, width: int,
          labelled: bool, grouped: bool, metadata: dict) -> Table:
  """Writes the cache by `fill(writer)` in a scratch directory, renames it
  into place unless another process's complete cache got there first (then
  that one is read and this copy deleted), and memory-maps it. `fill`
  raising leaves nothing."""
  size_mib = rows_bound * (width + labelled + grouped) * 4 / 2**20
  logging.info('converting %s (up to %.0f MiB as float32) once to a '
               'memory-mapped cache: %s', metadata['source'], size_mib,
               directory)
  try:
    with atomic_files.scratch(directory) as scratch:
      new = scratch / directory.name
      new.mkdir()
      writer = TableWriter(rows_bound, width, labelled=labelled,
                           grouped=grouped, directory=new)
      try:
        fill(writer)
        writer.finish(metadata)
      finally:
        writer.close()
      if not atomic_files.publish(
          new, directory, lambda d: open_cached(d) is not None):
        logging.info('another process converted %s first: reading its '
                     'cache', metadata['source'])
  except OSError as e:
    raise UserError(f'{metadata["source"]}: its cache cannot be written in '
                    f'{directory.parent} ({e.strerror}); make that directory '
                    f'writable with room for {size_mib:.0f} MiB, or raise '
                    f'--config.data.max_memory_mb') from None
  return open_cached(directory)
