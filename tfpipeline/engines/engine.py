"""The engine interface: what the training loop needs of a backend.

An engine owns the training state (weights, optimizer, checkpoints, DP-SGD
noise, where the input stands) and runs blocks of steps on the devices.
`trainer.train` drives any engine block by block and does the rest once:
logging, validation, checkpoint cadence, NaN rollback and preemption. The
loop sees blocks and their results only, never the state, so an engine on
another backend (JAX: `stateless_call` under `jax.jit`) is one new module.
"""

import abc
import dataclasses
import pathlib
from typing import Callable

# Called within a long block: (global step, loss so far).
Progress = Callable[[int, float], None]


@dataclasses.dataclass(frozen=True)
class BlockResult:
  """What one block of steps did.

  Attributes:
    steps: the steps it took.
    loss: their mean loss (NaN when `non_finite_at` is set).
    non_finite_at: None, or the step, counted from 1 within the block, by
      which the loss or the weights became NaN or Inf.
    waited_s: seconds blocked on input, or None where the engine cannot
      time it.
  """
  steps: int
  loss: float
  non_finite_at: int | None = None
  waited_s: float | None = None


class Engine(abc.ABC):
  """Builds or restores the training state of one run and trains it.

  Construction builds the state for a `RunContext` and a built model and
  restores the newest checkpoint: `start_step` is its step (0: none).
  """

  # Save after every block whatever train.checkpoint_every_steps says: an
  # engine that can resume only at its blocks' ends (Keras fit: epochs).
  checkpoint_every_block = False
  start_step: int
  model: object  # The Keras model it trains.

  # Before a resume writes anything, the runner asks the engine's class about
  # the checkpoints it left (their format is the engine's business).
  @classmethod
  @abc.abstractmethod
  def saved_steps(cls, directory: pathlib.Path) -> list[int]:
    """The steps of the checkpoints in `directory` ([] if none)."""

  @classmethod
  @abc.abstractmethod
  def check_checkpoint_fits(cls, directory: pathlib.Path, config, splits,
                            inputs) -> None:
    """Raises UserError unless the newest readable checkpoint in
    `directory` fits the model and optimizer `config` builds."""

  @abc.abstractmethod
  def run_block(self, progress: Progress) -> BlockResult:
    """Runs the next block of steps from where the state stands."""

  @abc.abstractmethod
  def save(self, step: int) -> None:
    """Checkpoints the state at `step`; raises CheckpointError."""

  @abc.abstractmethod
  def restore(self) -> int:
    """Restores the newest checkpoint; returns its step, where the next
    block starts."""

  @abc.abstractmethod
  def has_checkpoint(self) -> bool:
    """Whether there is a checkpoint to restore."""

  def trained_model(self):
    """The Keras model holding the state's weights (an engine that trains a
    copy of them writes them back)."""
    return self.model

  def load_weights(self, path) -> None:
    """Sets the model's weights to those in `path` (a Keras weights file:
    train.keep_best's best epoch); the optimizer's state stays."""
    self.model.load_weights(path)

  @property
  @abc.abstractmethod
  def learning_rate(self) -> float:
    """The optimizer's current learning rate."""

  @learning_rate.setter
  @abc.abstractmethod
  def learning_rate(self, rate: float) -> None:
    """Sets the optimizer's learning rate (a rollback halves it)."""

  @abc.abstractmethod
  def preemption_watch(self):
    """A context manager whose `check(save, step)` saves and raises
    Preempted once the run is asked to stop (see `checkpointing`)."""

  @abc.abstractmethod
  def evaluator(self):
    """An `evaluation.Evaluator`-like object over the model's weights."""
