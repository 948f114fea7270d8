"""What produced the model: config, data, code, packages, machine, seeds."""

import configparser
import datetime
import getpass
import hashlib
import importlib.metadata
import json
import pathlib
import platform
import subprocess
import sys

import numpy as np

from tfpipeline import integrity

# Distributions whose versions the report records, besides tfpipeline and
# TensorFlow (which are asked for their own).
PACKAGES = ('keras', 'tensorflow-datasets', 'numpy', 'absl-py',
            'ml-collections', 'scikit-learn', 'fairlearn', 'dp-accounting',
            'codecarbon', 'matplotlib')
# Also recorded when Keras runs on JAX (Orbax writes its checkpoints).
JAX_PACKAGES = ('jax', 'jaxlib', 'orbax-checkpoint')
# TensorFlow comes as one of these wheels (CPU-only, TPU, Apple...).
TENSORFLOW_WHEELS = ('tensorflow', 'tensorflow-cpu', 'tensorflow-tpu',
                     'tensorflow-macos', 'tf-nightly')


def user() -> str:
  try:
    return getpass.getuser()
  except (KeyError, OSError):  # No passwd entry (some containers).
    return 'unknown'


def host() -> str:
  return platform.node()


def utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec='seconds')


def data_fingerprint(splits) -> dict:
  """The source's identity and the sha256 of each split's arrays as read,
  or, for a streamed dataset, of each record file it reads."""
  result = dict(splits.origin)
  file_sha256 = {}  # Splits sliced from one TFDS split share its files.
  for name in ('train', 'validation', 'test'):
    split = getattr(splits, name)
    if split.streamed:
      files = {}
      for path in split.records.files():
        if path not in file_sha256:
          file_sha256[path] = integrity.sha256_file(path)
        files[path.name] = file_sha256[path]
      result[name] = {'rows': len(split), 'split': split.records.split,
                      'sha256': integrity.sha256_text(json.dumps(
                          files, sort_keys=True)),
                      'files_sha256': files}
      continue
    digest = hashlib.sha256()  # Of the split's rows as read, chunk by chunk.
    for chunk in split.chunks():
      digest.update(arrays_sha256(chunk['features'], chunk.get('labels'),
                                  chunk.get('groups')).encode())
    result[name] = {'rows': len(split), 'sha256': digest.hexdigest()}
  return result


def arrays_sha256(*arrays) -> str:
  """sha256 of arrays' dtypes, shapes and values; None entries skipped.

  Object arrays (TFDS strings) are hashed element by element, each value's
  UTF-8 bytes behind its length: their `tobytes()` would be the elements'
  memory addresses, different in every process.
  """
  digest = hashlib.sha256()
  for array in arrays:
    if array is None:
      continue
    array = np.ascontiguousarray(array)
    digest.update(f'{array.dtype.str}{array.shape}'.encode())
    if array.dtype != object:
      digest.update(array.tobytes())
      continue
    for value in array.ravel():
      data = value if isinstance(value, bytes) else str(value).encode()
      digest.update(len(data).to_bytes(8, 'little') + data)
  return digest.hexdigest()


def _version(distribution: str) -> str | None:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def packages(backend: str = 'tensorflow') -> dict[str, str]:
  """Versions of the running tfpipeline and TensorFlow (and which wheel),
  and of the installed PACKAGES; on Keras's JAX `backend`, JAX_PACKAGES'
  too."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfpipeline  # pylint: disable=g-import-not-at-top
  wheels = [f'{name} {_version(name)}' for name in TENSORFLOW_WHEELS
            if _version(name)]
  versions = {'tfpipeline': tfpipeline.__version__,  # Installed or not.
              'tensorflow': tf.__version__,
              'tensorflow_wheel': ', '.join(wheels) or 'unknown'}
  for name in PACKAGES + (JAX_PACKAGES if backend == 'jax' else ()):
    versions[name] = _version(name) or 'not installed'
  return versions


def git_commit() -> dict | None:
  """The commit of tfpipeline's own source checkout, if it runs from one.

  That is a git work tree whose root holds this package as `tfpipeline/`
  and a setup.cfg naming the distribution tfpipeline. An installed copy
  (site-packages, even in a virtualenv inside the user's own repository)
  has no commit: its version is in `packages()`.
  """
  root = pathlib.Path(__file__).resolve().parents[2]
  metadata = configparser.ConfigParser(interpolation=None)
  try:
    metadata.read(root / 'setup.cfg', encoding='utf-8')
  except (configparser.Error, UnicodeDecodeError):  # Not ours to read.
    return None
  if metadata.get('metadata', 'name', fallback=None) != 'tfpipeline':
    return None
  try:
    top = subprocess.run(['git', 'rev-parse', '--show-toplevel', 'HEAD'],
                         cwd=root, capture_output=True, text=True, timeout=10)
    lines = top.stdout.splitlines()  # The work tree's root, then HEAD.
    if top.returncode or pathlib.Path(lines[0]).resolve() != root:
      return None
    status = subprocess.run(['git', 'status', '--porcelain', '--', 'tfpipeline'],
                            cwd=root, capture_output=True, text=True,
                            timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return {'commit': lines[1],
          'package_modified': bool(status.stdout.strip())}


def section(config, config_json: str, splits, *, started: str) -> dict:
  """The report's `provenance` section; `config_json` as in config.json."""
  return {
      'config_sha256': integrity.sha256_text(config_json),
      'config_file': 'config.json',
      'data': data_fingerprint(splits),
      'backend': config.train.backend,
      'packages': packages(config.train.backend),
      'python': sys.version.split()[0],
      'platform': platform.platform(),
      'git': git_commit(),
      'command': sys.argv,
      'seeds': {'train.seed': config.train.seed,
                'data.split_seed': config.data.split_seed},
      'deterministic_ops': config.train.deterministic,
      'host': host(),
      'user': user(),
      'started_utc': started,
      'finished_utc': utc_now(),
  }
