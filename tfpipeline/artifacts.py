"""Atomic writes: a crash leaves the old file or the new one, never half."""

import contextlib
import os
import pathlib
import shutil
import tempfile


def write_text(path: pathlib.Path, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename."""
  with replacing(path) as tmp:
    tmp.write_text(text)


@contextlib.contextmanager
def replacing(path: pathlib.Path):
  """Yields a temporary path beside `path`; on success it replaces `path`.

  Works for files and directories (a SavedModel). On error the temporary is
  removed and `path` is untouched.
  """
  path = pathlib.Path(path)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.', dir=path.parent))
  target = tmp / path.name
  try:
    yield target
    if target.is_dir() and path.is_dir():
      shutil.rmtree(path)
    os.replace(target, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
