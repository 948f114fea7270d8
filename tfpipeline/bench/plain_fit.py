"""The default run's training as a plain Keras script, the `small_run`
baseline: `python -m tfpipeline.bench.plain_fit`.

What a user would write instead of tfpipeline for the diabetes experiment:
scikit-learn's 442 patients split 309/66/67, a `Normalization` layer
adapted to the training rows, Dense 64 relu, Dense 1, adam, mse on
standardised targets, `model.fit` for 50 epochs of batch 32 with the
validation split scored each epoch, then the test split. No model, report
or checkpoint is written.
"""

import os


def main() -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  x, y = datasets.load_diabetes(return_X_y=True, scaled=False)
  order = np.random.default_rng(0).permutation(len(x))
  x, y = x[order].astype('float32'), y[order].astype('float32')
  train, validation = slice(0, 309), slice(309, 375)
  mean, std = y[train].mean(), y[train].std()
  y = (y - mean) / std
  keras.utils.set_random_seed(0)
  normalize = keras.layers.Normalization()
  normalize.adapt(x[train])
  model = keras.Sequential([keras.Input((x.shape[1],)), normalize,
                            keras.layers.Dense(64, activation='relu'),
                            keras.layers.Dense(1)])
  model.compile(keras.optimizers.Adam(1e-3), 'mse', metrics=['mae'])
  model.fit(x[train], y[train], batch_size=32, epochs=50, verbose=0,
            validation_data=(x[validation], y[validation]))
  loss, _ = model.evaluate(x[375:], y[375:], verbose=0)
  print(f'test mse {loss * std ** 2:.0f}')


if __name__ == '__main__':
  main()
