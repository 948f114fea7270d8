"""One run, start to finish: config -> strategy -> data -> model -> train ->
evaluate -> export -> report -> manifest. Importable from a notebook as
`tfpipeline.run`.

Everything the user controls is checked before `model_dir` is created or
changed, so bad input leaves no trace. A `model_dir` that holds a run is
resumed from its newest readable checkpoint. Every attempt that writes to
`model_dir` appends its outcome to the audit log.
"""

import contextlib
import dataclasses
import json
import pathlib
import sys
import tempfile
import time

from absl import logging

from tfpipeline import atomic_files
from tfpipeline import backend as backend_lib
from tfpipeline import cluster
from tfpipeline import config as config_lib
from tfpipeline import console
from tfpipeline import conversion
from tfpipeline import engines
from tfpipeline import integrity
from tfpipeline import run_identity
from tfpipeline.run_context import RunContext
from tfpipeline.run_context import Trained
from tfpipeline.errors import Interrupted
from tfpipeline.errors import Preempted
from tfpipeline.errors import UserError
from tfpipeline.errors import user_errors_through_tensorflow

def run(config=None, model_dir='/tmp/tfpipeline', *, strategy='auto',
        tpu: str = 'local', cpu_devices: int = 1, engine: str = 'tfpipeline',
        backend: str | None = None,
        allow_config_change: bool = False) -> dict[str, float]:
  """Trains, evaluates, exports and reports one experiment.

  Args:
    config: an ml_collections ConfigDict, an experiment name or path, or None
      for the embedded default (diabetes).
    model_dir: where every output goes (see README, "model_dir layout").
    strategy: a tf.distribute.Strategy, or one of tfpipeline.strategy's
      names ('auto', 'cpu', 'gpu', 'mirrored', 'multi_worker', 'tpu'); on
      the JAX backend, a name (see `jax_devices`).
    tpu: TPU address for strategy='tpu'.
    cpu_devices: logical CPU devices (mirrored on a CPU-only machine).
    engine: 'tfpipeline' (own XLA multi-step loop) or 'keras_fit'.
    backend: Keras's backend, 'tensorflow' or 'jax'; None: the config's
      train.backend. Keras takes one backend per process, chosen before it
      is first imported (see `backend`).
    allow_config_change: resume a run even if the config changes what its
      steps compute (model, data, optimizer...), or its data changed (see
      run_identity); see config.RESUMABLE_CHANGES for the changes that are
      always accepted. A change of engine never is.

  Returns:
    The test-split metrics, as written to metrics.json.

  Raises:
    UserError: bad config, data, strategy or model_dir; nothing was written.
    Preempted: stopped by a signal after saving a checkpoint.
  """
  config = checked_config(config, backend=backend, engine=engine)
  if isinstance(strategy, str) and strategy != 'multi_worker':
    cluster.check_alone(strategy)
  backend_lib.select(config.train.backend)
  if config.train.backend == 'jax' and strategy == 'multi_worker':
    # Which host is the chief is known once the JAX cluster is joined.
    from tfpipeline import jax_devices  # pylint: disable=g-import-not-at-top
    strategy = jax_devices.create(strategy, tpu=tpu, cpu_devices=cpu_devices,
                                  deterministic=config.train.deterministic)
    chief = strategy.process_index == 0
  else:
    chief = cluster.is_chief()
  model_dir = pathlib.Path(model_dir)
  meter = None
  if chief:
    check_chief_inputs(config, model_dir)
    from tfpipeline.report import compute  # pylint: disable=g-import-not-at-top
    meter = compute.EnergyMeter(config.report)  # The run's time and energy.
  try:
    run_context = _prepared(config, model_dir, strategy, tpu=tpu,
                            cpu_devices=cpu_devices, engine=engine,
                            chief=chief,
                            allow_config_change=allow_config_change)
    model = _checked_model(run_context)
    if not chief:
      return _train_as_worker(run_context, model)
    model_dir.mkdir(parents=True, exist_ok=True)
    with _audited(model_dir, run_context.config):
      test_metrics = _train_and_export(run_context, model, meter)
    logging.info('wrote %s', model_dir)
    return test_metrics
  finally:
    if meter:
      meter.stop()  # Also on errors: codecarbon's tracker has a thread.


def checked_config(config, *, backend: str | None, engine: str):
  """`run`'s config (a ConfigDict, an experiment name or path, None),
  loaded, on `backend` if given, validated and accepted by `engine`, its
  export formats' packages installed.

  Raises:
    UserError: a bad config, backend or engine, or a missing package.
  """
  if config is None or isinstance(config, str):
    config = config_lib.load(config)
  if backend is not None:
    config = config.copy_and_resolve_references()
    config.train.backend = backend
  config = config_lib.validate(config)
  engines.check(engine, config)
  conversion.check_installed(config.export.formats)
  return config


def check_chief_inputs(config, model_dir: pathlib.Path) -> None:
  """What the chief checks before it writes: `model_dir` is new, empty or
  a run's; the report's grid settings are known.

  Raises:
    UserError: either is not.
  """
  _check_model_dir(model_dir)
  from tfpipeline.report import compute  # pylint: disable=g-import-not-at-top
  compute.grid_intensity(config.report)  # A bad country is bad input.


def _prepared(config, model_dir: pathlib.Path, strategy, *, tpu: str,
              cpu_devices: int, engine: str, chief: bool,
              allow_config_change: bool) -> RunContext:
  """The run after the cheap checks: its device and data, checked (and, on
  the chief, checked against the run in `model_dir`), and its class
  weights."""
  # TensorFlow (and JAX) are imported only once the cheap checks have passed
  # (but for a JAX cluster, joined first: see `run`).
  on_jax = config.train.backend == 'jax'
  if on_jax:
    from tfpipeline import jax_devices as strategy_lib  # pylint: disable=g-import-not-at-top
  else:
    from tfpipeline import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  from tfpipeline import class_weights  # pylint: disable=g-import-not-at-top
  from tfpipeline.data import pipeline, sources  # pylint: disable=g-import-not-at-top

  if isinstance(strategy, str):
    strategy = strategy_lib.create(
        strategy, tpu=tpu, cpu_devices=cpu_devices,
        **({'deterministic': config.train.deterministic} if on_jax else {}))
  elif on_jax and not isinstance(strategy, strategy_lib.JaxDevices):
    raise UserError('backend jax: pass the strategy by name (auto, cpu, gpu, '
                    'tpu, mirrored), not a tf.distribute.Strategy')
  config = config_lib.resolve_for_device(
      config, on_tpu=strategy_lib.is_tpu(strategy),
      on_cpu=strategy_lib.is_cpu(strategy))
  splits = sources.load(config.data, loss=config.loss,
                        output_units=config.model.output_units)
  config = _with_columns(config, splits)
  inputs = pipeline.inputs(splits, config)
  _check_batch(config, len(splits.train), strategy.num_replicas_in_sync,
               per_replica_multiple=8 if strategy_lib.is_tpu(strategy) else 1)
  engines.check_replicas(engine, config, strategy.num_replicas_in_sync)
  config = config_lib.with_epochs_as_steps(config, len(splits.train))
  config = _calibrate_noise(config, len(splits.train))
  identity = run_identity.of(splits, engine)
  if chief:
    _check_resume(model_dir, config, allow_config_change, splits, inputs,
                  engine)
    run_identity.check(model_dir, identity,
                       allow_change=allow_config_change)
  return RunContext(config=config, model_dir=model_dir, output_dir=model_dir,
                    strategy=strategy, splits=splits, inputs=inputs,
                    engine=engine, chief=chief, identity=identity,
                    class_weights=class_weights.resolve(config, splits))


def _train_as_worker(run_context: RunContext, model) -> dict[str, float]:
  """A non-chief worker takes every step too, but writes to a scratch
  directory (as TensorFlow Model Garden does); it resumes from the chief's
  checkpoints."""
  with tempfile.TemporaryDirectory(prefix='tfpipeline-worker-') as scratch:
    test_metrics = _train_and_export(dataclasses.replace(
        run_context, output_dir=pathlib.Path(scratch)), model, meter=None)
  logging.info('done; only the chief writes %s', run_context.model_dir)
  return test_metrics


@contextlib.contextmanager
def _audited(model_dir: pathlib.Path, config):
  """Runs the body, then writes MANIFEST.json; appends the outcome
  (completed, preempted or failed) to the audit log."""
  from tfpipeline.report import provenance  # pylint: disable=g-import-not-at-top
  entry = {'user': provenance.user(), 'host': provenance.host(),
           'command': sys.argv, 'config_sha256': integrity.sha256_text(
               config_lib.to_json(config)), 'started_utc': provenance.utc_now()}

  def audit(**outcome):
    try:
      integrity.append_audit(model_dir, {
          **entry, **outcome, 'finished_utc': provenance.utc_now()})
    except OSError as e:  # Never hide the run's own outcome behind this.
      logging.error('cannot append to %s: %s', integrity.AUDIT_LOG, e)

  try:
    yield
    manifest_sha256 = integrity.write_manifest(model_dir)
  except (Preempted, Interrupted) as e:
    audit(outcome=f'preempted: {e}')
    raise
  except BaseException as e:
    audit(outcome=f'failed: {type(e).__name__}: {e}'.splitlines()[0])
    raise
  audit(outcome='completed', manifest_sha256=manifest_sha256)
  logging.info('MANIFEST.json sha256 %s (python -m tfpipeline.verify %s)',
               manifest_sha256, model_dir)


@user_errors_through_tensorflow()  # A streamed label the loss cannot take.
def _train_and_export(run_context: RunContext, model,
                      meter) -> dict[str, float]:
  """Restores `model` (`_checked_model`'s) through the run's engine,
  trains, evaluates, saves and, given the run's energy `meter` (the
  chief's), reports; writes under `run_context.output_dir`, recording the
  run's identity from the step it resumes at."""
  from tfpipeline import hparams  # pylint: disable=g-import-not-at-top
  from tfpipeline import trainer  # pylint: disable=g-import-not-at-top
  from tfpipeline.data import sources  # pylint: disable=g-import-not-at-top
  from tfpipeline.run_log import RunLog  # pylint: disable=g-import-not-at-top

  config, splits = run_context.config, run_context.splits
  output_dir = run_context.output_dir
  atomic_files.write_text(output_dir / 'config.json', config_lib.to_json(config))
  logging.info('%s: %d training, %d validation, %d test examples; %d '
               'parameters', sources.title(config.data),
               len(splits.train), len(splits.validation), len(splits.test),
               model.count_params())
  engine = engines.create(run_context, model)
  start_step = engine.start_step
  if start_step:
    logging.info('resuming from the checkpoint at step %d', start_step)
  run_identity.record(output_dir, run_context.identity, start_step)
  evaluator = engine.evaluator()
  run_log = RunLog(output_dir, config.train.epochs, start_step=start_step,
                   bar=_live_bar(run_context))
  if not start_step:
    hparams.write_hyperparameters(output_dir / 'tensorboard', config,
                                  trial_id=run_context.model_dir.name)
  train_start = time.perf_counter()
  try:
    finished = trainer.train(engine, run_context, run_log=run_log,
                             evaluator=evaluator)
  finally:
    run_log.close()
  best = finished.epoch_end.best_weights()
  if best:
    engine.load_weights(best)
    logging.info('train.keep_best: the weights of epoch %d (%s %.6g)',
                 finished.epoch_end.state.best_epoch, finished.epoch_end.metric,
                 finished.epoch_end.state.best)
  trained = Trained(engine.trained_model(), start_step,
                    time.perf_counter() - train_start, end_step=finished.step,
                    training=finished.epoch_end.summary(
                        finished.step, run_context.steps_per_epoch))
  try:
    return _evaluate_export_report(run_context, trained, evaluator, meter)
  except Interrupted as e:
    signal_name = str(e).split(':', 1)[0]
    raise Interrupted(f'{signal_name}: stopped after training, before the '
                      f'model and report were written; rerun the same '
                      f'command') from None


def _live_bar(run_context: RunContext):
  """The chief's live bar on a terminal's console (`console.quiet`); else
  None."""
  if not (run_context.chief and console.live_bar_columns()):
    return None
  from tfpipeline import progress_bar  # pylint: disable=g-import-not-at-top
  config = run_context.config
  return progress_bar.EpochBar(config.train.epochs,
                               run_context.steps_per_epoch,
                               config_lib.step_batch_size(config))


def _evaluate_export_report(run_context: RunContext, trained: Trained,
                            evaluator, meter) -> dict[str, float]:
  """Writes metrics.json, model.keras, export.formats (on the chief: the
  TFLite and ONNX files, checked) and (with the energy `meter`) the
  report."""
  from tfpipeline import export  # pylint: disable=g-import-not-at-top
  from tfpipeline import hparams  # pylint: disable=g-import-not-at-top
  config, output_dir = run_context.config, run_context.output_dir
  test_evaluation = evaluator.run(run_context.inputs.test)
  test_metrics = evaluator.metrics(test_evaluation)
  atomic_files.write_text(output_dir / 'metrics.json',
                       json.dumps(test_metrics, indent=2) + '\n')
  hparams.write_test_metrics(output_dir / 'tensorboard', test_metrics,
                             trained.end_step)
  export.save(trained.model, output_dir, run_context.inputs.vectorizer,
              config.export.formats)
  logging.info('test: %s', '  '.join(f'{k} {v:.4g}'
                                     for k, v in test_metrics.items()))
  exports = {}
  if run_context.chief:  # Other workers' outputs are thrown away.
    exports = export.portable(trained.model, output_dir,
                              run_context.inputs.test,
                              formats=config.export.formats,
                              quantization=config.export.tflite_quantization)
  if meter:
    report_start = time.perf_counter()
    from tfpipeline import report as report_lib  # pylint: disable=g-import-not-at-top
    report_lib.write(run_context, trained, test_evaluation, test_metrics,
                     exports, times=meter.stop())
    logging.info('report: %s (%.2f s)', output_dir / 'report' / 'report.html',
                 time.perf_counter() - report_start)
  return test_metrics


def _with_columns(config, splits):
  """`config` naming the columns the data source chose (the dataset's
  own, where the config left them to it), as config.json records them."""
  if not splits.feature_keys:  # Synthetic data: no columns to name.
    return config
  config = config.copy_and_resolve_references()
  config.data.features = splits.feature_keys
  config.data.label = splits.label_name
  config.data.group = splits.group_name
  return config


def _checked_model(run_context: RunContext):
  """The run's model, seeded and built under its strategy and the config's
  dtype policy before any write, so a bad model.* key, or a layer that
  DP-SGD or deterministic XLA refuses, fails without a trace (DP-SGD's
  check builds a model of its own)."""
  config, strategy = run_context.config, run_context.strategy
  splits, inputs = run_context.splits, run_context.inputs
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfpipeline import models  # pylint: disable=g-import-not-at-top
  if config.privacy.dp:
    # refused_layers calls a model in training mode: a throwaway one,
    # before the seed, so that the run's weights and draws stay as they were.
    from tfpipeline import dp_sgd  # pylint: disable=g-import-not-at-top
    refused = dp_sgd.refused_layers(models.build(
        config, splits.train, input_shape=inputs.shape,
        input_dtype=inputs.dtype))
    if refused:
      raise UserError(
          f'privacy.dp: layer {refused[0]}, which DP-SGD cannot privatise; '
          f'remove it from model.layers, or set privacy.dp=False (README, '
          f'"Privacy", lists the layers DP-SGD accepts)')
  keras.utils.set_random_seed(config.train.seed)
  if config.train.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.mixed_precision.set_global_policy(config.train.mixed_precision)
  with strategy.scope():
    model = models.build(config, splits.train, input_shape=inputs.shape,
                         input_dtype=inputs.dtype)
  if (config.train.deterministic and config.train.jit_compile and
      config.train.backend == 'tensorflow'):
    pooling = models.nondeterministic_under_xla(model)
    if pooling:
      raise UserError(
          f'train.deterministic=True: TensorFlow has no deterministic XLA '
          f'gradient for {pooling} (it refuses to compile); set '
          f'--config.train.jit_compile=False for a deterministic run, or '
          f'pool with AveragePooling or strided convolutions')
  return model


def _calibrate_noise(config, train_rows: int):
  """With privacy.target_epsilon, the noise multiplier that reaches it."""
  if not (config.privacy.dp and config.privacy.target_epsilon):
    return config
  from tfpipeline.report import privacy  # pylint: disable=g-import-not-at-top
  batch = config_lib.step_batch_size(config)
  config = config.copy_and_resolve_references()
  config.privacy.noise_multiplier = privacy.calibrate_noise_multiplier(
      target_epsilon=config.privacy.target_epsilon,
      sampling_probability=batch / train_rows,
      steps=config_lib.total_steps(config, train_rows),
      delta=config.privacy.delta)
  logging.info('privacy: noise multiplier %.4g reaches epsilon %g at delta %g',
               config.privacy.noise_multiplier, config.privacy.target_epsilon,
               config.privacy.delta)
  return config


def _check_model_dir(model_dir: pathlib.Path) -> None:
  """A new or empty directory, or one holding a run (config.json)."""
  if model_dir.exists() and not model_dir.is_dir():
    raise UserError(f'--model_dir={model_dir} is a file; give a directory')
  if (model_dir.is_dir() and any(model_dir.iterdir()) and
      not (model_dir / 'config.json').is_file()):
    raise UserError(f'--model_dir={model_dir} holds files but no run '
                    f'(no config.json); give a new or empty directory')


def _check_resume(model_dir: pathlib.Path, config, allow_config_change: bool,
                  splits, inputs, engine: str) -> None:
  """A run in `model_dir` may be resumed only by a compatible config whose
  model its checkpoints fit, and only forward: its checkpoints must not be
  past the config's last step (the report's examples, FLOPs and epsilon
  would count steps backwards)."""
  train_rows = len(splits.train)
  saved = model_dir / 'config.json'
  if not saved.is_file():
    return
  saved_json = saved.read_text()
  was = json.loads(saved_json).get('train', {}).get('backend', 'tensorflow')
  if was != config.train.backend:
    raise UserError(f'--model_dir={model_dir} holds a run trained on the '
                    f'{was} backend; resume it with --backend={was} (the '
                    f'backends checkpoint in different formats), or use a new '
                    f'--model_dir')
  changes = config_lib.result_changes(saved_json, config)
  if changes and not allow_config_change:
    key, was, now = changes[0]
    more = f' and {len(changes) - 1} more' if len(changes) > 1 else ''
    raise UserError(f'--model_dir={model_dir} holds a run with {key}={was!r}, '
                    f'now {now!r}{more}; use a new --model_dir, or pass '
                    f'--allow_config_change to resume anyway')
  engine_class = engines.engine_class(engine, config.train.backend)
  steps = engine_class.saved_steps(model_dir / 'checkpoints')
  total = config_lib.total_steps(config, train_rows)
  if steps and max(steps) > total:
    per_epoch = config_lib.steps_per_epoch(config, train_rows)
    raise UserError(
        f'train.epochs={config.train.epochs} ends at step {total}, but '
        f'--model_dir={model_dir} has a checkpoint at step {max(steps)} '
        f'(epoch {-(-max(steps) // per_epoch)}); set --config.train.epochs '
        f'to at least that, or use a new --model_dir')
  if steps:
    engine_class.check_checkpoint_fits(model_dir / 'checkpoints', config,
                                       splits, inputs)


def _check_batch(config, train_rows: int, replicas: int, *,
                 per_replica_multiple: int = 1) -> None:
  """One full step's batch of training rows, each pass's split evenly
  (TPUs: 8 per core)."""
  batch = config.train.global_batch_size
  passes = config.optimizer.gradient_accumulation_steps
  if train_rows < config_lib.step_batch_size(config):
    of_passes = (f' x optimizer.gradient_accumulation_steps={passes}'
                 if passes > 1 else '')
    raise UserError(f'data: {train_rows} training rows are fewer than one '
                    f"step's batch (train.global_batch_size={batch}"
                    f'{of_passes}); lower --config.train.global_batch_size '
                    f'or add rows')
  check_batch_split(config, replicas,
                    per_replica_multiple=per_replica_multiple)


def check_batch_split(config, replicas: int, *,
                      per_replica_multiple: int = 1) -> None:
  """Raises UserError unless the global batch splits evenly over
  `replicas` (TPUs: `per_replica_multiple` 8 per core)."""
  batch = config.train.global_batch_size
  multiple = replicas * per_replica_multiple
  if batch % multiple:
    per_core = (f' ({per_replica_multiple} per TPU core)'
                if per_replica_multiple > 1 else '')
    raise UserError(f'train.global_batch_size={batch} does not divide evenly '
                    f'over {replicas} replicas{per_core}; use a multiple of '
                    f'{multiple}, e.g. {multiple * max(1, round(batch / multiple))}')
