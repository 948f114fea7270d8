"""tfpipeline.data.sources.npz: arrays by key, bad values by index."""

import numpy as np
import pytest

from data_configs import data_config
from tfpipeline.data import sources
from tfpipeline.errors import UserError


def test_npz_source(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / 'data.npz'
  np.savez(path, x=rng.normal(size=(50, 4)), y=rng.normal(size=50),
           sex=rng.integers(1, 3, size=50))
  splits = sources.load(data_config(source='npz', path=str(path),
                                    features=('x',), label='y', group='sex'),
                        loss='mse')
  assert splits.train.take()['features'].shape == (34, 4)
  assert splits.train.take()['labels'].shape == (34, 1)
  assert set(splits.train.take()['groups']) <= {1, 2}
  x = np.zeros((50, 2))
  x[37, 1] = np.nan
  np.savez(path, x=x, y=np.zeros(50))
  with pytest.raises(UserError, match=r"data.npz, index 37, feature 'x\[1\]' "
                     r'is nan'):
    sources.load(data_config(source='npz', path=str(path), features=('x',),
                             label='y', group=None), loss='mse')
  np.savez(path, x=np.zeros((5, 2)), y=np.zeros(4))
  with pytest.raises(UserError, match='differ in length'):
    sources.load(data_config(source='npz', path=str(path), features=('x',),
                             label='y', group=None), loss='mse')
  path.write_text('not an archive')
  with pytest.raises(UserError, match='not a readable .npz'):
    sources.load(data_config(source='npz', path=str(path), features=('x',),
                             label='y', group=None), loss='mse')
