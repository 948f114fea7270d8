"""Integrated Gradients' chunks on Keras's TensorFlow backend.

The explained outputs' gradients come from a `tf.GradientTape`; a chunk is
one `tf.function`, traced once for every chunk size. Under a strategy with
several replicas on this worker, each call spreads one chunk a replica over
them with `strategy.run` (on a TPU: its cores).
"""

import numpy as np
import tensorflow as tf


def compiled(chunk, forward, strategy, chunk_size: int):
  """(run, examples per run): `run(inputs, baseline, targets, *context)`,
  NumPy arrays of at most that many examples, returns their attributions
  as `chunk(gradients, ...)` computes them.

  Args:
    chunk: `IntegratedGradients._chunk`.
    forward: the explained function (see `IntegratedGradients`).
    strategy: a tf.distribute strategy, or None.
    chunk_size: examples per replica and call.
  """

  def attribute(*arrays):
    return chunk(lambda *args: _chosen_gradients(forward, *args), *arrays)

  if strategy is not None and strategy.num_replicas_in_sync > 1:
    replicas = len(strategy.extended.worker_devices)
    return _on_replicas(attribute, strategy, chunk_size), (
        chunk_size * replicas)
  traced = None

  def run(*arrays):
    # One trace for every chunk size, and no AutoGraph (no Python control
    # flow): tracing costs more than the math here.
    nonlocal traced
    if traced is None:
      traced = tf.function(attribute, autograph=False, input_signature=[
          tf.TensorSpec([None, *a.shape[1:]], a.dtype) for a in arrays])
    return traced(*arrays).numpy()

  return run, chunk_size


def _chosen_gradients(forward, points, targets, *context):
  """The gradient of output `targets[i]` of each point with respect to it."""
  with tf.GradientTape() as tape:
    tape.watch(points)
    outputs = tf.cast(forward(points, *context), tf.float32)
    chosen = tf.gather(outputs, targets, axis=1, batch_dims=1)
  return tape.gradient(chosen, points)


def _on_replicas(attribute, strategy, chunk_size: int):
  """A run over one chunk a replica, the last padded by repeating its last
  example; the padding's attributions are dropped."""
  replicated = tf.function(lambda *args: strategy.run(attribute, args),
                           autograph=False)
  replicas = len(strategy.extended.worker_devices)

  def run(*arrays):
    count = len(arrays[0])
    rows = np.minimum(np.arange(chunk_size * replicas), count - 1)
    parts = [[a[rows[r * chunk_size:(r + 1) * chunk_size]]
              for r in range(replicas)] for a in arrays]
    per_replica = [strategy.experimental_distribute_values_from_function(
        lambda context, part=part: part[
            context.replica_id_in_sync_group % replicas]) for part in parts]
    results = strategy.experimental_local_results(replicated(*per_replica))
    return np.concatenate([r.numpy() for r in results])[:count]

  return run
