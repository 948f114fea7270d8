"""Tables in files: CSV (also .csv.gz) and Parquet read by Arrow, and NPZ.

`sources` picks the columns; this module reads them, typed: the numeric
columns float32, the text ones (a group such as 'female') as strings, in
record batches, so that a table is never held whole as parsed Arrow data.

CSV goes through Arrow's dataset scanner over `pyarrow.csv`: typed as it
parses, multi-threaded, in UTF-8, with no cell taken as missing (an empty
cell is an error, as a non-number is). Arrow's errors name neither line nor
row, so when it refuses a file, `_csv_error` reads it again line by line,
in constant memory, to name the file's line, column and cell, or the byte
offset of text that is not UTF-8.

Parquet (`data.path` a file, or a directory of part files) goes through
`pyarrow.parquet`, part by part; every part's sha256 goes to the provenance.
"""

import codecs
import csv
import gzip
import pathlib

import numpy as np

from tfpipeline.errors import UserError
from tfpipeline.errors import first_line

# Bytes read to check a CSV file's encoding and header before Arrow reads it.
_HEAD_BYTES = 1 << 16


def _open_binary(path: pathlib.Path):
  """`path` for reading bytes; a .gz file decompressed."""
  try:
    return gzip.open(path) if path.suffix == '.gz' else open(path, 'rb')
  except FileNotFoundError:
    raise UserError(f'data.path: {path} does not exist; check the path') from None
  except OSError as e:
    raise UserError(f'data.path: cannot read {path}: {e.strerror}') from None


def csv_header(path: pathlib.Path) -> list[str]:
  """The header row's column names (stripped), however wide; refuses binary
  files, UTF-16 and other encodings in the header, lines ended by a lone CR,
  empty files and repeated names."""
  with _open_binary(path) as f:
    try:
      head = f.read(_HEAD_BYTES)
      if b'\n' not in head and b'\r' not in head:  # A header wider than head.
        head += f.readline()
    except (OSError, EOFError) as e:  # A .gz that is not gzip.
      raise UserError(f'data.path: cannot read {path}: {first_line(e)}') from None
  if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
    raise UserError(f'{path}: UTF-16 text (it starts with a UTF-16 byte-order '
                    f'mark); save it as UTF-8 CSV')
  nul = head.find(b'\0')
  if nul >= 0:
    line = head.count(b'\n', 0, nul) + 1
    raise UserError(f'{path}: a binary file, not CSV (a NUL byte at byte '
                    f'offset {nul}, line {line}); give a CSV file')
  first = head.split(b'\n', 1)[0]
  if b'\r' in first[:-1]:
    raise UserError(f'{path}, row 1: a line ends in a lone carriage return '
                    f'(CR, as old Mac and spreadsheet exports write); save it '
                    f'with LF or CRLF line endings')
  header = next(csv.reader([_decoded(first, path, 0).removeprefix(
      '\ufeff')]), [])
  header = [name.strip() for name in header]
  if not any(header):
    raise UserError(f'{path}: empty file; expected a header row and data')
  for i, name in enumerate(header):
    if name in header[:i]:
      raise UserError(f'{path}, row 1: column {name!r} appears twice in the '
                      f'header (columns {header.index(name) + 1} and '
                      f'{i + 1}); give each column its own name')
  return header


def csv_row_bound(path: pathlib.Path) -> int:
  """At least the number of data rows of a CSV file: its line count, less
  the header (a quoted cell may hold a line break), read in constant
  memory, a .gz decompressed."""
  lines, last = 0, b'\n'
  with _open_binary(path) as f:
    for block in iter(lambda: f.read(1 << 24), b''):
      lines += block.count(b'\n')
      last = block[-1:]
  return max(lines - (last == b'\n'), 0)


def csv_batches(path: pathlib.Path, header: list[str], numbers: set[str],
                texts: set[str]):
  """The columns `numbers` (float32) and `texts` (strings) of a CSV file
  whose header is `header`, as {name: array} record batches in file order:
  parsed by Arrow's dataset scanner, multi-threaded, one batch in memory."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from pyarrow import csv as arrow_csv  # pylint: disable=g-import-not-at-top
  from pyarrow import dataset  # pylint: disable=g-import-not-at-top
  used = [i for i, name in enumerate(header) if name in numbers | texts]
  names = [f'c{i}' for i in range(len(header))]  # Raw names may repeat spaces.
  csv_format = dataset.CsvFileFormat(
      read_options=arrow_csv.ReadOptions(column_names=names, skip_rows=1),
      parse_options=arrow_csv.ParseOptions(ignore_empty_lines=False),
      convert_options=arrow_csv.ConvertOptions(
          column_types={names[i]: pa.float32() if header[i] in numbers
                        else pa.string() for i in used},
          null_values=[], strings_can_be_null=False,
          quoted_strings_can_be_null=False))
  try:
    scanner = dataset.dataset(path, format=csv_format).scanner(
        columns=[names[i] for i in used], use_threads=True,
        # malloc returns large freed blocks to the system; Arrow's default
        # pool kept them (80 MiB more peak RSS on the 1M-row bench table).
        memory_pool=pa.system_memory_pool())
    for batch in scanner.to_batches():
      # Numbers without a copy where Arrow allows; strings as object arrays.
      yield {header[i]: batch.column(names[i]).to_numpy(zero_copy_only=False)
             for i in used}
  except (pa.ArrowInvalid, OSError, EOFError) as e:
    raise _csv_error(path, header, numbers) or UserError(
        f'{path}: not readable as CSV ({first_line(e)}); save the table as '
        f'UTF-8 CSV') from None


def _csv_error(path: pathlib.Path, header: list[str],
               numbers: set[str]) -> UserError | None:
  """The first bad line of a CSV file, found line by line: text that is
  not UTF-8, a row of the wrong width, or a cell of `numbers` that is not
  a number. None if every line reads."""
  def lines(f):
    offset = 0
    for number, raw in enumerate(f, start=1):
      yield _decoded(raw, path, offset, line=number)
      offset += len(raw)

  with _open_binary(path) as f:
    reader = csv.reader(lines(f))
    try:
      next(reader)  # The header, checked by csv_header.
      for row in reader:
        line = reader.line_num
        if len(row) != len(header):
          return UserError(f'{path}, row {line}: {len(row)} cells, header '
                           f'has {len(header)}; fix the row')
        for name, cell in zip(header, row):
          if name in numbers and not _is_number(cell):
            return UserError(f'{path}, row {line}, column {name!r}: '
                             f'{cell.strip()!r} is not a number; fix the '
                             f'cell or drop the column')
    except csv.Error as e:
      return UserError(f'{path}, row {reader.line_num}: not CSV ({e}); save '
                       f'the table as CSV')
  return None


def _is_number(cell: str) -> bool:
  try:
    float(cell)
  except ValueError:
    return False
  return '_' not in cell  # Python reads '1_000'; Arrow, rightly, does not.


def _decoded(raw: bytes, path, offset: int, *, line: int = 1) -> str:
  """`raw` (at byte `offset` of the file) as UTF-8 text; else a UserError
  naming the byte offset and line."""
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise UserError(
        f'{path}: not UTF-8 (byte 0x{raw[e.start]:02x} at byte offset '
        f'{offset + e.start}, line {line}; Latin-1 or Windows-1252 perhaps); '
        f'save it as UTF-8 CSV') from None


def read_npz(path: pathlib.Path) -> tuple[dict, int]:
  """A NumPy .npz archive, one array per key, and its length."""
  with _open_binary(path) as f:
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
  return columns, next(iter(lengths.values()), 0)


def parquet_parts(path: pathlib.Path) -> list[pathlib.Path]:
  """A Parquet file, or a directory's part files (*.parquet, sorted)."""
  if path.is_dir():
    parts = sorted(p for p in path.rglob('*.parquet') if p.is_file())
    if not parts:
      raise UserError(f'data.path: {path} holds no .parquet files; give a '
                      f'Parquet file or a directory of part files')
    return parts
  if not path.exists():
    raise UserError(f'data.path: {path} does not exist; check the path')
  return [path]


def parquet_names(parts: list[pathlib.Path]) -> list[str]:
  """The column names of the first part (Arrow checks the others on read)."""
  from pyarrow import parquet  # pylint: disable=g-import-not-at-top
  try:
    return parquet.read_schema(parts[0]).names
  except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError.
    raise UserError(f'data.path: {parts[0]} is not a readable Parquet file '
                    f'({first_line(e)}); write it with pyarrow or pandas') from None


def parquet_rows(parts: list[pathlib.Path]) -> int:
  """The number of rows of Parquet parts, from their metadata."""
  from pyarrow import parquet  # pylint: disable=g-import-not-at-top
  return sum(parquet.ParquetFile(part).metadata.num_rows for part in parts)


def parquet_batches(parts: list[pathlib.Path], numbers: set[str],
                    texts: set[str]):
  """The columns `numbers` (float32) and `texts` (strings) of Parquet
  parts, as {name: array} record batches in order, part by part (columns
  read in parallel)."""
  from pyarrow import parquet  # pylint: disable=g-import-not-at-top
  names = sorted(numbers | texts)
  for part in parts:
    done = 0
    try:
      batches = parquet.ParquetFile(part).iter_batches(
          batch_size=1 << 16, columns=names, use_threads=True)
      for batch in batches:
        yield {name: _parquet_column(batch.column(name), name, part, done,
                                     name in numbers) for name in names}
        done += batch.num_rows
    except (OSError, ValueError, KeyError) as e:  # ArrowInvalid: ValueError.
      raise UserError(f'{part}: not readable with the columns '
                      f'{", ".join(names)} ({first_line(e)}); give part '
                      f'files of one schema') from None


def _parquet_column(column, name: str, part: pathlib.Path, first_row: int,
                    numeric: bool) -> np.ndarray:
  """One batch's column: float32 numbers or strings; nulls and other
  types refused, naming the part's row."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  if column.null_count:
    row = first_row + int(np.flatnonzero(column.is_null().to_numpy(
        zero_copy_only=False))[0])
    raise UserError(f'{part}, row {row}, column {name!r} is null; fill or '
                    f'drop missing values first')
  try:
    column = column.cast(pa.float32() if numeric else pa.string())
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    raise UserError(f'{part}: column {name!r} holds {column.type}, not '
                    f'{"numbers" if numeric else "text"}; fix the column or '
                    f'drop it from data.features') from None
  return column.to_numpy(zero_copy_only=False)


def parquet_row(parts: list[pathlib.Path], index: int) -> str:
  """Row `index` of the concatenated parts, named as its part's row."""
  from pyarrow import parquet  # pylint: disable=g-import-not-at-top
  for part in parts:
    rows = parquet.ParquetFile(part).metadata.num_rows
    if index < rows:
      return f'{part}, row {index}'
    index -= rows
  raise IndexError(index)
