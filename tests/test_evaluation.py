"""tfpipeline.evaluation: predictions and metrics of a split."""

import keras
import numpy as np

from tfpipeline import config, evaluation, models
from tfpipeline.data import pipeline, sources


def test_each_split_is_read_through_one_dataset_and_the_current_weights(
    monkeypatch):
  c = config.load('seed_keras_mlp')
  splits = sources.load(c.data, loss=c.loss)
  model = models.build(c, splits.train)
  built = []
  dataset = pipeline.evaluation_dataset
  monkeypatch.setattr(pipeline, 'evaluation_dataset', lambda *args: built.append(
      args[0]) or dataset(*args))
  evaluator = evaluation.Evaluator(model, c.loss, batch_size=32,
                                   jit_compile=False)
  first = evaluator.run(splits.validation)
  again = evaluator.run(splits.validation)
  np.testing.assert_array_equal(first.predictions, again.predictions)
  np.testing.assert_array_equal(first.index, np.arange(len(splits.validation)))
  model.set_weights([w + 1.0 for w in model.get_weights()])
  changed = evaluator.run(splits.validation)
  want = keras.ops.convert_to_numpy(model(splits.validation.table.features))
  np.testing.assert_allclose(changed.predictions, want, rtol=1e-5)
  assert not np.allclose(changed.predictions, first.predictions)
  evaluator.run(splits.test)
  assert built == [splits.validation, splits.test]
