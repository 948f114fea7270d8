"""tfpipeline.data.sources: the registry picks each configured source.

Each source's own tests are named after its module (test_table_file,
test_npz, test_synthetic, test_tfds_dataset); the shared checks' are in
test_checks.
"""

from tfpipeline.data.sources import core


def test_every_source_name_picks_a_source_of_that_name():
  for name in core.NAMES:
    source = core.get(name)
    assert isinstance(source, core.Source) and source.name == name
