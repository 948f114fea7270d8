"""tfpipeline.accelerators: datasheet peaks by whole device name."""

import pytest

from tfpipeline import accelerators


def test_datasheet_peaks_by_device_name_and_precision(monkeypatch):
  assert accelerators.gpu_peak_tflops('NVIDIA H100 80GB HBM3', 'tf32') == 494.7
  assert accelerators.gpu_peak_tflops('NVIDIA H100 PCIe', 'bfloat16') == 756.0
  assert accelerators.gpu_peak_tflops('NVIDIA A100-SXM4-40GB',
                                      'float16') == 312.0
  assert accelerators.gpu_peak_tflops('Tesla T4', 'bfloat16') is None
  assert accelerators.gpu_peak_tflops('Radeon', 'float32') is None
  assert accelerators.gpu_peak_tflops('NVIDIA H200', 'bfloat16') == 989.4
  assert accelerators.gpu_peak_tflops('NVIDIA A100 80GB PCIe', 'tf32') == 156.0
  assert accelerators.gpu_peak_tflops('NVIDIA L40S', 'bfloat16') == 362.05
  assert accelerators.gpu_peak_tflops('Tesla V100-PCIE-32GB',
                                      'float16') == 112.0
  peak, source = accelerators.peak_flops_per_s('GPU', 'NVIDIA L4',
                                               'bfloat16', 2)
  assert peak == 2 * 121e12 and 'NVIDIA L4' in source
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v5litepod-8')
  assert accelerators.peak_flops_per_s('TPU', 'TPU', 'bfloat16', 8)[0] == (
      8 * 197e12)
  monkeypatch.delenv('TPU_ACCELERATOR_TYPE')
  assert accelerators.peak_flops_per_s('TPU', 'TPU', 'bfloat16', 8)[0] is None
  assert accelerators.peak_flops_per_s('CPU', 'x', 'float32', 1)[0] is None


@pytest.mark.parametrize('name, precision, tflops', [
    ('NVIDIA L40', 'bfloat16', 181.05),  # Not the L4's 121.
    ('NVIDIA RTX A1000', 'float32', None),  # Not an A100.
    ('NVIDIA H100 NVL', 'bfloat16', None),  # Not the SXM part's.
    ('NVIDIA H200 NVL', 'bfloat16', None),
    ('NVIDIA A100X', 'tf32', None),
    ('Tesla V100S-PCIE-32GB', 'float32', None),
    ('NVIDIA L4 ', 'float32', 30.3),  # Surrounding spaces only are ignored.
])
def test_datasheet_peaks_match_whole_device_names(name, precision, tflops):
  assert accelerators.gpu_peak_tflops(name, precision) == tflops
  peak, source = accelerators.peak_flops_per_s('GPU', name, precision, 1)
  if tflops is None:
    assert peak is None and source.startswith('unknown peak: ')
    assert repr(name) in source and 'report.peak_flops_per_s' in source
  else:
    assert peak == tflops * 1e12
