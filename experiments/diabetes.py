"""Diabetes progression regression: the embedded default, by name.

442 patients from scikit-learn's copy, read through the package's TFDS
builder; the seeds' model (Dense 64 relu, Dense 1), adam, mse; groups by sex.

    python -m tfpipeline.train --config=diabetes --model_dir=/tmp/runs/diabetes
"""

from tfpipeline import config


def get_config():
  return config.get_config()
