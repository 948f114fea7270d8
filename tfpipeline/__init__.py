"""tfpipeline: Keras training pipelines, fast under any tf.distribute strategy.

    import tfpipeline
    metrics = tfpipeline.run('diabetes', '/tmp/runs/diabetes')
    model = tfpipeline.load_model('/tmp/runs/diabetes')
"""

__version__ = '0.1.0'


def run(*args, **kwargs):
  """Trains one experiment; see `tfpipeline.runner.run` (imports TF lazily)."""
  from tfpipeline.runner import run as run_experiment  # pylint: disable=g-import-not-at-top
  return run_experiment(*args, **kwargs)


def load_model(model_dir):
  """A run's model, verified against its manifest; see `export.load`."""
  from tfpipeline.export import load  # pylint: disable=g-import-not-at-top
  return load(model_dir)
