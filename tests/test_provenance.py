"""report.provenance: data fingerprints, git commits of the own checkout."""

import json
import shutil
import subprocess
import sys

import numpy as np

from conftest import REPO


def test_data_fingerprint_depends_on_the_data_alone():
  """Object arrays (TFDS text) hash their values, not their addresses:
  the same in another process."""
  import subprocess
  import sys
  from tfpipeline.report import provenance
  code = ("import numpy as np; from tfpipeline.report import provenance; "
          "print(provenance.arrays_sha256(np.arange(3, dtype=np.float32), "
          "np.array([b'even', 'odd', b'odd'], dtype=object)))")
  here = provenance.arrays_sha256(
      np.arange(3, dtype=np.float32),
      np.array([b'even', 'odd', b'odd'], dtype=object))
  there = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout.strip()
  assert here == there
  assert here != provenance.arrays_sha256(
      np.arange(3, dtype=np.float32),
      np.array([b'even', b'odd', b'odd!'], dtype=object))
  # Values, dtype and shape all count; element boundaries too.
  assert provenance.arrays_sha256(np.zeros(2, np.float32)) != (
      provenance.arrays_sha256(np.zeros(1, np.float64)))
  assert provenance.arrays_sha256(np.array(['ab', 'c'], dtype=object)) != (
      provenance.arrays_sha256(np.array(['a', 'bc'], dtype=object)))


def _git(repo, *args) -> str:
  return subprocess.run(
      ['git', '-c', 'user.name=t', '-c', 'user.email=t@example.com', *args],
      cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _new_repo(path):
  """A git repository with one commit."""
  path.mkdir(parents=True)
  (path / 'README').write_text('not tfpipeline\n')
  _git(path, 'init', '-q')
  _git(path, 'add', 'README')
  _git(path, 'commit', '-q', '-m', 'first')
  return path


def _provenance_git(site) -> dict | None:
  """`provenance.git_commit()` of the tfpipeline package in `site` (copied
  there first if it has none)."""
  if not (site / 'tfpipeline').exists():
    shutil.copytree(REPO / 'tfpipeline', site / 'tfpipeline',
                    ignore=shutil.ignore_patterns('__pycache__'))
  run = subprocess.run(
      [sys.executable, '-c', 'import json, tfpipeline.report.provenance as p; '
       'print(json.dumps([p.__file__, p.git_commit()]))'],
      cwd=site, env={'PATH': '/usr/bin:/bin', 'PYTHONPATH': str(site)},
      check=True, capture_output=True, text=True)
  where, git = json.loads(run.stdout)
  assert where == str(site / 'tfpipeline' / 'report' / 'provenance.py')
  return git


def test_installed_package_names_no_commit_of_the_users_repository(tmp_path):
  # A virtualenv inside the user's own repository: its HEAD is not ours.
  user_repo = _new_repo(tmp_path / 'project')
  site = user_repo / '.venv' / 'lib' / 'python3' / 'site-packages'
  site.mkdir(parents=True)
  assert _provenance_git(site) is None
  # Beside a setup.cfg that is not tfpipeline's, or not readable as one.
  for text in (b'[metadata]\nname = project\n', b'\xff[metadata\n'):
    (site / 'setup.cfg').write_bytes(text)
    assert _provenance_git(site) is None


def test_own_checkout_names_its_commit_and_local_changes(tmp_path):
  checkout = _new_repo(tmp_path / 'tfpipeline-src')
  shutil.copy(REPO / 'setup.cfg', checkout)
  vendored = _new_repo(tmp_path / 'monorepo') / 'third_party'
  vendored.mkdir()
  shutil.copy(REPO / 'setup.cfg', vendored)
  assert _provenance_git(vendored) is None  # Not the root of its work tree.
  shutil.copytree(REPO / 'tfpipeline', checkout / 'tfpipeline',
                  ignore=shutil.ignore_patterns('__pycache__'))
  (checkout / '.gitignore').write_text('__pycache__/\n')
  _git(checkout, 'add', '.')
  _git(checkout, 'commit', '-q', '-m', 'tfpipeline')
  commit = _git(checkout, 'rev-parse', 'HEAD')
  assert _provenance_git(checkout) == {'commit': commit,
                                       'package_modified': False}
  with open(checkout / 'tfpipeline' / 'errors.py', 'a') as f:
    f.write('# a local change\n')
  assert _provenance_git(checkout) == {'commit': commit,
                                       'package_modified': True}
