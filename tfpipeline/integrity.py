"""Tamper evidence for a model_dir: MANIFEST.json and the audit log.

MANIFEST.json holds the sha256 of every file in the run directory, written
last. `audit.jsonl` gets one line per run attempt (who, when, config hash,
outcome, the manifest's hash); each line carries the hash of the line before
it, so an edited or deleted line breaks the chain. Both are left out of the
manifest: the log grows after it is written. So is a DP run's secret noise
key (checkpoints/dp_noise_key), which nothing published may reveal. Anyone who can rewrite every
file can rewrite these too: record the manifest hash the run prints
somewhere else (a registry, a signed tag) for stronger guarantees.
"""

import fcntl
import hashlib
import json
import os
import pathlib

from tfpipeline import atomic_files

MANIFEST = 'MANIFEST.json'
AUDIT_LOG = 'audit.jsonl'
# The DP noise key is a secret (dp_sgd.NOISE_KEY_FILE): nothing published
# names even its hash.
_UNLISTED = frozenset({MANIFEST, AUDIT_LOG, 'checkpoints/dp_noise_key'})
_GENESIS = '0' * 64


def sha256_text(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _files(model_dir: pathlib.Path) -> dict[str, str]:
  """sha256 of every file under `model_dir`, by relative POSIX path."""
  return {path.relative_to(model_dir).as_posix(): sha256_file(path)
          for path in sorted(model_dir.rglob('*'))
          if path.is_file() and
          path.relative_to(model_dir).as_posix() not in _UNLISTED}


def write_manifest(model_dir: pathlib.Path) -> str:
  """Writes MANIFEST.json for `model_dir`'s files; returns its sha256."""
  text = json.dumps({'algorithm': 'sha256', 'files': _files(model_dir),
                     'not_listed': sorted(_UNLISTED)}, indent=2) + '\n'
  atomic_files.write_text(model_dir / MANIFEST, text)
  return sha256_text(text)


def verify(model_dir: pathlib.Path) -> tuple[int, list[str]]:
  """Checks `model_dir` against its manifest and audit log.

  Returns:
    The number of files the manifest lists, and one line per problem:
    'changed: PATH', 'missing: PATH', 'added: PATH', or an audit-log fault.

  Raises:
    FileNotFoundError: no MANIFEST.json (not a finished run).
  """
  manifest_text = (model_dir / MANIFEST).read_text()
  listed = _listed(manifest_text)
  present = _files(model_dir)
  problems = [f'changed: {path}' for path in sorted(listed)
              if path in present and present[path] != listed[path]]
  problems += [f'missing: {path}' for path in sorted(set(listed) - set(present))]
  problems += [f'added: {path}' for path in sorted(set(present) - set(listed))]
  problems += _audit_problems(
      model_dir, sha256_text(manifest_text))
  return len(listed), problems


def listed_sha256(model_dir: pathlib.Path, name: str) -> str:
  """The sha256 MANIFEST.json lists for the file `name` (a relative path).

  Raises:
    OSError, ValueError, KeyError: no readable manifest, or no such entry.
  """
  return _listed((model_dir / MANIFEST).read_text())[name]


def check_listed(model_dir: pathlib.Path, name: str) -> None:
  """Raises ValueError unless the run's file `name` is the one
  MANIFEST.json lists (no entry, or a changed file)."""
  try:
    listed = listed_sha256(model_dir, name)
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f'{model_dir}: no MANIFEST.json entry for {name} '
                     f'({type(e).__name__}); not a finished run') from None
  if sha256_file(model_dir / name) != listed:
    raise ValueError(f'{model_dir / name} changed since the run wrote it '
                     f'(sha256 differs from MANIFEST.json); run python -m '
                     f'tfpipeline.verify {model_dir}')


def _listed(manifest_text: str) -> dict[str, str]:
  return json.loads(manifest_text)['files']


def append_audit(model_dir: pathlib.Path, entry: dict) -> None:
  """Appends one chained line to the audit log (flushed and synced), under
  an exclusive lock: processes appending at once (under --launcher=ray,
  Ray's controller and the chief) each chain to the line before theirs."""
  path = model_dir / AUDIT_LOG
  with open(path, 'a+', encoding='utf-8') as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # Released when the file is closed.
    f.seek(0)
    lines = f.read().splitlines()
    previous = sha256_text(lines[-1]) if lines else _GENESIS
    f.write(json.dumps({**entry, 'previous_sha256': previous},
                       sort_keys=True) + '\n')
    f.flush()
    os.fsync(f.fileno())


def _audit_problems(model_dir: pathlib.Path, manifest_sha256: str) -> list[str]:
  path = model_dir / AUDIT_LOG
  if not path.exists():
    return [f'missing: {AUDIT_LOG}']
  problems, previous, last_manifest = [], _GENESIS, None
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    try:
      entry = json.loads(line)
    except ValueError:
      problems.append(f'{AUDIT_LOG} line {number}: not JSON')
      break
    if entry.get('previous_sha256') != previous:
      problems.append(f'{AUDIT_LOG} line {number}: the hash chain is broken '
                      f'(a line before it was changed or removed)')
    previous = sha256_text(line)
    last_manifest = entry.get('manifest_sha256') or last_manifest
  if last_manifest != manifest_sha256:
    problems.append(f'changed: {MANIFEST} (its sha256 is not the one the '
                    f'last completed run logged in {AUDIT_LOG})')
  return problems
