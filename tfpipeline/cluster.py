"""This process's place in a multi-worker cluster, from TF_CONFIG.

Pure Python (no TensorFlow import), so it can be asked before anything is
checked or written.
"""

import json
import os

from tfpipeline.errors import UserError


def tf_config() -> dict | None:
  """The parsed TF_CONFIG, or None when it is unset or empty."""
  raw = os.environ.get('TF_CONFIG', '').strip()
  if not raw:
    return None
  try:
    parsed = json.loads(raw)
  except ValueError:
    raise UserError(f'TF_CONFIG is not JSON: {raw!r}') from None
  if not isinstance(parsed, dict):
    raise UserError(f'TF_CONFIG must be a JSON object: {raw!r}')
  return parsed


def check_multi_worker() -> None:
  """Raises UserError unless TF_CONFIG describes a usable worker cluster."""
  parsed = tf_config()
  if parsed is None:
    raise UserError('--strategy=multi_worker needs TF_CONFIG, e.g. {"cluster": '
                    '{"worker": ["host1:port", "host2:port"]}, "task": '
                    '{"type": "worker", "index": 0}}')
  try:
    cluster, task = parsed['cluster'], parsed['task']
    members = cluster[task['type']]
    ok = (task['type'] in ('worker', 'chief') and isinstance(members, list)
          and 0 <= int(task['index']) < len(members))
  except (KeyError, TypeError, ValueError):
    ok = False
  if not ok:
    raise UserError(f'TF_CONFIG is not usable for --strategy=multi_worker: '
                    f'{json.dumps(parsed)}; it needs cluster.worker (a list of '
                    f'host:port) and task {{"type": "worker", "index": i}}')


def is_chief() -> bool:
  """Whether this process writes the run's outputs.

  The chief is task type 'chief', or worker 0 when the cluster has no chief;
  a process without TF_CONFIG is its own chief.
  """
  parsed = tf_config()
  if not parsed or 'task' not in parsed:
    return True
  task = parsed['task']
  if task.get('type') == 'chief':
    return True
  return (task.get('type') == 'worker' and int(task.get('index', 0)) == 0 and
          'chief' not in parsed.get('cluster', {}))


def jax_processes() -> tuple[str, int, int]:
  """The JAX processes TF_CONFIG describes: (coordinator address, number of
  processes, this process's id).

  The chief (or worker 0 without one) is process 0 and hosts the
  coordinator on its TF_CONFIG address; the workers follow in index order.
  A JAX run starts no TensorFlow server, so that port is free for it.
  """
  check_multi_worker()
  parsed = tf_config()
  members = parsed['cluster'].get('chief', []) + parsed['cluster']['worker']
  task = parsed['task']
  process_id = int(task['index']) + (
      len(parsed['cluster'].get('chief', [])) if task['type'] == 'worker'
      else 0)
  return members[0], len(members), process_id
