"""How a step's batch splits into the passes of gradient accumulation
(optimizer.gradient_accumulation_steps), on either backend.

Pass j takes rows j, j + k, j + 2k, ... of the batch. On a JAX mesh the
batch axis is sharded in contiguous blocks, and these passes keep each
device's rows on it (k contiguous passes would need an all-to-all); the
TensorFlow engines split each replica's batch the same way, so the two
backends' passes hold the same examples.
"""

import keras


def split(batch, passes: int):
  """`batch` (a tensor, or a nest of them), each (n, ...) as
  (passes, n / passes, ...)."""
  return keras.tree.map_structure(lambda part: keras.ops.moveaxis(
      keras.ops.reshape(part, (-1, passes, *keras.ops.shape(part)[1:])),
      1, 0), batch)
