"""The report's plots, as PNG bytes: loss curves, groups, attributions.

Drawn on matplotlib Figures without pyplot (a notebook's backend and figures
stay untouched), with fixed margins and no timestamp in the file, so a
re-render gives the same bytes.
"""

import io

import numpy as np


def _figure(left: float = 0.12):
  """A figure and its axes, without pyplot: a notebook's backend and figures
  stay untouched."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=(6.4, 3.6), dpi=100)
  # Fixed margins: tight_layout's text measuring was most of render's time.
  figure.subplots_adjust(left=left, right=0.97, top=0.9, bottom=0.14)
  return figure, figure.subplots()


def _grid(rows: int, columns: int, cell_inches: float):
  """A figure of rows x columns image panels, axes off."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=(columns * cell_inches, rows * cell_inches + 0.6),
                  dpi=100)
  figure.subplots_adjust(left=0.02, right=0.98, top=1 - 0.6 / (
      rows * cell_inches + 0.6), bottom=0.02, wspace=0.1, hspace=0.35)
  axes = np.asarray(figure.subplots(rows, columns, squeeze=False))
  for panel in axes.ravel():
    panel.set_axis_off()
  return figure, axes


def _png(figure) -> bytes:
  buffer = io.BytesIO()
  # No timestamp or version in the file: a re-render gives the same bytes.
  figure.savefig(buffer, format='png', metadata={'Software': None})
  return buffer.getvalue()


def _plain(name) -> str:
  """A name from the data as a plot shows it: a `$` is a dollar sign, never
  the start of matplotlib's mathtext (`$\\x$` raised ValueError)."""
  return str(name).replace('$', r'\$')


def loss_plot(history: list[dict]) -> bytes:
  figure, axes = _figure()
  train = [(r['step'], r['loss']) for r in history if 'loss' in r]
  val = [(r['step'], r['val_loss']) for r in history if 'val_loss' in r]
  for points, label in ((train, 'training loss'), (val, 'validation loss')):
    if points:
      axes.plot(*zip(*points), label=label)
  axes.set_xlabel('step')
  axes.set_ylabel('loss')
  axes.legend()
  axes.set_title('Loss')
  return _png(figure)


def group_plot(fairness: dict) -> bytes:
  figure, axes = _figure()
  groups = sorted(fairness['by_group'])
  metrics = list(fairness['gaps'])
  width = 0.8 / max(len(groups), 1)
  for i, group in enumerate(groups):
    # Each metric relative to its largest group value, so they share an axis.
    values = [fairness['by_group'][group][m] /
              max(max(fairness['by_group'][g][m] for g in groups), 1e-12)
              for m in metrics]
    axes.bar([j + i * width for j in range(len(metrics))], values, width,
             label=f"{_plain(fairness['group'])}={_plain(group)} "
                   f"(n={fairness['by_group'][group]['count']:.0f})")
  axes.axhline(fairness['min_ratio'], color='grey', linestyle='--',
               linewidth=1)
  axes.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics)
  axes.set_ylabel('value / largest group value')
  axes.legend()
  axes.set_title('Test metrics by group')
  return _png(figure)


def attribution_plot(attributions: dict) -> bytes:
  figure, axes = _figure(left=0.2)
  ranking = attributions['ranking'][:20][::-1]
  axes.barh([_plain(row['feature']) for row in ranking],
            [row['mean_abs_attribution'] for row in ranking])
  axes.set_xlabel('mean |attribution| (output units)')
  axes.set_title(f"Integrated Gradients, {attributions['examples']} test "
                 f"examples")
  return _png(figure)


def class_map_plot(attributions: dict) -> bytes:
  """Each class's mean absolute attribution map, five classes a row."""
  maps = attributions['class_maps']
  columns = min(len(maps), 5)
  rows = -(-len(maps) // columns)
  figure, axes = _grid(rows, columns, 1.5)
  for panel, (name, entry) in zip(axes.ravel(), maps.items()):
    panel.imshow(np.asarray(entry['map']), cmap='magma')
    panel.set_title(f"class {name} (n={entry['examples']})", fontsize=8)
  figure.suptitle('Mean |attribution| by predicted class', fontsize=10)
  return _png(figure)


def attribution_examples_png(images: np.ndarray, maps: np.ndarray,
                             titles: list[str]) -> bytes:
  """Test images beside their signed attribution maps (red: toward the
  explained class, blue: against), two pairs a row."""
  pairs = len(images)
  rows = max(1, -(-pairs // 2))
  figure, axes = _grid(rows, 4, 1.5)
  for i in range(pairs):
    image_panel, map_panel = axes[i // 2, 2 * (i % 2)], axes[i // 2,
                                                             2 * (i % 2) + 1]
    image = np.asarray(images[i], np.float32)
    if image.shape[-1] not in (1, 3):  # Other channel counts: the first.
      image = image[..., :1]
    low, high = image.min(), image.max()
    image = (image - low) / max(high - low, 1e-12)
    image_panel.imshow(image[..., 0] if image.shape[-1] == 1 else image,
                       cmap='gray')
    image_panel.set_title(titles[i], fontsize=7)
    limit = max(float(np.abs(maps[i]).max()), 1e-12)
    map_panel.imshow(maps[i], cmap='bwr', vmin=-limit, vmax=limit)
    map_panel.set_title('attribution', fontsize=7)
  figure.suptitle('Test images and their Integrated Gradients', fontsize=10)
  return _png(figure)


def metric_against(values: list, metrics: list, key: str, metric: str, *,
                   log_scale: bool) -> bytes:
  """A sweep's metric against one searched key, a point per trial; values
  that are not numbers (a choice of tuples, names) as categories."""
  figure, axes = _figure()
  if all(isinstance(v, (int, float)) and not isinstance(v, bool)
         for v in values):
    axes.scatter(values, metrics)
    if log_scale:
      axes.set_xscale('log')
  else:
    labels = sorted({str(v) for v in values})
    axes.scatter([labels.index(str(v)) for v in values], metrics)
    axes.set_xticks(range(len(labels)), [_plain(label) for label in labels])
  axes.set_xlabel(_plain(key))
  axes.set_ylabel(_plain(metric))
  axes.set_title(_plain(f'{metric} against {key}'))
  return _png(figure)
