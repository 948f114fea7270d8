"""Data configs for the source tests: the embedded default's data section
with some keys changed."""

from tfpipeline import config


def data_config(**values):
  c = config.get_config().data
  c.update(values)
  return c


def csv_config(path, **values):
  return data_config(**{'source': 'csv', 'path': str(path),
                        'features': ('a', 'b'), 'label': 'y',
                        'group': 'group', **values})
