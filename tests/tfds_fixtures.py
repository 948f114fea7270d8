"""TFDS datasets that only the tests use, prepared into temporary dirs.

Once prepared, a dataset is read by name from its data_dir without this
code, as any prepared catalogue dataset is: the CLI runs in the tests read
them that way.
"""

import pathlib

import numpy as np
import tensorflow_datasets as tfds

# TFDS infers a builder's package directory; these live in a plain module.
_HERE = pathlib.Path(__file__).parent

POSITIVE = ('good', 'great', 'fine', 'superb', 'lovely')
NEGATIVE = ('bad', 'awful', 'poor', 'dull', 'boring')
NEUTRAL = ('the', 'film', 'was', 'plot', 'acting', 'and', 'a', 'story')


class TinyReviews(tfds.core.GeneratorBasedBuilder):
  """Short generated reviews; the label is whether praise outnumbers blame."""

  VERSION = tfds.core.Version('1.0.0')
  pkg_dir_path = _HERE

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'text': tfds.features.Text(),
        'label': tfds.features.ClassLabel(names=['negative', 'positive']),
        'length': tfds.features.Text(),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(240, seed=0),
            'validation': self._generate_examples(60, seed=1),
            'test': self._generate_examples(60, seed=2)}

  def _generate_examples(self, count, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
      positive = i % 2 == 0
      words = list(rng.choice(NEUTRAL, rng.integers(3, 12)))
      words += list(rng.choice(POSITIVE if positive else NEGATIVE, 2))
      words += list(rng.choice(NEGATIVE if positive else POSITIVE, 1))
      rng.shuffle(words)
      text = ' '.join(words).capitalize() + '!'
      yield i, {'text': text, 'label': int(positive),
                'length': 'long' if len(words) > 9 else 'short'}


class MixedSizes(tfds.core.GeneratorBasedBuilder):
  """Images of two sizes (not one fixed shape)."""

  VERSION = tfds.core.Version('1.0.0')
  pkg_dir_path = _HERE

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 1)),
        'label': tfds.features.ClassLabel(num_classes=2),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples() for name in
            ('train', 'validation', 'test')}

  def _generate_examples(self):
    for i in range(8):
      size = 8 if i % 2 else 6
      yield i, {'image': np.full((size, size, 1), i, np.uint8),
                'label': i % 2}


class NumberedImages(tfds.core.GeneratorBasedBuilder):
  """Images whose label is a plain integer, not a ClassLabel (TFDS checks
  no range): 0 or 1, but one training record's is 7."""

  VERSION = tfds.core.Version('1.0.0')
  pkg_dir_path = _HERE

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(8, 8, 1)),
        'label': tfds.features.Scalar(np.int64),
    }), supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(name) for name in
            ('train', 'validation', 'test')}

  def _generate_examples(self, split):
    for i in range(40 if split == 'train' else 16):
      yield i, {'image': np.full((8, 8, 1), i, np.uint8),
                'label': 7 if (split, i) == ('train', 29) else i % 2}


def prepare(name: str, data_dir, file_format: str) -> None:
  """Prepares a package or test dataset in `data_dir` in `file_format`."""
  from tfpipeline.data import tfds_builders  # pylint: disable=unused-import
  tfds.builder(name, data_dir=str(data_dir),
               file_format=file_format).download_and_prepare()
