"""TFDS dataset builders shipped with the package (registered on import).

`diabetes`: the diabetes progression data (Efron et al. 2004, 442 patients)
that scikit-learn ships, prepared from that local copy, so nothing is
downloaded. One column per feature, in the original units, with a fixed
70/15/15 train/validation/test split.

`digits`: the 1,797 8x8 handwritten digit images scikit-learn ships, as
(8, 8, 1) uint8 images with their class and a parity group, split 70/15/15.
"""

import numpy as np
import tensorflow_datasets as tfds

_SPLIT_SEED = 20041
_FEATURES = ('age', 'sex', 'bmi', 'bp', 's1', 's2', 's3', 's4', 's5', 's6')

# What each dataset trains on when the config leaves its columns to the
# dataset (data.features=(), data.label='', data.group='auto'): features,
# label and fairness group.
COLUMNS = {'diabetes': (_FEATURES, 'progression', 'sex'),
           'digits': (('image',), 'label', 'parity')}


class Diabetes(tfds.core.GeneratorBasedBuilder):
  """Diabetes disease progression one year after baseline (regression)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Raw units from scikit-learn; 309/66/67 split.'}

  def _info(self) -> tfds.core.DatasetInfo:
    columns = {name: tfds.features.Scalar(np.float32) for name in _FEATURES}
    columns['progression'] = tfds.features.Scalar(np.float32)
    return self.dataset_info_from_configs(
        description=(
            'Ten baseline variables (age, sex, body mass index, mean blood '
            'pressure and six blood serum measurements) of 442 diabetes '
            'patients, and a quantitative measure of disease progression one '
            'year after baseline. sex is coded 1 or 2.'),
        features=tfds.features.FeaturesDict(columns),
        supervised_keys=None,
        homepage='https://www4.stat.ncsu.edu/~boos/var.select/diabetes.html',
        citation=('Efron, Hastie, Johnstone and Tibshirani (2004), '
                  '"Least Angle Regression", Annals of Statistics 32(2).'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data comes from scikit-learn's installed copy.
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    bunch = datasets.load_diabetes(scaled=False)
    if tuple(bunch.feature_names) != _FEATURES:
      raise ValueError(f'unexpected scikit-learn diabetes columns '
                       f'{bunch.feature_names}')
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(bunch.target))
    n_train, n_val = int(0.7 * len(order)), int(0.15 * len(order))
    rows = {'train': order[:n_train],
            'validation': order[n_train:n_train + n_val],
            'test': order[n_train + n_val:]}
    return {name: self._generate_examples(bunch.data[idx], bunch.target[idx],
                                          idx)
            for name, idx in rows.items()}

  def _generate_examples(self, features, targets, patient_ids):
    for x, y, patient in zip(features, targets, patient_ids):
      example = dict(zip(_FEATURES, x.astype(np.float32)))
      example['progression'] = np.float32(y)
      yield int(patient), example


class Digits(tfds.core.GeneratorBasedBuilder):
  """Handwritten digits as 8x8 grayscale images (classification)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': '8x8x1 uint8 images from scikit-learn; '
                            '1257/269/271 split; parity group.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=(
            'The 1,797 8x8 images of handwritten digits that scikit-learn '
            'ships (the UCI optical recognition test set). Pixels are the '
            'original 0-16 ink counts scaled to 0-255 and rounded. parity is '
            "'even' or 'odd', a group for the per-group metrics."),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
            'parity': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
        citation=('Alpaydin and Kaynak (1998), "Optical Recognition of '
                  'Handwritten Digits", UCI Machine Learning Repository.'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data comes from scikit-learn's installed copy.
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    bunch = datasets.load_digits()
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(bunch.target))
    n_train, n_val = int(0.7 * len(order)), int(0.15 * len(order))
    rows = {'train': order[:n_train],
            'validation': order[n_train:n_train + n_val],
            'test': order[n_train + n_val:]}
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    return {name: self._generate_examples(images[idx], bunch.target[idx], idx)
            for name, idx in rows.items()}

  def _generate_examples(self, images, labels, image_ids):
    for image, label, image_id in zip(images, labels, image_ids):
      yield int(image_id), {'image': image, 'label': int(label),
                            'parity': 'odd' if label % 2 else 'even'}
