"""The privacy budget of DP-SGD training, with dp-accounting's RDP accountant.

The analysis composes a Poisson-sampled Gaussian mechanism (sampling
probability q = batch / training rows, noise multiplier sigma) over every
step. tfpipeline draws batches by shuffling each epoch, not by Poisson
sampling; the report says so, as the usual practice (Abadi et al. 2016;
TF Privacy) makes the same approximation.
"""

ASSUMPTION = (
    'RDP accounting of the Poisson-sampled Gaussian mechanism with q = batch '
    '/ training rows, composed over the steps. Training drew fixed-size '
    'batches from a per-epoch shuffle, not Poisson samples: the usual '
    'approximation, not a proof for shuffled batches. The guarantee is '
    'per example (record-level), not per person.')

# What the (epsilon, delta) guarantee covers, and what a DP run publishes
# outside it. Training statistics that would sit in the model or the report
# (Normalization's mean and variance, label standardisation, the mean
# baseline of attributions, a tokenizer's vocabulary) are refused under
# privacy.dp, so none of them is published.
COVERS = (
    'The trained weights (model.keras, saved_model/, checkpoints/) and what '
    'is computed from them on data other than the training split: '
    'validation and test metrics, predictions.csv, fairness, and '
    'attributions (from a zeros or fixed baseline).')
# Where the noise came from, and what must stay secret for the guarantee.
NOISE = (
    "The noise was drawn from a 128-bit key from the operating system's "
    'randomness, not from train.seed (published in config.json), and kept '
    'in checkpoints/dp_noise_key (mode 0600) so that a resumed run draws the '
    'same noise. That file, and checkpoints/ which holds it, are secret: '
    'whoever has the key can recompute the noise and remove it, and for them '
    'the guarantee is void.')
NOT_COVERED = (
    'The training loss logged per epoch (metrics.jsonl, tensorboard/, '
    'loss.png, the console): computed on training batches without noise.',
    "The training split's row count and sha256 (provenance.data): they "
    'identify the exact training set.')


def _event(noise_multiplier: float, sampling_probability: float, steps: int):
  import dp_accounting  # pylint: disable=g-import-not-at-top
  return dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          sampling_probability, dp_accounting.GaussianDpEvent(noise_multiplier)),
      steps)


def epsilon(*, noise_multiplier: float, sampling_probability: float,
            steps: int, delta: float) -> float:
  """epsilon at `delta` after `steps` DP-SGD steps (RDP accountant)."""
  from dp_accounting import rdp  # pylint: disable=g-import-not-at-top
  accountant = rdp.RdpAccountant()
  accountant.compose(_event(noise_multiplier, sampling_probability, steps))
  return float(accountant.get_epsilon(delta))


def calibrate_noise_multiplier(*, target_epsilon: float,
                               sampling_probability: float, steps: int,
                               delta: float) -> float:
  """The smallest noise multiplier whose epsilon at `delta` is the target."""
  import dp_accounting  # pylint: disable=g-import-not-at-top
  return float(dp_accounting.calibrate_dp_mechanism(
      dp_accounting.rdp.RdpAccountant,
      lambda sigma: _event(sigma, sampling_probability, steps),
      target_epsilon, delta))


def section(privacy_config, *, batch_size: int, train_rows: int,
            steps: int) -> dict:
  """The report's `privacy` section."""
  if not privacy_config.dp:
    return {'dp_sgd': False,
            'statement': 'Trained without differential privacy: the model '
                         'may memorise and reveal training examples.'}
  q = batch_size / train_rows
  delta = privacy_config.delta
  caveats = []
  if delta >= 1 / train_rows:
    caveats.append(f'delta={delta:g} is not below 1 / training rows '
                   f'({1 / train_rows:.3g}): the guarantee is weak.')
  return {
      'dp_sgd': True,
      'epsilon': epsilon(noise_multiplier=privacy_config.noise_multiplier,
                         sampling_probability=q, steps=steps, delta=delta),
      'delta': delta,
      'noise_multiplier': privacy_config.noise_multiplier,
      'noise_multiplier_source': (
          f'calibrated to target_epsilon={privacy_config.target_epsilon:g}'
          if privacy_config.target_epsilon else 'privacy.noise_multiplier'),
      'l2_norm_clip': privacy_config.l2_norm_clip,
      'sampling_probability': q,
      'steps': steps,
      'accountant': 'dp_accounting.rdp.RdpAccountant (version: see '
                    'provenance.packages)',
      'assumption': ASSUMPTION,
      'noise': NOISE,
      'covers': COVERS,
      'not_covered': list(NOT_COVERED),
      'caveats': caveats,
  }

