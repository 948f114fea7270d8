"""tf.data input pipelines built per `tf.distribute.InputContext`.

Training batches are cut from one seeded, shuffled stream of global batches
that every input pipeline builds alike; pipeline i keeps the i-th slice of
each global batch. So the examples of step s are the same whatever the
number of workers and replicas: one device, MirroredStrategy and multi-worker
runs see identical global batches, which is what makes their weights equal.
Sharding is done here, explicitly, so tf.data's auto-sharding is turned off.
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


def training_dataset_fn(split: Split, global_batch_size: int, *, seed: int,
                        shuffle_buffer: int = 0) -> DatasetFn:
  """Infinite, reshuffled-per-epoch training batches for one input pipeline.

  Args:
    split: the training split (features and labels in memory).
    global_batch_size: examples per step across all replicas.
    seed: shuffle seed; the order repeats exactly for the same seed.
    shuffle_buffer: 0 shuffles the whole split (uniform), else a window.

  Returns:
    A function of an InputContext giving per-replica batches, as
    `strategy.distribute_datasets_from_function` expects.
  """
  buffer = shuffle_buffer or len(split)

  def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
    per_replica = context.get_per_replica_batch_size(global_batch_size)
    pipelines, index = context.num_input_pipelines, context.input_pipeline_id
    per_pipeline = global_batch_size // pipelines
    dataset = tf.data.Dataset.from_tensor_slices((split.features, split.labels))
    dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.repeat().batch(global_batch_size, drop_remainder=True)
    if pipelines > 1:
      start = index * per_pipeline
      dataset = dataset.map(
          lambda x, y: (x[start:start + per_pipeline],
                        y[start:start + per_pipeline]),
          num_parallel_calls=tf.data.AUTOTUNE)
    if per_replica != per_pipeline:
      dataset = dataset.rebatch(per_replica, drop_remainder=True)
    return dataset.with_options(_options()).prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def evaluation_dataset(split: Split, batch_size: int) -> tf.data.Dataset:
  """Features of a split in order, every example once (last batch partial)."""
  dataset = tf.data.Dataset.from_tensor_slices(split.features)
  return dataset.batch(batch_size).with_options(_options()).prefetch(
      tf.data.AUTOTUNE)
