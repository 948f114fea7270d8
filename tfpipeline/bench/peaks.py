"""What a training setting's FLOP/s are read against: a matmul measured on
the device it trained on, and the device's datasheet peak.

Both ask the backend that trained: on a GPU host with JAX for CUDA and
tensorflow-cpu, only JAX sees the GPU.
"""

import statistics
import time

from tfpipeline import accelerators

# Keras dtype policy -> what its matmuls run in, as the datasheets name it
# (float32 runs as TF32 on a GPU by default, in TensorFlow and in JAX).
_PRECISIONS = {'float32': 'tf32', 'mixed_bfloat16': 'bfloat16',
               'mixed_float16': 'float16'}
_COMPUTE_DTYPES = {'float32': 'float32', 'mixed_bfloat16': 'bfloat16',
                   'mixed_float16': 'float16'}


def matmul_gflops(backend: str, device: str, mixed_precision: str) -> float:
  """The rate of an n x n matmul in the policy's compute dtype under XLA,
  on the backend's first device (n: 2048 on a CPU, 8192 on a GPU), median
  of 10 after one."""
  n = 2048 if device == 'cpu' else 8192
  dtype = _COMPUTE_DTYPES[mixed_precision]
  if backend == 'jax':
    import jax  # pylint: disable=g-import-not-at-top
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(lambda x: x @ x)
    product = lambda: matmul(a).block_until_ready()
  else:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    a = tf.random.stateless_normal((n, n), seed=(0, 0), dtype=dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x), jit_compile=True)
    product = lambda: matmul(a).numpy()
  product()
  seconds = []
  for _ in range(10):
    start = time.perf_counter()
    product()
    seconds.append(time.perf_counter() - start)
  return 2 * n ** 3 / statistics.median(seconds) / 1e9


def datasheet(backend: str, mixed_precision: str) -> tuple[str, float | None]:
  """(the first GPU's name, its datasheet TFLOP/s in the policy's matmul
  precision, None where `accelerators` does not list it)."""
  if backend == 'jax':
    import jax  # pylint: disable=g-import-not-at-top
    name = jax.devices('gpu')[0].device_kind
  else:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    name = tf.config.experimental.get_device_details(
        tf.config.list_physical_devices('GPU')[0]).get('device_name', '')
  return name, accelerators.gpu_peak_tflops(name,
                                            _PRECISIONS[mixed_precision])
