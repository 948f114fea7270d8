"""Config sections for the tests: the embedded default's data or report
section with some keys changed."""

from tfpipeline import config


def data_config(**values):
  c = config.get_config().data
  c.update(values)
  return c


def csv_config(path, **values):
  return data_config(**{'source': 'csv', 'path': str(path),
                        'features': ('a', 'b'), 'label': 'y',
                        'group': 'group', **values})


def report_config(**overrides):
  c = config.get_config().report
  c.update(overrides)
  return c
