"""What one run carries from loading its data to its report.

`runner.run` builds one `RunContext` once the data is loaded and checked;
training, export and the report read what they need from it instead of
passing the config, directories, strategy and data along one by one.
"""

import dataclasses
import pathlib
from typing import Any

from tfpipeline import config as config_lib


@dataclasses.dataclass(frozen=True)
class RunContext:
  """One run's fixed facts.

  Attributes:
    config: the resolved config (columns named, noise calibrated).
    model_dir: the run's directory; checkpoints are read from it.
    output_dir: where this process writes: `model_dir` for the chief, a
      scratch directory for the other workers.
    strategy: the tf.distribute strategy the run trains under.
    splits: the loaded data splits.
    inputs: the splits as model inputs (`pipeline.Inputs`).
    engine: the --engine name (see `engines`).
    chief: whether this process writes `model_dir` and the report.
    identity: the run's data and engine identity (`run_identity.of`).
    class_weights: train.class_weight resolved, one weight per class id
      (`class_weights.resolve`), or None.
  """
  config: Any
  model_dir: pathlib.Path
  output_dir: pathlib.Path
  strategy: Any
  splits: Any
  inputs: Any
  engine: str
  chief: bool
  identity: dict
  class_weights: tuple[float, ...] | None

  @classmethod
  def own_loop(cls, config, directory: pathlib.Path, strategy, splits,
               inputs) -> 'RunContext':
    """A single process's --engine=tfpipeline run in `directory` (no
    identity): what tests and benchmarks drive an engine through."""
    from tfpipeline import class_weights  # pylint: disable=g-import-not-at-top
    return cls(config=config, model_dir=directory, output_dir=directory,
               strategy=strategy, splits=splits, inputs=inputs,
               engine='tfpipeline', chief=True, identity={},
               class_weights=class_weights.resolve(config, splits))

  @property
  def steps_per_epoch(self) -> int:
    return config_lib.steps_per_epoch(self.config, len(self.splits.train))

  @property
  def total_steps(self) -> int:
    return config_lib.total_steps(self.config, len(self.splits.train))


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained model and how this process trained it.

  Attributes:
    model: the trained Keras model.
    start_step: the step this process resumed from (0 for a fresh run).
    seconds: wall time of the training loop in this process.
    end_step: the last step trained (before the last epoch when early
      stopping ended the run).
    training: how training ended and which weights the model holds
      (`epoch_end.EpochEnd.summary`).
  """
  model: Any
  start_step: int
  seconds: float
  end_step: int
  training: dict
