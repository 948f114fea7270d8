"""tfpipeline.console and the console lines of a run: the package's own."""

import logging
import os

from absl import logging as absl_logging

from tfpipeline import console
from tfpipeline import run_log


def test_cpp_start_up_lines_are_dropped_and_the_rest_passed_on(capfd):
  with console._cpp_lines_dropped():  # pylint: disable=protected-access
    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is '
                b'called are written to STDERR\n'
                b'I0000 00:00:1795432708.080076    3928 port.cc:153] oneDNN '
                b'custom operations are on.\n'
                b'E0000 00:00:1795432709.795288    3928 cuda_platform.cc:52] '
                b'failed call to cuInit\n'
                b'a warning of the import itself\n')
  assert capfd.readouterr().err == 'a warning of the import itself\n'


def test_info_lines_pass_only_from_the_package():
  own_info = logging.LogRecord('absl', logging.INFO, run_log.__file__, 1,
                               'epoch 1/2', None, None)
  library_info = logging.LogRecord('tensorflow', logging.INFO,
                                   '/site-packages/tensorflow/saver.py', 1,
                                   'Assets written', None, None)
  library_warning = logging.LogRecord('absl', logging.WARNING,
                                      '/site-packages/tfds/file_utils.py', 1,
                                      'disk nearly full', None, None)
  passes = console._OwnInfoOnly().filter  # pylint: disable=protected-access
  assert [passes(r) for r in (own_info, library_info, library_warning)] == [
      True, False, True]


def test_long_epochs_log_progress_and_stall_only_for_long_calls(
    tmp_path, monkeypatch, caplog):
  clock = [100.0]
  monkeypatch.setattr(run_log.time, 'perf_counter', lambda: clock[0])
  log = run_log.RunLog(tmp_path, epochs=2)
  absl_logging.set_verbosity(absl_logging.INFO)
  caplog.set_level(logging.INFO)

  def record(at, step, console=False, **values):
    clock[0] = at
    log.record(step=step, epoch=1, console=console, loss=1.0,
               input_stall_pct=40.0, **values)

  record(110.0, 10)  # 10 s after the start: no line.
  record(129.0, 20)
  record(131.5, 30)  # 31.5 s after the last line: progress, 2.5 s call.
  record(131.6, 40, console=True)  # The epoch's end: a 0.1 s call.
  record(140.0, 50, event='rollback')  # Events are not progress.
  log.close()
  lines = [r.getMessage() for r in caplog.records if r.name == 'absl']
  assert lines == ['epoch 1/2  step 30 (in progress)  loss 1  stall 40.0%',
                   'epoch 1/2  step 40  loss 1']
  assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 5
