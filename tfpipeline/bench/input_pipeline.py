"""Input pipeline and memory benchmarks on image datasets on disk.

Cases of `python -m tfpipeline.bench`:

    input_jpeg32, input_jpeg224   images/s read from ArrayRecord, decoded
                                  from JPEG, flipped and cropped, batch 256:
                                  tfpipeline's training pipeline (one step
                                  per element, and the trainer's blocks)
                                  against two plain tf.data pipelines doing
                                  the same work
    rss                           peak RSS of a training run against the
                                  size of the streamed dataset

The datasets are generated once into `--bench_data_dir` by a TFDS builder
(smooth random images, so that JPEG files have realistic sizes) and kept
for later runs. Each setting runs in its own process; settings alternate
and medians are reported.
"""

import json
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np

from tfpipeline.bench import processes

BATCH = 256
INPUT_CASES = {'input_jpeg32': 'jpeg32', 'input_jpeg224': 'jpeg224'}
RSS = 'rss'
CASES = (*INPUT_CASES, RSS)


def _prepared(name: str, data_dir: str):
  """`images.prepared`, importing (registering) the TFDS builder only now."""
  from tfpipeline.bench import images  # pylint: disable=g-import-not-at-top
  return images.prepared(name, data_dir)


def _tfpipeline_dataset(name: str, data_dir: str, block: int):
  """tfpipeline's own training pipeline on the dataset."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfpipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  from tfpipeline.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  c = config_lib.load('cifar10_cnn')
  c.data.update(name=f'bench_images/{name}', data_dir=data_dir,
                train_split='train', validation_split='train[:1%]',
                test_split='train[:1%]')
  splits = sources.load(c.data, loss=c.loss)
  inputs = pipeline.inputs(splits, c)
  dataset_fn = pipeline.training_dataset_fn(
      inputs.train, BATCH, seed=0, steps_per_block=block or None)
  return dataset_fn(tf.distribute.InputContext())


def _plain_dataset(name: str, data_dir: str, *, batched: bool):
  """The same work written as plain tf.data pipelines: a shuffled index
  per epoch, a batched random-access read, then parse, decode, flip and
  crop (each image its own seed) in parallel, batched and prefetched.

  Per example (`batched=False`): the textbook form, one map call per image.
  Batched: one parallel map call per batch, parsing the batch at once and
  decoding and augmenting its images in a `tf.map_fn`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import decode  # pylint: disable=g-import-not-at-top
  builder = _prepared(name, data_dir)
  source = builder.as_data_source(
      split='train', deserialize_method=decode.DeserializeMethod.RAW_BYTES)
  size = len(source)
  spec = {'image': tf.io.FixedLenFeature([], tf.string),
          'label': tf.io.FixedLenFeature([], tf.int64)}
  shape = builder.info.features['image'].shape

  def read(rows):
    records = tf.numpy_function(
        lambda r: np.array(source.__getitems__(r.tolist()), dtype=object),
        [rows], tf.string, stateful=False)
    records.set_shape(rows.shape)
    return records

  def image(encoded, seed):
    image = tf.io.decode_jpeg(encoded, channels=3)
    image = tf.image.stateless_random_flip_left_right(image, seed)
    image = tf.image.pad_to_bounding_box(image, 4, 4, shape[0] + 8,
                                         shape[1] + 8)
    return tf.image.stateless_random_crop(image, shape, seed + 1)

  def example(serialized, seed):
    parsed = tf.io.parse_single_example(serialized, spec)
    return image(parsed['image'], seed), tf.cast(parsed['label'], tf.int32)

  def batch(rows):
    parsed = tf.io.parse_example(read(rows), spec)
    seeds = tf.stack([rows, rows], axis=1)
    images = tf.map_fn(lambda x: image(*x), (parsed['image'], seeds),
                       fn_output_signature=tf.TensorSpec(shape, tf.uint8))
    return images, tf.cast(parsed['label'], tf.int32)

  orders = tf.data.Dataset.counter().map(
      lambda epoch: tf.random.experimental.stateless_shuffle(
          tf.range(size, dtype=tf.int64), seed=tf.stack([epoch, 0])))
  rows = orders.unbatch().batch(BATCH, drop_remainder=True)
  if batched:
    batches = rows.map(batch, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)
  records = rows.map(read, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True).unbatch()
  seeds = tf.data.Dataset.counter().map(lambda i: tf.stack([i, i]))
  examples = tf.data.Dataset.zip(records, seeds).map(
      example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return examples.batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def measure_input(setting: dict, units: int) -> dict:
  """Images/s of one pipeline (in this fresh process): median of `units`
  timed units of 20 batches (or of 4 blocks, at least as many), after one.
  Several elements a unit, so that elements prefetched during the previous
  unit do not flatter it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  name, data_dir = setting['dataset'], setting['data_dir']
  _prepared(name, data_dir)
  if setting['pipeline'].startswith('plain'):
    dataset = _plain_dataset(name, data_dir,
                             batched=setting['pipeline'] == 'plain_batched')
    per_element = 1
  else:
    block = setting['block']
    dataset = _tfpipeline_dataset(name, data_dir, block)
    per_element = block or 1
  elements = max(4, 20 // per_element)
  iterator = iter(dataset)
  seconds = []
  for _ in range(units + 1):
    start = time.perf_counter()
    for _ in range(elements):
      features = next(iterator)[0]
    tf.debugging.assert_type(features, tf.uint8)
    seconds.append(time.perf_counter() - start)
  images = elements * per_element * BATCH
  return {**setting, 'images_per_sec': images / statistics.median(
      seconds[1:]), 'units': units, 'images_per_unit': images}


def input_case(case: str, data_dir: str, units: int, rounds: int = 3) -> list:
  """Both pipelines, alternated over `rounds` processes each; medians."""
  name = INPUT_CASES[case]
  _prepared(name, data_dir)
  from tfpipeline.data import pipeline  # pylint: disable=g-import-not-at-top
  size = 32 if name == 'jpeg32' else 224
  block = pipeline.steps_per_block(100, 10**6, BATCH * size * size * 3)
  settings = [{'pipeline': 'plain_batched'}, {'pipeline': 'plain'},
              {'pipeline': 'tfpipeline', 'block': 0},
              {'pipeline': 'tfpipeline', 'block': block}]
  runs = {i: [] for i in range(len(settings))}
  for round_ in range(rounds):
    for i, setting in enumerate(settings):
      setting = {**setting, 'dataset': name, 'data_dir': data_dir}
      print(f'{case}: {setting} ({round_ + 1}/{rounds})', file=sys.stderr,
            flush=True)
      runs[i].append(processes.run_json([
          sys.executable, '-m', 'tfpipeline.bench',
          f'--worker={json.dumps({"case": case, **setting})}',
          f'--units={units}']))
  results = []
  for i, setting in enumerate(settings):
    good = [r['images_per_sec'] for r in runs[i] if 'images_per_sec' in r]
    result = {'case': case, **setting, 'dataset': name, 'rounds': rounds}
    if not good:
      result['error'] = runs[i][-1].get('error', 'no result')
    else:
      result['images_per_sec'] = statistics.median(good)
      result['images_per_sec_all'] = good
    results.append(result)
  plain = max((r['images_per_sec'] for r in results
               if r['pipeline'].startswith('plain') and 'images_per_sec' in r),
              default=None)
  for result in results:
    if plain and 'images_per_sec' in result:
      result['vs_plain_best'] = result['images_per_sec'] / plain
  return results


def rss_case(data_dir: str, counts=(2_000, 8_000, 32_000)) -> list:
  """Peak RSS of a short training run against the dataset's size."""
  results = []
  for count in counts:
    name = f'raw224_{count}'
    builder = _prepared(name, data_dir)
    data_bytes = sum(f.stat().st_size for f in
                     pathlib.Path(builder.data_dir).glob('*.array_record-*'))
    command = [
        sys.executable, '-m', 'tfpipeline.train', '--config=cifar10_cnn',
        f'--model_dir={data_dir}/rss_run_{count}',
        f'--config.data.name=bench_images/{name}',
        f'--config.data.data_dir={data_dir}',
        "--config.data.train_split=train", "--config.data.test_split=train[:256]",
        "--config.data.validation_split=train[:256]",
        '--config.train.epochs=1', '--config.train.global_batch_size=64',
        "--config.model.layers=(('Rescaling', {'scale': 0.00392156862745098}), "
        "('Conv2D', {'filters': 8, 'kernel_size': 8, 'strides': 8}), "
        "('GlobalAveragePooling2D', {}))",
        '--config.optimizer.schedule=constant',
        '--config.report.energy_method=estimate']
    print(f'{RSS}: {count} examples, {data_bytes / 2**30:.2f} GiB',
          file=sys.stderr, flush=True)
    start = time.perf_counter()
    rss = processes.run_json([sys.executable, '-c', (
        'import json, resource, subprocess, sys; '
        f'run = subprocess.run({command!r}, capture_output=True, text=True); '
        'print(json.dumps({"returncode": run.returncode, "last_line": '
        '(run.stderr.strip().splitlines() or [""])[-1][-300:], "peak_rss_kb": '
        'resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))')])
    subprocess.run(['rm', '-rf', f'{data_dir}/rss_run_{count}'], check=False)
    results.append({'case': RSS, 'examples': count,
                    'dataset_gib': data_bytes / 2**30,
                    'wall_s': time.perf_counter() - start, **rss,
                    'peak_rss_gib': rss.get('peak_rss_kb', 0) / 2**20})
  return results


def print_input(results: list) -> None:
  print(f'{"case":<15}{"pipeline":<24}{"images/s":>12}{"vs plain best":>15}')
  for r in results:
    label = r['pipeline'] + (f' block={r["block"]}' if r['pipeline'] ==
                             'tfpipeline' else '')
    if 'error' in r:
      print(f'{r["case"]:<15}{label:<24}  failed: {r["error"][:80]}')
    else:
      print(f'{r["case"]:<15}{label:<24}{r["images_per_sec"]:>12,.0f}'
            f'{r.get("vs_plain_best", float("nan")):>14.2f}x')


def print_rss(results: list) -> None:
  print(f'{"examples":>10}{"dataset GiB":>13}{"peak RSS GiB":>14}{"exit":>6}')
  for r in results:
    print(f'{r["examples"]:>10,}{r["dataset_gib"]:>13.2f}'
          f'{r["peak_rss_gib"]:>14.2f}{r.get("returncode", "-"):>6}')
    if r.get('returncode'):
      print(f'  failed: {r.get("last_line") or r.get("error")}')
