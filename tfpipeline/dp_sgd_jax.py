"""DP-SGD gradients on Keras's JAX backend: `dp_sgd`'s step, in JAX.

Per-example gradients by `jax.vmap(jax.grad(...))` over the global batch,
each clipped to L2 norm C and summed, then Gaussian noise of standard
deviation sigma x C added once (the engine computes the whole global batch
in one program, so there is one draw whatever the devices), divided by the
batch. The weights' regularisation gradient is added after the noise,
unclipped, as in `dp_sgd`.

The noise of step t comes from the run's secret 128-bit key (`dp_sgd.noise_key`)
and t. JAX's default generator (threefry) takes 64-bit keys, so each half of
the key draws its own N(0, 1) numbers and the noise is their sum over sqrt(2):
still N(0, 1), and unknown without all 128 bits.
"""

import jax
import jax.numpy as jnp

from tfpipeline import passes
from tfpipeline.dp_sgd import DpSgd


def gradients(model, loss_fn, trainable, non_trainable, features, labels,
              dp: DpSgd, *, step, micro_batches: int = 1):
  """One DP-SGD step's gradients.

  Args:
    model: the Keras model (its `stateless_call`).
    loss_fn: per-example loss `(y_true, y_pred) -> (batch,)`.
    trainable, non_trainable: the model's variable values.
    features, labels: the global batch.
    dp: clip, noise multiplier and noise key.
    step: the optimizer's step (an integer array), which keys the noise.
    micro_batches: k > 1 sums the clipped per-example gradients over k
      passes of the batch in a `lax.scan` (gradient accumulation,
      `passes`); the noise is added once, to the step's sum, as without.

  Returns:
    (loss, non_trainable, gradients): the mean per-example loss plus the
    regularisation loss, the model's state after the step's call, and the
    DP-SGD gradient of every trainable variable.
  """

  def example_loss(trainable, x, y):
    predictions, _ = model.stateless_call(trainable, non_trainable, x[None],
                                          training=True)
    return jnp.sum(loss_fn(y[None], predictions).astype('float32'))

  def clipped_sum(features, labels):
    losses, per_example = jax.vmap(jax.value_and_grad(example_loss),
                                   in_axes=(None, 0, 0))(trainable, features,
                                                         labels)
    return losses, _clipped_sum(per_example, dp.l2_norm_clip)

  if micro_batches == 1:
    losses, summed = clipped_sum(features, labels)
  else:
    def one_pass(total, part):
      losses, summed = clipped_sum(*part)
      return jax.tree.map(jnp.add, total, summed), losses

    summed, losses = jax.lax.scan(
        one_pass, [jnp.zeros_like(value) for value in trainable],
        passes.split((features, labels), micro_batches))
  noise = _standard_normal_like(summed, dp.noise_key, step)
  batch = features.shape[0]
  scale = dp.noise_multiplier * dp.l2_norm_clip
  penalty, penalty_gradients, non_trainable = _regularization(
      model, trainable, non_trainable, features[:1])
  return (jnp.mean(losses) + penalty, non_trainable,
          [(s + scale * n) / batch + p
           for s, n, p in zip(summed, noise, penalty_gradients)])


def _clipped_sum(per_example: list, l2_norm_clip: float) -> list:
  """The sum over examples of each gradient scaled to global norm <= C."""
  squares = sum(jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=1)
                for g in per_example)
  scale = jnp.minimum(1.0, l2_norm_clip / jnp.maximum(jnp.sqrt(squares),
                                                      1e-12))
  return [jnp.tensordot(scale, g, axes=1) for g in per_example]


def _standard_normal_like(arrays: list, noise_key: tuple[int, int],
                          step) -> list:
  """N(0, 1) draws shaped like `arrays`, from the 128-bit key and `step`."""
  halves = [jax.random.fold_in(jax.random.wrap_key_data(
      jnp.array(_uint32_words(word), jnp.uint32), impl='threefry2x32'), step)
             for word in noise_key]
  draws = [jax.random.split(half, len(arrays)) for half in halves]
  return [(jax.random.normal(draws[0][i], a.shape, a.dtype) +
           jax.random.normal(draws[1][i], a.shape, a.dtype)) / jnp.sqrt(2.0)
          for i, a in enumerate(arrays)]


def _uint32_words(word: int) -> tuple[int, int]:
  """A signed 64-bit integer as two unsigned 32-bit words."""
  unsigned = word % (1 << 64)
  return unsigned >> 32, unsigned & 0xFFFFFFFF


def _regularization(model, trainable, non_trainable, example):
  """The weights' regularisation loss, its gradient and the model's state
  after one training-mode call (which advances seed generators once)."""

  def penalty(trainable):
    _, state, losses = model.stateless_call(
        trainable, non_trainable, example, training=True, return_losses=True)
    return sum(loss.astype('float32') for loss in losses) if losses else (
        jnp.zeros((), jnp.float32)), state

  (value, state), grads = jax.value_and_grad(penalty, has_aux=True)(trainable)
  return value, grads, state
