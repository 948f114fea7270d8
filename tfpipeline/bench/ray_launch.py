"""`ray_launch`: --launcher=ray against two workers started by hand.

The same run (the seeds' model on 64,000 rows, 2 epochs, a metrics record
every 50 steps) on two workers, alternated: started by hand with TF_CONFIG
on 127.0.0.1, and by `--launcher=ray --num_workers=2` on a local cluster.
Start-up: seconds from the command to the run's first metrics record;
steady: the median examples/s of the records after it; wall: the whole
command. Medians over the rounds.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

RAY_LAUNCH = 'ray_launch'
_RUN = ('--config=seed_keras_mlp', '--config.data.num_examples=64000',
        '--config.train.epochs=2', '--config.train.steps_per_loop=50')


def ray_launch(rounds: int) -> dict:
  """Medians of start-up s, steady examples/s and wall s of each way."""
  measured = {'by_hand': [], 'ray': []}
  for i in range(rounds):
    for way in measured:
      print(f'{RAY_LAUNCH}: {way} run {i + 1}/{rounds}', file=sys.stderr,
            flush=True)
      with tempfile.TemporaryDirectory() as scratch:
        measured[way].append(_timed_run(way, os.path.join(scratch, 'run')))
      if 'error' in measured[way][-1]:
        return {'case': RAY_LAUNCH, 'error': measured[way][-1]['error']}
  return {'case': RAY_LAUNCH, 'rounds': rounds, **{
      way: {key: statistics.median(r[key] for r in runs)
            for key in ('startup_s', 'examples_per_sec', 'wall_s')}
      for way, runs in measured.items()}}


def print_ray_launch(result: dict) -> None:
  if 'error' in result:
    print(f'{RAY_LAUNCH}: failed: {result["error"][:100]}')
    return
  print(f'2 workers ({result["rounds"]} rounds, medians)   start-up s  '
        f'steady ex/s   wall s')
  for way, title in (('by_hand', 'started by hand (TF_CONFIG)'),
                     ('ray', '--launcher=ray (local cluster)')):
    r = result[way]
    print(f'{title:<33}{r["startup_s"]:>10.1f}{r["examples_per_sec"]:>14,.0f}'
          f'{r["wall_s"]:>9.1f}')


def _timed_run(way: str, model_dir: str) -> dict:
  args = [f'--model_dir={model_dir}', *_RUN]
  start = time.perf_counter()
  if way == 'ray':
    processes = [subprocess.Popen(
        [sys.executable, '-m', 'tfpipeline.train', '--launcher=ray',
         '--num_workers=2', *args], stderr=tempfile.TemporaryFile('w+'))]
  else:
    processes = _by_hand(args)
  log, startup = os.path.join(model_dir, 'metrics.jsonl'), None
  while any(p.poll() is None for p in processes):
    if startup is None and os.path.exists(log) and os.path.getsize(log):
      startup = time.perf_counter() - start
    time.sleep(0.05)
  wall = time.perf_counter() - start
  for process in processes:
    if process.wait():
      process.stderr.seek(0)
      return {'error': (process.stderr.read().strip().splitlines()[-1:] or
                        ['no output'])[0]}
  with open(log, encoding='utf-8') as f:
    speeds = [json.loads(line)['examples_per_sec'] for line in f][1:]
  return {'startup_s': startup, 'examples_per_sec': statistics.median(speeds),
          'wall_s': wall}


def _by_hand(args: list[str]) -> list[subprocess.Popen]:
  """Two workers on free ports of 127.0.0.1, worker 0 the chief; stderr
  to a temporary file each."""
  ports = []
  for _ in range(2):
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      ports.append(s.getsockname()[1])
  workers = [f'127.0.0.1:{port}' for port in ports]
  return [subprocess.Popen(
      [sys.executable, '-m', 'tfpipeline.train', '--strategy=multi_worker',
       *args], stderr=tempfile.TemporaryFile('w+'), env={
           **os.environ, 'TF_CONFIG': json.dumps(
               {'cluster': {'worker': workers},
                'task': {'type': 'worker', 'index': index}})})
          for index in range(2)]
