"""experiments/colab_tpu.ipynb runs top to bottom here (no TPU: fallback)
on JAX, the backend it takes on a TPU runtime (TFPIPELINE_BACKEND). Its
cells are the same on TensorFlow, which every CLI test runs (the notebook
calls the CLI and `tfpipeline.run`): one backend keeps CI's time."""

import re

import pytest

from conftest import REPO

# What the notebook prints of its devices on each backend, on this CPU.
DEVICES = {'jax': 'JAX mesh: 1 replica(s) on 1 CPU device(s)'}


@pytest.mark.parametrize('backend', sorted(DEVICES))
def test_colab_notebook_runs_on_cpu(tmp_path, monkeypatch, backend):
  # Imported here: the TF 2.20 smoke environment collects this module too.
  import nbclient
  import nbformat
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  monkeypatch.setenv('PYTHONPATH', str(REPO))
  monkeypatch.setenv('TFPIPELINE_BACKEND', backend)
  # The notebook keeps its runs in a mkdtemp directory off Colab: here.
  monkeypatch.setenv('TMPDIR', str(tmp_path))
  notebook = nbformat.read(REPO / 'experiments' / 'colab_tpu.ipynb',
                           as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}
                          ).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == 'code'
             for o in cell.get('outputs', [])]
  text = ''.join(o.get('text', '') for o in outputs)
  assert 'no TPU: CPU/GPU fallback' in text
  assert f'backend: {backend}' in text and DEVICES[backend] in text
  assert "diabetes {'loss'" in text and "wide MLP {'loss'" in text
  accuracy = float(re.search(r"digits_cnn \{'loss': [^,]+, 'accuracy': ([0-9.]+)",
                             text).group(1))
  assert accuracy >= 0.97
  assert 'mnist_convnet skipped: it needs a TPU runtime and a network' in text
  assert re.search(r'digits: IG over 100 test images, \d+ steps from black, '
                   r'completeness error [0-4]\.\d\d%', text)
  assert 'MFU: unknown peak: CPUs have no datasheet peak here' in text
  assert 'most influential features:' in text and 'CO2e' in text
  runs = list(tmp_path.glob('tfpipeline-notebook-*'))
  assert len(runs) == 1 and (runs[0] / 'digits_cnn' / 'model.keras').is_file()
  assert text.count('files in') == 3 and 'match MANIFEST.json' in text
  # diabetes: loss, groups, attributions; digits: class maps, examples;
  # the curves.
  assert sum('image/png' in o.get('data', {}) for o in outputs) == 6
  assert not [o for o in outputs if o.get('output_type') == 'error']
