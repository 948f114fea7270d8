"""report.json -> report.md, a self-contained report.html, and PNG plots
(drawn by `plots`).

Both documents are rendered from one list of blocks (headings, paragraphs,
tables, images), so they say the same thing. The HTML inlines its plots, so
the one file opens offline; the PNGs are also written beside it.
"""

import base64
import dataclasses
import html
import json
import pathlib
import re

from tfpipeline import atomic_files
from tfpipeline.report import plots


@dataclasses.dataclass
class _Heading:
  text: str
  level: int = 2


@dataclasses.dataclass
class _Text:
  text: str
  bullet: bool = False  # An item of a list.


@dataclasses.dataclass
class _Table:
  header: list
  rows: list


@dataclasses.dataclass
class _Image:
  name: str
  alt: str


@dataclasses.dataclass
class _Tokens:
  """A sentence's tokens shaded by signed attribution."""
  caption: str
  tokens: list
  attributions: list


# Markdown's markup anywhere in a line (CommonMark, with GitHub's tables,
# strikethrough and math), and at a line's start (list items).
_MARKUP = re.compile(r'([\\`*_\[\]<>|#~$&])')
_LINE_START = re.compile(r'^(\d*)([+\-.)])')

# Drawn when the report is written (it needs the test images), kept by a
# re-render: the other plots are drawn from report.json alone.
EXAMPLES_PNG = 'attribution_examples.png'


def render(model_dir: pathlib.Path) -> list[pathlib.Path]:
  """(Re)writes report.md, report.html and the plots; returns their paths."""
  report_dir = model_dir / 'report'
  report = json.loads((report_dir / 'report.json').read_text())
  history = _history(model_dir / 'metrics.jsonl')
  images = {'loss.png': plots.loss_plot(history)}
  if report['fairness']['evaluated']:
    images['groups.png'] = plots.group_plot(report['fairness'])
  attributions = report['attributions']
  if attributions['method'] and attributions['kind'] == 'table':
    images['attributions.png'] = plots.attribution_plot(attributions)
  elif attributions['method'] and attributions['kind'] == 'image':
    images['attributions.png'] = plots.class_map_plot(attributions)
  written = []
  for name, png in images.items():
    with atomic_files.replacing(report_dir / name) as tmp:
      tmp.write_bytes(png)
    written.append(report_dir / name)
  if (report_dir / EXAMPLES_PNG).is_file():
    images[EXAMPLES_PNG] = (report_dir / EXAMPLES_PNG).read_bytes()
  blocks = _blocks(report, images)
  atomic_files.write_text(report_dir / 'report.md', _markdown(blocks))
  atomic_files.write_text(report_dir / 'report.html', _html(blocks, images,
                                                         report))
  return written + [report_dir / 'report.md', report_dir / 'report.html']


def _history(path: pathlib.Path) -> list[dict]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines()
          if line.strip()]


def _mfu(utilisation: dict) -> str:
  if utilisation['mfu'] is None:  # The source says 'unknown peak' and why.
    return utilisation['peak_source']
  return (f"{100 * utilisation['mfu']:.2f}% of "
          f"{_number(utilisation['peak_flops_per_s'])} FLOP/s "
          f"({utilisation['peak_source']})")


def _number(value) -> str:
  if isinstance(value, bool) or value is None:
    return str(value)
  if isinstance(value, int):
    return f'{value:,}'
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


def _inline(value) -> str:
  """A value, nested dicts included, as one line: 'loss 2994, mae 43.4'."""
  if isinstance(value, dict):
    return '; '.join(f'{k} ' + (f'({_inline(v)})' if isinstance(v, dict)
                                else _inline(v)) for k, v in value.items())
  return _number(value)


# What tells one version of the data from another, in the provenance.
_DATA_VERSION_KEYS = ('source', 'name', 'version', 'sha256', 'seed')


def _blocks(report: dict, images: dict) -> list:
  compute, fairness = report['compute'], report['fairness']
  attributions, privacy = report['attributions'], report['privacy']
  provenance, card = report['provenance'], report['model_card']
  energy, flops = compute['energy'], compute['forward_flops_per_example']
  # Schema 2 (before the JAX backend): TensorFlow, no cross_check.
  backend = provenance.get('backend', 'tensorflow')
  blocks = [_Heading(f"Responsibility report: {card['model_details']['name']}",
                     1),
            _Text(f"Trained {provenance['finished_utc']} by "
                  f"{provenance['user']} on {provenance['host']}, Keras on "
                  f"its {backend} backend; config sha256 "
                  f"{provenance['config_sha256'][:16]}...")]

  blocks += [_Heading('Training'), _Image('loss.png', 'loss curves'),
             _Text(card['model_details']['training'] + '.'),
             _Table(['test metric', 'value'],
                    [[k, _number(v)] for k, v in
                     card['metrics']['test'].items()])]

  blocks += [_Heading('Compute and carbon'), _Table(['quantity', 'value'], [
      ['trainable parameters', _number(compute['trainable_parameters'])],
      ['forward FLOPs / example (counted)', _number(flops['graph_total'])],
      ['Dense, Conv and pooling FLOPs / example (analytic)',
       _number(flops['analytic'])],
      ['counted matmuls and convolutions = analytic',
       _number(flops['matmul_agrees'])],
      ['counted pooling = analytic', _number(flops['pooling_agrees'])],
      ['examples seen', _number(compute['examples_seen'])],
      ['training FLOPs', _number(compute['training_flops'])],
      ['training wall time (s)', _number(compute['train_wall_s'])],
      ['run wall time (s)', _number(compute['run_wall_s'])],
      ['achieved FLOP/s', _number(compute['achieved_flops_per_s'])],
      ['MFU (achieved / peak)', _mfu(compute['utilisation'])],
      ['devices', f"{compute['devices']['count']} x "
                  f"{compute['devices']['kind']} "
                  f"({compute['devices']['model']}), "
                  f"{compute['devices']['replicas']} replica(s)"],
      ['energy (kWh)', _number(energy['kwh'])],
      ['grid intensity (gCO2e/kWh)',
       f"{_number(energy['grid_gco2_per_kwh'])} ({energy['grid_source']})"],
      ['CO2e (kg)', _number(energy['co2e_kg'])],
      ['energy method', energy['method']],
  ]), _Text(f"FLOPs counted by {flops['method']}" + (
      f"; compared: {flops['cross_check']}." if 'cross_check' in flops
      else '.')),
             _Text(f"Uncertainty: {energy['uncertainty']} Scope: "
                   f"{compute['scope']}.")]

  blocks.append(_Heading('Fairness'))
  if fairness['evaluated']:
    metric_names = [m for m in next(iter(fairness['by_group'].values()))]
    blocks += [
        _Image('groups.png', 'test metrics by group'),
        _Table([fairness['group']] + metric_names,
               [[g] + [_number(row[m]) for m in metric_names]
                for g, row in sorted(fairness['by_group'].items())]),
        _Table(['metric', 'difference', 'ratio', 'flagged'],
               [[m, _number(g['difference']), _number(g['ratio']),
                 'YES' if g['flagged'] else 'no']
                for m, g in fairness['gaps'].items()]),
        _Text(fairness['note'])]
  else:
    blocks.append(_Text(fairness['reason']))

  blocks.append(_Heading('Feature attributions'))
  blocks += _attribution_blocks(attributions, images)

  blocks.append(_Heading('Privacy'))
  if privacy['dp_sgd']:
    blocks += [_Table(['quantity', 'value'], [
        ['epsilon', _number(privacy['epsilon'])],
        ['delta', _number(privacy['delta'])],
        ['noise multiplier', f"{_number(privacy['noise_multiplier'])} "
                             f"({privacy['noise_multiplier_source']})"],
        ['l2 norm clip', _number(privacy['l2_norm_clip'])],
        ['sampling probability', _number(privacy['sampling_probability'])],
        ['steps', _number(privacy['steps'])]]),
               _Text(privacy['assumption']),
               _Text(privacy['noise']),
               _Text(f"Covered: {privacy['covers']}")]
    blocks += [_Text(f'Not covered: {item}') for item in
               privacy['not_covered']]
    blocks += [_Text(c) for c in privacy['caveats']]
  else:
    blocks.append(_Text(privacy['statement']))

  blocks += _export_blocks(report.get('exports'))  # Schema 4 on.

  data = provenance['data']
  blocks += [
      _Heading('Provenance and integrity'),
      _Table(['item', 'value'], [
          ['config sha256', provenance['config_sha256']],
          ['data', ', '.join(f'{k}={v}' for k, v in data.items()
                             if not isinstance(v, dict))],
          *[[f'{split} split', f"{data[split]['rows']} rows, sha256 "
                               f"{data[split]['sha256']}"]
            for split in ('train', 'validation', 'test')],
          ['data versions (identity.json)', '; '.join(
              f"from step {v['from_step']}: " + ', '.join(
                  f"{k}={v['data'][k]}" for k in _DATA_VERSION_KEYS
                  if k in v['data'])
              for v in provenance.get('data_versions', ()))],
          ['git', (f"{provenance['git']['commit']}"
                   f"{' (package modified)' if provenance['git']['package_modified'] else ''}"
                   if provenance['git'] else
                   'none: tfpipeline runs installed, not from its own '
                   'checkout (its version is under packages)')],
          ['Keras backend (train.backend)', backend],
          ['python', provenance['python']],
          ['seeds', ', '.join(f'{k}={v}' for k, v in
                              provenance['seeds'].items())],
          *[[f'package {k}', v] for k, v in provenance['packages'].items()],
          *[[f'sha256 {k}', v] for k, v in
            provenance['artefacts_sha256'].items()],
      ]),
      _Text('MANIFEST.json in the run directory lists the sha256 of every '
            'file; `python -m tfpipeline.verify MODEL_DIR` names any file '
            'changed, missing or added since the run.')]

  blocks.append(_Heading('Model card'))
  for heading, value in card.items():
    blocks.append(_Heading(heading.replace('_', ' ').capitalize(), 3))
    if isinstance(value, dict):
      blocks.append(_Table(['', ''], [[k.replace('_', ' '), _inline(v)]
                                      for k, v in value.items()]))
    elif isinstance(value, list):
      blocks += [_Text(item, bullet=True) for item in value]
    else:
      blocks.append(_Text(value))
  return blocks


def _export_blocks(exports: dict | None) -> list:
  """The TFLite and ONNX files and their checks, if any was asked for."""
  if not exports:
    return []
  rows = []
  for name, entry in exports.items():
    if entry['path']:
      rows.append([name, entry['path'] + (
          f" ({entry['quantization']})" if entry.get('quantization', 'none')
          != 'none' else ''), _number(entry['max_abs_diff']),
                   _number(entry['tolerance']), 'yes' if entry['ok'] else 'NO'])
    else:
      rows.append([name, entry['error'], '', '', 'NO'])
  examples = max(entry.get('examples', 0) for entry in exports.values())
  return [_Heading('Exports'),
          _Table(['format', 'file', 'max |difference| from model.keras',
                  'tolerance', 'within'], rows),
          _Text(f'Each file run in its runtime (LiteRT, ONNX Runtime) on the '
                f'first {examples} test examples; the tolerance is the '
                f"format's relative tolerance times the largest |output| of "
                f'model.keras on them.')]


def _attribution_blocks(attributions: dict, images: dict) -> list:
  if not attributions['method']:
    return [_Text(attributions['skipped'])]
  summary = _Text(
      f"Integrated Gradients, {attributions['steps']} trapezoid steps from "
      f"the {attributions['baseline']} baseline, over "
      f"{attributions['examples']} test examples ({attributions['output']}). "
      f"Completeness error {attributions['completeness_error']:.2e}" +
      (' (ABOVE 5%: raise report.ig_steps).'
       if attributions['completeness_warning'] else ' (at most 5%).'))
  kind = attributions['kind']
  if kind == 'table':
    return [_Image('attributions.png', 'mean absolute attribution per feature'),
            summary,
            _Table(['rank', 'feature', 'mean |attribution|'],
                   [[str(i + 1), row['feature'],
                     _number(row['mean_abs_attribution'])]
                    for i, row in enumerate(attributions['ranking'])])]
  if kind == 'image':
    blocks = [_Image('attributions.png',
                     'mean absolute attribution map per predicted class'),
              summary, _Text(f"Maps: {attributions['map_method']}.")]
    if EXAMPLES_PNG in images:
      blocks.insert(1, _Image(EXAMPLES_PNG, 'test images beside their '
                              'attribution maps'))
    return blocks
  blocks = [summary, _Text(f"Tokens: {attributions['token_method']}.")]
  for name, ranking in attributions['token_ranking'].items():
    for direction in ('for', 'against'):
      blocks.append(_Table(
          [f'tokens {direction} class {name}', 'mean attribution', 'count'],
          [[row['token'], _number(row['mean_attribution']),
            _number(row['count'])] for row in ranking[direction]]))
  for sentence in attributions['sentences']:
    blocks.append(_Tokens(
        f"Test example {sentence['example']}, predicted "
        f"{_number(sentence['predicted'])} (red: toward the prediction, "
        f"blue: against)", sentence['tokens'], sentence['attributions']))
  return blocks


def _literal(text, *, line_start: bool = False) -> str:
  """`text` as Markdown shows it, never as markup: one line, its markup
  characters backslash-escaped; at a `line_start`, a leading list marker
  too (names and values come from the data: a feature `a|b*c_<x>`)."""
  text = _MARKUP.sub(r'\\\1', ' '.join(str(text).split()))
  return _LINE_START.sub(r'\1\\\2', text) if line_start else text


def _markdown(blocks: list) -> str:
  out = []
  for block in blocks:
    if isinstance(block, _Heading):
      out.append('#' * block.level + ' ' + _literal(block.text))
    elif isinstance(block, _Text):
      out.append('- ' + _literal(block.text) if block.bullet else
                 _literal(block.text, line_start=True))
    elif isinstance(block, _Image):
      out.append(f'![{_literal(block.alt)}]({block.name})')
    elif isinstance(block, _Tokens):
      out.append(f'{_literal(block.caption, line_start=True)}: ' + ' '.join(
          f'{_literal(token)}({value:+.2g})' for token, value in
          zip(block.tokens, block.attributions)))
    else:
      out.extend('| ' + ' | '.join(row) + ' |' for row in [
          [_literal(c) for c in block.header], ['---'] * len(block.header),
          *[[_literal(c) for c in row] for row in block.rows]])
    out.append('')
  return '\n'.join(out)


_STYLE = ('body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem '
          'auto;padding:0 1rem;color:#222}table{border-collapse:collapse;'
          'margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;'
          'text-align:left;vertical-align:top}th{background:#f3f3f3}'
          'img{max-width:100%}')


def _shaded(block: _Tokens) -> str:
  """Tokens as spans, red toward the prediction and blue against, opacity
  by |attribution| over the sentence's largest."""
  scale = max((abs(v) for v in block.attributions), default=0.0) or 1.0
  spans = []
  for token, value in zip(block.tokens, block.attributions):
    colour = '220,40,40' if value > 0 else '40,90,220'
    spans.append(f'<span title="{value:+.3g}" style="background:rgba('
                 f'{colour},{abs(value) / scale:.2f})">'
                 f'{html.escape(token)}</span>')
  return ' '.join(spans)


def _html(blocks: list, images: dict, report: dict) -> str:
  e = html.escape
  title = e(report['model_card']['model_details']['name'])
  out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
         f'<title>Responsibility report: {title}</title>',
         f'<style>{_STYLE}</style></head><body>']
  for block in blocks:
    if isinstance(block, _Heading):
      out.append(f'<h{block.level}>{e(block.text)}</h{block.level}>')
    elif isinstance(block, _Text):
      out.append(f'<p>{"- " if block.bullet else ""}{e(block.text)}</p>')
    elif isinstance(block, _Image):
      data = base64.b64encode(images[block.name]).decode()
      out.append(f'<p><img alt="{e(block.alt)}" '
                 f'src="data:image/png;base64,{data}"></p>')
    elif isinstance(block, _Tokens):
      out.append(f'<p>{e(block.caption)}:<br>{_shaded(block)}</p>')
    else:
      out.append('<table><tr>' + ''.join(f'<th>{e(h)}</th>'
                                         for h in block.header) + '</tr>')
      out.extend('<tr>' + ''.join(f'<td>{e(str(c))}</td>' for c in row) +
                 '</tr>' for row in block.rows)
      out.append('</table>')
  out.append('</body></html>')
  return '\n'.join(out) + '\n'
