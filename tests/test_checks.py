"""tfpipeline.data.checks: labels the loss cannot take, refused by row."""

import numpy as np
import pytest

from data_configs import csv_config
from data_configs import data_config
from tfpipeline.data import sources
from tfpipeline.errors import UserError


def _labelled_csv(path, labels) -> str:
  rows = ''.join(f'{i % 7},{i % 5},a,{label}\n' for i, label in
                 enumerate(labels))
  path.write_text('a,b,group,y\n' + rows)
  return path


@pytest.mark.parametrize('loss, units, labels, fragment', [
    ('sparse_categorical_crossentropy', 10, [3] * 50 + [11] + [2] * 49,
     r"row 52, label 'y' is 11: loss=sparse_categorical_crossentropy needs "
     r'class ids 0 to 9'),
    ('sparse_categorical_crossentropy', 10, [3] * 50 + [-1] + [2] * 49,
     r"row 52, label 'y' is -1"),
    ('sparse_categorical_crossentropy', 10, [3] * 50 + [2.5] + [2] * 49,
     r"row 52, label 'y' is 2.5"),
    ('binary_crossentropy', 1, [0, 1] * 30 + [2] + [1] * 39,
     r"row 62, label 'y' is 2: loss=binary_crossentropy needs labels 0 or 1"),
])
def test_labels_the_loss_cannot_take_name_the_file_row(
    tmp_path, loss, units, labels, fragment):
  path = _labelled_csv(tmp_path / 'data.csv', labels)
  with pytest.raises(UserError, match=fragment):
    sources.load(csv_config(path), loss=loss, output_units=units)


def test_one_hot_labels_must_be_rows_of_probabilities(tmp_path):
  y = np.eye(3)[np.arange(60) % 3]
  y[17] = [0, 2, 0]
  path = tmp_path / 'data.npz'
  np.savez(path, x=np.arange(60.0), y=y)
  c = data_config(source='npz', path=str(path), features=('x',), label='y',
                  group=None)
  with pytest.raises(UserError, match=r"data.npz, index 17, label 'y' is "
                     r'\[0, 2, 0\]: .* sum to 1'):
    sources.load(c, loss='categorical_crossentropy', output_units=3)
  with pytest.raises(UserError, match=r"'y' has 3 values per example, "
                     r'model.output_units=4'):
    sources.load(c, loss='categorical_crossentropy', output_units=4)
