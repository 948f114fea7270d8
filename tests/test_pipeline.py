"""tfpipeline.data.pipeline: batches per InputContext, seeded order."""

import numpy as np
import pytest
import tensorflow as tf

from tfpipeline.data import pipeline
from tfpipeline.data.sources import Split

pytestmark = pytest.mark.smoke  # Also run on TF 2.20 in CI.


def _split(rows=100):
  x = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
  return Split.of(x, x[:, :1] * 10)


def _batches(dataset, count):
  return [tuple(t.numpy() for t in b) for b in dataset.take(count)]


def test_one_pipeline_gives_seeded_global_batches():
  fn = pipeline.training_dataset_fn(_split(), 32, seed=3)
  first = _batches(fn(tf.distribute.InputContext()), 6)
  again = _batches(fn(tf.distribute.InputContext()), 6)
  assert all(x.shape == (32, 2) for x, _ in first)
  for (x1, y1), (x2, y2) in zip(first, again):
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, x1[:, :1] * 10)
  # Epoch 1 (the first 96 of 100 shuffled rows) has no repeats.
  epoch = np.concatenate([x[:, 0] for x, _ in first[:3]])
  assert len(np.unique(epoch)) == 96
  other_seed = _batches(pipeline.training_dataset_fn(_split(), 32, seed=4)(
      tf.distribute.InputContext()), 1)
  assert not np.array_equal(other_seed[0][0], first[0][0])


def test_class_ids_are_one_column_wide_for_keras():
  """Keras fit on TensorFlow refuses sparse labels of shape (batch, None)."""
  x = np.zeros((64, 4, 4, 3), np.uint8)
  examples = pipeline.Examples(Split.of(x, np.arange(64) % 3),
                               sparse_labels=True)
  dataset = pipeline.training_dataset_fn(examples, 32, seed=0)(
      tf.distribute.InputContext())
  assert dataset.element_spec[1] == tf.TensorSpec((32, 1), tf.int32)


def test_pipelines_and_replicas_split_the_same_global_batch():
  fn = pipeline.training_dataset_fn(_split(), 32, seed=3)
  whole = _batches(fn(tf.distribute.InputContext()), 4)
  # Two workers with two replicas each: per-replica batches of 8.
  parts = [_batches(fn(tf.distribute.InputContext(
      num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=4)), 8)
           for i in range(2)]
  for step, (x, _) in enumerate(whole):
    pieces = [parts[worker][2 * step + replica][0]
              for worker in range(2) for replica in range(2)]
    assert all(p.shape == (8, 2) for p in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces), x)


def test_evaluation_dataset_keeps_order_and_every_row():
  split = _split(70)
  batches = list(pipeline.evaluation_dataset(split, 32).as_numpy_iterator())
  assert [len(b['features']) for b in batches] == [32, 32, 6]
  arrays = split.take()
  for key, want in (('features', arrays['features']),
                    ('labels', arrays['labels']), ('index', np.arange(70))):
    np.testing.assert_array_equal(
        np.concatenate([b[key] for b in batches]), want)


def test_blocks_hold_consecutive_steps_and_end_with_the_epoch():
  split = _split(100)  # 3 steps of 32 per epoch
  steps = _batches(pipeline.training_dataset_fn(split, 32, seed=5)(
      tf.distribute.InputContext()), 9)
  blocks = _batches(pipeline.training_dataset_fn(
      split, 32, seed=5, steps_per_block=2)(tf.distribute.InputContext()), 6)
  # One shape for every block: an epoch's last is padded, its steps say so.
  assert [x.shape for x, _, _ in blocks] == [(2, 32, 2)] * 6
  assert [int(n) for _, _, n in blocks] == [2, 1, 2, 1, 2, 1]
  np.testing.assert_array_equal(
      np.concatenate([x[:n] for x, _, n in blocks]),
      np.stack([x for x, _ in steps]))
  for first, last in zip(blocks[0::2], blocks[1::2]):
    # The padding repeats the epoch's first step: rows read, not trained.
    np.testing.assert_array_equal(last[0][1], first[0][0])


def test_blocks_per_replica_hold_that_replicas_slice_of_each_step():
  split = _split(100)
  steps = _batches(pipeline.training_dataset_fn(split, 32, seed=5)(
      tf.distribute.InputContext()), 2)
  # One pipeline, two local replicas: elements alternate replica 0, 1.
  replica_blocks = _batches(pipeline.training_dataset_fn(
      split, 32, seed=5, steps_per_block=2)(tf.distribute.InputContext(
          num_replicas_in_sync=2)), 2)
  for step in range(2):
    for replica in range(2):
      np.testing.assert_array_equal(
          replica_blocks[replica][0][step],
          steps[step][0][16 * replica:16 * (replica + 1)])


def test_starting_mid_epoch_continues_at_the_exact_next_batch():
  split = _split(100)  # 3 steps per epoch
  steps = _batches(pipeline.training_dataset_fn(split, 32, seed=5)(
      tf.distribute.InputContext()), 9)
  for start in (1, 3, 4, 8):
    resumed = _batches(pipeline.training_dataset_fn(
        split, 32, seed=5, start_step=start)(tf.distribute.InputContext()),
                       9 - start)
    for (x, _), (want, _) in zip(resumed, steps[start:]):
      np.testing.assert_array_equal(x, want)
  # Blocks of 2 from step 4 (epoch 1, offset 1): steps 4-5, then 6-7, 8.
  blocks = _batches(pipeline.training_dataset_fn(
      split, 32, seed=5, steps_per_block=2, start_step=4)(
          tf.distribute.InputContext()), 3)
  assert [int(n) for _, _, n in blocks] == [2, 2, 1]
  np.testing.assert_array_equal(
      np.concatenate([x[:n] for x, _, n in blocks]),
      np.stack([x for x, _ in steps[4:9]]))
