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
device.

The noise is drawn from (noise key, step). The key is 128 bits from the
operating system's randomness, drawn when a DP run starts and kept beside
its checkpoints (`NOISE_KEY_FILE`, mode 0600) so that a resumed run draws
the same noise; it is never derived from `train.seed`, which the config and
report publish: with a known key, training would be a deterministic function
of the data and the guarantee void. Regularisation losses (`model.losses`)
depend on the weights only: their gradient is added after the noise,
unclipped, as without DP.
"""

import dataclasses
import os
import pathlib
import secrets

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfpipeline import atomic_files
from tfpipeline import passes
from tfpipeline.errors import UserError

# Beside the checkpoints; as secret as they are (README, "Privacy").
NOISE_KEY_FILE = 'dp_noise_key'


@dataclasses.dataclass(frozen=True)
class DpSgd:
  """DP-SGD settings for one run.

  Attributes:
    l2_norm_clip: C, the largest L2 norm an example's gradient keeps.
    noise_multiplier: sigma; the noise added to the summed gradient has
      standard deviation sigma x C.
    noise_key: two int64s, secret; step t's noise is drawn from
      (noise_key, t). Never printed (repr=False).
  """
  l2_norm_clip: float
  noise_multiplier: float
  noise_key: tuple[int, int] = dataclasses.field(repr=False)

  @classmethod
  def for_run(cls, run) -> 'DpSgd | None':
    """The settings of a `RunContext`'s privacy config with its secret noise
    key (see `noise_key`), or None without privacy.dp."""
    privacy = run.config.privacy
    if not privacy.dp:
      return None
    return cls(privacy.l2_norm_clip, privacy.noise_multiplier, noise_key(
        run.model_dir / 'checkpoints', run.output_dir / 'checkpoints'))


def noise_key(read_from: pathlib.Path, write_to: pathlib.Path) -> tuple[int, int]:
  """The run's secret noise key: `read_from/NOISE_KEY_FILE` if a run left
  one there, else 128 new bits from the operating system, written to
  `write_to/NOISE_KEY_FILE` (mode 0600) before any step uses them.

  A multi-worker non-chief reads the chief's key when the chief has written
  it; otherwise it draws its own, which is harmless: only the chief's first
  replica adds noise (see `gradients`).
  """
  path = read_from / NOISE_KEY_FILE
  if path.is_file():
    text = path.read_text().strip()
    try:
      key = bytes.fromhex(text)
    except ValueError:
      key = b''
    if len(key) != 16:
      raise UserError(f'{path} is not a DP noise key (32 hex digits); '
                      f'restore it from a backup, or use a new --model_dir')
    return _as_int64s(key)
  key = secrets.token_bytes(16)
  write_to.mkdir(parents=True, exist_ok=True)
  with atomic_files.replacing(write_to / NOISE_KEY_FILE) as tmp:
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, 'w') as f:
      f.write(key.hex() + '\n')
  if any(path.name != NOISE_KEY_FILE for path in write_to.iterdir()):
    logging.warning('%s had checkpoints but no %s: the resumed steps draw '
                    'new noise (the privacy guarantee holds; the run will '
                    'not equal an uninterrupted one)', write_to,
                    NOISE_KEY_FILE)
  return _as_int64s(key)


def _as_int64s(key: bytes) -> tuple[int, int]:
  return (int.from_bytes(key[:8], 'little', signed=True),
          int.from_bytes(key[8:], 'little', signed=True))


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
              global_batch_size: int, step,
              micro_batches: int = 1) -> tuple[tf.Tensor, tf.Tensor, list]:
  """One replica's share of a DP-SGD step.

  Args:
    model: the model whose trainable variables are differentiated.
    loss_fn: per-example loss `(y_true, y_pred) -> (batch,)`.
    features, labels: this replica's examples.
    dp: clip, noise multiplier and noise key.
    global_batch_size: examples over all replicas; the sum is divided by it.
    step: the optimizer's step (an integer tensor), which keys the noise.
    micro_batches: k > 1 sums the clipped per-example gradients over k
      passes of the batch in a loop, one pass's in memory at a time
      (gradient accumulation, `passes`); the noise is added once, to the
      step's sum, as without.

  Returns:
    Each example's loss; the regularisation loss (0 without regularizers);
    and, for every trainable variable, (sum of clipped gradients + noise on
    replica 0) / global_batch_size + this replica's share of the
    regularisation gradient: summed over replicas, the DP-SGD gradient.
  """
  losses, summed = _clipped_sum(model, loss_fn, features, labels,
                                dp.l2_norm_clip, micro_batches)
  replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
  first = tf.cast(tf.equal(replica_id, 0), tf.float32)
  key = tf.constant(dp.noise_key, tf.int64)
  # Steps offset the key's second word: each step's draws use their own
  # Philox counters, and all 128 bits of the key stay secret.
  noise = _standard_normal_like(summed, key + tf.stack(
      [tf.constant(0, tf.int64), tf.cast(step, tf.int64)]))
  scale = first * dp.noise_multiplier * dp.l2_norm_clip
  penalty, penalty_gradients = _regularization(model)
  return losses, penalty, [(s + scale * n) / global_batch_size + p
                           for s, n, p in zip(summed, noise,
                                              penalty_gradients)]


def _clipped_sum(model: keras.Model, loss_fn, features, labels,
                 l2_norm_clip: float, micro_batches: int):
  """Each example's loss, and the sum of the examples' clipped gradients,
  over `micro_batches` passes."""

  def one_pass(features, labels):
    losses, per_example = per_example_gradients(model, loss_fn, features,
                                                labels)
    return losses, [tf.reduce_sum(g, axis=0)
                    for g in clip(per_example, l2_norm_clip)]

  if micro_batches == 1:
    return one_pass(features, labels)
  features, labels = passes.split((features, labels), micro_batches)

  def next_pass(i, losses, summed):
    pass_losses, pass_summed = one_pass(features[i], labels[i])
    return i + 1, losses.write(i, tf.cast(pass_losses, tf.float32)), [
        total + part for total, part in zip(summed, pass_summed)]

  # One pass at a time, as `tf_engine.loss_and_gradients`.
  _, losses, summed = tf.while_loop(
      lambda i, losses, summed: i < micro_batches, next_pass,
      (tf.constant(0), tf.TensorArray(tf.float32, size=micro_batches),
       [tf.zeros_like(v) for v in model.trainable_variables]),
      parallel_iterations=1)
  return tf.reshape(losses.stack(), [-1]), summed


def _regularization(model: keras.Model) -> tuple[tf.Tensor, list]:
  """The weights' regularisation loss and this replica's share of its
  gradient (divided by the replicas, whose gradients are summed). It
  depends on no example, so it needs neither clipping nor noise."""
  variables = model.trainable_variables
  if not model.losses:
    return tf.constant(0.0), [tf.zeros_like(v) for v in variables]
  with tf.GradientTape() as tape:
    penalty = tf.add_n(model.losses)
    share = tf.nn.scale_regularization_loss(penalty)
  return penalty, [tf.zeros_like(v) if g is None else g
                   for v, g in zip(variables, tape.gradient(share, variables))]


def refused_layers(model: keras.Model) -> list[str]:
  """Layers DP-SGD cannot privatise, each with the reason.

  Those whose non-trainable weights a training-mode call changes
  (BatchNormalization's moving mean and variance: training statistics,
  published without noise; per-example gradients would also see batches of
  one), and those with an activity regularizer (a loss on training
  activations, outside the per-example clipping). Found by calling `model`
  once on a small batch: pass a throwaway model, whose state this changes.
  """
  inputs = np.random.default_rng(0).uniform(0, 2, (4, *model.input_shape[1:]))
  inputs = inputs.astype(model.inputs[0].dtype)
  layers = [(layer, [keras.ops.convert_to_numpy(w)
                     for w in layer.non_trainable_weights])
            for layer in model.layers]
  model(inputs, training=True)
  refused = []
  for layer, before in layers:
    name = f'{layer.name!r} ({type(layer).__name__})'
    changed = [w.name for w, old in zip(layer.non_trainable_weights, before)
               if not np.array_equal(keras.ops.convert_to_numpy(w), old)]
    if changed:
      refused.append(f'{name} updates {", ".join(changed)} from training '
                     f'batches (LayerNormalization or GroupNormalization '
                     f'keep no batch statistics)')
    elif getattr(layer, 'activity_regularizer', None) is not None:
      refused.append(f'{name} has an activity_regularizer, a loss on '
                     f'training activations')
  return refused


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
