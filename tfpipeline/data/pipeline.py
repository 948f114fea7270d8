"""tf.data input pipelines built per `tf.distribute.InputContext`.

Each epoch is a stateless random permutation of the training rows, drawn
from (seed, epoch) and cut into global batches of row indices (the last
partial batch is dropped); one vectorised gather per batch then reads the
rows. Batching indices rather than examples keeps the pipeline far ahead of
small models (element-wise batching of tiny rows was the bottleneck, see
BUILD_NOTES.md), and makes the examples of step s a pure function of
(seed, s): the same on every pipeline, and reproducible after a restart.

Every input pipeline cuts the same global batches and keeps its own slice,
so one device, MirroredStrategy and multi-worker runs see identical global
batches: what makes their weights equal. Sharding is done here, explicitly,
so tf.data's auto-sharding is turned off.
"""

from typing import Callable

import tensorflow as tf

from tfpipeline.data.sources import Split

DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.OFF)
  options.deterministic = True
  return options


def global_batch_indices(num_rows: int, global_batch_size: int, seed: int,
                         steps_per_block: int | None = None,
                         start_step: int = 0) -> tf.data.Dataset:
  """Row indices of every global batch from `start_step` on, endlessly.

  Elements are (global_batch_size,) index vectors, or with `steps_per_block`
  (k, global_batch_size) blocks of k consecutive steps that never straddle
  an epoch (an epoch's last block may be shorter). Starting at step s costs
  nothing: step s's batch depends only on (seed, s).
  """
  steps_per_epoch = num_rows // global_batch_size
  used = steps_per_epoch * global_batch_size
  first_epoch, first_offset = divmod(start_step, steps_per_epoch)

  def epoch_batches(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(num_rows, dtype=tf.int64),
        seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    batches = tf.reshape(order[:used], [steps_per_epoch, global_batch_size])
    batches = batches[tf.where(epoch == first_epoch, first_offset, 0):]
    if not steps_per_block:
      return tf.data.Dataset.from_tensor_slices(batches)
    # Blocks cut by reshaping, not by batching step elements one by one.
    full = tf.shape(batches)[0] // steps_per_block * steps_per_block
    blocks = tf.data.Dataset.from_tensor_slices(tf.reshape(
        batches[:full], [-1, steps_per_block, global_batch_size]))
    rest = tf.data.Dataset.from_tensors(batches[full:]).filter(
        lambda rows: tf.shape(rows)[0] > 0)
    return blocks.concatenate(rest)

  return tf.data.Dataset.counter(start=first_epoch).flat_map(epoch_batches)


def training_dataset_fn(split: Split, global_batch_size: int, *, seed: int,
                        steps_per_block: int | None = None,
                        start_step: int = 0) -> DatasetFn:
  """Endless training batches for one input pipeline.

  Args:
    split: the training split (features and labels in memory).
    global_batch_size: examples per step across all replicas.
    seed: the shuffling seed; the order repeats exactly for the same seed.
    steps_per_block: None for one batch per element (Keras fit); k for
      blocks of k steps' batches, (k, per_replica_batch, ...), so that a
      device call of k steps reads its input once.
    start_step: the first step's batch (resuming mid-epoch).

  Returns:
    A function of an InputContext giving per-replica elements, as
    `strategy.distribute_datasets_from_function` expects.
  """

  def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
    per_replica = context.get_per_replica_batch_size(global_batch_size)
    per_pipeline = global_batch_size // context.num_input_pipelines
    local_replicas = per_pipeline // per_replica
    start = context.input_pipeline_id * per_pipeline
    features = tf.constant(split.features)
    labels = tf.constant(split.labels)
    indices = global_batch_indices(len(split), global_batch_size, seed,
                                   steps_per_block, start_step)

    def local_slices(rows):
      """This pipeline's columns, then one element per local replica."""
      rows = rows[..., start:start + per_pipeline]
      if steps_per_block:  # (k, R * b) -> (R, k, b)
        return tf.transpose(tf.reshape(
            rows, [-1, local_replicas, per_replica]), [1, 0, 2])
      return tf.reshape(rows, [local_replicas, per_replica])

    indices = indices.map(local_slices).unbatch()
    dataset = indices.map(
        lambda rows: (tf.gather(features, rows), tf.gather(labels, rows)),
        num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.with_options(_options()).prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def evaluation_dataset(split: Split, batch_size: int) -> tf.data.Dataset:
  """Features of a split in order, every example once (last batch partial)."""
  dataset = tf.data.Dataset.from_tensor_slices(split.features)
  return dataset.batch(batch_size).with_options(_options()).prefetch(
      tf.data.AUTOTUNE)
