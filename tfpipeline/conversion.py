"""model.keras to the portable formats: TFLite (model.tflite) and ONNX
(model.onnx), for devices and other runtimes.

Both converters are TensorFlow's: the TFLite converter (through Keras's
LiteRT export), TFLite's builtin ops only, so that any LiteRT runtime runs
the file without TensorFlow's kernels; and tf2onnx on the model's call,
frozen. A model.keras is the same file on either Keras backend, so a run on
the JAX backend converts it in a child process on the TensorFlow backend
(`python -m tfpipeline.conversion`): Keras's own LiteRT export needs the
TensorFlow backend, and its JAX ONNX export needs jax2onnx, which pulls in
Flax and an older orbax-checkpoint. A model a converter cannot take gets an
error line, not an exception.

    python -m tfpipeline.conversion MODEL.keras QUANTIZATION FORMAT=PATH...
"""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

from tfpipeline import console
from tfpipeline.errors import UserError
from tfpipeline.errors import first_line

# The single-file formats, by export.formats name.
FILES = {'tflite': 'model.tflite', 'onnx': 'model.onnx'}
# What each needs beyond the core install: its converter and its runtime.
_MODULES = {'tflite': ('ai_edge_litert',),
            'onnx': ('tf2onnx', 'onnx', 'onnxruntime')}
_INSTALL = ("pip install 'tfpipeline[export]' (in a checkout: pip install "
            "-e '.[export]')")
# The SavedModel signature's output name, which the ONNX output takes too.
_OUTPUT_NAME = 'output_0'


def check_installed(formats) -> None:
  """Raises UserError unless what `formats` (export.formats) need is
  installed."""
  for name in formats:
    for module in _MODULES.get(name, ()):
      if importlib.util.find_spec(module) is None:
        raise UserError(f"export.formats: {name!r} needs {module}, which is "
                        f'not installed; {_INSTALL}')


def convert(model_path: pathlib.Path, outputs: dict[str, pathlib.Path], *,
            quantization: str) -> dict[str, str | None]:
  """Converts the model.keras at `model_path` to each format of `outputs`.

  Args:
    model_path: a model.keras.
    outputs: {format: path to write} ('tflite', 'onnx').
    quantization: export.tflite_quantization.

  Returns:
    {format: None, or the one line saying why it could not be converted}.
  """
  import keras  # pylint: disable=g-import-not-at-top
  if keras.backend.backend() != 'tensorflow':
    return _convert_in_tensorflow(model_path, outputs, quantization)
  model = keras.saving.load_model(model_path, safe_mode=True)
  converters = {'tflite': lambda path: _to_tflite(model, path, quantization),
                'onnx': lambda path: _to_onnx(model, path)}
  errors = {}
  for name, path in outputs.items():
    try:
      # Unless --verbosity=1: a failure is the one line returned.
      with console.output_held_back():
        converters[name](path)
      errors[name] = None
    except Exception as e:  # pylint: disable=broad-except
      errors[name] = _one_line(name, e)
  return errors


def _to_tflite(model, path: pathlib.Path, quantization: str) -> None:
  """TFLite builtins only; dynamic-range (int8 weights) or float16
  quantization if asked."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  target_spec = {'supported_ops': [tf.lite.OpsSet.TFLITE_BUILTINS]}
  options = {}
  if quantization != 'none':
    options['optimizations'] = [tf.lite.Optimize.DEFAULT]
  if quantization == 'float16':
    target_spec['supported_types'] = [tf.float16]
  model.export(str(path), format='litert', verbose=False,
               target_spec=target_spec, **options)


def _to_onnx(model, path: pathlib.Path) -> None:
  """tf2onnx on the model's call, its variables and constants frozen.

  Keras's own ONNX export (`format='onnx'`, tf2onnx's `from_function`)
  makes every constant the function captures an input of the graph (a
  Normalization layer's mean and variance, measured with Keras 3.15.1 and
  tf2onnx 1.17.0): freezing first and naming the one input avoids that.

  Raises:
    ValueError: an op has no ONNX equivalent (tf2onnx leaves it in place).
  """
  import onnx  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf2onnx  # pylint: disable=g-import-not-at-top
  from tf2onnx import tf_loader  # pylint: disable=g-import-not-at-top
  spec = tf.TensorSpec((None, *model.input_shape[1:]), model.inputs[0].dtype,
                       name=model.inputs[0].name)
  function = tf.function(lambda x: model(x, training=False))
  concrete = function.get_concrete_function(spec)
  inputs, outputs = [concrete.inputs[0].name], [concrete.outputs[0].name]
  graph_def = tf_loader.from_function(concrete, inputs, outputs)
  proto, _ = tf2onnx.convert.from_graph_def(
      graph_def, input_names=inputs, output_names=outputs,
      tensors_to_rename={inputs[0]: spec.name, outputs[0]: _OUTPUT_NAME})
  unknown = sorted({node.op_type for node in proto.graph.node
                    if not onnx.defs.has(node.op_type, node.domain)})
  if unknown:
    raise ValueError(f'no ONNX equivalent of the TensorFlow ops '
                     f'{", ".join(unknown)}')
  onnx.save(proto, str(path))


def _one_line(name: str, error: Exception) -> str:
  """Why `name` could not be converted, in one line."""
  select = re.search(r'TF Select ops: (.*)', str(error))
  if select:  # The TFLite converter lists the ops it lacks.
    return (f'{name}: the model needs TensorFlow ops outside TFLite\'s '
            f'builtins ({select[1].strip()})')
  return f'{name}: {type(error).__name__}: {first_line(error)}'


def _convert_in_tensorflow(model_path: pathlib.Path,
                           outputs: dict[str, pathlib.Path],
                           quantization: str) -> dict[str, str | None]:
  """`convert` in a child process on the TensorFlow backend, on the CPU."""
  package_parent = str(pathlib.Path(__file__).resolve().parent.parent)
  env = {**os.environ, 'KERAS_BACKEND': 'tensorflow',
         'CUDA_VISIBLE_DEVICES': '-1',
         'PYTHONPATH': os.pathsep.join(
             filter(None, [package_parent, os.environ.get('PYTHONPATH')]))}
  completed = subprocess.run(
      [sys.executable, '-m', __name__, str(model_path), quantization,
       *(f'{name}={path}' for name, path in outputs.items())],
      capture_output=True, text=True, env=env, check=False)
  if completed.returncode == 0:
    return json.loads(completed.stdout.splitlines()[-1])
  reason = (completed.stderr.strip().splitlines() or ['no output'])[-1]
  return {name: f'{name}: the conversion process failed (exit '
                f'{completed.returncode}): {reason}' for name in outputs}


def main(argv: list[str]) -> None:
  """The child process: converts, then prints the errors as one JSON line."""
  model_path, quantization, *pairs = argv
  outputs = dict(pair.split('=', 1) for pair in pairs)
  errors = convert(pathlib.Path(model_path),
                   {name: pathlib.Path(path) for name, path in outputs.items()},
                   quantization=quantization)
  print(json.dumps(errors))


if __name__ == '__main__':
  main(sys.argv[1:])
