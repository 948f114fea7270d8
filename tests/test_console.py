"""tfpipeline.console and the console lines of a run: the package's own."""

import fcntl
import logging
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios

from absl import logging as absl_logging
import pytest

from tfpipeline import console
from tfpipeline import run_log
from tfpipeline import trainer
from conftest import REPO, cli_env, read_jsonl


def test_cpp_info_lines_are_held_back_and_warnings_and_errors_kept():
  held_back = [
      b'WARNING: All log messages before absl::InitializeLog() is called are '
      b'written to STDERR\n',
      b'I0000 00:00:1795432708.080076    3928 port.cc:153] oneDNN custom '
      b'operations are on.\n',
      b'I0000 00:00:1795440601.801804   13554 device_compiler.h:196] Compiled '
      b'cluster using XLA!\n',
      b'2026-12-03 19:40:00.123456: I tensorflow/core/platform/'
      b'cpu_feature_guard.cc:182] This TensorFlow binary is optimized\n',
      b'To enable the following instructions: AVX2 FMA, in other operations, '
      b'rebuild TensorFlow with the appropriate compiler flags.\n',
      # Lines of every healthy run on this CPU: no CUDA driver, XLA, tf.data.
      b'E0000 00:00:1796326987.992549    5509 cuda_platform.cc:52] failed call '
      b'to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR '
      b'(303)\n',
      b'W0000 00:00:1796326993.952917    5717 assert_op.cc:39] Ignoring Assert '
      b'operator while/assert_non_negative/assert_less_equal/Assert/Assert\n',
      b'W0000 00:00:1796326993.092255    5509 dataset.cc:997] Input of '
      b'GeneratorDatasetOp::Dataset will not be optimized because the dataset '
      b'does not implement the AsGraphDefInternal() method\n',
      # A CPU without AVX-512 (CI's, this one's).
      b'E0000 00:00:1796411968.316775    2789 util.cc:131] oneDNN supports '
      b'DT_INT64 only on platforms with AVX-512. Falling back to the default '
      b'Eigen-based implementation if present.\n',
      # The same in TF's older format, as TF 2.20 prints it.
      b'2026-12-03 21:34:15.806930: W tensorflow/core/framework/dataset.cc:'
      b'993] Input of GeneratorDatasetOp::Dataset will not be optimized '
      b'because the dataset does not implement the AsGraphDefInternal() '
      b'method\n']
  kept = [
      b'W0000 00:00:1796326951.886538    4785 op_kernel.cc:1858] OP_REQUIRES '
      b'failed at whole_file_read_ops.cc:117 : NOT_FOUND: /x.csv\n',
      b'E0000 00:00:1795432709.795288    3928 bfc_allocator.cc:501] Allocator '
      b'(GPU_0_bfc) ran out of memory trying to allocate 80.00GiB\n',
      b'E0000 00:00:1795432709.795288    3928 cuda_platform.cc:52] failed call '
      b'to cuInit: INTERNAL: CUDA error: Failed call to cuInit: '
      b'CUDA_ERROR_NO_DEVICE (100)\n',
      b'2026-12-03 19:40:00.123456: W tensorflow/core/common_runtime/'
      b'bfc_allocator.cc:290] Allocator ran out of memory\n',
      b'F0000 00:00:1795432709.8    3928 tensor.cc:700] Check failed: x\n',
      # absl's Python lines have the same shape, with a real date.
      b'I1123 13:30:02.025561 139916794260352 run_log.py:89] epoch 1/2\n',
      b'error: data.path: x.csv does not exist\n']
  match = console._HELD_BACK_LINE.match  # pylint: disable=protected-access
  assert [bool(match(line)) for line in held_back + kept] == (
      [True] * len(held_back) + [False] * len(kept))


def test_tfs_echoes_of_a_user_error_are_held_back():
  # A UserError raised inside tf.data: TF warns with it, its traceback and
  # node lines, once per thread; the command's own last line gives it.
  echo = (b"W0000 00:00:1796328589.7    4866 op_kernel.cc:1845] UNKNOWN: "
          b"UserError: train row 22, label 'label' is 7\n"
          b'Traceback (most recent call last):\n\n'
          b'  File "script_ops.py", line 269, in __call__\n'
          b'    ret = func(*args)\n          ^^^^^^^^^^^\n\n'
          b"tfpipeline.errors.UserError: train row 22, label 'label' is 7\n"
          b'\n\n\t [[{{node PyFuncStateless_1}}]]\n')
  kept = (b"error: train row 22, label 'label' is 7\n"
          b'Traceback (most recent call last):\n'
          b'  File "x.py", line 1, in <module>\n')
  completed = subprocess.run(
      [sys.executable, '-m', 'tfpipeline.console'], env=cli_env(),
      input=echo + echo + kept, capture_output=True, timeout=60)
  assert completed.stderr == kept


def _cpp_line(levels: str) -> str:
  """A TF C++ log line's start at `levels`, up to its file name: absl's
  format (TF 2.21), or TF's older own one (TF 2.20 logs some lines in it)."""
  return (rf'([{levels}]0000 00:00:[\d.]+ +\d+ |'
          rf'\d{{4}}-\d\d-\d\d [\d:.]+: [{levels}] [\w/]+/)')


def test_tensorflows_cpp_warnings_reach_the_quiet_console(tmp_path):
  # A C++ WARNING line TF 2.20 and 2.21 print for a failed op; their start-up
  # INFO lines (CUDA stub, absl's notice) stay held back.
  missing = tmp_path / 'missing.csv'
  script = tmp_path / 'read.py'
  script.write_text(
      'from tfpipeline import console\n'
      'console.quiet()\n'
      'import tensorflow as tf\n'
      'try:\n'
      f'  tf.io.read_file({str(missing)!r})\n'
      'except tf.errors.NotFoundError:\n'
      '  pass\n')
  completed = subprocess.run([sys.executable, str(script)], env=cli_env(),
                             capture_output=True, text=True, timeout=120)
  assert completed.returncode == 0, completed.stderr
  lines = completed.stderr.splitlines()
  assert all(re.match(_cpp_line('WE'), line) for line in lines), lines
  assert any(re.match(rf'{_cpp_line("W")}op_kernel.cc:\d+\] OP_REQUIRES '
                      rf'failed at whole_file_read_ops.cc:\d+ : NOT_FOUND: {missing}',
                      line) for line in lines), lines


@pytest.mark.parametrize('crash, signal_number, last_line', [
    # A C++ CHECK failure: its line, then abort(), with the GIL held.
    ('line = b"F0000 00:00:1.5  7 tensor.cc:700] Check failed\\n"\n'
     'ctypes.PyDLL(None).write(2, line, len(line))\n'
     'ctypes.PyDLL(None).abort()\n', signal.SIGABRT,
     'F0000 00:00:1.5  7 tensor.cc:700] Check failed'),
    ('faulthandler.enable()\n'
     'ctypes.string_at(0)\n', signal.SIGSEGV,
     '  File "{script}", line 6 in <module>')], ids=['abort', 'segfault'])
def test_a_crashs_last_lines_reach_the_terminal(tmp_path, crash, signal_number,
                                                 last_line):
  # The command dies at once: what it wrote to stderr just before, still in
  # the filter's pipe, is not lost.
  script = tmp_path / 'crash.py'
  script.write_text(
      'import ctypes, faulthandler, sys\n'
      'from tfpipeline import console\n'
      'console.quiet()\n'
      'print("last words", file=sys.stderr, flush=True)\n' + crash)
  completed = subprocess.run([sys.executable, str(script)], env=cli_env(),
                             capture_output=True, text=True, timeout=60)
  assert completed.returncode == -signal_number
  lines = completed.stderr.splitlines()
  assert lines[0] == 'last words'
  assert lines[-1] == last_line.format(script=script)


def test_quiet_console_drops_cpp_lines_written_at_any_time(tmp_path):
  # TF 2.20 prints C++ INFO lines long after the import, whatever
  # TF_CPP_MIN_LOG_LEVEL says ("Compiled cluster using XLA!" at the first
  # step): the filter must hold for the whole process and lose nothing else,
  # Python's own writes and a traceback included, in order.
  script = tmp_path / 'noisy.py'
  script.write_text(
      'import os, sys\n'
      'from tfpipeline import console\n'
      'console.quiet()\n'
      'os.write(2, b"I0000 00:00:1796149729.441928    2842 '
      'device_compiler.h:196] Compiled cluster using XLA!\\n")\n'
      'print("first", file=sys.stderr, flush=True)\n'
      'os.write(2, b"E0000 00:00:1796149729.5    2842 oom.cc:52] out of '
      'memory\\n")\n'
      'raise SystemExit("last")\n')
  completed = subprocess.run([sys.executable, str(script)], env=cli_env(),
                             capture_output=True, text=True, timeout=60)
  assert completed.returncode == 1
  assert completed.stderr == ('first\nE0000 00:00:1796149729.5    2842 '
                              'oom.cc:52] out of memory\nlast\n')


def test_a_tf_cpp_min_log_level_of_the_users_keeps_every_line(tmp_path):
  script = tmp_path / 'noisy.py'
  script.write_text(
      'import os\n'
      'from tfpipeline import console\n'
      'console.quiet()\n'
      'os.write(2, b"I0000 00:00:1.5    2842 port.cc:153] oneDNN\\n")\n')
  completed = subprocess.run([sys.executable, str(script)],
                             env={**cli_env(), 'TF_CPP_MIN_LOG_LEVEL': '0'},
                             capture_output=True, text=True, timeout=60)
  assert completed.stderr == 'I0000 00:00:1.5    2842 port.cc:153] oneDNN\n'


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


def test_a_live_bars_frames_pass_the_filter_at_once():
  # A frame (a carriage return, no line end) reaches the terminal before
  # the next line; a bar's clearing passes, the line after it is judged.
  child = subprocess.Popen([sys.executable, '-m', 'tfpipeline.console'],
                           env=cli_env(), stdin=subprocess.PIPE,
                           stderr=subprocess.PIPE)
  frame = b'\repoch 1/2 ###    3/9 steps  1,234 ex/s  loss 5.1  ETA 00:02'
  child.stdin.write(frame)
  child.stdin.flush()
  assert select.select([child.stderr], [], [], 60)[0]
  assert os.read(child.stderr.fileno(), 1024) == frame
  clear = b'\r' + b' ' * 60 + b'\r'
  _, rest = child.communicate(
      clear + b'I0000 00:00:1.5    2842 port.cc:153] oneDNN\n' + clear +
      b'epoch 1/2  step 9  loss 5\n', timeout=60)
  assert rest == clear + clear + b'epoch 1/2  step 9  loss 5\n'


def test_the_packages_info_lines_are_plain_and_the_others_keep_the_prefix():
  def formatted(level, path, message):
    return console._PlainOwnLines().format(  # pylint: disable=protected-access
        logging.LogRecord('absl', level, path, 7, message, None, None))

  assert formatted(logging.INFO, run_log.__file__, 'epoch 1/2') == 'epoch 1/2'
  assert re.fullmatch(r'W\d{4} [\d:.]+ +\d+ trainer\.py:7\] rolled back',
                      formatted(logging.WARNING, trainer.__file__,
                                'rolled back'))
  assert re.fullmatch(r'I\d{4} [\d:.]+ +\d+ saver\.py:7\] Assets written',
                      formatted(logging.INFO, '/site-packages/tf/saver.py',
                                'Assets written'))


def _terminal_output(args, columns: int) -> tuple[int, str]:
  """`python -m tfpipeline.train ARGS` with a pseudo-terminal `columns`
  wide as its stderr: its exit code and what the terminal received."""
  controller, terminal = pty.openpty()
  fcntl.ioctl(terminal, termios.TIOCSWINSZ,
              struct.pack('HHHH', 24, columns, 0, 0))
  process = subprocess.Popen(
      [sys.executable, '-m', 'tfpipeline.train', *args], cwd=REPO,
      env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
      stderr=terminal)
  os.close(terminal)
  received = []
  while select.select([controller], [], [], 300)[0]:
    try:
      chunk = os.read(controller, 1 << 16)
    except OSError:  # EIO: every writer (the command, its filter) is gone.
      break
    if not chunk:
      break
    received.append(chunk)
  os.close(controller)
  return process.wait(timeout=60), b''.join(received).decode()


def _screen(output: str) -> list[str]:
  """The lines a terminal shows after `output`: each carriage return
  writes over its line from the start."""
  lines = []
  for row in output.split('\n'):
    shown = ''
    for part in row.split('\r'):
      shown = part + shown[len(part):]
    if shown.strip():
      lines.append(shown.rstrip())
  return lines


def test_a_terminal_shows_a_live_bar_and_keeps_plain_lines(tmp_path,
                                                           tfds_dir):
  model_dir = tmp_path / 'run'
  code, output = _terminal_output(
      [f'--model_dir={model_dir}', f'--config.data.data_dir={tfds_dir}',
       '--config.train.epochs=2', '--config.train.steps_per_loop=3'],
      columns=100)
  assert code == 0, output[-3000:]
  # Each epoch's first block is drawn at once: its steps, examples/s,
  # loss and ETA.
  frames = output.split('\r')
  for epoch in (1, 2):
    assert any(re.fullmatch(
        rf'epoch {epoch}/2 \S+ +3/9 steps  [\d,]+ ex/s  loss [\d.e+]+  '
        rf'ETA \d\d:\d\d *', frame) for frame in frames), frames
  # What stays on the terminal: the plain lines, the bar cleared.
  screen = _screen(output)
  records = read_jsonl(model_dir / 'metrics.jsonl')
  assert [r['step'] for r in records] == [3, 6, 9, 12, 15, 18]
  epoch_lines = [line for line in screen if 'epoch' in line]
  epoch_ends = [r for r in records if 'val_loss' in r]
  assert len(epoch_lines) == len(epoch_ends) == 2, screen
  for line, r in zip(epoch_lines, epoch_ends):
    assert line.startswith(f'epoch {r["epoch"]}/2  step {r["step"]}  loss '
                           f'{r["loss"]:.4g}  val_loss {r["val_loss"]:.4g}  ')
  assert not [line for line in screen if re.match(r'[IWEF]\d{4} ', line)]
  assert screen[-1] == f'wrote {model_dir}'


def test_long_epochs_log_progress_and_stall_only_for_long_calls(
    tmp_path, monkeypatch, caplog):
  clock = [100.0]
  monkeypatch.setattr(run_log.time, 'perf_counter', lambda: clock[0])
  log = run_log.RunLog(tmp_path, epochs=2)
  absl_logging.set_verbosity(absl_logging.INFO)
  caplog.set_level(logging.INFO)

  def record(at, step, call_s, console=False, **values):
    clock[0] = at
    log.record(step=step, epoch=1, console=console, call_s=call_s, loss=1.0,
               input_stall_pct=40.0, **values)

  record(110.0, 10, 10.0)  # 10 s after the start: no line.
  record(129.0, 20, 19.0)
  record(131.5, 30, 2.5)  # 31.5 s after the last line: progress, 2.5 s call.
  # The epoch's end: a 0.1 s call, however long its validation took since.
  record(139.0, 40, 0.1, console=True)
  record(180.0, 50, None, event='rollback')  # Events are not progress.
  log.close()
  lines = [r.getMessage() for r in caplog.records if r.name == 'absl']
  assert lines == ['epoch 1/2  step 30 (in progress)  loss 1  stall 40.0%',
                   'epoch 1/2  step 40  loss 1']
  assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 5


class _BarCalls:
  """A live bar that lists what the run log asks of it."""

  def __init__(self):
    self.calls = []

  def start(self, step):
    self.calls.append(('start', step))

  def show(self, step, loss):
    self.calls.append(('show', step, loss))

  def close(self):
    self.calls.append(('close',))


def test_with_a_live_bar_an_epochs_progress_goes_to_the_bar(
    tmp_path, monkeypatch, caplog):
  clock = [100.0]
  monkeypatch.setattr(run_log.time, 'perf_counter', lambda: clock[0])
  bar = _BarCalls()
  log = run_log.RunLog(tmp_path, epochs=2, start_step=5, bar=bar)
  absl_logging.set_verbosity(absl_logging.INFO)
  caplog.set_level(logging.INFO)
  clock[0] = 200.0  # Long past PROGRESS_EVERY_S: the bar, no line.
  log.record(step=7, epoch=1, console=False, loss=2.0, examples_per_sec=9.0)
  log.progress(step=8, epoch=1, loss=1.5)
  log.record(step=10, epoch=1, console=True, loss=1.0)
  log.rollback(10)
  log.close()
  assert bar.calls == [('start', 5), ('show', 7, 2.0), ('show', 8, 1.5),
                       ('close',), ('start', 10), ('close',), ('start', 10),
                       ('close',)]
  lines = [r.getMessage() for r in caplog.records if r.name == 'absl']
  assert lines == ['epoch 1/2  step 10  loss 1']
