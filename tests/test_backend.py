"""--backend: chosen before Keras loads, one per process, JAX optional."""

import pytest

from in_process import run_main

from tfpipeline import backend


def test_jax_missing_is_one_line_and_nothing_written(tmp_path, monkeypatch):
  installed = backend._installed
  monkeypatch.setattr(backend, '_installed',
                      lambda module: module != 'jax' and installed(module))
  model_dir = tmp_path / 'run'
  result = run_main(f'--model_dir={model_dir}', '--backend=jax')
  assert result.returncode == 2
  assert result.last_line == (
      "error: --backend=jax needs jax, which is not installed; pip install "
      "'tfpipeline[jax]' (in a checkout: pip install -e '.[jax]')")
  assert not model_dir.exists()


def test_a_process_keeps_the_backend_keras_loaded_on(tmp_path):
  import keras  # This process's Keras runs on TensorFlow.
  assert keras.backend.backend() == 'tensorflow'
  result = run_main(f'--model_dir={tmp_path / "run"}', '--backend=jax')
  assert result.returncode == 2
  assert result.last_line == (
      'error: --backend=jax: Keras is already loaded on its tensorflow '
      'backend in this process (it takes one per process); run in a fresh '
      'process, or set KERAS_BACKEND=jax before importing keras')


@pytest.mark.parametrize('args, message', [
    (('--config.train.backend=torch',),
     "train.backend='torch'"),
    (('--backend=jax', '--engine=keras_fit'),
     '--engine=keras_fit runs on the TensorFlow backend only'),
    (('--backend=jax', '--config.train.mixed_precision=mixed_float16'),
     "train.mixed_precision='mixed_float16'"),
])
def test_bad_backend_settings_are_refused_before_anything_loads(
    tmp_path, args, message):
  result = run_main(f'--model_dir={tmp_path / "run"}', *args)
  assert result.returncode == 2
  assert message in result.last_line
  assert not (tmp_path / 'run').exists()
