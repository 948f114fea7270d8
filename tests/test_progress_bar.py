"""tfpipeline.progress_bar: the live bar of the epoch in training."""

import re

from tfpipeline import progress_bar


def test_the_bar_draws_an_epochs_first_values_at_once_then_4_times_a_second(
    monkeypatch, capsys):
  clock = [0.0]
  monkeypatch.setattr(progress_bar.time, 'monotonic', lambda: clock[0])
  bar = progress_bar.EpochBar(epochs=3, steps_per_epoch=100,
                              step_batch_size=32)
  bar.start(100)  # Epoch 2 starts.
  for step in range(101, 200):  # A step each 10 ms: a second.
    clock[0] = (step - 100) * 0.01
    bar.show(step, loss=0.5)
  bar.close()
  frames = [f for f in capsys.readouterr().err.split('\r') if f.strip()]
  # Drawn when started, at the first step, then at 0.26, 0.51 and 0.76 s.
  assert [re.search(r' (\d+)/100 steps', f).group(1) for f in frames] == [
      '0', '1', '26', '51', '76']
  assert frames[0].startswith('epoch 2/3 ') and frames[0].endswith('steps')
  assert re.fullmatch(r'epoch 2/3 .* 76/100 steps  [\d,]+ ex/s  loss 0.5  '
                      r'ETA \d\d:\d\d', frames[-1])


def test_no_bar_after_the_last_epoch(capsys):
  bar = progress_bar.EpochBar(epochs=2, steps_per_epoch=10,
                              step_batch_size=32)
  bar.start(20)
  bar.show(20, loss=0.5)
  bar.close()
  assert capsys.readouterr().err == ''
