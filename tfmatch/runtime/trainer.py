"""The trainer: one gin-configured ``train()`` for every method and backend.

Keras ``fit`` does the stepping (on TensorFlow, JAX and PyTorch) with the method's ``compute_loss``; the
multi-worker strategy runs an equivalent loop of its own because Keras 3 ``fit`` fails under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585). Rerunning the same command resumes from the last
checkpoint at the same step with the optimizer state; ``init_checkpoint`` starts from another run's weights.
"""

from __future__ import annotations

import math
import os
import sys
import time

import gin
import keras
import numpy as np
from absl import logging

from tfmatch import config
from tfmatch.methods.base import Method
from tfmatch.runtime import callbacks as cb
from tfmatch.runtime import checkpoints
from tfmatch.runtime import device_loop as device_loop_module
from tfmatch.runtime.strategy import make_distribution, resolve_jit_compile


def _call_reference(value):
    """Calls what a gin parameter holds: ``@Configurable`` (not yet called) or a plain callable."""
    if hasattr(value, "scoped_configurable_fn"):
        return value.scoped_configurable_fn()
    if callable(value):
        return value()
    raise TypeError(f"train.model_fn must name a configurable (train.model_fn = @ASLFeat), got {value!r}")


def build_model():
    """Builds the model named by ``train.model_fn`` in the current gin config (export and tools use this)."""
    try:
        reference = gin.query_parameter("train.model_fn")
    except ValueError as err:
        raise ValueError("the gin config does not bind train.model_fn (e.g. train.model_fn = @ASLFeat)") from err
    return _call_reference(reference)


def first_batch_as_numpy(dataset):
    """The dataset's first batch as numpy arrays (to build a model's variables before fit or a restore)."""
    try:
        batch = next(iter(dataset))
    except StopIteration:
        raise ValueError("the training dataset is empty: check the data root and split") from None
    return keras.tree.map_structure(lambda t: np.asarray(t), batch)


@gin.configurable(denylist=["model_dir"])
def train(
    model_dir: str,
    model_fn=gin.REQUIRED,  # the method class or factory, e.g. @ASLFeat; called inside the strategy scope
    dataset_fn=gin.REQUIRED,  # (split, global_batch_size, input_context=None) -> tf.data.Dataset of dicts
    optimizer_fn=gin.REQUIRED,  # e.g. @keras.optimizers.SGD
    batch_size: int = 2,  # global batch size (all replicas together)
    max_steps: int = 1000,
    steps_per_epoch: int = 500,  # checkpoint interval; Keras' progress bar covers one such epoch
    log_every: int = 20,  # steps between log lines and TensorBoard scalars
    keep_checkpoints: int = 5,
    init_checkpoint: str | None = None,  # a model_dir or checkpoint file to start from (partial restore)
    init_exclude: tuple = (),  # glob patterns of variable paths not taken from init_checkpoint
    strategy: str = "auto",  # auto | mirrored | multi_worker | one_device (see runtime/strategy.py)
    jit_compile="auto",  # auto | True | False
    seed: int = 0,
    nan_check_every: int = 10,  # steps between NaN/Inf checks (each waits for the device); 1 = every step
    steps_per_execution: int = 1,  # steps dispatched per call of Keras' train function (see below)
    device_loop: bool = True,  # JAX, one device: feed those steps in one copy, off the Python thread (device_loop.py)
    match_images: bool = True,  # draw the method's visualization() into TensorBoard every epoch
    verbose="auto",  # auto: progress bar on a terminal, plain log lines otherwise
):
    """Trains ``model_fn()`` on ``dataset_fn('train', batch_size)`` and writes everything to ``model_dir``.

    ``steps_per_execution`` k: Keras hands the logs to the callbacks, turning them into Python numbers (a wait
    for the device), once per k steps instead of after every step, so the device keeps busy while the loop fetches
    the next batches (ASLFeat's recipes use 10: docs/benchmarks.md). It is reduced to divide ``log_every`` and
    ``steps_per_epoch``; NaN checks, log lines and checkpoints then fall on multiples of it. On the JAX backend with
    one device and ``device_loop``, the k steps' batches arrive stacked, in one copy made by a thread of its own, and the
    next call's steps are dispatched before the callbacks wait (``runtime/device_loop.py``): the same steps.

    Returns:
      The trained model (its weights also in ``model_dir/checkpoints``).
    """
    if max_steps <= 0 or steps_per_epoch <= 0 or batch_size <= 0:
        raise ValueError(f"max_steps, steps_per_epoch and batch_size must be > 0, got "
                         f"{max_steps}, {steps_per_epoch}, {batch_size}")
    steps_per_epoch = min(steps_per_epoch, max_steps)
    if steps_per_execution <= 0:
        raise ValueError(f"steps_per_execution must be > 0, got {steps_per_execution}")
    divisor = math.gcd(math.gcd(steps_per_execution, steps_per_epoch), max(1, log_every))
    if divisor != steps_per_execution:
        logging.info("steps_per_execution %d -> %d (must divide steps_per_epoch %d and log_every %d)",
                     steps_per_execution, divisor, steps_per_epoch, log_every)
        steps_per_execution = divisor
    if max_steps % steps_per_epoch:
        raise ValueError(f"max_steps ({max_steps}) must be a multiple of steps_per_epoch ({steps_per_epoch}): "
                         "checkpoints are written at epoch ends")
    distribution = make_distribution(strategy)  # first: multi-worker collectives must be set up before any TF op
    keras.utils.set_random_seed(seed)
    jit = resolve_jit_compile(jit_compile, distribution)
    os.makedirs(model_dir, exist_ok=True)
    logging.info("strategy %s with %d replica(s), jit_compile=%s", distribution.name, distribution.num_replicas, jit)
    if distribution.custom_loop:
        return _train_custom_loop(distribution, model_dir, model_fn, dataset_fn, optimizer_fn, batch_size,
                                  max_steps, steps_per_epoch, log_every, keep_checkpoints, init_checkpoint,
                                  init_exclude)

    dataset = dataset_fn("train", batch_size)
    model, optimizer, dataset, sample = compile_for_fit(model_fn, optimizer_fn, dataset, distribution, jit,
                                                        steps_per_execution, device_loop)
    initial_step = _restore_or_initialise(model, optimizer, model_dir, init_checkpoint, init_exclude)
    if initial_step >= max_steps:
        print(f"[tfmatch] {model_dir} is already trained to step {initial_step} (max_steps {max_steps})", flush=True)
        return model

    writer = _summary_writer(model_dir)
    counter = cb.StepCounter(initial_step)
    callbacks = [
        counter,
        cb.NonFiniteGuard(counter, nan_check_every),
        cb.OperativeConfigWriter(model_dir, writer),
        cb.TrainingLog(counter, max_steps, log_every, writer),
        cb.PeriodicCheckpoint(model_dir, counter, keep_checkpoints),
    ]
    if match_images and type(model).visualization is not Method.visualization:
        callbacks.append(cb.MatchImages(sample, counter, writer))
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 0
    print(f"[tfmatch] training {type(model).__name__} in {model_dir} from step {initial_step} to {max_steps} "
          f"({distribution.name}, {distribution.num_replicas} replica(s), {keras.backend.backend()} backend)",
          flush=True)
    try:
        with cb.InterruptAtStepEnd(counter) as interrupt:  # last: after the step count and the epoch's checkpoint
            model.fit(dataset, epochs=max_steps // steps_per_epoch, steps_per_epoch=steps_per_epoch,
                      initial_epoch=initial_step // steps_per_epoch, callbacks=callbacks + [interrupt],
                      verbose=verbose)
    except KeyboardInterrupt as interrupted:
        latest = checkpoints.latest_checkpoint(model_dir)
        resume = (f"the same command resumes from {latest}" if latest else
                  f"no checkpoint was written yet: the same command starts again from step {initial_step}")
        raise KeyboardInterrupt(f"{interrupted or 'interrupted'}; {resume}") from None
    finally:
        device_loop_module.close(model)
    stats = getattr(model.train_function, "stats", None)
    if stats:
        print(f"[tfmatch] device loop: {stats['calls']} calls, {stats['calls_started_ahead']} started from steps "
              "dispatched ahead", flush=True)
    print(f"[tfmatch] done at step {counter.step}; checkpoint {checkpoints.latest_checkpoint(model_dir)}", flush=True)
    return model


def compile_for_fit(model_fn, optimizer_fn, dataset, distribution, jit, steps_per_execution, device_loop):
    """Creates the model and optimizer in the distribution's scope, builds every variable from the dataset's first
    batch (before a restore), compiles for ``fit``, and returns ``(model, optimizer, dataset to give fit, that
    batch)``: the same dataset, or k-step elements for the JAX device loop (``runtime/device_loop.py``: one device,
    ``steps_per_execution`` k > 1, compiled, an infinite dataset), which then also sets ``model.train_function``;
    call ``device_loop.close(model)`` after ``fit``."""
    sample = first_batch_as_numpy(dataset)
    with distribution.scope:
        model = model_fn()
        optimizer = optimizer_fn()
        model(sample, training=False)
        optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer, jit_compile=jit, steps_per_execution=steps_per_execution)
    if (device_loop and steps_per_execution > 1 and jit and keras.backend.backend() == "jax"
            and distribution.num_replicas == 1 and _is_infinite(dataset)):
        device_loop_module.install(model, steps_per_execution)
        logging.info("device loop: %d steps per compiled call", steps_per_execution)
        dataset = device_loop_module.stack_steps(dataset, steps_per_execution)
    return model, optimizer, dataset, sample


def _is_infinite(dataset) -> bool:
    """Not known to be finite (every training dataset_fn repeats; filters make the size unknown): Keras counts the
    device loop's stacked elements as batches, which is right only for an endless stream."""
    return int(dataset.cardinality()) < 0  # tf.data.INFINITE_CARDINALITY (-1) or UNKNOWN_CARDINALITY (-2)


def _restore_or_initialise(model, optimizer, model_dir, init_checkpoint, init_exclude) -> int:
    """Resumes from model_dir's last checkpoint, else starts from init_checkpoint, else from scratch."""
    if checkpoints.latest_checkpoint(model_dir):
        report = checkpoints.restore(model_dir, model, optimizer, strict=True)
        print(f"[tfmatch] resumed {report.source} at step {report.step}", flush=True)
        return report.step
    if init_checkpoint:
        report = checkpoints.restore(init_checkpoint, model, exclude=tuple(init_exclude), strict=False)
        print(f"[tfmatch] initialised from {init_checkpoint}:\n{report.summary()}", flush=True)
    return 0


def _summary_writer(model_dir: str):
    import tensorflow as tf

    return tf.summary.create_file_writer(os.path.join(model_dir, "train"))


# --------------------------------------------------------------------------------------------------------------
# Multi-worker: an own loop over tf.distribute (TensorFlow backend only).
def _train_custom_loop(distribution, model_dir, model_fn, dataset_fn, optimizer_fn, batch_size, max_steps,
                       steps_per_epoch, log_every, keep_checkpoints, init_checkpoint, init_exclude):
    import tensorflow as tf

    strategy = distribution.tf_strategy
    # Only the chief writes the run's directory; the other workers keep their checkpoints apart (tests compare them).
    own_dir = model_dir if distribution.is_chief else os.path.join(
        model_dir, "workers", f"worker-{distribution.worker_index}")
    dataset = strategy.distribute_datasets_from_function(
        lambda context: dataset_fn("train", batch_size, input_context=context))
    iterator = iter(dataset)
    first = next(iterator)
    with strategy.scope():
        model = model_fn()
        optimizer = optimizer_fn()
        model(strategy.experimental_local_results(first)[0], training=False)
        optimizer.build(model.trainable_variables)
    initial_step = _restore_or_initialise(model, optimizer, own_dir, init_checkpoint, init_exclude)

    def step_fn(batch):
        with tf.GradientTape() as tape:
            predictions = model(batch, training=True)
            loss = model.compute_loss(x=batch, y_pred=predictions, training=True)  # already 1/replicas
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def train_step(batch):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(step_fn, args=(batch,)), axis=None)

    if distribution.is_chief:
        config.write_operative_config(model_dir)
    writer = _summary_writer(model_dir) if distribution.is_chief else None
    step, batch, t0 = initial_step, first, time.perf_counter()
    print(f"[tfmatch] worker {distribution.worker_index}: training from step {step} to {max_steps} "
          f"({distribution.num_replicas} replicas)", flush=True)
    while step < max_steps:
        loss = float(train_step(batch))
        step += 1
        if not math.isfinite(loss):
            raise cb.NonFiniteLossError(f"loss is {loss} at step {step}; training stopped, last good checkpoint kept")
        if step % log_every == 0 or step == max_steps:
            rate = log_every / max(time.perf_counter() - t0, 1e-9)
            t0 = time.perf_counter()
            lr = cb.current_learning_rate(optimizer)
            print(f"step {step}/{max_steps}  loss {loss:.4g}  learning_rate {lr:.4g}  steps_per_second {rate:.3g}",
                  flush=True)
            if writer is not None:
                with writer.as_default(step=step):
                    tf.summary.scalar("loss", loss)
                    tf.summary.scalar("learning_rate", lr)
                    tf.summary.scalar("steps_per_second", rate)
        if step % steps_per_epoch == 0:
            checkpoints.save(own_dir, model, optimizer, step, keep=keep_checkpoints)
        if step < max_steps:
            batch = next(iterator)
    return model
