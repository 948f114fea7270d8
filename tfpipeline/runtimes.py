"""model.tflite and model.onnx run as their runtimes run them: LiteRT's
interpreter (ai_edge_litert, TFLite's successor; TensorFlow's own
tf.lite.Interpreter is deprecated) and ONNX Runtime, on the CPU.

`load(path)` gives an object with Keras's `predict_on_batch(x)`, so the
export check and `predict --format` call it as they call a Keras model.
"""

import pathlib

import numpy as np


class TFLiteModel:
  """A .tflite file in LiteRT's interpreter; any batch size."""

  def __init__(self, path: pathlib.Path):
    from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
    self._interpreter = interpreter.Interpreter(model_path=str(path))
    self._input = self._interpreter.get_input_details()[0]
    self._output = self._interpreter.get_output_details()[0]

  def predict_on_batch(self, x) -> np.ndarray:
    x = np.asarray(x, dtype=self._input['dtype'])
    self._interpreter.resize_tensor_input(self._input['index'], x.shape)
    self._interpreter.allocate_tensors()
    self._interpreter.set_tensor(self._input['index'], x)
    self._interpreter.invoke()
    return self._interpreter.get_tensor(self._output['index'])


class OnnxModel:
  """A .onnx file in an ONNX Runtime session on the CPU; any batch size."""

  _DTYPES = {'tensor(float)': np.float32, 'tensor(uint8)': np.uint8,
             'tensor(int64)': np.int64, 'tensor(int32)': np.int32}

  def __init__(self, path: pathlib.Path):
    import onnxruntime  # pylint: disable=g-import-not-at-top
    self._session = onnxruntime.InferenceSession(
        str(path), providers=['CPUExecutionProvider'])
    self._input = self._session.get_inputs()[0]

  def predict_on_batch(self, x) -> np.ndarray:
    x = np.asarray(x, dtype=self._DTYPES.get(self._input.type))
    return self._session.run(None, {self._input.name: x})[0]


_RUNTIMES = {'tflite': TFLiteModel, 'onnx': OnnxModel}


def load(name: str, path: pathlib.Path):
  """The exported file `path` of format `name` ('tflite', 'onnx') in its
  runtime."""
  return _RUNTIMES[name](path)
