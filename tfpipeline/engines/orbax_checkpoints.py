"""Checkpoints of the JAX engine: Orbax over the training state's pytree.

Orbax, the JAX ecosystem's checkpointer, writes each step into a temporary
directory and renames it once complete and keeps the newest `keep`. The
state is replicated, so the chief saves its copy (host arrays) alone, as
the only process of its manager, with no barrier; the other hosts of a
multi-host run write nothing (the TensorFlow engine's workers must join
every save: theirs go to scratch directories) and restore the chief's. The
state
is `{'trainable': [...], 'non_trainable': [...], 'optimizer': [...]}`, each
list in the order of Keras's variables: every variable of the model,
including a Dropout's seed-generator state, which Keras's own weight files
leave out (a resume from them diverged; BUILD_NOTES.md), and the
optimizer's, its step counter included. The examples of step s are a pure
function of (seed, s), so the step number is all the input pipeline needs.

As with the TensorFlow engine's checkpoints, an unreadable newest checkpoint
(a crash mid-write leaves only Orbax's temporary directory, which is never
restored; a damaged one fails to read) is moved to `corrupt/` and the one
before it restored; one that reads but does not fit the model is bad input.
"""

import pathlib
import shutil

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from tfpipeline.errors import CheckpointError
from tfpipeline.errors import UserError
from tfpipeline.errors import first_line

KEYS = ('trainable', 'non_trainable', 'optimizer')


def saved_steps(directory: pathlib.Path) -> list[int]:
  """The steps of the complete checkpoints in `directory`, oldest first."""
  if not directory.is_dir():
    return []
  return sorted(int(path.name) for path in directory.iterdir()
                if path.name.isdigit() and path.is_dir())


def check_fits(directory: pathlib.Path, target: dict) -> None:
  """Raises UserError unless the newest readable checkpoint's arrays have
  `target`'s structure, shapes and dtypes (jax.ShapeDtypeStruct leaves)."""
  steps = saved_steps(directory)
  reader = _manager(directory, read_only=True) if steps else None
  for step in reversed(steps):
    try:
      saved = dict(reader.item_metadata(step).tree)
    except Exception:  # pylint: disable=broad-except  # Unreadable: older.
      continue
    mismatch = _mismatch(saved, target)
    if mismatch:
      raise UserError(
          f'checkpoint {directory / str(step)} does not fit the model '
          f'({mismatch}): the config changed the model or the shape of its '
          f'input; use a new --model_dir, or the config the run was trained '
          f'with')
    return


class Checkpoints:
  """Saves and restores the engine's state in `directory`.

  Args:
    directory: `model_dir/checkpoints`.
    keep: how many recent checkpoints to keep.
    writes: False on the hosts other than the chief: they only read.
  """

  def __init__(self, directory: pathlib.Path, *, keep: int,
               writes: bool = True):
    self._directory, self._keep, self._writes = directory, keep, writes
    self._manager = None  # Made at the first save: it lists the steps.

  def steps(self) -> list[int]:
    return saved_steps(self._directory)

  def restore(self, target: dict) -> tuple[int, dict | None]:
    """The newest readable checkpoint: (its step, the state as host
    arrays), or (0, None).

    Args:
      target: the state's structure, shapes and dtypes (`abstract`).
    """
    check_fits(self._directory, target)
    steps = self.steps()
    reader = _manager(self._directory, read_only=True) if steps else None
    for index in reversed(range(len(steps))):
      path = self._directory / str(steps[index])
      try:
        state = reader.restore(steps[index],
                               args=ocp.args.StandardRestore(target))
      except Exception as e:  # pylint: disable=broad-except  # Damaged files.
        logging.warning('checkpoint %s is unreadable (%s); trying the one '
                        'before it', path, first_line(e)[:200])
        continue
      self._set_aside(steps[index + 1:])
      return steps[index], state
    if steps:
      logging.warning('no readable checkpoint in %s; starting from step 0',
                      self._directory)
      self._set_aside(steps)
    return 0, None

  def _set_aside(self, unreadable: list[int]) -> None:
    """Moves unreadable checkpoints to `corrupt/` (the chief only)."""
    if not unreadable or not self._writes:
      return
    aside = self._directory / 'corrupt'
    aside.mkdir(exist_ok=True)
    for step in unreadable:
      target = aside / str(step)
      if target.exists():
        shutil.rmtree(target)
      (self._directory / str(step)).replace(target)
    logging.warning('moved unreadable checkpoints to %s', aside)
    self._manager = None

  def save(self, step: int, state: dict) -> None:
    """Saves at `step` (the chief); raises CheckpointError, earlier ones
    left intact."""
    if not self._writes:
      return
    try:
      if self._manager is None:
        self._directory.mkdir(parents=True, exist_ok=True)
        self._manager = _manager(self._directory, keep=self._keep)
      if step in self._manager.all_steps():  # A rollback's re-save.
        self._manager.delete(step)
      self._manager.save(step, args=ocp.args.StandardSave(_on_host(state)))
      self._manager.wait_until_finished()
    except (OSError, ValueError) as e:
      raise CheckpointError(
          f'cannot write a checkpoint to {self._directory}: {first_line(e)}; '
          f'free disk space or fix permissions (earlier checkpoints are '
          f'intact)') from None


def abstract(state: dict) -> dict:
  """`state`'s structure, shapes and dtypes, to restore host arrays."""
  return jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), state)


def _on_host(state: dict) -> dict:
  """This process's copy of the replicated state, as NumPy arrays."""
  return jax.tree.map(
      lambda leaf: np.asarray(leaf.addressable_shards[0].data), state)


def _manager(directory: pathlib.Path, *, keep: int | None = None,
             read_only: bool = False) -> ocp.CheckpointManager:
  """Orbax's manager of one state item per step, written synchronously
  (the loop saves at block ends; a save returns once it is complete), with
  this process as its only one (no barrier with other hosts)."""
  this_process = jax.process_index()
  return ocp.CheckpointManager(
      directory, item_handlers=ocp.StandardCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=False, read_only=read_only,
          enable_async_checkpointing=False,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              primary_host=this_process, active_processes={this_process})))


def _mismatch(saved: dict, target: dict) -> str | None:
  """What differs between the saved arrays and the target's, or None."""
  for key in KEYS:
    have, want = saved.get(key) or [], target[key]
    if len(have) != len(want):
      return f'{len(have)} {key} arrays saved, the model has {len(want)}'
    for i, (array, spec) in enumerate(zip(have, want)):
      if tuple(array.shape) != tuple(spec.shape):
        return (f'{key} array {i}: shape {tuple(array.shape)} saved, the '
                f'model has {tuple(spec.shape)}')
  return None
