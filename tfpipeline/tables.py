"""CSV tables of predictions: the test split's (report/predictions.csv) and
new data's (`python -m tfpipeline.predict`), written alike."""

import csv
import pathlib

import numpy as np

from tfpipeline import artifacts


def float32_text(value) -> str:
  """The shortest text that reads back as the same float32: '21.72', not
  float64's '21.719999313354492'."""
  return str(np.float32(value))


def cell(value) -> str:
  """A label or group value as the user wrote it: floats as float32 text,
  whole numbers without '.0', bytes decoded."""
  if isinstance(value, bytes):
    return value.decode()
  if isinstance(value, (float, np.floating)):
    return (str(int(value)) if float(value).is_integer() else
            float32_text(value))
  return str(value.item() if isinstance(value, np.generic) else value)


def names(name: str, width: int) -> list[str]:
  """Column names of a value `width` wide: `name`, or `name_0`, `name_1`..."""
  return [name] if width == 1 else [f'{name}_{i}' for i in range(width)]


def write_csv(path: pathlib.Path, header: list[str], rows) -> None:
  """`rows` (an iterable of lists of cells) under `header`, written to
  `path` as they come (a table of millions of rows is never one string),
  through a temporary file and a rename."""
  with artifacts.replacing(path) as tmp, open(tmp, 'w', newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(header)
    writer.writerows(rows)
