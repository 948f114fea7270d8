"""tfpipeline.bench.keras_fit: the model-only benchmark for Keras backends
without TensorFlow (run here on the TensorFlow backend)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def test_reports_each_policy_with_the_convnets_flops(tmp_path):
  out = tmp_path / 'bench.json'
  subprocess.run(
      [sys.executable, '-m', 'tfpipeline.bench.keras_fit', '--batch=16',
       '--steps=2', '--units=1', '--precision=float32,mixed_bfloat16',
       f'--out={out}'], cwd=REPO, check=True, capture_output=True,
      timeout=600, env={**os.environ, 'KERAS_BACKEND': 'tensorflow'})
  report = json.loads(out.read_text())
  results = report['results']
  assert [(r['case'], r['precision'], r['batch']) for r in results] == [
      ('cifar10_cnn', 'float32', 16), ('cifar10_cnn', 'mixed_bfloat16', 16)]
  for r in results:
    # The same count as tfpipeline's report and bench (TF-free here).
    assert r['forward_flops_per_image'] == 77_793_792
    assert r['train_flops_per_image'] == 3 * 77_793_792
    assert r['params'] == 552_874
    assert r['images_per_sec'] == pytest.approx(
        r['train_examples_per_epoch'] / r['epoch_s'])
    assert r['ms_per_step_min'] <= r['ms_per_step'] <= r['ms_per_step_max']
