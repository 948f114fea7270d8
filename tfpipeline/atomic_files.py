"""Atomic writes: a crash never leaves half a file, nor loses the old one.

Everything is written in a scratch directory beside its destination, named
`.NAME.scratch-PID@HOST-XXXXXXXX` after the process that owns it, and
appears by one rename. A file is replaced by that rename. A directory (a
SavedModel) cannot be: it is swapped by moving the old one aside (into the
scratch directory, as `NAME.old`), moving the new one in, then deleting the
old. An exception between the two moves puts the old copy back; a kill
leaves both complete copies in the scratch directory. A cache that many
processes may build at once is `publish`ed instead: the first complete copy
wins and is never deleted, as others may be reading it.

The scratch directories of dead processes (on this host; another host's are
never judged) are removed by the next write to the same destination, after
restoring a copy a swap had set aside.
"""

import contextlib
import errno
import glob
import os
import pathlib
import re
import shutil
import socket
import tempfile

from absl import logging

_ASIDE = '.old'


def write_text(path: pathlib.Path, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename."""
  with replacing(path) as tmp:
    tmp.write_text(text)


@contextlib.contextmanager
def replacing(path: pathlib.Path):
  """Yields a temporary path beside `path`; on success it replaces `path`.

  Works for files and directories. On error the temporary is removed and
  `path` is untouched, whatever the exception and wherever it arrives.
  """
  path = pathlib.Path(path)
  with scratch(path) as directory:
    new = directory / path.name
    yield new
    if new.is_dir() and path.is_dir():
      os.replace(path, directory / f'{path.name}{_ASIDE}')
    os.replace(new, path)


@contextlib.contextmanager
def scratch(path: pathlib.Path):
  """Yields a new scratch directory beside `path`, named after this process,
  and removes it afterwards (restoring `path` from a copy set aside in it,
  if `path` is missing). Removes the dead processes' first.

  Raises:
    OSError: the directory cannot be created.
  """
  path = pathlib.Path(path)
  remove_stale(path)
  directory = pathlib.Path(tempfile.mkdtemp(
      prefix=f'.{path.name}.scratch-{os.getpid()}@{socket.gethostname()}-',
      dir=path.parent))
  try:
    yield directory
  finally:
    _discard(directory, path)


def publish(new: pathlib.Path, path: pathlib.Path, complete) -> bool:
  """Renames the directory `new` (in a `scratch` directory) to `path` unless
  a complete copy is there already: the first complete copy wins and stays,
  as other processes may be reading it. A damaged copy is replaced.

  Args:
    new: the directory written.
    path: its destination.
    complete: `complete(directory)` is whether a directory is a whole copy.

  Returns:
    Whether `new` is now at `path` (else another process's copy is).
  """
  aside = new.with_name(f'{path.name}{_ASIDE}')
  for _ in range(3):
    try:
      os.rename(new, path)  # Only if absent: a non-empty `path` refuses.
      return True
    except OSError as e:
      if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
        raise
    if complete(path):
      return False
    with contextlib.suppress(FileNotFoundError):
      os.rename(path, aside)  # Damaged: set aside, deleted with `new`'s.
    if complete(aside):  # Another process's copy, put there meanwhile.
      os.rename(aside, path)
      return False
    shutil.rmtree(aside, ignore_errors=True)
  raise OSError(errno.EEXIST, 'damaged copies keep appearing', str(path))


def _discard(directory: pathlib.Path, path: pathlib.Path) -> None:
  """Deletes the scratch `directory` of `path`; a copy of `path` set aside
  in it goes back first if `path` is missing (a swap stopped between its
  two renames). Nothing is deleted if that rename fails."""
  aside = directory / f'{path.name}{_ASIDE}'
  if aside.is_dir() and not path.exists():
    os.rename(aside, path)
    logging.warning('%s restored from the copy set aside in %s', path,
                    directory)
  shutil.rmtree(directory, ignore_errors=True)


def remove_stale(path: pathlib.Path) -> None:
  """Discards the scratch directories of `path` whose process is dead (on
  this host), restoring a copy of `path` a killed swap set aside."""
  owner = re.compile(rf'\.{re.escape(path.name)}\.scratch-(\d+)@(.*)-\w{{8}}')
  for entry in path.parent.glob(f'.{glob.escape(path.name)}.scratch-*'):
    match = owner.fullmatch(entry.name)
    if not match or match[2] != socket.gethostname() or _alive(int(match[1])):
      continue
    logging.warning('removing %s, left by process %s, which has ended '
                    '(killed?)', entry, match[1])
    try:
      _discard(entry, path)
    except OSError as e:
      logging.warning('cannot remove %s: %s', entry, e)


def _alive(pid: int) -> bool:
  """Whether process `pid` (on this host) is running."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's process.
    pass
  return True
