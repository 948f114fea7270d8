"""Atomic writes and their scratch directories: whatever stops a write (an
exception at any point, a kill), a complete copy stays at the path, and
nothing is left beside it for long."""

import logging
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO
from tfpipeline import atomic_files
from tfpipeline.errors import Interrupted


def _saved_model(path, text):
  path.mkdir()
  (path / 'saved_model.pb').write_text(text)
  return path


def _swap_failing_at(path, monkeypatch, fail_at):
  """Swaps a new copy in for `path`, `Interrupted` raised by the
  `fail_at`th rename (0: by the code writing the new copy)."""
  real_replace, calls = os.replace, []

  def replace(source, destination):
    calls.append(source)
    if len(calls) == fail_at:
      raise Interrupted('SIGTERM: stopped')
    real_replace(source, destination)

  monkeypatch.setattr(atomic_files.os, 'replace', replace)
  with pytest.raises(Interrupted):
    with atomic_files.replacing(path) as new:
      _saved_model(new, 'new')
      if not fail_at:
        raise Interrupted('SIGTERM: stopped')
  monkeypatch.undo()


@pytest.mark.parametrize('fail_at', [0, 1, 2])
def test_an_exception_at_any_point_of_a_directory_swap_keeps_the_old_copy(
    tmp_path, monkeypatch, fail_at):
  """While writing, before the move aside, between the two moves."""
  path = _saved_model(tmp_path / 'saved_model', 'old')
  _swap_failing_at(path, monkeypatch, fail_at)
  assert (path / 'saved_model.pb').read_text() == 'old'
  assert list(tmp_path.iterdir()) == [path]  # No scratch directory left.


_KILLED_BETWEEN_THE_MOVES = '''
import os, pathlib, sys
from tfpipeline import atomic_files
real_replace = os.replace
def replace(source, destination):
  real_replace(source, destination)
  os._exit(9)  # Killed after moving the old copy aside.
os.replace = replace
with atomic_files.replacing(pathlib.Path(sys.argv[1])) as new:
  new.mkdir()
  (new / 'saved_model.pb').write_text('new')
'''


def test_the_next_write_restores_a_copy_a_killed_swap_set_aside(
    tmp_path, caplog):
  path = _saved_model(tmp_path / 'saved_model', 'old')
  killed = subprocess.run(
      [sys.executable, '-c', _KILLED_BETWEEN_THE_MOVES, str(path)], cwd=REPO,
      env={**os.environ, 'PYTHONPATH': str(REPO)}, check=False)
  assert killed.returncode == 9 and not path.exists()
  leftover, = tmp_path.iterdir()
  assert leftover.name.startswith('.saved_model.scratch-')
  assert (leftover / 'saved_model.old' / 'saved_model.pb').read_text() == (
      'old')
  # The next write to the path, even one that fails, puts the old copy
  # back first and removes the dead process's scratch directory.
  caplog.set_level(logging.WARNING)
  with pytest.raises(RuntimeError):
    with atomic_files.replacing(path):
      raise RuntimeError('the new copy failed')
  assert (path / 'saved_model.pb').read_text() == 'old'
  assert list(tmp_path.iterdir()) == [path]
  messages = [r.getMessage() for r in caplog.records]
  assert any(f'removing {leftover}, left by process' in m for m in messages)
  assert any(f'{path} restored from the copy set aside in {leftover}' in m
             for m in messages)


def test_only_the_scratch_directories_of_dead_processes_here_are_removed(
    tmp_path):
  path = tmp_path / 'table.csv'
  dead_pid = _ended_pid()
  host = socket.gethostname()
  owners = {'dead': f'{dead_pid}@{host}', 'alive': f'{os.getpid()}@{host}',
            'elsewhere': f'{dead_pid}@another-{host}'}
  for owner in owners.values():
    (tmp_path / f'.table.csv.scratch-{owner}-abcd_123').mkdir()
  other = f'.other.csv.scratch-{owners["dead"]}-abcd_123'  # Not its path.
  (tmp_path / other).mkdir()
  with atomic_files.scratch(path) as directory:
    assert directory.name.startswith(
        f'.table.csv.scratch-{os.getpid()}@{host}-')
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      [other] +
      [f'.table.csv.scratch-{owners[k]}-abcd_123'
       for k in ('alive', 'elsewhere')])


def _ended_pid() -> int:
  """The id of a process that has ended."""
  process = subprocess.Popen([sys.executable, '-c', ''])
  process.wait()
  return process.pid


def test_publish_keeps_the_first_complete_copy_and_replaces_a_damaged_one(
    tmp_path):
  path = tmp_path / 'cache'
  complete = lambda d: (d / 'saved_model.pb').is_file()

  def publish(text, judge=complete):
    with atomic_files.scratch(path) as directory:
      return atomic_files.publish(_saved_model(directory / 'cache', text), path,
                               judge)

  assert publish('first')
  assert not publish('second')  # The first complete copy stays.
  (path / 'saved_model.pb').unlink()  # Damaged.
  assert publish('third')
  # Judged damaged, then found complete once set aside (another process
  # replaced the damaged copy meanwhile): put back, not deleted.
  judged = []

  def damaged_then_complete(directory):
    judged.append(directory)
    return len(judged) > 1 and complete(directory)

  assert not publish('fourth', damaged_then_complete)
  assert (path / 'saved_model.pb').read_text() == 'third'
  assert list(tmp_path.iterdir()) == [path]
