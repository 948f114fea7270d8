"""report.fairness: per-group metrics and gaps."""

import numpy as np
import pytest

from tfpipeline.report import fairness


def test_regression_fairness_matches_per_group_errors():
  rng = np.random.default_rng(0)
  labels = rng.normal(size=(50, 1)).astype(np.float32)
  predictions = labels + rng.normal(size=(50, 1)).astype(np.float32)
  groups = np.array([1.0, 2.0] * 25)
  predictions[groups == 2] += 3.0  # Group 2 is predicted badly.
  section = fairness.section(labels, predictions, groups, group_name='sex',
                             loss='mse', min_ratio=0.8)
  for name, value in (('1', 1.0), ('2', 2.0)):
    rows = groups == value
    error = predictions[rows] - labels[rows]
    assert section['by_group'][name]['count'] == 25
    assert section['by_group'][name]['mse'] == pytest.approx(
        float(np.mean(error ** 2)), rel=1e-5)
    assert section['by_group'][name]['mae'] == pytest.approx(
        float(np.mean(np.abs(error))), rel=1e-5)
  mse = [section['by_group'][g]['mse'] for g in ('1', '2')]
  assert section['gaps']['mse']['ratio'] == pytest.approx(min(mse) / max(mse))
  assert section['gaps']['mse']['difference'] == pytest.approx(
      max(mse) - min(mse), rel=1e-5)
  assert section['gaps']['mse']['max_group'] == '2'
  assert section['flagged'] == ['mae', 'mse']
  assert section['small_groups'] == ['1', '2']


def test_binary_fairness_rates():
  labels = np.array([1, 1, 0, 0, 1, 1, 0, 0], np.float32)[:, None]
  probabilities = np.array([.9, .2, .7, .1, .8, .6, .3, .4],
                           np.float32)[:, None]
  groups = np.array(['a'] * 4 + ['b'] * 4)
  section = fairness.section(labels, probabilities, groups, group_name='g',
                             loss='binary_crossentropy', min_ratio=0.8)
  a, b = section['by_group']['a'], section['by_group']['b']
  assert (a['tpr'], a['fpr'], a['selection_rate'], a['accuracy']) == (
      0.5, 0.5, 0.5, 0.5)
  assert (b['tpr'], b['fpr'], b['selection_rate'], b['accuracy']) == (
      1.0, 0.0, 0.5, 1.0)
  assert section['gaps']['selection_rate']['flagged'] is False
  assert section['gaps']['tpr']['flagged'] is True


def test_no_group_no_fairness_section():
  section = fairness.section(np.zeros((3, 1)), np.zeros((3, 1)), None,
                             group_name=None, loss='mse', min_ratio=0.8)
  assert section == {'evaluated': False, 'reason': section['reason']}
  assert 'data.group' in section['reason']
