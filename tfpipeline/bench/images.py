"""The image datasets of the input, convnet and rss benchmarks.

A TFDS builder, `bench_images`, registered when this module is imported:
only the cases that read these datasets import it (inside their functions),
so importing `tfpipeline` or `tfpipeline.bench` registers nothing.
"""

import sys

import numpy as np
import tensorflow_datasets as tfds

# Examples of each dataset: enough for several epochs of timed batches.
_COUNTS = {'jpeg32': 50_000, 'jpeg224': 8_192}


class BenchImages(tfds.core.GeneratorBasedBuilder):
  """Smooth random RGB images with 10 classes, for benchmarks only."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='jpeg32', description='32x32 JPEG'),
      tfds.core.BuilderConfig(name='jpeg224', description='224x224 JPEG'),
  ] + [tfds.core.BuilderConfig(name=f'raw224_{n}', description=(
      f'{n} 224x224 uint8 tensors, stored raw')) for n in (
          2_000, 8_000, 32_000)]

  def _info(self):
    size = 32 if self.builder_config.name == 'jpeg32' else 224
    if self.builder_config.name.startswith('raw'):
      image = tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8)
    else:
      image = tfds.features.Image(shape=(size, size, 3),
                                  encoding_format='jpeg')
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(
        {'image': image, 'label': tfds.features.ClassLabel(num_classes=10)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    name = self.builder_config.name
    count = (_COUNTS[name] if name in _COUNTS else
             int(name.rsplit('_', 1)[1]))
    return {'train': self._generate_examples(count)}

  def _generate_examples(self, count):
    size = 32 if self.builder_config.name == 'jpeg32' else 224
    rng = np.random.default_rng(0)
    for i in range(count):
      coarse = rng.integers(0, 256, (size // 8 + 1, size // 8 + 1, 3))
      image = np.repeat(np.repeat(coarse, 8, 0), 8, 1)[:size, :size]
      image = image + rng.integers(-12, 13, image.shape)
      yield i, {'image': np.clip(image, 0, 255).astype(np.uint8),
                'label': i % 10}


def prepared(name: str, data_dir: str):
  """The builder of `bench_images/{name}` in `data_dir`, generated there once."""
  builder = tfds.builder(f'bench_images/{name}', data_dir=data_dir,
                         file_format='array_record')
  if not builder.is_prepared():
    print(f'generating bench_images/{name} in {data_dir} (once)',
          file=sys.stderr, flush=True)
    builder.download_and_prepare()
  return builder
