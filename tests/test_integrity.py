"""tfpipeline.integrity: MANIFEST.json and the audit log's hash chain."""

import hashlib
import json
import os
import subprocess
import sys

from conftest import REPO
from tfpipeline import integrity


def test_manifest_names_changed_missing_and_added_files(tmp_path):
  (tmp_path / 'a.txt').write_text('a')
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'sub' / 'b.bin').write_bytes(b'\0b')
  (tmp_path / 'c.txt').write_text('c')
  manifest_sha256 = integrity.write_manifest(tmp_path)
  integrity.append_audit(tmp_path, {'outcome': 'completed',
                                    'manifest_sha256': manifest_sha256})
  assert integrity.verify(tmp_path) == (3, [])
  listed = json.loads((tmp_path / 'MANIFEST.json').read_text())['files']
  assert listed['sub/b.bin'] == hashlib.sha256(b'\0b').hexdigest()

  (tmp_path / 'a.txt').write_text('A')
  (tmp_path / 'c.txt').unlink()
  (tmp_path / 'sub' / 'new').write_text('')
  assert integrity.verify(tmp_path)[1] == [
      'changed: a.txt', 'missing: c.txt', 'added: sub/new']


def test_audit_log_chain_and_manifest_hash_catch_edits(tmp_path):
  (tmp_path / 'a.txt').write_text('a')
  integrity.append_audit(tmp_path, {'outcome': 'preempted'})
  sha = integrity.write_manifest(tmp_path)
  integrity.append_audit(tmp_path, {'outcome': 'completed',
                                    'manifest_sha256': sha})
  assert integrity.verify(tmp_path)[1] == []
  log = tmp_path / 'audit.jsonl'
  lines = log.read_text().splitlines()
  log.write_text(lines[0].replace('preempted', 'completed') + '\n' +
                 lines[1] + '\n')
  assert integrity.verify(tmp_path)[1] == [
      'audit.jsonl line 2: the hash chain is broken (a line before it was '
      'changed or removed)']
  log.write_text('\n'.join(lines) + '\n')
  # A manifest rewritten to hide a change no longer matches the log.
  (tmp_path / 'a.txt').write_text('forged')
  integrity.write_manifest(tmp_path)
  problems = integrity.verify(tmp_path)[1]
  assert problems == [problems[0]] and problems[0].startswith(
      'changed: MANIFEST.json')


_APPEND = '''
import pathlib, sys
from tfpipeline import integrity
for i in range(int(sys.argv[3])):
  integrity.append_audit(pathlib.Path(sys.argv[1]), {'writer': sys.argv[2],
                                                     'i': i})
'''


def test_audit_appends_from_processes_at_once_keep_the_chain(tmp_path):
  """Under --launcher=ray, Ray's controller and the chief append to one
  audit log, possibly at the same moment."""
  writers = [subprocess.Popen(
      [sys.executable, '-c', _APPEND, str(tmp_path), str(writer), '150'],
      cwd=REPO, env={**os.environ, 'PYTHONPATH': str(REPO)})
             for writer in range(4)]
  assert [writer.wait(timeout=120) for writer in writers] == [0] * 4
  lines = (tmp_path / integrity.AUDIT_LOG).read_text().splitlines()
  assert len(lines) == 600
  previous = [integrity._GENESIS] + [integrity.sha256_text(line)
                                     for line in lines[:-1]]
  assert [json.loads(line)['previous_sha256'] for line in lines] == previous
