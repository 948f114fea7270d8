"""The cloud launch recipes in tfpipeline/recipes/: each parses, passes only
flags and config keys the command has (the KubeRay RayJob's entrypoint too),
and the TF_CONFIG its platform gives each replica picks the chief the
platform means; evaluator and parameter-server pools are refused. Pure
Python: no TensorFlow, no cloud.
"""

import ast
import json
import re
import shlex

from absl import flags
from ml_collections import config_dict
import pytest
import yaml

from conftest import REPO
from tfpipeline import cluster
from tfpipeline import config as config_lib
from tfpipeline import train  # pylint: disable=unused-import  (its flags; no TensorFlow)
from tfpipeline.errors import UserError

RECIPES = REPO / 'tfpipeline' / 'recipes'
# Vertex AI's task type for each workerPoolSpecs position.
VERTEX_POOLS = ('chief', 'worker', 'ps', 'evaluator')


def _vertex() -> dict:
  return yaml.safe_load((RECIPES / 'vertex_ai_custom_job.yaml').read_text())


def _tfjob_documents() -> dict:
  """The TFJob file's documents by kind."""
  return {document['kind']: document for document in yaml.safe_load_all(
      (RECIPES / 'kubeflow_tfjob.yaml').read_text())}


def _rayjob_documents() -> dict:
  """The RayJob file's documents by kind."""
  return {document['kind']: document for document in yaml.safe_load_all(
      (RECIPES / 'kuberay_rayjob.yaml').read_text())}


def _rayjob_command() -> list[str]:
  """The RayJob's entrypoint, split as its shell does."""
  return shlex.split(_rayjob_documents()['RayJob']['spec']['entrypoint'])


def _tensorflow_container(replica_spec: dict) -> dict:
  """The container the training-operator gives TF_CONFIG: 'tensorflow'."""
  [container] = [c for c in replica_spec['template']['spec']['containers']
                 if c['name'] == 'tensorflow']
  return container


def _recipe_args() -> dict:
  """Each recipe's replica groups' args."""
  return {
      'vertex': [pool['containerSpec']['args']
                 for pool in _vertex()['workerPoolSpecs']],
      'tfjob': [_tensorflow_container(spec)['args'] for spec in
                _tfjob_documents()['TFJob']['spec']['tfReplicaSpecs'].values()],
      'rayjob': [_rayjob_command()[3:]],
  }


def _replicas(recipe: str) -> int:
  if recipe == 'rayjob':
    return int(_flags(_rayjob_command()[3:])['num_workers'])
  if recipe == 'vertex':
    return sum(pool['replicaCount'] for pool in _vertex()['workerPoolSpecs'])
  return sum(spec['replicas'] for spec in
             _tfjob_documents()['TFJob']['spec']['tfReplicaSpecs'].values())


def _flags(args: list[str]) -> dict:
  """--name=value flags as {name: value}."""
  parsed = [re.fullmatch(r'--([\w.]+)=(.*)', arg) for arg in args]
  assert all(parsed), args
  return dict(match.groups() for match in parsed)


def _vertex_tf_configs(spec: dict) -> list[dict]:
  """The TF_CONFIG of each replica as Vertex AI sets it (its "Distributed
  training" page, "The format of TF_CONFIG"): chief, worker and ps tasks from
  workerPoolSpecs[0], [1] and [2]; evaluators from [3], never in the
  cluster; its own "environment", "job" and task "cloud" keys."""
  hosts = {VERTEX_POOLS[i]: [f'cmle-training-workerpool{i}-ab-{r}:2222'
                             for r in range(pool.get('replicaCount', 0))]
           for i, pool in enumerate(spec['workerPoolSpecs'])}
  training_cluster = {kind: names for kind, names in hosts.items()
                      if names and kind != 'evaluator'}
  return [{'cluster': training_cluster, 'environment': 'cloud', 'job': spec,
           'task': {'type': kind, 'index': i, 'cloud': 'ID'}}
          for kind, names in hosts.items() for i in range(len(names))]


def _tfjob_tf_configs(job: dict) -> list[dict]:
  """The TF_CONFIG of each pod as the training-operator sets it (v1.9,
  genTFConfigJSONStr): one cluster key per replica type, lower-cased,
  evaluators included; hosts NAME-TYPE-I.NAMESPACE.svc:PORT."""
  name = job['metadata']['name']
  namespace = job['metadata'].get('namespace', 'default')
  tf_cluster = {kind.lower(): [f'{name}-{kind.lower()}-{i}.{namespace}.svc:2222'
                               for i in range(spec['replicas'])]
                for kind, spec in job['spec']['tfReplicaSpecs'].items()}
  return [{'cluster': tf_cluster,
           'task': {'type': kind, 'index': i}, 'environment': 'cloud'}
          for kind, names in tf_cluster.items() for i in range(len(names))]


def _tfjob_with(replica_type: str) -> dict:
  """The recipe's TFJob with one replica of `replica_type` added."""
  job = _tfjob_documents()['TFJob']
  replicas = job['spec']['tfReplicaSpecs']
  replicas[replica_type] = {**replicas['Worker'], 'replicas': 1}
  return job


def _vertex_with(kind: str) -> dict:
  """The recipe's CustomJobSpec with one replica of a `kind` pool added."""
  spec = _vertex()
  pools = spec['workerPoolSpecs']
  position = VERTEX_POOLS.index(kind)
  pools.extend({} for _ in range(position + 1 - len(pools)))
  pools[position] = {**pools[1], 'replicaCount': 1}
  return spec


def test_vertex_recipe_runs_one_chief_and_workers_alike():
  spec = _vertex()
  chief_pool, worker_pool = spec['workerPoolSpecs']
  assert chief_pool['replicaCount'] == 1 and worker_pool['replicaCount'] >= 1
  assert chief_pool['containerSpec'] == worker_pool['containerSpec']
  args = _flags(chief_pool['containerSpec']['args'])
  assert args['strategy'] == 'multi_worker'
  # Cloud Storage FUSE: the bucket every replica mounts.
  assert args['model_dir'].startswith('/gcs/BUCKET/')
  assert spec['scheduling']['restartJobOnWorkerRestart'] is True


def test_tfjob_recipe_puts_model_dir_on_a_volume_every_worker_mounts():
  documents = _tfjob_documents()
  job, claim = documents['TFJob'], documents['PersistentVolumeClaim']
  assert (job['apiVersion'], job['kind']) == ('kubeflow.org/v1', 'TFJob')
  [(replica_type, spec)] = job['spec']['tfReplicaSpecs'].items()
  assert replica_type == 'Worker' and spec['restartPolicy'] == 'OnFailure'
  container = _tensorflow_container(spec)
  args = _flags(container['args'])
  assert args['strategy'] == 'multi_worker'
  [mount] = [m for m in container['volumeMounts']
             if args['model_dir'].startswith(m['mountPath'] + '/')]
  [volume] = [v for v in spec['template']['spec']['volumes']
              if v['name'] == mount['name']]
  assert volume['persistentVolumeClaim']['claimName'] == (
      claim['metadata']['name'])
  assert claim['spec']['accessModes'] == ['ReadWriteMany']


@pytest.mark.parametrize('recipe', ['vertex', 'tfjob', 'rayjob'])
def test_recipe_flags_and_config_keys_exist(recipe):
  for args in _recipe_args()[recipe]:
    recipe_flags = _flags(args)
    experiment = config_lib.load(recipe_flags.get('config'))
    for name in recipe_flags:
      if name.startswith('config.'):
        node = experiment
        for part in name.split('.')[1:]:
          assert isinstance(node, config_dict.ConfigDict) and part in node, (
              f'{recipe}: --{name} is not a config key')
          node = node[part]
      else:
        assert name in flags.FLAGS, f'{recipe}: --{name} is no flag'
        # --config and --model_dir: defined once for train and sweep.
        assert flags.FLAGS.find_module_defining_flag(name) in (
            'tfpipeline.train', 'tfpipeline.config_flag'), (
                f'{recipe}: --{name} is not a train flag')


@pytest.mark.parametrize('recipe', ['vertex', 'tfjob', 'rayjob'])
def test_recipe_config_is_valid_and_its_batch_splits_over_its_replicas(
    recipe):
  [args] = {tuple(args) for args in _recipe_args()[recipe]}
  recipe_flags = _flags(args)
  experiment = config_lib.load(recipe_flags.get('config'))
  overrides = {}
  for name, value in recipe_flags.items():
    if name.startswith('config.'):
      try:
        overrides[name.removeprefix('config.')] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        overrides[name.removeprefix('config.')] = value
  experiment.update_from_flattened_dict(overrides)
  experiment = config_lib.validate(experiment)
  # One CPU device per replica: the global batch divides evenly or the run
  # exits 2 on every replica.
  assert experiment.train.global_batch_size % _replicas(recipe) == 0


def test_rayjob_runs_the_ray_launcher_on_workers_that_share_model_dir():
  documents = _rayjob_documents()
  job, claim = documents['RayJob'], documents['PersistentVolumeClaim']
  assert (job['apiVersion'], job['kind']) == ('ray.io/v1', 'RayJob')
  command = _rayjob_command()
  assert command[:3] == ['python', '-m', 'tfpipeline.train']
  args = _flags(command[3:])
  assert (args['launcher'], args['ray_address']) == ('ray', 'auto')
  cluster = job['spec']['rayClusterSpec']
  # The image's Ray (requirements.txt's pin) is the cluster's.
  assert f"ray=={cluster['rayVersion']}" in (
      REPO / 'requirements.txt').read_text().splitlines()
  head = cluster['headGroupSpec']
  [workers] = cluster['workerGroupSpecs']
  assert head['rayStartParams']['num-cpus'] == '0'  # No worker on the head.
  assert workers['replicas'] == int(args['num_workers'])
  [worker] = workers['template']['spec']['containers']
  # One Ray Train worker a pod: each asks for all of a pod's CPUs.
  assert args['resources_per_worker'] == (
      f"CPU={worker['resources']['limits']['cpu']}")
  for template in (head['template'], workers['template']):
    [container] = template['spec']['containers']
    assert container['image'] == 'IMAGE'
    [mount] = [m for m in container['volumeMounts']
               if args['model_dir'].startswith(m['mountPath'] + '/')]
    [volume] = [v for v in template['spec']['volumes']
                if v['name'] == mount['name']]
    assert volume['persistentVolumeClaim']['claimName'] == (
        claim['metadata']['name'])
  assert claim['spec']['accessModes'] == ['ReadWriteMany']


def test_dockerfile_installs_the_package_at_its_pinned_versions():
  lines = [line for line in (RECIPES / 'Dockerfile').read_text().splitlines()
           if line and not line.startswith('#')]
  assert lines[0] == 'FROM python:3.11-slim'
  copied = {source for line in lines if line.startswith('COPY ')
            for source in line.split()[1:-1]}
  # What `pip install .` reads: the build files, README.md (setup.cfg's
  # long_description), the package and the experiments (its data files).
  assert {'requirements.txt', 'setup.cfg', 'pyproject.toml', 'README.md',
          'tfpipeline/', 'experiments/'} <= copied
  [install] = [line for line in lines if 'pip install' in line]
  # The package, with the extras of --build-arg EXTRAS (none by default).
  assert 'ARG EXTRAS=""' in lines
  assert re.search(r'pip install -c requirements\.txt "\.\$\{EXTRAS\}"( |$)',
                   install)
  assert lines[-1] == 'ENTRYPOINT ["python", "-m", "tfpipeline.train"]'


@pytest.mark.parametrize('tf_configs, chief', [
    (_vertex_tf_configs(_vertex()), {'type': 'chief', 'index': 0}),
    (_tfjob_tf_configs(_tfjob_documents()['TFJob']),
     {'type': 'worker', 'index': 0}),
    (_tfjob_tf_configs(_tfjob_with('Chief')), {'type': 'chief', 'index': 0}),
], ids=['vertex: its chief task', 'tfjob workers: worker 0',
        'tfjob with a Chief: the chief'])
def test_each_replica_is_accepted_and_the_platforms_chief_writes(
    monkeypatch, tf_configs, chief):
  chiefs, jax_processes = [], []
  for tf_config in tf_configs:
    monkeypatch.setenv('TF_CONFIG', json.dumps(tf_config))
    cluster.check_multi_worker()
    if cluster.is_chief():
      chiefs.append({key: tf_config['task'][key] for key in chief})
      chief_process = cluster.jax_processes()[2]
    jax_processes.append(cluster.jax_processes())
  assert chiefs == [chief]
  # On --backend=jax the chief is process 0 and hosts the coordinator.
  assert chief_process == 0
  members = tf_configs[0]['cluster']
  coordinator = (members.get('chief') or members['worker'])[0]
  assert sorted(jax_processes) == [
      (coordinator, len(tf_configs), i) for i in range(len(tf_configs))]


@pytest.mark.parametrize('tf_configs, refused_tasks', [
    # Vertex AI keeps evaluators out of the cluster: only they see one.
    (_vertex_tf_configs(_vertex_with('evaluator')), ['evaluator']),
    (_vertex_tf_configs(_vertex_with('ps')), ['chief', 'worker', 'ps']),
    # A TFJob's cluster lists every replica type: every pod refuses.
    (_tfjob_tf_configs(_tfjob_with('Evaluator')), ['worker', 'evaluator']),
    (_tfjob_tf_configs(_tfjob_with('PS')), ['worker', 'ps']),
], ids=['vertex evaluator', 'vertex ps', 'tfjob evaluator', 'tfjob ps'])
def test_evaluator_and_ps_tasks_are_refused_in_one_line(
    monkeypatch, tf_configs, refused_tasks):
  refused = set()
  for tf_config in tf_configs:
    monkeypatch.setenv('TF_CONFIG', json.dumps(tf_config))
    task = tf_config['task']
    try:
      cluster.check_multi_worker()
    except UserError as e:
      message = str(e)
      assert '\n' not in message and 'drop the' in message
      if task['type'] in ('evaluator', 'ps'):
        assert message.startswith(f"TF_CONFIG's task {json.dumps(task)}: ")
      refused.add(task['type'])
  assert sorted(refused) == sorted(refused_tasks)
