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


# The task types --strategy=multi_worker trains on: TensorFlow's chief (at
# most one: Vertex AI's first worker pool, a TFJob's Chief) and its workers.
_TRAINING_TASKS = ('chief', 'worker')
# Task types that Vertex AI and Kubeflow's TFJob set for pools tfpipeline
# does not run, and what to do instead.
_REFUSED_TASKS = {
    'evaluator': ('tfpipeline runs no side-car evaluator (the chief '
                  'evaluates after each epoch): drop the evaluator pool '
                  '(Vertex AI: workerPoolSpecs[3]; TFJob: the Evaluator '
                  'replicas)'),
    'ps': ('parameter servers are not supported (--strategy=multi_worker '
           'all-reduces between the chief and the workers): drop the '
           'parameter-server pool (Vertex AI: workerPoolSpecs[2]; TFJob: the '
           'PS replicas)'),
}


def check_multi_worker() -> None:
  """Raises UserError unless TF_CONFIG places this process among a cluster's
  chief and workers.

  Reads TF_CONFIG as TensorFlow, Vertex AI (a `chief`, `worker`s and keys
  of its own) and Kubeflow's TFJob (one key per replica type) write it.
  Evaluator and parameter-server tasks are refused: on such a task, and on
  every task of a cluster that lists them (a TFJob lists its evaluators,
  Vertex AI does not).
  """
  parsed = tf_config()
  if parsed is None:
    raise UserError('--strategy=multi_worker needs TF_CONFIG, e.g. {"cluster": '
                    '{"worker": ["host1:port", "host2:port"]}, "task": '
                    '{"type": "worker", "index": 0}}')
  cluster, task = parsed.get('cluster'), parsed.get('task')
  task_type, index = _task(parsed)
  if task_type in _REFUSED_TASKS:
    raise UserError(f"TF_CONFIG's task {json.dumps(task)}: "
                    f'{_REFUSED_TASKS[task_type]}')
  for refused, what_to_do in _REFUSED_TASKS.items():
    if isinstance(cluster, dict) and refused in cluster:
      raise UserError(f"TF_CONFIG's cluster lists {refused} tasks "
                      f'{json.dumps(cluster[refused])}: {what_to_do}')
  usable = (isinstance(cluster, dict) and set(cluster) <= set(_TRAINING_TASKS)
            and all(isinstance(hosts, list) for hosts in cluster.values())
            and len(cluster.get('chief', [])) <= 1
            and task_type in cluster and index is not None
            and 0 <= index < len(cluster[task_type]))
  if not usable:
    raise UserError(f'TF_CONFIG is not usable for --strategy=multi_worker: '
                    f'{json.dumps({"cluster": cluster, "task": task})}; it '
                    f'needs a cluster of worker and (at most one) chief '
                    f'host:port lists, and a task {{"type": "worker" or '
                    f'"chief", "index": i}} among them')


def check_alone(strategy: str) -> None:
  """Raises UserError if TF_CONFIG describes a cluster of several tasks while
  `--strategy` trains on this process alone: each task would train the run
  by itself, and all but one would write nothing."""
  parsed = tf_config()
  cluster = parsed.get('cluster') if parsed else None
  tasks = sum(len(hosts) for hosts in cluster.values()
              if isinstance(hosts, list)) if isinstance(cluster, dict) else 0
  if tasks > 1:
    raise UserError(f'TF_CONFIG describes a cluster of {tasks} tasks, but '
                    f'--strategy={strategy} trains on this process alone: '
                    f'pass --strategy=multi_worker, or unset TF_CONFIG')


def _task(parsed: dict) -> tuple[str | None, int | None]:
  """TF_CONFIG's task as (type, index); None for a part that is missing or
  malformed (check_multi_worker says which)."""
  task = parsed.get('task')
  if not isinstance(task, dict):
    return None, None
  task_type = task.get('type')
  try:
    index = int(task['index'])
  except (KeyError, TypeError, ValueError):
    index = None
  return (task_type if isinstance(task_type, str) else None), index


def is_chief() -> bool:
  """Whether this process writes the run's outputs.

  The chief is task type 'chief', or worker 0 when the cluster has no chief;
  a process without TF_CONFIG is its own chief.
  """
  parsed = tf_config()
  if not parsed or 'task' not in parsed:
    return True
  task_type, index = _task(parsed)
  if task_type == 'chief':
    return True
  cluster = parsed.get('cluster')
  return (task_type == 'worker' and index == 0 and
          not (isinstance(cluster, dict) and 'chief' in cluster))


def jax_processes() -> tuple[str, int, int]:
  """The JAX processes TF_CONFIG describes: (coordinator address, number of
  processes, this process's id).

  The chief (or worker 0 without one) is process 0 and hosts the
  coordinator on its TF_CONFIG address; the workers follow in index order.
  A JAX run starts no TensorFlow server, so that port is free for it.
  """
  check_multi_worker()
  parsed = tf_config()
  chiefs = parsed['cluster'].get('chief', [])
  members = chiefs + parsed['cluster'].get('worker', [])
  task_type, index = _task(parsed)
  return members[0], len(members), index + (
      len(chiefs) if task_type == 'worker' else 0)
