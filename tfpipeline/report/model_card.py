"""A model card (Mitchell et al. 2019) filled from what the run knows.

Every heading of the paper is present. What a training run cannot know
(who should use the model, for what, under which consent) is said to be
unknown, never invented; `report.intended_use` and `report.owners` let the
owner state it.
"""

NOT_KNOWN = 'Not known to the run'


def _stated(value: str, key: str) -> str:
  return value or f'{NOT_KNOWN}: not stated (set --config.{key}=...).'


def _influences(attributions: dict) -> str:
  """' Most influential features (Integrated Gradients): ...' or ''."""
  if attributions.get('kind') == 'table':
    top = [row['feature'] for row in attributions['ranking'][:3]]
    return (f" Most influential features (Integrated Gradients): "
            f"{', '.join(top)}.")
  if attributions.get('kind') == 'image':
    return (' Per-class attribution maps (Integrated Gradients) are in the '
            'report.')
  if attributions.get('kind') == 'text' and attributions['method']:
    return ' Tokens driving each predicted class (Integrated Gradients): ' + (
        '; '.join(f"{name}: " + ', '.join(
            row['token'] for row in ranking['for'][:3])
                  for name, ranking in attributions['token_ranking'].items())
        ) + '.'
  return ''


def _software(backend: str, versions: dict) -> str:
  """'tfpipeline 0.1.0, Keras 3.15.1 on TensorFlow 2.21.0', or on JAX."""
  keras = f"tfpipeline {versions['tfpipeline']}, Keras {versions['keras']}"
  if backend == 'jax':
    return (f"{keras} on JAX {versions['jax']} (jaxlib {versions['jaxlib']}); "
            f"TensorFlow {versions['tensorflow']} for the input pipeline")
  return f"{keras} on TensorFlow {versions['tensorflow']}"


def _step_batch(training: dict) -> str:
  """'32', or '128 (4 passes of 32, gradients accumulated)'."""
  batch, passes = (training['global_batch_size'],
                   training['gradient_accumulation_steps'])
  if passes == 1:
    return str(batch)
  return f'{batch * passes} ({passes} passes of {batch}, gradients accumulated)'


def _training_end(training: dict) -> str:
  """'; stopped early after epoch 12 (...); the weights of epoch 9 (...)'."""
  said = ''
  if training['label_smoothing']:
    said += f"; label smoothing {training['label_smoothing']:g}"
  if training['class_weights']:
    said += _class_weights(training['class_weight'], training['class_weights'])
  if training['stopped_early']:
    said += (f"; stopped early after epoch {training['stopped_epoch']} "
             f"({training['stop_reason']})")
  if training['exported_weights'] == 'best epoch':
    said += (f"; the weights of epoch {training['best_epoch']}, the best "
             f"{training['metric']} ({training['best_value']:.6g})")
  if training['learning_rate_reductions']:
    said += (f"; learning rate lowered {training['learning_rate_reductions']}"
             f" time(s) on a plateau of {training['metric']}")
  return said


def _class_weights(mode: str, weights: list[float]) -> str:
  """'; balanced class weights 0.8, 1.33' (ten at most, else their
  range)."""
  shown = (', '.join(f'{w:.3g}' for w in weights) if len(weights) <= 10 else
           f'from {min(weights):.3g} to {max(weights):.3g}')
  return f"; {'balanced ' if mode == 'balanced' else ''}class weights {shown}"


def _export_caveats(exports: dict) -> list[str]:
  """A line per export that failed its check, or is quantized."""
  caveats = []
  for name, entry in exports.items():
    if not entry['path']:
      caveats.append(f"Not exported: {entry['error']}.")
    elif not entry['ok']:
      caveats.append(f"{entry['path']} differs from model.keras by up to "
                     f"{entry['max_abs_diff']:.3g}, beyond its tolerance "
                     f"{entry['tolerance']:.3g}: check it before use.")
    elif entry.get('quantization', 'none') != 'none':
      caveats.append(f"{entry['path']} is quantized "
                     f"({entry['quantization']}): its outputs differ from "
                     f"model.keras's by up to {entry['max_abs_diff']:.3g}.")
  return caveats


def section(config, report: dict, *, test_metrics: dict, model_summary: str
            ) -> dict:
  """The report's `model_card` section, from the other sections."""
  compute, fairness = report['compute'], report['fairness']
  privacy, provenance = report['privacy'], report['provenance']
  attributions = report['attributions']
  data = provenance['data']
  source = data.get('name') or data.get('path') or data.get('source')

  factors = (f"Groups by {fairness['group']!r}: "
             f"{', '.join(sorted(fairness['by_group']))} (test split)."
             if fairness['evaluated'] else
             'No group attribute was given (data.group), so no factor was '
             'evaluated.')
  ethical = [privacy['statement'] if not privacy['dp_sgd'] else
             f"Trained with DP-SGD: ({privacy['epsilon']:.3g}, "
             f"{privacy['delta']:g})-differential privacy per example, "
             f"under the stated assumption."]
  if fairness['evaluated'] and fairness['flagged']:
    ethical.append(f"Group gaps beyond the threshold (ratio < "
                   f"{fairness['min_ratio']:g}) in: "
                   f"{', '.join(fairness['flagged'])}.")
  ethical.append(f'{NOT_KNOWN}: how the data was collected, with what '
                 'consent, and which uses could harm people.')
  caveats = []
  if fairness['evaluated'] and fairness['small_groups']:
    caveats.append(f"Groups with few test examples "
                   f"({', '.join(fairness['small_groups'])}): their metrics "
                   'are anecdotal.')
  if attributions.get('completeness_warning'):
    caveats.append('Integrated Gradients did not converge (completeness '
                   'error above 5%); raise report.ig_steps.')
  caveats += _export_caveats(report['exports'])
  caveats.append(f"Energy and CO2e ({compute['energy']['method']}): "
                 f"{compute['energy']['uncertainty']}")
  if privacy['dp_sgd']:
    caveats.append(privacy['assumption'])
  caveats.append('Attributions explain the model, not the world: they are '
                 'not causal effects.')
  return {
      'model_details': {
          'name': config.data.name or config.data.source,
          'architecture': model_summary,
          'trainable_parameters': compute['trainable_parameters'],
          'training': (f"{config.optimizer.name}, learning rate "
                       f"{config.optimizer.learning_rate:g} "
                       f"({config.optimizer.schedule}), loss {config.loss}, "
                       f"{config.train.epochs} epochs of batch "
                       f"{_step_batch(report['training'])}"
                       + _training_end(report['training'])),
          'trained': provenance['finished_utc'],
          'backend': provenance['backend'],
          'software': _software(provenance['backend'],
                                provenance['packages']),
          'owners': _stated(config.report.owners, 'report.owners'),
          'license': f'{NOT_KNOWN}: not stated.',
      },
      'intended_use': _stated(config.report.intended_use,
                              'report.intended_use'),
      'factors': factors,
      'metrics': {
          'test': test_metrics,
          'by_group': (fairness['gaps'] if fairness['evaluated'] else None),
          'decision_threshold': ('0.5 on the output probability'
                                 if config.loss == 'binary_crossentropy'
                                 else 'none'),
      },
      'evaluation_data': (f"The test split of {source}: "
                          f"{data['test']['rows']} rows (sha256 "
                          f"{data['test']['sha256'][:12]}...)."),
      'training_data': (f"The training split of {source}: "
                        f"{data['train']['rows']} rows; validation "
                        f"{data['validation']['rows']} rows."
                        + _influences(attributions)),
      'ethical_considerations': ethical,
      'caveats_and_recommendations': caveats,
  }
