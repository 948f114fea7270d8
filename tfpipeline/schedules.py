"""The learning rate of every step: a constant or a Keras schedule, with an
optional linear warm-up in front of either.

Keras's own warm-up belongs to CosineDecay alone; `WarmUp` puts one in front
of any rate, written with `keras.ops` so that both backends' engines compute
it inside their compiled steps from the optimizer's step counter.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package='tfpipeline')
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
  """`rate` x (step + 1) / `warmup_steps` for the first `warmup_steps`
  steps (the first step already moves), then `after` (a schedule, or None
  for the constant `rate`) from its own step 0."""

  def __init__(self, rate: float, warmup_steps: int, after=None):
    super().__init__()
    self.rate, self.warmup_steps, self.after = rate, warmup_steps, after

  def __call__(self, step):
    step = ops.cast(step, 'float32')
    warming = self.rate * (step + 1.0) / self.warmup_steps
    if self.after is None:
      after = ops.convert_to_tensor(self.rate, 'float32')
    else:
      after = ops.cast(self.after(ops.maximum(step - self.warmup_steps, 0.0)),
                       'float32')
    return ops.where(step < self.warmup_steps, warming, after)

  def get_config(self) -> dict:
    return {'rate': self.rate, 'warmup_steps': self.warmup_steps,
            'after': (keras.optimizers.schedules.serialize(self.after)
                      if self.after is not None else None)}

  @classmethod
  def from_config(cls, config):
    after = config['after']
    return cls(config['rate'], config['warmup_steps'],
               keras.optimizers.schedules.deserialize(after)
               if after is not None else None)


def learning_rate(optimizer_config):
  """A float, or a Keras schedule of the training step."""
  rate = optimizer_config.learning_rate
  schedule = None
  if optimizer_config.schedule == 'exponential_decay':
    schedule = keras.optimizers.schedules.ExponentialDecay(
        rate, optimizer_config.decay_steps, optimizer_config.decay_rate)
  elif optimizer_config.schedule == 'cosine_decay':
    schedule = keras.optimizers.schedules.CosineDecay(
        rate, optimizer_config.decay_steps)
  if optimizer_config.warmup_steps:
    return WarmUp(rate, optimizer_config.warmup_steps, schedule)
  return rate if schedule is None else schedule
