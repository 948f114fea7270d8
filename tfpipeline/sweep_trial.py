"""One trial of a sweep under Ray Tune: `python -m tfpipeline.train` with
the trial's values, as a child process, its epochs reported to Tune.

A child, not `tfpipeline.run` in Tune's actor: Keras takes one backend per
process, TensorFlow keeps its memory, and the training loop's preemption
handler needs a main thread. The child gets SIGTERM when the trial ends
early (ASHA stops it, the sweep is interrupted) or when its Ray actor dies
(Linux's parent-death signal), so it saves a checkpoint and exits 3, as a
preempted run does: its model_dir resumes with the same command.

Imports Ray: only the sweep's driver and Tune's actors import this module.
"""

import math
import pathlib
import signal
import time

from absl import logging
from ray import tune

from tfpipeline import ray_local
from tfpipeline import search_space
from tfpipeline import sweep_summary

# How often a trial looks for its child's next epoch record.
_POLL_S = 0.2
# A step with no new epoch returns after this long, without the metric (Tune
# and ASHA pass it by), so that Tune's stop reaches `cleanup` at once: Tune
# waits 5 s for a stopping trial, then kills its actor.
_HEARTBEAT_S = 1.0
# A result's key: the trial's command completed (Tune's own `done` is also
# set on the last result of a trial ASHA stops).
FINISHED = 'finished'


def trial_name(trial_id: str) -> str:
  """A trial's stable name: `trial_` and Tune's index of it (Tune keeps its
  trial ids across restores)."""
  return f'trial_{trial_id.rsplit("_", 1)[-1]}'


def trial_paths(sweep_dir: pathlib.Path, name: str):
  """(model_dir, the log of its commands' output) of trial `name`."""
  return sweep_dir / 'trials' / name, sweep_dir / 'trials' / f'{name}.log'


class TrialFailed(RuntimeError):
  """The trial's command exited non-zero; its last line."""


class TrainCommand(tune.Trainable):
  """A Tune trainable whose step is the child's next epoch-end record of
  metrics.jsonl (or, after _HEARTBEAT_S without one, a result without the
  metric); the last epoch's is reported once the child has exported and
  reported (exit 0), so that ASHA's stop at max_t cannot cut that short.
  Its Tune checkpoint, saved at each epoch, is the last epoch reported: a
  restored trial reports on from there while its child resumes from its
  own checkpoint."""

  def setup(self, config, *, sweep_dir: str, argv: list, cwd: str,
            epochs: int):
    """`argv`: the sweep's --config and overrides; `config`: the trial's
    searched values; `epochs`: train.epochs unless searched."""
    self._name = trial_name(self.trial_id)
    self._model_dir, self._log_path = trial_paths(pathlib.Path(sweep_dir),
                                                  self._name)
    self._argv = [f'--model_dir={self._model_dir}', *argv,
                  *(search_space.as_flag(k, v) for k, v in config.items())]
    self._cwd = cwd
    self._epochs = config.get('train.epochs', epochs)
    self._reported = 0
    self._child = None

  def step(self) -> dict:
    if self._child is None:
      with open(self._log_path, 'a', encoding='utf-8') as log:
        self._child = ray_local.start_train(
            self._argv, cwd=self._cwd, dies_by=signal.SIGTERM, stderr=log)
    heartbeat = time.monotonic() + _HEARTBEAT_S
    while True:
      exited = self._child.poll() is not None
      new = [r for r in sweep_summary.epoch_metrics(self._model_dir)
             if r['epoch'] > self._reported]
      if new and (new[0]['epoch'] < self._epochs or exited):
        break
      if exited:
        raise TrialFailed(self._failure())
      if time.monotonic() > heartbeat:
        return {'epoch': self._reported, FINISHED: False}
      time.sleep(_POLL_S)
    record = new[0]
    done = record['epoch'] >= self._epochs
    if done and self._child.returncode:
      raise TrialFailed(self._failure())
    self._reported = record['epoch']
    return {**{k: v for k, v in record.items()
               if isinstance(v, (int, float)) and math.isfinite(v)},
            FINISHED: done, 'done': done, 'should_checkpoint': True}

  def _failure(self) -> str:
    lines = self._log_path.read_text().strip().splitlines()
    return (f'{self._name}: exit {self._child.returncode}: '
            f'{lines[-1] if lines else "no output"}')

  def save_checkpoint(self, checkpoint_dir: str) -> dict:
    del checkpoint_dir
    return {'epoch': self._reported}

  def load_checkpoint(self, checkpoint: dict) -> None:
    self._reported = checkpoint['epoch']

  def cleanup(self) -> None:
    """Stops the child as a preemption would (checkpoint, exit 3)."""
    if self._child is not None and self._child.poll() is None:
      self._child.send_signal(signal.SIGTERM)
      self._child.wait()


class Console(tune.Callback):
  """One console line per trial event: started (its values), each epoch's
  metric, finished, stopped by ASHA, failed."""

  def __init__(self, sweep_dir: str, metric: str):
    self._sweep_dir = pathlib.Path(sweep_dir)
    self._metric = metric

  def on_trial_start(self, iteration, trials, trial, **info):
    del iteration, trials, info
    values = ' '.join(f'{k}={search_space.format_value(v)}'
                      for k, v in trial.config.items())
    model_dir, _ = trial_paths(self._sweep_dir, trial_name(trial.trial_id))
    logging.info('%s started: %s (%s)', trial_name(trial.trial_id), values,
                 model_dir)

  def on_trial_result(self, iteration, trials, trial, result, **info):
    del iteration, trials, info
    if self._metric not in result:  # A heartbeat.
      return
    logging.info('%s epoch %d  %s %.4g', trial_name(trial.trial_id),
                 result['epoch'], self._metric, result.get(self._metric,
                                                           math.nan))

  def on_trial_complete(self, iteration, trials, trial, **info):
    del iteration, trials, info
    result = trial.last_result or {}
    logging.info('%s %s', trial_name(trial.trial_id), 'finished'
                 if result.get(FINISHED) else
                 f'stopped by ASHA at epoch {result.get("epoch", 0)}')

  def on_trial_error(self, iteration, trials, trial, **info):
    del iteration, trials, info
    _, log = trial_paths(self._sweep_dir, trial_name(trial.trial_id))
    logging.warning('%s failed (its output: %s)', trial_name(trial.trial_id),
                    log)
