"""A profile of some training steps (train.profile_steps) for TensorBoard's
profile plugin: TensorFlow's profiler, or JAX's on the JAX backend, writing
`tensorboard/plugins/profile/RUN/*.xplane.pb` (`pip install
tensorboard-plugin-profile`, then `tensorboard --logdir MODEL_DIR/tensorboard`
and its Profile tab). A trace starts and stops between device calls, so it
holds whole blocks: from the first block boundary at or after `start` to the
first at or after `stop`. Only the chief profiles; the steps compute as
without it.
"""

from absl import logging


class Profiler:
  """Starts and stops the trace around the run's profiled steps."""

  def __init__(self, run):
    self._start, self._stop = run.config.train.profile_steps
    self._on = run.chief and self._stop > 0
    self._jax = run.config.train.backend == 'jax'
    self._directory = run.output_dir / 'tensorboard'
    self._tracing = False

  def before_block(self, step: int) -> None:
    """Starts the trace if `step`, a block's start, is in the profile."""
    if self._on and not self._tracing and self._start <= step < self._stop:
      logging.info('profiling from step %d to tensorboard/plugins/profile',
                   step)
      if self._jax:
        import jax  # pylint: disable=g-import-not-at-top
        jax.profiler.start_trace(str(self._directory))
      else:
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        tf.profiler.experimental.start(str(self._directory))
      self._tracing = True

  def after_block(self, step: int, *, last: bool = False) -> None:
    """Stops the trace once `step` reaches the profile's stop, or the
    training's `last` block ran."""
    if self._tracing and (step >= self._stop or last):
      if self._jax:
        import jax  # pylint: disable=g-import-not-at-top
        jax.profiler.stop_trace()
      else:
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        tf.profiler.experimental.stop()
      self._tracing = False
      logging.info('profiled to step %d', step)
