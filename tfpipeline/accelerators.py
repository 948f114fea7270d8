"""Datasheet peak FLOP/s of the accelerators MFU is computed against.

Dense (no sparsity) matmul peaks per device as TensorFlow counts devices:
a GPU, or a TPU core for v2 and v3 (two per chip) and a chip from v4 on.
On Ampere and newer GPUs TensorFlow runs float32 matmuls and convolutions
as TF32 by default, so `precision` is what the matmuls run in. TPUs run
float32 matmuls in bfloat16 passes at default precision: their one peak is
bfloat16's. Imports nothing heavy: `bench.keras_fit` runs without TensorFlow.
"""

import os
import re

# (the device name's pattern, {precision: TFLOP/s}): whole names as CUDA,
# nvidia-smi and TensorFlow report them, matched in full, so that 'NVIDIA
# L40' is not an L4, 'NVIDIA RTX A1000' not an A100, and an H100 NVL or
# H200 NVL (their own, lower peaks) not an SXM part. Dense peaks from
# NVIDIA's datasheets; a name not here has an unknown peak.
_SXM_HOPPER = {'float32': 67.0, 'tf32': 494.7, 'bfloat16': 989.4}
_GPU_TFLOPS = (
    (r'NVIDIA H100 80GB HBM3', _SXM_HOPPER),  # H100 SXM5
    (r'NVIDIA H200', _SXM_HOPPER),  # H200 SXM
    (r'NVIDIA H100 PCIe', {'float32': 51.2, 'tf32': 378.0,
                           'bfloat16': 756.0}),
    (r'NVIDIA A100-(SXM4|PCIE)-(40|80)GB|NVIDIA A100 80GB PCIe',
     {'float32': 19.5, 'tf32': 156.0, 'bfloat16': 312.0}),
    (r'NVIDIA L40S', {'float32': 91.6, 'tf32': 183.0, 'bfloat16': 362.05}),
    (r'NVIDIA L40', {'float32': 90.5, 'tf32': 90.5, 'bfloat16': 181.05}),
    (r'NVIDIA L4', {'float32': 30.3, 'tf32': 60.0, 'bfloat16': 121.0}),
    (r'Tesla V100-SXM2-(16|32)GB', {'float32': 15.7, 'tf32': 15.7,
                                    'float16': 125.0}),
    (r'Tesla V100-PCIE-(16|32)GB', {'float32': 14.0, 'tf32': 14.0,
                                    'float16': 112.0}),
    (r'Tesla T4', {'float32': 8.1, 'tf32': 8.1, 'float16': 65.0}),
)
# TPU generation (TPU_ACCELERATOR_TYPE's prefix, e.g. 'v5litepod' of
# 'v5litepod-8') -> bfloat16 TFLOP/s per TensorFlow device.
_TPU_TFLOPS = {'v2': 22.5, 'v3': 61.5, 'v4': 275.0, 'v5litepod': 197.0,
               'v5e': 197.0, 'v5p': 459.0, 'v6e': 918.0}


def gpu_peak_tflops(device_name: str, precision: str) -> float | None:
  """A GPU's dense peak in `precision` ('float32', 'tf32', 'bfloat16',
  'float16'), or None when the GPU or its precision is not listed. Ampere
  and newer peak the same in float16 as in bfloat16."""
  for pattern, peaks in _GPU_TFLOPS:
    if re.fullmatch(pattern, device_name.strip()):
      if precision == 'float16' and 'bfloat16' in peaks:
        return peaks['bfloat16']
      return peaks.get(precision)
  return None


def tpu_generation() -> str | None:
  """'v4', 'v5litepod'...: from TPU_ACCELERATOR_TYPE, which TPU VMs set."""
  accelerator = os.environ.get('TPU_ACCELERATOR_TYPE', '')
  return accelerator.split('-')[0] or None


def tpu_cores_per_chip(generation: str | None) -> int:
  """TensorFlow devices per TPU chip: 2 on v2 and v3, 1 from v4 on (and
  when the generation is not known)."""
  return 2 if generation in ('v2', 'v3') else 1


def peak_flops_per_s(kind: str, model: str, precision: str,
                     count: int) -> tuple[float | None, str]:
  """(all `count` devices' peak FLOP/s or None, where it comes from).

  Args:
    kind: 'GPU', 'TPU' or 'CPU'.
    model: the device name ('NVIDIA H100 80GB HBM3').
    precision: what the matmuls run in: 'float32', 'tf32', 'bfloat16',
      'float16'.
    count: the devices that trained.
  """
  if kind == 'GPU':
    tflops = gpu_peak_tflops(model, precision)
    if tflops is None:
      return None, (f'unknown peak: {model!r} in {precision} is not in '
                    f'the datasheet table (exact device names); set '
                    f'report.peak_flops_per_s')
    return tflops * 1e12 * count, f'{model} datasheet, dense {precision}'
  if kind == 'TPU':
    generation = tpu_generation()
    if generation not in _TPU_TFLOPS:
      return None, (f'unknown peak: TPU generation {generation or "unknown"}'
                    f' (from TPU_ACCELERATOR_TYPE) is not in the datasheet '
                    f'table; set report.peak_flops_per_s')
    return (_TPU_TFLOPS[generation] * 1e12 * count,
            f'TPU {generation} datasheet, bfloat16')
  return None, ('unknown peak: CPUs have no datasheet peak here; set '
                'report.peak_flops_per_s')
