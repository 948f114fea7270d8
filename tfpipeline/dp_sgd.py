"""DP-SGD gradients (Abadi et al. 2016): clip each example, add noise.

`tensorflow-privacy` does not import on TF 2.21 (it needs Keras 2
optimizers), so the gradient step is written here, following its
vectorized approach: per-example gradients with `tf.vectorized_map`, each
clipped to L2 norm C, summed, and Gaussian noise of standard deviation
sigma x C added to the sum. The privacy accounting uses dp-accounting
(`tfpipeline.report.privacy`).

Under a strategy with several replicas each replica sums its clipped
examples and only replica 0 adds the noise, so the all-reduced sum carries
exactly one draw of N(0, (sigma C)^2) per coordinate: the same step as on one
device. The noise is drawn from (seed, step), so runs and resumes repeat.
"""

import dataclasses

import keras
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class DpSgd:
  """DP-SGD settings for one run.

  Attributes:
    l2_norm_clip: C, the largest L2 norm an example's gradient keeps.
    noise_multiplier: sigma; the noise added to the summed gradient has
      standard deviation sigma x C.
    seed: the run's seed; step t's noise is drawn from (seed, t).
  """
  l2_norm_clip: float
  noise_multiplier: float
  seed: int

  @classmethod
  def from_config(cls, config) -> 'DpSgd | None':
    """The run's DP-SGD settings, or None when `privacy.dp` is off."""
    if not config.privacy.dp:
      return None
    return cls(config.privacy.l2_norm_clip, config.privacy.noise_multiplier,
               config.train.seed)


def per_example_gradients(model: keras.Model, loss_fn, features, labels):
  """Each example's loss (n,) and gradients ([n, *variable.shape] each)."""
  variables = model.trainable_variables

  def one_example(example):
    x, y = example
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(loss_fn(y[None], model(x[None], training=True)))
    return loss, tape.gradient(loss, variables)

  return tf.vectorized_map(one_example, (features, labels))


def clip(gradients: list[tf.Tensor], l2_norm_clip: float) -> list[tf.Tensor]:
  """Per-example gradients scaled so each example's global norm <= C."""
  squares = [tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]),
                           axis=1) for g in gradients]
  norms = tf.sqrt(tf.add_n(squares))
  scale = tf.minimum(1.0, l2_norm_clip / tf.maximum(norms, 1e-12))
  return [g * tf.reshape(scale, [-1] + [1] * (g.shape.rank - 1))
          for g in gradients]


def gradients(model: keras.Model, loss_fn, features, labels, dp: DpSgd, *,
              global_batch_size: int, step) -> tuple[tf.Tensor, list]:
  """One replica's share of a DP-SGD step.

  Args:
    model: the model whose trainable variables are differentiated.
    loss_fn: per-example loss `(y_true, y_pred) -> (batch,)`.
    features, labels: this replica's examples.
    dp: clip, noise multiplier and seed.
    global_batch_size: examples over all replicas; the sum is divided by it.
    step: the optimizer's step (an integer tensor), which keys the noise.

  Returns:
    Each example's loss, and (sum of clipped gradients + noise on replica 0)
    / global_batch_size for every trainable variable; summed over replicas,
    that is the DP-SGD gradient.
  """
  losses, per_example = per_example_gradients(model, loss_fn, features, labels)
  summed = [tf.reduce_sum(g, axis=0) for g in clip(per_example,
                                                  dp.l2_norm_clip)]
  replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
  first = tf.cast(tf.equal(replica_id, 0), tf.float32)
  noise = _standard_normal_like(
      summed, tf.stack([tf.cast(dp.seed, tf.int64), tf.cast(step, tf.int64)]))
  scale = first * dp.noise_multiplier * dp.l2_norm_clip
  return losses, [(s + scale * n) / global_batch_size
                  for s, n in zip(summed, noise)]


@tf.function(jit_compile=True)
def _standard_normal_like(tensors: list[tf.Tensor], seed) -> list[tf.Tensor]:
  """N(0, 1) draws shaped like `tensors`, from `seed` (2 int64s).

  Always compiled by XLA: TensorFlow's and XLA's kernels draw different
  numbers from the same seed, so this keeps the noise identical in the fused
  XLA loop, the per-step loop and Keras fit.
  """
  seeds = tf.random.experimental.stateless_split(seed, num=len(tensors))
  return [tf.random.stateless_normal(tf.shape(t), seeds[i], dtype=t.dtype)
          for i, t in enumerate(tensors)]
