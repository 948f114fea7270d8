"""report.privacy: epsilon by dp-accounting, noise calibration."""

import pytest

from tfpipeline import config
from tfpipeline.report import privacy


def test_epsilon_matches_dp_accounting_rdp():
  import dp_accounting
  q, sigma, steps, delta = 256 / 60000, 1.1, 14062, 1e-5
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          q, dp_accounting.GaussianDpEvent(sigma)), steps))
  ours = privacy.epsilon(noise_multiplier=sigma, sampling_probability=q,
                         steps=steps, delta=delta)
  assert ours == accountant.get_epsilon(delta)
  assert ours == pytest.approx(2.60, abs=0.01)


def test_calibrated_noise_reaches_the_target_epsilon():
  q, steps, delta = 32 / 309, 450, 1e-5
  sigma = privacy.calibrate_noise_multiplier(
      target_epsilon=8.0, sampling_probability=q, steps=steps, delta=delta)
  reached = privacy.epsilon(noise_multiplier=sigma, sampling_probability=q,
                            steps=steps, delta=delta)
  assert reached <= 8.0
  assert reached == pytest.approx(8.0, rel=0.01)
  assert privacy.epsilon(noise_multiplier=sigma * 0.95,
                         sampling_probability=q, steps=steps,
                         delta=delta) > 8.0


def test_privacy_section_without_dp_says_so():
  section = privacy.section(config.get_config().privacy, batch_size=32,
                            train_rows=309, steps=450)
  assert section['dp_sgd'] is False and 'without differential' in (
      section['statement'])
