"""The own loop on Keras's JAX backend (train.backend='jax').

A block of k steps is one `jax.jit`-compiled XLA program: `lax.fori_loop`
over the block's real steps, each `jax.value_and_grad` of
`model.stateless_call` then `optimizer.stateless_apply`, so forward,
backward and optimizer for the whole block run without returning to
Python, as the TensorFlow engine's fused block does. With
train.jit_compile=False (what 'auto' resolves to for convolutions on a
CPU) each step is its own compiled call instead: XLA's CPU backend emits a
convolution's gradients inside a loop as plain loops, 47x slower a step
(BUILD_NOTES.md). The state (trainable,
non-trainable and optimizer variables, `orbax_checkpoints.KEYS`) is held as
JAX arrays outside the Keras objects, replicated over the run's mesh
(`jax_devices`), and donated to each block, which returns the next one.
Blocks come from the same index pipeline as the TensorFlow engines
(tf.data on the host: the examples of step s are a pure function of
(seed, s)), split over the mesh along the batch axis: each host reads its
own slice of every global batch (the whole batch on one host); the next
block is read while the device runs the current one.
"""

import pathlib
import time

import jax
import jax.numpy as jnp
import keras
import numpy as np
import tensorflow as tf

from tfpipeline import checkpointing
from tfpipeline import config as config_lib
from tfpipeline import dp_sgd
from tfpipeline import dp_sgd_jax
from tfpipeline import models
from tfpipeline import passes
from tfpipeline import schedules
from tfpipeline.data import pipeline
from tfpipeline.engines import engine
from tfpipeline.engines import orbax_checkpoints
from tfpipeline.evaluation import Evaluator


class JaxLoop(engine.Engine):
  """Builds the optimizer and the state, restores the newest checkpoint."""

  def __init__(self, run, model):
    config = run.config
    self.run, self.model = run, model
    self._devices = run.strategy
    self._step_batch_size = config_lib.step_batch_size(config)
    self._micro_batches = config.optimizer.gradient_accumulation_steps
    self._loss_fn = models.training_loss_fn(config, run.class_weights)
    self.optimizer = models.optimizer(config.optimizer,
                                      config.train.mixed_precision)
    self.optimizer.build(model.trainable_variables)
    self._schedule = schedules.learning_rate(config.optimizer)
    self._checkpoints = orbax_checkpoints.Checkpoints(
        run.model_dir / 'checkpoints', keep=config.train.keep_checkpoints,
        writes=run.chief)
    self.dp = dp_sgd.DpSgd.for_run(run)
    self._iterations_index = _index_of(self.optimizer.iterations,
                                       self.optimizer.variables)
    self._state = self._placed(_state_of(model, self.optimizer))
    self.start_step = self._step = self.restore()
    self._steps_per_block = pipeline.steps_per_block(
        config.train.steps_per_loop, run.steps_per_epoch,
        self._step_batch_size * run.inputs.bytes_per_example())
    self._fused = config.train.jit_compile
    self._compiled_block = jax.jit(self._steps_on_block, donate_argnums=0)
    self._compiled_step = jax.jit(self._step_on_batch, donate_argnums=0)
    self._compiled_finite = jax.jit(_finite)
    self._blocks = None  # Made at the first block, and after a restore.
    self._read_ahead = None  # The next block, read while one runs.

  @classmethod
  def saved_steps(cls, directory: pathlib.Path) -> list[int]:
    return orbax_checkpoints.saved_steps(directory)

  @classmethod
  def check_checkpoint_fits(cls, directory: pathlib.Path, config, splits,
                            inputs) -> None:
    model = models.build(config, splits.train, input_shape=inputs.shape,
                         input_dtype=inputs.dtype)
    optimizer = models.optimizer(config.optimizer,
                                 config.train.mixed_precision)
    optimizer.build(model.trainable_variables)
    orbax_checkpoints.check_fits(directory, orbax_checkpoints.abstract(
        _state_of(model, optimizer)))

  def _placed(self, state: dict) -> dict:
    """`state` (host arrays, the same on every host) as fresh arrays
    replicated on every device (never the Keras variables' own buffers,
    which a donated block would delete)."""
    return jax.device_put(jax.tree.map(np.array, state),
                          self._devices.replicated())

  # Training.

  def _loss_and_updates(self, trainable, non_trainable, features, labels):
    """A pass's share of the step's loss (each example counting 1 / the
    step's batch, the layers' regularization losses once a step) and the
    model's new non-trainable state."""
    predictions, non_trainable, losses = self.model.stateless_call(
        trainable, non_trainable, features, training=True, return_losses=True)
    per_example = self._loss_fn(labels, predictions)
    loss = jnp.sum(per_example.astype('float32')) / self._step_batch_size
    for penalty in losses:
      loss += penalty.astype('float32') / self._micro_batches
    return loss, non_trainable

  def _loss_and_gradients(self, trainable, non_trainable, features, labels):
    """The step's loss, the model's new non-trainable state and the
    gradients. With optimizer.gradient_accumulation_steps k, k passes in a
    `lax.scan` (`passes`), gradients summed."""
    gradients_of = jax.value_and_grad(self._loss_and_updates, has_aux=True)
    if self._micro_batches == 1:
      (loss, non_trainable), gradients = gradients_of(
          trainable, non_trainable, features, labels)
      return loss, non_trainable, gradients

    def one_pass(carry, part):
      non_trainable, loss, gradients = carry
      (part_loss, non_trainable), part_gradients = gradients_of(
          trainable, non_trainable, *part)
      return (non_trainable, loss + part_loss,
              jax.tree.map(jnp.add, gradients, part_gradients)), None

    (non_trainable, loss, gradients), _ = jax.lax.scan(
        one_pass, (non_trainable, jnp.zeros((), jnp.float32),
                   jax.tree.map(jnp.zeros_like, trainable)),
        passes.split((features, labels), self._micro_batches))
    return loss, non_trainable, gradients

  def _step_on_batch(self, state: dict, features, labels):
    """One step: the next state and the step's loss (with `dp`, DP-SGD's
    gradients: clipped per example, noised; see `dp_sgd_jax`)."""
    if self.dp:
      loss, non_trainable, gradients = dp_sgd_jax.gradients(
          self.model, self._loss_fn, state['trainable'],
          state['non_trainable'], features, labels, self.dp,
          step=state['optimizer'][self._iterations_index],
          micro_batches=self._micro_batches)
    else:
      loss, non_trainable, gradients = self._loss_and_gradients(
          state['trainable'], state['non_trainable'], features, labels)
    trainable, optimizer = self.optimizer.stateless_apply(
        state['optimizer'], gradients, state['trainable'])
    return {'trainable': trainable, 'non_trainable': non_trainable,
            'optimizer': optimizer}, loss

  def _steps_on_block(self, state: dict, features, labels, num_steps):
    """The first `num_steps` steps of a block (the rest is padding): the
    state after them, each step's loss (zeros for the padding) and whether
    every trainable weight is finite."""

    def body(i, carry):
      state, losses = carry
      state, loss = self._step_on_batch(state, features[i], labels[i])
      return state, losses.at[i].set(loss)

    losses = jnp.zeros(features.shape[0], jnp.float32)
    state, losses = jax.lax.fori_loop(0, num_steps, body, (state, losses))
    return state, losses, _finite(state)

  def _steps_one_call_each(self, state: dict, features, labels,
                           num_steps: int):
    """`_steps_on_block`'s result, each step its own compiled call on its
    batch, put on the devices from the block on the host (BUILD_NOTES.md:
    "the convnet against Keras fit on JAX")."""
    split = self._devices.split_batch()
    losses = []
    for i in range(num_steps):
      state, loss = self._compiled_step(
          state, jax.make_array_from_process_local_data(split, features[i]),
          jax.make_array_from_process_local_data(split, labels[i]))
      losses.append(loss)
    return state, jnp.stack(losses), self._compiled_finite(state)

  def run_block(self, progress: engine.Progress) -> engine.BlockResult:
    del progress  # A block is one device call: the loop logs each.
    waited = 0.0  # Blocked on input within this call.
    if self._blocks is None:
      self._blocks = self._blocks_from(self._step)
      waited += self._read_next_block()
    features, labels, steps = self._read_ahead
    steps_on_block = (self._compiled_block if self._fused
                      else self._steps_one_call_each)
    self._state, losses, finite = steps_on_block(self._state, features,
                                                 labels, steps)
    waited += self._read_next_block()  # While the device computes.
    losses = np.asarray(losses)[:steps]
    self._step += steps
    if not np.isfinite(losses).all():
      return engine.BlockResult(steps, float('nan'), non_finite_at=int(
          np.argmin(np.isfinite(losses))) + 1)
    if not bool(finite):
      return engine.BlockResult(steps, float('nan'), non_finite_at=steps)
    return engine.BlockResult(steps, float(np.mean(losses)), waited_s=waited)

  def _blocks_from(self, step: int):
    """The blocks of batches from global step `step`, as NumPy arrays: this
    host's input pipeline, reading its slice of every global batch."""
    run = self.run
    train = run.config.train
    dataset_fn = pipeline.training_dataset_fn(
        run.inputs.train, self._step_batch_size, seed=train.seed,
        steps_per_block=self._steps_per_block, start_step=step)
    hosts = self._devices.process_count
    context = tf.distribute.InputContext(
        num_input_pipelines=hosts,
        input_pipeline_id=self._devices.process_index,
        num_replicas_in_sync=hosts)
    return dataset_fn(context).as_numpy_iterator()

  def _read_next_block(self) -> float:
    """Reads the next block into `_read_ahead`, for the fused block already
    split over the devices (of every host); returns the seconds it took."""
    start = time.perf_counter()
    features, labels, steps = next(self._blocks)
    if self._fused:
      split = self._devices.split_batches()
      features, labels = (jax.make_array_from_process_local_data(split, part)
                          for part in (features, labels))
    self._read_ahead = (features, labels, int(steps))
    return time.perf_counter() - start

  # State.

  def save(self, step: int) -> None:
    self._checkpoints.save(step, self._state)

  def restore(self) -> int:
    step, state = self._checkpoints.restore(
        orbax_checkpoints.abstract(self._state))
    if self._devices.process_count > 1:
      _check_hosts_agree(step, self.run.model_dir / 'checkpoints')
    if state is not None:
      self._state = self._placed(state)
    self._step = step
    self._blocks = self._read_ahead = None
    return step

  def has_checkpoint(self) -> bool:
    return bool(self._checkpoints.steps())

  def trained_model(self) -> keras.Model:
    """The model holding the trained weights; the optimizer its state."""
    for key, variables in (('trainable', self.model.trainable_variables),
                           ('non_trainable',
                            self.model.non_trainable_variables),
                           ('optimizer', self.optimizer.variables)):
      for variable, value in zip(variables, self._state[key]):
        variable.assign(np.asarray(value))
    return self.model

  def load_weights(self, path) -> None:
    self.trained_model().load_weights(path)
    self._state = {**self._state, **self._placed(
        {key: [v.value for v in variables] for key, variables in (
            ('trainable', self.model.trainable_variables),
            ('non_trainable', self.model.non_trainable_variables))})}

  @property
  def learning_rate(self) -> float:
    if callable(self._schedule):  # A schedule of the optimizer's step.
      step = self._state['optimizer'][self._iterations_index]
      return float(self._schedule(np.asarray(step)))
    return float(self._state['optimizer'][self._rate_index()])

  @learning_rate.setter
  def learning_rate(self, rate: float) -> None:
    state = dict(self._state)
    index = self._rate_index()
    state['optimizer'] = list(state['optimizer'])
    state['optimizer'][index] = jax.device_put(
        np.asarray(rate, state['optimizer'][index].dtype),
        self._devices.replicated())
    self._state = state

  def _rate_index(self) -> int:
    """The learning rate's place among the optimizer's variables (a
    constant rate is one: train.nan_policy=rollback requires it)."""
    return _index_of(self.optimizer.learning_rate, self.optimizer.variables)

  def preemption_watch(self):
    return self._devices.preemption_watch()

  def evaluator(self) -> Evaluator:
    """Predictions by a jitted `stateless_call` on the current state, on
    this process's first device: each host evaluates the whole split, as
    the TensorFlow engines' workers do, with no collective."""
    config = self.run.config
    forward = jax.jit(lambda trainable, non_trainable, features:
                      self.model.stateless_call(trainable, non_trainable,
                                                features, training=False)[0])

    def predict(features):
      local = {key: [weights.addressable_shards[0].data
                     for weights in self._state[key]]
               for key in ('trainable', 'non_trainable')}
      return forward(local['trainable'], local['non_trainable'],
                     np.asarray(features))

    return Evaluator(self.model, config.loss,
                     batch_size=max(config.train.global_batch_size, 256),
                     predict=predict)


def _finite(state: dict):
  """Whether every trainable weight is finite (a scalar on the device)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(weights))
                            for weights in state['trainable']]))


def _check_hosts_agree(step: int, directory: pathlib.Path) -> None:
  """`checkpointing.check_same_restored_step` over the run's hosts."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  steps = multihost_utils.process_allgather(np.int64(step)).tolist()
  checkpointing.check_same_restored_step(steps, directory, processes='hosts',
                                         each='host')


def _index_of(variable, variables) -> int:
  """The position of `variable` (by identity) in `variables`."""
  for index, candidate in enumerate(variables):
    if candidate is variable:
      return index
  raise ValueError(f'{variable} is not among the variables')


def _state_of(model: keras.Model, optimizer) -> dict:
  """The current values of the model's and optimizer's variables."""
  return {'trainable': [v.value for v in model.trainable_variables],
          'non_trainable': [v.value for v in model.non_trainable_variables],
          'optimizer': [v.value for v in optimizer.variables]}
