"""tf.data input pipelines built per `tf.distribute.InputContext`.

Each epoch is a stateless random permutation of the training rows, drawn
from (seed, epoch) and cut into global batches of row indices (the last
partial batch is dropped). Each pipeline keeps its slice of every global
batch and reads those rows in one call: a NumPy gather from a table in
memory or memory-mapped (see `table`), or one batched random-access read of
the record files, decoded in the graph (see `records`). Then text is
tokenized and images augmented with each example's own random numbers,
drawn from (seed, epoch, row), and batches are prefetched. Reads run in
parallel with a deterministic order.

So the examples of step s are a pure function of (seed, s): the same on
every pipeline, and reproducible after a restart at any step, with nothing
read and thrown away. One device, MirroredStrategy and multi-worker runs see
identical global batches: what makes their weights equal. Sharding is done
here, explicitly, so tf.data's auto-sharding is turned off.
"""

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from tfpipeline import config as config_lib
from tfpipeline import errors
from tfpipeline.data import preprocess
from tfpipeline.data import sources
from tfpipeline.data.sources import Split
from tfpipeline.errors import UserError

DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]
# A device call's block of steps is cut to hold at most this many bytes of
# model input: a block in flight is held several times over (serialized,
# parsed, decoded, augmented). 224x224 images at batch 64 peaked at 4.0 GiB
# with 64 MiB blocks and 1.4 GiB with 16 MiB; 32x32 JPEGs read at 38k
# images/s in 21-step blocks against 50k in 85 (BUILD_NOTES.md).
BLOCK_BYTES = 16 << 20
# One step per element (Keras fit): a table's steps are read this many at a
# time, within BLOCK_BYTES, then unbatched; a NumPy call per 256-row step
# cost Keras fit up to 30% of its examples/s (BUILD_NOTES.md).
TABLE_STEPS_PER_READ = 64


@dataclasses.dataclass(frozen=True)
class Examples:
  """A split and how its rows become model inputs.

  Attributes:
    split: in memory or streamed.
    feature_key, label_key, group_key: the keys a streamed split is read by.
    sparse_labels: labels are class ids (int32), else float32.
    label_check: for a streamed split, `check(labels, rows) -> labels`,
      raising UserError on labels the loss cannot take (a table's are
      checked when loaded).
    vectorizer: a TextVectorization layer for text features, or None.
    augment: `data.augment` ops (training only; images).
    crop_padding: `data.crop_padding`.
  """
  split: Split
  feature_key: str = ''
  label_key: str = ''
  group_key: str | None = None
  sparse_labels: bool = False
  label_check: Callable | None = None
  vectorizer: object = None
  augment: tuple[str, ...] = ()
  crop_padding: int = 0

  def __len__(self) -> int:
    return len(self.split)

  def read(self, rows: tf.Tensor) -> dict[str, tf.Tensor]:
    """In-graph: 'features', 'labels' (and 'groups') of 1-D `rows`."""
    if self.split.streamed:
      read = self.split.records.read(rows)
      read = {'features': read[self.feature_key],
              'labels': read[self.label_key],
              **({'groups': read[self.group_key]} if self.group_key else {})}
      if self.label_check:  # Every read: no pass over the records before.
        labels = read['labels']
        read['labels'] = tf.numpy_function(
            self.label_check, [labels, rows], labels.dtype, stateful=False)
        read['labels'].set_shape(labels.shape)
    else:
      read = _table_read(self.split, rows)
    labels = tf.reshape(read['labels'], [tf.shape(rows)[0], -1])
    # A class id a row, of static width 1: Keras's TensorFlow sparse
    # crossentropy refuses labels of shape (batch, None).
    read['labels'] = (
        tf.ensure_shape(tf.cast(labels[:, :1], tf.int32), [rows.shape[0], 1])
        if self.sparse_labels else tf.cast(labels, tf.float32))
    return read

  def model_inputs(self, features: tf.Tensor) -> tf.Tensor:
    """Read features -> what the trained model takes (tokens for text)."""
    return self.vectorizer(features) if self.vectorizer else features


def _table_read(split: Split, rows: tf.Tensor) -> dict[str, tf.Tensor]:
  """In-graph: the table rows of split positions `rows`, gathered by NumPy
  in one call (in memory or memory-mapped alike; the table is never copied
  into the graph)."""
  table = split.table
  arrays = {'features': table.features, 'labels': table.labels}
  if table.group_codes is not None:
    arrays['groups'] = table.group_values
  keys = list(arrays)
  dtypes = [tf.string if array.dtype == object else tf.as_dtype(array.dtype)
            for array in arrays.values()]

  def take(positions):
    taken = split.take(positions)
    return [taken[key] for key in keys]

  values = tf.numpy_function(take, [rows], dtypes, stateful=False)
  for value, array in zip(values, arrays.values()):
    value.set_shape(rows.shape.concatenate(array.shape[1:]))
  return dict(zip(keys, values))


def examples(splits, name: str, config, vectorizer=None) -> Examples:
  """The `Examples` of split `name` ('train', 'validation', 'test')."""
  data, split = config.data, getattr(splits, name)
  return Examples(
      split, feature_key=splits.feature_names[0],
      label_key=splits.label_name, group_key=splits.group_name,
      sparse_labels=config.loss == 'sparse_categorical_crossentropy',
      label_check=sources.streamed_label_check(
          data, name, splits.label_name, config.loss,
          config.model.output_units) if split.streamed else None,
      vectorizer=vectorizer,
      augment=tuple(data.augment) if name == 'train' else (),
      crop_padding=data.crop_padding)


def _as_examples(examples_or_split) -> Examples:
  if isinstance(examples_or_split, Examples):
    return examples_or_split
  return Examples(examples_or_split)


# tf.data functions here branch on Python values only, so AutoGraph is not
# needed; its conversion cost more than reading a small run's data (1.3 s of
# the default run's training input, BUILD_NOTES "Issue 22, items 5 and 9").
_graph_only = tf.autograph.experimental.do_not_convert


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.OFF)
  options.deterministic = True
  return options


def steps_per_block(steps_per_loop: int, steps_per_epoch: int,
                    bytes_per_step: int) -> int:
  """Steps per input block: steps_per_loop, within an epoch and BLOCK_BYTES."""
  return max(1, min(steps_per_loop, steps_per_epoch,
                    BLOCK_BYTES // max(bytes_per_step, 1)))


def global_batch_indices(num_rows: int, global_batch_size: int, seed: int,
                         steps_per_block: int | None = None,
                         start_step: int = 0,
                         augment_params: bool = False) -> tf.data.Dataset:
  """Row indices of every global batch from `start_step` on, endlessly.

  Elements are tuples: `(rows,)`, with `augment_params` `(rows, params)`:
  (global_batch_size,) row indices and each row's AUGMENT_PARAMS uniform
  numbers, drawn from (seed, epoch, row). With `steps_per_block` k, each
  element holds k consecutive steps, (k, global_batch_size, ...), and ends
  with `steps`, how many of them are real. Blocks never straddle an epoch;
  an epoch's last block is padded to k with copies of the epoch's first
  (remaining) step, so that every block has one shape and the compiled loop
  one program. Starting at step s costs nothing: step s's
  batch depends only on (seed, s).
  """
  steps_per_epoch = num_rows // global_batch_size
  used = steps_per_epoch * global_batch_size
  first_epoch, first_offset = divmod(start_step, steps_per_epoch)

  def blocks_of(batches, first):
    """(steps, ...) tensors -> this epoch's elements from step `first` on."""
    batches = tuple(b[first:] for b in batches)
    if not steps_per_block:
      return tf.data.Dataset.from_tensor_slices(batches)
    # Blocks cut by reshaping, not by batching step elements one by one.
    count = tf.shape(batches[0])[0]
    blocks = (count + steps_per_block - 1) // steps_per_block

    def padded(tensor):
      filler = tf.repeat(tensor[:1], blocks * steps_per_block - count, axis=0)
      return tf.reshape(tf.concat([tensor, filler], 0), tf.concat(
          [[blocks, steps_per_block], tf.shape(tensor)[1:]], 0))

    steps = tf.minimum(steps_per_block,
                       count - tf.range(blocks) * steps_per_block)
    return tf.data.Dataset.from_tensor_slices(
        (*(padded(b) for b in batches), steps))

  @_graph_only
  def epoch_batches(epoch):
    epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
    order = tf.random.experimental.stateless_shuffle(
        tf.range(num_rows, dtype=tf.int64), seed=epoch_seed)
    batches = (tf.reshape(order[:used], [steps_per_epoch, global_batch_size]),)
    if augment_params:
      params = tf.random.stateless_uniform(
          [num_rows, preprocess.AUGMENT_PARAMS],
          seed=tf.random.experimental.stateless_fold_in(epoch_seed, 1))
      batches += (tf.reshape(tf.gather(params, order[:used]),
                             [steps_per_epoch, global_batch_size, -1]),)
    return blocks_of(batches, tf.where(epoch == first_epoch, first_offset, 0))

  return tf.data.Dataset.counter(start=first_epoch).flat_map(epoch_batches)


def _read_shaped(examples: Examples, rows: tf.Tensor):
  """Reads rows of any shape ((b,) or (k, b)) and restores that shape."""
  flat = examples.read(tf.reshape(rows, [-1]))
  lead = tf.shape(rows)

  def unflatten(tensor):
    return tf.reshape(tensor, tf.concat([lead, tf.shape(tensor)[1:]], 0))

  return flat, unflatten


def training_dataset_fn(examples_or_split, global_batch_size: int, *,
                        seed: int, steps_per_block: int | None = None,
                        start_step: int = 0) -> DatasetFn:
  """Endless training batches for one input pipeline.

  Args:
    examples_or_split: the training `Examples` (or an in-memory `Split`).
    global_batch_size: examples per step across all replicas.
    seed: the shuffling and augmentation seed; the order repeats exactly.
    steps_per_block: None for one batch per element (Keras fit); k for
      blocks of k steps' batches, (k, per_replica_batch, ...), so that a
      device call of k steps reads its input once. Every block has k steps;
      the last of an epoch is padded (see `global_batch_indices`).
    start_step: the first step's batch (resuming mid-epoch).

  Returns:
    A function of an InputContext giving per-replica (features, labels)
    elements, or with `steps_per_block` (features, labels, steps), as
    `strategy.distribute_datasets_from_function` expects.
  """
  examples = _as_examples(examples_or_split)
  augmenting = bool(examples.augment)
  read_steps = 1
  if not (steps_per_block or examples.split.streamed):
    table = examples.split.table
    row_bytes = table.features[:1].nbytes + (
        0 if table.labels is None else table.labels[:1].nbytes)
    read_steps = max(1, min(TABLE_STEPS_PER_READ, BLOCK_BYTES // max(
        global_batch_size * row_bytes, 1)))

  def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
    per_replica = context.get_per_replica_batch_size(global_batch_size)
    per_pipeline = global_batch_size // context.num_input_pipelines
    local_replicas = per_pipeline // per_replica
    start = context.input_pipeline_id * per_pipeline
    indices = global_batch_indices(len(examples), global_batch_size, seed,
                                   steps_per_block, start_step,
                                   augment_params=augmenting)

    def local(tensor):
      """This pipeline's columns, then one element per local replica."""
      tensor = tensor[:, start:start + per_pipeline] if steps_per_block else (
          tensor[start:start + per_pipeline])
      if steps_per_block:  # (k, R * b, ...) -> (R, k, b, ...)
        shape = tf.concat([[-1, local_replicas, per_replica],
                           tf.shape(tensor)[2:]], 0)
        perm = [1, 0, 2] + list(range(3, tensor.shape.rank + 1))
        return tf.transpose(tf.reshape(tensor, shape), perm)
      return tf.reshape(tensor, tf.concat(
          [[local_replicas, per_replica], tf.shape(tensor)[1:]], 0))

    @_graph_only
    def local_slices(*element):
      if not steps_per_block:
        return tuple(local(tensor) for tensor in element)
      *tensors, steps = element
      return (*(local(tensor) for tensor in tensors),
              tf.fill([local_replicas], steps))

    @_graph_only
    def read(*element):
      rows = element[0]
      flat, unflatten = _read_shaped(examples, rows)
      features = examples.model_inputs(flat['features'])
      if augmenting:
        features = preprocess.augment(
            features, tf.reshape(element[1], [-1, preprocess.AUGMENT_PARAMS]),
            examples.augment, examples.crop_padding)
      batch = (unflatten(features), unflatten(flat['labels']))
      return batch + ((element[-1],) if steps_per_block else ())

    indices = indices.map(local_slices).unbatch()
    if read_steps > 1:  # The same elements, in order, fewer reads.
      indices = indices.batch(read_steps)
    dataset = indices.map(read, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    if read_steps > 1:
      dataset = dataset.unbatch()
    return dataset.with_options(_options()).prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def evaluation_dataset(examples_or_split, batch_size: int) -> tf.data.Dataset:
  """Every example of a split once, in order (the last batch partial).

  Elements are dicts: 'features' (as the model takes them), 'labels',
  'groups' (when the split has them) and 'index' (the row in the split).
  """
  examples = _as_examples(examples_or_split)

  @_graph_only
  def read(rows):
    batch = examples.read(rows)
    batch['features'] = examples.model_inputs(batch['features'])
    batch['index'] = rows
    return batch

  rows = tf.data.Dataset.range(len(examples)).batch(batch_size)
  return rows.map(read, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True).with_options(_options()).prefetch(
                      tf.data.AUTOTUNE)


def evaluation_dataset_fn(examples_or_split,
                          per_replica_batch: int) -> DatasetFn:
  """Every example of a split once, spread over this worker's replicas.

  Each input pipeline reads every row: a worker evaluates the whole split
  on its own replicas, so no collective is needed and every worker holds
  every prediction. Consecutive elements go to the pipeline's replicas in
  turn, so replica r of global batch b holds its rows r x per_replica_batch
  onward. The last batch is padded with the split's last row; `valid` marks
  the real ones. Elements are `evaluation_dataset`'s dicts plus 'valid'.
  """
  examples = _as_examples(examples_or_split)

  def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
    local_replicas = (context.num_replicas_in_sync //
                      context.num_input_pipelines)
    batch = per_replica_batch * local_replicas
    count = len(examples)
    padded = -(-count // batch) * batch
    positions = tf.range(padded, dtype=tf.int64)
    rows = tf.reshape(tf.minimum(positions, count - 1),
                      [-1, per_replica_batch])
    valid = tf.reshape(positions < count, [-1, per_replica_batch])

    @_graph_only
    def read(rows, valid):
      element = examples.read(rows)
      element['features'] = examples.model_inputs(element['features'])
      element['index'], element['valid'] = rows, valid
      return element

    return tf.data.Dataset.from_tensor_slices((rows, valid)).map(
        read, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True).with_options(_options()).prefetch(
            tf.data.AUTOTUNE)

  return dataset_fn


@dataclasses.dataclass(frozen=True)
class Inputs:
  """A run's three splits as model inputs, and the model input's spec.

  Attributes:
    train, validation, test: the splits' `Examples`.
    shape, dtype: one example as the model takes it (after tokenization).
    vectorizer: the adapted TextVectorization layer for text, else None.
  """
  train: Examples
  validation: Examples
  test: Examples
  shape: tuple[int, ...]
  dtype: str
  vectorizer: object = None

  def bytes_per_example(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(
        self.dtype).itemsize


def inputs(splits, config) -> Inputs:
  """The `Inputs` of `splits`; for text, adapts the tokenizer on train.

  Raises:
    UserError: the data and the data or model keys do not fit together.
  """
  kind, data = splits.kind, config.data
  feature = f'data.features {splits.feature_names[0]!r} ({kind})'
  if data.augment and kind != sources.IMAGE:
    raise UserError(f'data.augment={tuple(data.augment)!r}: image ops need '
                    f'image features (height, width, channels), but '
                    f'{feature} is not; set --config.data.augment=()')
  if (data.vocab_size or data.sequence_length) and kind != sources.TEXT:
    key = 'vocab_size' if data.vocab_size else 'sequence_length'
    raise UserError(f'data.{key}={data[key]} tokenizes text, but {feature} '
                    f'is not text; set --config.data.{key}=0')
  if config.model.normalize_inputs and kind != sources.TABLE:
    raise UserError(f'model.normalize_inputs=True standardises table '
                    f'columns, but {feature} is not a table; set it to False '
                    f'(put Rescaling or Normalization in model.layers)')
  if (config.model.standardize_targets and splits.train.streamed and
      'crossentropy' not in config.loss):  # Regression: label statistics.
    raise UserError('model.standardize_targets=True needs the labels in '
                    'memory, but this dataset is streamed; set it to False')
  baseline = config.report.ig_baseline
  if baseline != 'auto' and baseline not in config_lib.IG_BASELINES.get(
      kind, ()):
    raise UserError(f'report.ig_baseline={baseline!r} is not a baseline for '
                    f'{feature}; use auto or one of ' + ', '.join(
                        config_lib.IG_BASELINES.get(kind, ('auto',))))
  vectorizer, shape, dtype = None, splits.feature_shape, splits.feature_dtype
  if kind == sources.TEXT:
    if config.privacy.dp:
      raise UserError(f'privacy.dp=True: {feature} is tokenized by a '
                      f'vocabulary adapted on the training split and '
                      f'exported with the model, outside the DP guarantee; '
                      f'DP-SGD on text is not supported yet')
    if not data.vocab_size:
      raise UserError(f'data.vocab_size: {feature} holds strings; set the '
                      f'number of tokens, e.g. --config.data.vocab_size=20000')
    length = data.sequence_length or preprocess.DEFAULT_SEQUENCE_LENGTH
    # The training labels are checked as the tokenizer reads the texts.
    texts = evaluation_dataset(examples(splits, 'train', config), 1024)
    with errors.user_errors_through_tensorflow():
      vectorizer = preprocess.text_vectorizer(
          texts.map(lambda batch: batch['features']),
          vocab_size=data.vocab_size, sequence_length=length)
    shape, dtype = (length,), 'int64'
  return Inputs(*(examples(splits, name, config, vectorizer)
                  for name in ('train', 'validation', 'test')),
                shape=tuple(shape), dtype=dtype, vectorizer=vectorizer)
