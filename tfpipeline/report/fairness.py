"""Per-group metrics on the test split, with fairlearn's MetricFrame.

For each metric: every group's value, the largest gap (max - min) and ratio
(min / max) between groups, and a flag when the ratio is below
`report.fairness_min_ratio` (0.8 by default: the four-fifths rule).
"""

import numpy as np

from tfpipeline.report import predictions_csv

# Fewer test examples than this in a group make its metrics anecdotal.
SMALL_GROUP = 30


def group_names(groups: np.ndarray) -> np.ndarray:
  """Readable group labels: 1.0 -> '1', text stays text."""
  return np.array([predictions_csv.cell(v) for v in groups])


def predicted_labels(labels: np.ndarray, predictions: np.ndarray, loss: str):
  """(y_true, y_pred) as metrics take them: class ids for classification."""
  if loss == 'binary_crossentropy':
    return labels.reshape(-1).astype(int), (
        predictions.reshape(-1) >= 0.5).astype(int)
  if loss == 'categorical_crossentropy':
    return labels.argmax(axis=1), predictions.argmax(axis=1)
  if loss == 'sparse_categorical_crossentropy':
    return labels.reshape(-1), predictions.argmax(axis=1)
  return labels, predictions


def _metrics(loss: str) -> dict:
  from fairlearn import metrics as fm  # pylint: disable=g-import-not-at-top
  from sklearn import metrics as sk  # pylint: disable=g-import-not-at-top
  if loss == 'binary_crossentropy':
    return {'count': fm.count, 'accuracy': sk.accuracy_score,
            'tpr': fm.true_positive_rate, 'fpr': fm.false_positive_rate,
            'selection_rate': fm.selection_rate}
  if 'crossentropy' in loss:
    return {'count': fm.count, 'accuracy': sk.accuracy_score}
  return {'count': fm.count, 'mse': sk.mean_squared_error,
          'mae': sk.mean_absolute_error}


def section(labels: np.ndarray, predictions: np.ndarray,
            groups: np.ndarray | None, *, group_name: str | None, loss: str,
            min_ratio: float) -> dict:
  """The report's `fairness` section (test split)."""
  if groups is None:
    return {'evaluated': False,
            'reason': 'data.group is not set: no groups to compare'}
  from fairlearn.metrics import MetricFrame  # pylint: disable=g-import-not-at-top
  y_true, y_pred = predicted_labels(labels, predictions, loss)
  frame = MetricFrame(metrics=_metrics(loss), y_true=y_true, y_pred=y_pred,
                      sensitive_features=group_names(groups))
  by_group = {str(group): {name: float(value) for name, value in row.items()}
              for group, row in frame.by_group.to_dict(orient='index').items()}
  differences = frame.difference(method='between_groups')
  ratios = frame.ratio(method='between_groups')
  gaps = {}
  for name in frame.by_group.columns:
    if name == 'count':
      continue
    ratio = float(ratios[name])
    values = frame.by_group[name]
    gaps[name] = {
        'difference': float(differences[name]),
        'ratio': ratio,
        'max_group': str(values.idxmax()),
        'min_group': str(values.idxmin()),
        'flagged': bool(np.isfinite(ratio) and ratio < min_ratio),
    }
  small = [g for g, row in by_group.items() if row['count'] < SMALL_GROUP]
  return {
      'evaluated': True,
      'split': 'test',
      'group': group_name,
      'library': 'fairlearn.metrics.MetricFrame',
      'overall': {name: float(v) for name, v in frame.overall.items()},
      'by_group': by_group,
      'gaps': gaps,
      'min_ratio': min_ratio,
      'flagged': sorted(name for name, gap in gaps.items() if gap['flagged']),
      'small_groups': small,
      'note': ('ratio = smallest group value / largest; flagged below '
               f'{min_ratio:g}. Groups with fewer than {SMALL_GROUP} test '
               'examples give anecdotal metrics.'),
  }
