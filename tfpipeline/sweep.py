"""Command line: `python -m tfpipeline.sweep` (also `tfpipeline-sweep`):
a hyperparameter sweep on Ray Tune, each trial a full tfpipeline run.

    python -m tfpipeline.sweep --model_dir=/tmp/sweeps/lr \\
        --config=seed_keras_mlp --config.train.epochs=8 \\
        --search='optimizer.learning_rate=loguniform(1e-4,1e-1)' \\
        --search='model.hidden_units=choice((64,),(128,64))' \\
        --trials=16 --metric=val_loss --mode=min

Each trial runs `python -m tfpipeline.train --model_dir=SWEEP_DIR/trials/
trial_NNNNN --config=... OVERRIDES --config.KEY=VALUE...` (its sampled
values) on a local Ray cluster, as many at once as the machine's CPUs hold
(--cpus_per_trial each). Each epoch's metrics reach Tune; ASHA stops weak
trials, which end as a preempted run does (checkpoint saved, exit 3). The
same command on the same --model_dir resumes an interrupted sweep:
finished trials are kept, interrupted ones resume from their checkpoints.

Writes SWEEP_DIR/sweep.json (what was asked: a rerun must ask the same),
trials/ (each trial's model_dir and the log of its command), tune/ (Ray
Tune's experiment state), summary.csv and summary.html (the trials ranked,
and the metric against each searched key). The last line names the best
trial's model_dir.

Exit codes: 0 done; 2 bad input (one line, nothing written, Ray not
started); 3 stopped by SIGTERM/SIGINT (rerun the same command); 1 every
trial failed.
"""

import json
import os
import pathlib
import signal
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from tfpipeline import atomic_files
from tfpipeline import commands
from tfpipeline import config as config_lib
from tfpipeline import config_checks
from tfpipeline import config_flag
from tfpipeline import console
from tfpipeline import errors
from tfpipeline import ray_local
from tfpipeline import search_space
from tfpipeline import sweep_summary
from tfpipeline.errors import UserError

_CONFIG = config_flag.define()
_MODEL_DIR = config_flag.define_model_dir(
    None, 'Directory for every output: each trial\'s model_dir under '
    'trials/, summary.csv, summary.html. New or empty, or a sweep to '
    'resume.')
_SEARCH = flags.DEFINE_multi_string(
    'search', [], 'A config key and its search space, once per key: '
    'KEY=loguniform(a,b) | uniform(a,b) | randint(a,b) (integers, both '
    'included) | choice(v1,v2,...) (Python literals), e.g. '
    '--search="optimizer.learning_rate=loguniform(1e-4,1e-1)" '
    '--search="model.hidden_units=choice((64,),(128,64))". Every trial '
    'trains with the config\'s train.seed unless train.seed is searched; '
    'the draws are seeded by the config\'s train.seed, so the same command '
    'draws the same trials.')
_TRIALS = flags.DEFINE_integer('trials', 8, 'Trials (samples of the '
                               'search space).', lower_bound=1)
_METRIC = flags.DEFINE_string(
    'metric', 'val_loss', 'What ranks the trials and what ASHA compares: '
    'a value each epoch-end record of metrics.jsonl has: val_loss, loss '
    '(training), or val_METRIC of the task (regression: val_mae, val_rmse, '
    'val_r2; classification: val_accuracy, binary also val_auc).')
_MODE = flags.DEFINE_enum('mode', 'min', ['min', 'max'],
                          'Whether a lower or a higher --metric is better.')
_GRACE_PERIOD = flags.DEFINE_integer(
    'grace_period', 1, 'ASHA: epochs every trial runs before it may be '
    'stopped.', lower_bound=1)
_REDUCTION_FACTOR = flags.DEFINE_integer(
    'reduction_factor', 2, 'ASHA: at each rung (grace_period times a power '
    'of this, in epochs) only the best 1/reduction_factor of the trials go '
    'on.', lower_bound=2)
_CPUS_PER_TRIAL = flags.DEFINE_float(
    'cpus_per_trial', 1.0, 'CPUs each trial takes: trials run in parallel '
    'up to the machine\'s CPUs.', lower_bound=0.01)

# What a rerun must ask again to resume a sweep (sweep.json).
_PLAN_KEYS = ('config', 'search', 'trials', 'metric', 'mode', 'grace_period',
              'reduction_factor')


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; flags look like '
                    f'--name=value')
  ray_local.check_installed('python -m tfpipeline.sweep')
  console.plain_lines()
  if not _MODEL_DIR.present:
    raise UserError('--model_dir: give the sweep\'s directory')
  sweep_dir = pathlib.Path(_MODEL_DIR.value).absolute()
  config = config_lib.validate(_CONFIG.value)
  dimensions = search_space.parse_all(_SEARCH.value)
  plan = _checked_plan(config, dimensions)
  _check_sweep_dir(sweep_dir, plan)
  (sweep_dir / 'trials').mkdir(parents=True, exist_ok=True)
  if not (sweep_dir / 'sweep.json').is_file():
    atomic_files.write_text(sweep_dir / 'sweep.json',
                            json.dumps(plan, indent=2, sort_keys=True) + '\n')
  ray_local.own_token()  # Before _ended_sweep imports Ray.
  trials, endings = _ended_sweep(sweep_dir)
  if trials:
    logging.info('every trial of the sweep in %s has ended; nothing to '
                 'resume', sweep_dir)
  else:
    with ray_local.connected(None, os.cpu_count()):
      trials, endings = _tune(sweep_dir, config, dimensions)
  interrupted = sweep_summary.UNFINISHED in endings
  rows = sweep_summary.write(sweep_dir, trials, dimensions, _METRIC.value,
                             _MODE.value)
  logging.info('wrote %s and %s', sweep_dir / 'summary.csv',
               sweep_dir / 'summary.html')
  if interrupted:
    print(f'interrupted: {sum(t.status == "done" for t in rows)} of '
          f'{len(rows)} trials done; rerun the same command to resume',
          file=sys.stderr, flush=True)
    return 3
  best = rows[0]
  if best.last is None:
    print(f'error: every trial failed; see {sweep_dir / "trials"}/*.log',
          file=sys.stderr, flush=True)
    return 1
  print(f'best: {best.name} {_METRIC.value} {best.last:.6g}: '
        f'{best.model_dir}', file=sys.stderr, flush=True)
  return 0


def _checked_plan(config, dimensions: list) -> dict:
  """The sweep as sweep.json records it, once every flag is checked.

  Raises:
    UserError: a bad search spec, metric, ASHA setting or CPU count.
  """
  overrides = _overrides()
  for dimension in dimensions:
    if dimension.key in overrides:
      raise UserError(f'--search={dimension.spec}: {dimension.key} is also '
                      f'set by --config.{dimension.key}; drop one of them')
  search_space.check(dimensions, config)
  metrics = ('val_loss', 'loss', *(f'val_{name}' for name in
                                   config_checks.evaluation_metrics(
                                       config.loss,
                                       config.model.output_units)))
  if _METRIC.value not in metrics:
    raise UserError(f'--metric={_METRIC.value}: not in the epoch records of '
                    f'this config\'s runs; use one of {", ".join(metrics)}')
  if _GRACE_PERIOD.value > _max_epochs(config, dimensions):
    raise UserError(f'--grace_period={_GRACE_PERIOD.value}: more than the '
                    f'{_max_epochs(config, dimensions)} epochs of a trial; '
                    f'lower it or raise --config.train.epochs')
  if _CPUS_PER_TRIAL.value > (os.cpu_count() or 1):
    raise UserError(f'--cpus_per_trial={_CPUS_PER_TRIAL.value:g}: this '
                    f'machine has {os.cpu_count()} CPUs')
  return {'config': json.loads(config_lib.to_json(config)),
          'search': [d.spec for d in dimensions], 'trials': _TRIALS.value,
          'metric': _METRIC.value, 'mode': _MODE.value,
          'grace_period': _GRACE_PERIOD.value,
          'reduction_factor': _REDUCTION_FACTOR.value}


def _max_epochs(config, dimensions: list) -> int:
  """ASHA's max_t: train.epochs, or the most a search of it gives."""
  for dimension in dimensions:
    if dimension.key == 'train.epochs':
      return max(dimension.candidates)
  return config.train.epochs


def _check_sweep_dir(sweep_dir: pathlib.Path, plan: dict) -> None:
  """A new or empty directory, or a sweep of the same plan (sweep.json).

  Raises:
    UserError: a file, another directory's files, or another sweep.
  """
  flag = f'--model_dir={sweep_dir}'
  if sweep_dir.exists() and not sweep_dir.is_dir():
    raise UserError(f'{flag} is a file; give a directory')
  saved = sweep_dir / 'sweep.json'
  if saved.is_file():
    was = json.loads(saved.read_text())
    for key in _PLAN_KEYS:
      if was.get(key) != plan[key]:
        what = (f'config key {_first_difference(was.get(key), plan[key])}'
                if key == 'config' else f'--{key}')
        raise UserError(f'{flag} holds a sweep with another {what}; rerun it '
                        f'with its own flags to resume it, or use a new '
                        f'--model_dir')
  elif sweep_dir.is_dir() and any(sweep_dir.iterdir()):
    raise UserError(f'{flag} holds files but no sweep (no sweep.json); give '
                    f'a new or empty directory')


def _first_difference(was: dict | None, now: dict) -> str:
  """The first key whose value differs between two configs (as dicts)."""
  was, now = config_lib.flatten(was or {}), config_lib.flatten(now)
  return next(key for key in sorted(set(was) | set(now))
              if was.get(key) != now.get(key))


def _overrides() -> dict:
  """The --config.KEY=VALUE overrides given, {KEY: value}."""
  return config_lib.flatten(config_flags.get_override_values(
      flags.FLAGS['config']))


def _tune(sweep_dir: pathlib.Path, config, dimensions: list):
  """Runs (or resumes) the sweep on Ray Tune; returns `_trials`."""
  # Tune's own console (a configuration box, result tables) stays off; a
  # trial's heartbeats (sweep_trial) have no metric.
  os.environ.setdefault('RAY_AIR_NEW_OUTPUT', '0')
  os.environ['TUNE_DISABLE_STRICT_METRIC_CHECKING'] = '1'
  from ray import tune  # pylint: disable=g-import-not-at-top
  from tfpipeline import sweep_trial  # pylint: disable=g-import-not-at-top
  argv = [f'--config={config_lib.experiment_path(_config_file()).resolve()}',
          *(search_space.as_flag(key, value)
            for key, value in _overrides().items())]
  trainable = tune.with_resources(
      tune.with_parameters(sweep_trial.TrainCommand, sweep_dir=str(sweep_dir),
                           argv=argv, cwd=os.getcwd(),
                           epochs=config.train.epochs),
      {'cpu': _CPUS_PER_TRIAL.value})
  state = sweep_dir / 'tune'
  if tune.Tuner.can_restore(str(state)):
    logging.info('resuming the sweep in %s', sweep_dir)
    tuner = tune.Tuner.restore(str(state), trainable,
                               resume_unfinished=True, resume_errored=True)
  else:
    tuner = tune.Tuner(
        trainable, param_space={d.key: d.domain() for d in dimensions},
        tune_config=tune.TuneConfig(
            metric=_METRIC.value, mode=_MODE.value, num_samples=_TRIALS.value,
            scheduler=tune.schedulers.ASHAScheduler(
                time_attr='epoch', max_t=_max_epochs(config, dimensions),
                grace_period=_GRACE_PERIOD.value,
                reduction_factor=_REDUCTION_FACTOR.value),
            search_alg=tune.search.BasicVariantGenerator(
                random_state=config.train.seed),
            trial_name_creator=lambda t: sweep_trial.trial_name(t.trial_id),
            trial_dirname_creator=lambda t: sweep_trial.trial_name(
                t.trial_id)),
        run_config=tune.RunConfig(
            name=state.name, storage_path=str(sweep_dir), verbose=0,
            callbacks=[sweep_trial.Console(str(sweep_dir), _METRIC.value)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
  # Tune ends on SIGINT, saving its state and stopping the trials (whose
  # commands save their checkpoints): SIGTERM does the same.
  signal.signal(signal.SIGTERM,
                lambda signum, frame: signal.raise_signal(signal.SIGINT))
  tuner.fit()
  errors.stop_on_signals('stopped while the sweep saved its state; rerun '
                         'the same command')
  return _trials(sweep_dir, state)


def _ended_sweep(sweep_dir: pathlib.Path) -> tuple[list, list]:
  """`_trials` of a sweep whose every trial finished or was stopped, read
  from its saved state without starting Ray (a rerun would resume nothing);
  ([], []) otherwise."""
  from ray import tune  # pylint: disable=g-import-not-at-top
  state = sweep_dir / 'tune'
  if not tune.Tuner.can_restore(str(state)):
    return [], []
  trials, endings = _trials(sweep_dir, state)
  if len(trials) < _TRIALS.value or not set(endings) <= {
      sweep_summary.FINISHED, sweep_summary.STOPPED}:
    return [], []  # Trials to start, resume or retry (resume_errored).
  return trials, endings


def _trials(sweep_dir: pathlib.Path, state: pathlib.Path):
  """Each trial's row, from Tune's saved state and its model_dir, and how
  each ended (sweep_summary.FINISHED, STOPPED, FAILED or UNFINISHED)."""
  from ray import tune  # pylint: disable=g-import-not-at-top
  from tfpipeline import sweep_trial  # pylint: disable=g-import-not-at-top
  rows, endings = [], []
  for trial in tune.ExperimentAnalysis(str(state)).trials:
    name = sweep_trial.trial_name(trial.trial_id)
    result = trial.last_result or {}
    ended = {'TERMINATED': sweep_summary.FINISHED if result.get(
        sweep_trial.FINISHED) else sweep_summary.STOPPED,
             'ERROR': sweep_summary.FAILED}.get(trial.status,
                                                sweep_summary.UNFINISHED)
    endings.append(ended)
    model_dir, log = sweep_trial.trial_paths(sweep_dir, name)
    rows.append(sweep_summary.trial(
        name, model_dir, dict(trial.config), ended, result.get('epoch', 0),
        _METRIC.value, _MODE.value, log))
  return rows, endings


def _config_file() -> str:
  return config_flags.get_config_filename(flags.FLAGS['config'])


def cli() -> None:
  """Console script `tfpipeline-sweep`."""
  errors.stop_on_signals('stopped before the sweep started; rerun the same '
                         'command')
  commands.run_absl(main, config_flag.parse)


if __name__ == '__main__':
  cli()
