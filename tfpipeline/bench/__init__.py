"""Benchmarks: `python -m tfpipeline.bench` (see `__main__`).

One module per group of cases: `training` (the own loop against Keras fit,
on each Keras backend; `training_worker` measures one setting, `peaks` the
peaks it is read against), `input_pipeline` (images read, decoded and
augmented; peak RSS), `table_reading` (reading a 1M-row table), `runs`
(whole default runs: the report's cost, a small run beside a plain fit
script), and `keras_fit` (a model alone under Keras fit on any Keras
backend: `python -m tfpipeline.bench.keras_fit`).
Importing this package imports and registers nothing: the TFDS builder of
the image cases (`images`) is imported only by the cases that read it.
"""
