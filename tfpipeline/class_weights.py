"""train.class_weight as the weights training multiplies each example's
loss by, one per class id (`models.training_loss_fn`).

'' trains unweighted, a tuple gives the weights, and 'balanced' computes
them from the training split's class counts with scikit-learn's formula,
n / (classes * count_c): every class then carries the same total weight,
n / classes. A class without training examples has no finite balanced
weight and is refused.
"""

from absl import logging
import numpy as np
from sklearn.utils import class_weight as sklearn_class_weight

from tfpipeline.data import class_counts
from tfpipeline.errors import UserError


def mode(class_weight) -> str:
  """How the weights were chosen, as the report names it: '' (none),
  'balanced' or 'given'."""
  return class_weight if class_weight in ('', 'balanced') else 'given'


def resolve(config, splits) -> tuple[float, ...] | None:
  """The run's class weights, one per class id, or None (unweighted).

  Raises:
    UserError: 'balanced' with a class that has no training example, or a
      streamed training label the loss cannot take.
  """
  class_weight = config.train.class_weight
  if not class_weight:
    return None
  if class_weight != 'balanced':
    return tuple(float(weight) for weight in class_weight)
  counts = class_counts.count(splits, 'train', config.data, loss=config.loss,
                              output_units=config.model.output_units)
  weights = balanced(counts, splits.label_name)
  logging.info("balanced class weights %s, from the training split's class "
               'counts %s', np.array2string(np.array(weights), precision=4,
                                            threshold=20),
               np.array2string(counts, threshold=20))
  return weights


def balanced(counts: np.ndarray, label_name: str) -> tuple[float, ...]:
  """scikit-learn's balanced weights of classes with `counts` examples:
  n / (classes * count_c).

  Raises:
    UserError: a class has no example (its weight would be infinite).
  """
  missing = np.flatnonzero(counts == 0)
  if missing.size:
    raise UserError(
        f"train.class_weight='balanced': class {missing[0]} of label "
        f'{label_name!r} has no training example (of {counts.sum()}), so its '
        f'balanced weight would be infinite; add examples of it, or give '
        f'one weight per class: --config.train.class_weight="(w0, w1, ...)"')
  classes = np.arange(len(counts))
  # Each class once, weighted by its count: the counts' balanced weights
  # without holding every label.
  weights = sklearn_class_weight.compute_class_weight(
      'balanced', classes=classes, y=classes, sample_weight=counts)
  return tuple(float(weight) for weight in weights)
