"""Atomic writes: a crash never leaves half a file, nor loses the old one.

A file is replaced by one rename. A directory (a SavedModel) cannot be: it
is swapped by moving the old one aside, moving the new one in, then deleting
the old. A crash between the two moves leaves no directory at the path, but
both complete copies in the hidden `.NAME.*` directory beside it (the old
one as `NAME.old`); rerunning the command writes it again.
"""

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

  Works for files and directories. On error the temporary is removed and
  `path` is untouched.
  """
  path = pathlib.Path(path)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.', dir=path.parent))
  target = tmp / path.name
  try:
    yield target
    if target.is_dir() and path.is_dir():
      os.replace(path, tmp / f'{path.name}.old')  # Aside, not deleted.
    os.replace(target, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
