"""Checkpoints, resume and preemption.

A checkpoint holds the model, the optimizer (its slots, step counter and
learning rate) and the global step. The input pipeline needs nothing more:
the examples of step s are a pure function of (seed, s), so a resumed run
rebuilds its pipeline at the checkpoint's step and reads the exact next batch
(tf.data iterator checkpoints would also carry prefetch buffers, and are not
supported for every distributed iterator). The only other randomness after
initialisation lives in layers' seed generators (Dropout's): their state is a
non-trainable model variable that Keras 3's own checkpoint dependencies leave
out (measured on Keras 3.15), so every non-trainable variable is also saved
by position.

TensorFlow writes a checkpoint's files before it updates the `checkpoint`
index file, so a crash while saving leaves the previous checkpoint current;
a corrupt or truncated latest checkpoint fails its checksum on restore and
the one before it is used; the unreadable one is moved to `corrupt/`. A readable checkpoint that does not fit the model
(a config changed with --allow_config_change) is bad input, not corruption:
the run stops rather than restart from step 0.
"""

import pathlib
import signal

from absl import logging
import tensorflow as tf

from tfpipeline.errors import CheckpointError
from tfpipeline.errors import Preempted
from tfpipeline.errors import UserError
from tfpipeline.errors import first_line


class Checkpoints:
  """`tf.train.CheckpointManager` over model, optimizer, step and the
  model's non-trainable state (seed generators included).

  Args:
    directory: where checkpoints are written (`model_dir/checkpoints`).
    model, optimizer: what to save; build the optimizer first.
    keep: how many recent checkpoints to keep.
    restore_from: where to read from, if not `directory` (a multi-worker
      non-chief reads the chief's checkpoints and writes to scratch).
  """

  def __init__(self, directory: pathlib.Path, model, optimizer, *, keep: int,
               restore_from: pathlib.Path | None = None):
    self._step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
    self._checkpoint = tf.train.Checkpoint(
        model=model, optimizer=optimizer, step=self._step,
        model_state=list(model.non_trainable_variables))
    self._directory, self._keep = directory, keep
    self.manager = tf.train.CheckpointManager(self._checkpoint, str(directory),
                                              max_to_keep=keep)
    self._restore_from = restore_from or directory

  def restore(self) -> int:
    """Restores the newest readable checkpoint; returns its step (0: none)."""
    state = tf.train.get_checkpoint_state(str(self._restore_from))
    paths = list(state.all_model_checkpoint_paths) if state else []
    for index in reversed(range(len(paths))):
      path = paths[index]
      try:
        self._checkpoint.restore(path).assert_existing_objects_matched()
      except tf.errors.OpError as e:  # Corrupt, truncated or missing files.
        logging.warning('checkpoint %s is unreadable (%s); trying the one '
                        'before it', path, first_line(e)[:200])
        continue
      except (ValueError, AssertionError) as e:  # Readable, but not this model.
        raise UserError(
            f'checkpoint {path} does not fit the model ({first_line(e)}): '
            f'the config changed the model or the shape of its input; use a '
            f'new --model_dir, or the config the run was trained with'
        ) from None
      self._set_aside(paths[index + 1:], paths[:index + 1])
      return int(self._step.numpy())
    if paths:
      logging.warning('no readable checkpoint in %s; starting from step 0',
                      self._restore_from)
      self._set_aside(paths, [])
    return 0

  def _set_aside(self, unreadable: list[str], readable: list[str]) -> None:
    """Drops unreadable checkpoints from the index and moves their files to
    `corrupt/`, so that nothing restores them later: TensorFlow's
    PreemptionCheckpointHandler restores the index's latest when created.
    Only in the directory this process writes (not a chief's, read by
    another worker)."""
    if not unreadable or self._restore_from != self._directory:
      return
    directory = pathlib.Path(self._directory)
    index = directory / 'checkpoint'
    if readable:  # Atomic rewrite: the index names only readable ones.
      tf.compat.v1.train.update_checkpoint_state(
          str(directory), readable[-1], all_model_checkpoint_paths=readable)
    else:
      index.unlink(missing_ok=True)
    aside = directory / 'corrupt'
    aside.mkdir(exist_ok=True)
    for path in unreadable:
      for part in directory.glob(f'{pathlib.Path(path).name}.*'):
        part.replace(aside / part.name)
    logging.warning('moved unreadable checkpoints to %s', aside)
    self.manager = tf.train.CheckpointManager(
        self._checkpoint, str(directory), max_to_keep=self._keep)

  def save(self, step: int) -> None:
    """Saves at `step`; raises CheckpointError, earlier ones left intact."""
    self._step.assign(step)
    try:
      self.manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as e:
      raise CheckpointError(
          f'cannot write a checkpoint to {self.manager.directory}: '
          f'{str(e).splitlines()[0]}; free disk space or fix permissions '
          f'(earlier checkpoints are intact)') from None


def check_same_restored_step(steps: list[int], directory: pathlib.Path, *,
                             processes: str, each: str) -> None:
  """Raises UserError unless every process of a run restored the same step
  (`steps`, one per `each`: 'replica', 'host'): one that does not see the
  chief's checkpoints would otherwise train from another state."""
  if len(set(steps)) > 1:
    restored = ', '.join(f'{each} {i}: {step}' for i, step in enumerate(steps))
    raise UserError(
        f'the {processes} of this run restored different steps from '
        f'{directory} ({restored}): --model_dir must be storage every '
        f'{processes[:-1]} sees (NFS, a mounted bucket)')


def preemption_watch(strategy: tf.distribute.Strategy,
                     checkpoints: Checkpoints):
  """A context manager whose `check(save, step)` saves and stops if asked.

  Multi-worker: TensorFlow's PreemptionCheckpointHandler, which tells every
  worker when one is signalled, so all save at the same step and stop.
  Elsewhere: PreemptionWatch, on this process's SIGTERM and SIGINT.
  """
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return _ClusterPreemptionWatch(strategy, checkpoints)
  return PreemptionWatch()


class _ClusterPreemptionWatch:
  """PreemptionCheckpointHandler behind PreemptionWatch's interface."""

  def __init__(self, strategy, checkpoints: Checkpoints):
    self._step = None

    def stop():
      raise Preempted(f'a worker was preempted at step {self._step}: '
                      f'checkpoint saved; rerun the same command to resume')

    self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
        strategy.cluster_resolver, checkpoints.manager,
        termination_config=tf.distribute.experimental.TerminationConfig(
            exit_fn=stop, save_fn=checkpoints.save))

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    pass

  def check(self, save, step: int) -> None:
    del save  # The handler saves through Checkpoints.save itself.
    self._step = step
    self._handler.save_checkpoint_if_preempted(step)


class PreemptionWatch:
  """Turns SIGTERM and SIGINT into a request to stop at the next loop end.

  Use as a context manager around training; `check(save)` saves and raises
  Preempted once a signal has arrived. A second signal gets the default
  action (the process ends at once), so a stuck run can still be stopped.
  """

  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name
    logging.warning('%s received: stopping after the current loop',
                    self.signal)
    for signum_ in self._previous:
      signal.signal(signum_, signal.SIG_DFL)

  def __enter__(self):
    for signum in self._SIGNALS:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def check(self, save, step: int) -> None:
    if self.signal:
      save(step)
      raise Preempted(f'{self.signal} at step {step}: checkpoint saved; '
                      f'rerun the same command to resume')
