"""Training callbacks: logging (terminal, plain lines, TensorBoard), checkpoints, NaN guard, Ctrl-C, match images.

They work on every backend: they read the logs Keras hands them, count steps themselves, and write
summaries with ``tf.summary`` (TensorFlow is installed on every backend for ``tf.data``).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time

import keras
import numpy as np

from tfmatch import config
from tfmatch.runtime import checkpoints


class NonFiniteLossError(RuntimeError):
    """Raised when a loss becomes NaN or Inf; the last good checkpoint stays in place."""


def _scalar(value) -> float:
    return float(np.asarray(keras.ops.convert_to_numpy(value)).reshape(-1)[0])


def current_learning_rate(optimizer) -> float:
    lr = optimizer.learning_rate
    return _scalar(lr)


class StepCounter(keras.callbacks.Callback):
    """Counts global steps from the step the run resumed at (Keras' own counters restart per epoch).

    With ``steps_per_execution`` k > 1, Keras calls the batch hooks once per k steps with the index of the last
    one, so the count comes from that index, not from the number of calls.
    """

    def __init__(self, initial_step: int):
        super().__init__()
        self.step = initial_step
        self._epoch_start = initial_step

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.step

    def on_train_batch_end(self, batch, logs=None):
        self.step = self._epoch_start + int(batch) + 1


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at a NaN or Inf loss (or loss term) with a message naming the step.

    Reading a loss waits for the device, so it is checked every ``every`` steps (1 = every step) and always at
    the end of an epoch, before the checkpoint callback (listed after this one) saves anything.
    """

    def __init__(self, counter: StepCounter, every: int = 1):
        super().__init__()
        self.counter, self.every = counter, max(1, every)
        self._last_check = counter.step

    def on_train_begin(self, logs=None):
        self._last_check = self.counter.step

    def on_train_batch_end(self, batch, logs=None):
        if self.counter.step - self._last_check >= self.every:
            self._last_check = self.counter.step
            self._check(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs)

    def _check(self, logs):
        for name, value in (logs or {}).items():
            if name == "loss" or name.endswith("_loss") or name.startswith("loss"):
                value = _scalar(value)
                if not math.isfinite(value):
                    raise NonFiniteLossError(
                        f"{name} is {value} at step {self.counter.step}; training stopped. The last good "
                        f"checkpoint is kept; lower the learning rate or check the data, then rerun to resume.")


class InterruptAtStepEnd(keras.callbacks.Callback):
    """Ctrl-C (SIGINT) stops training at the next step end, as a ``KeyboardInterrupt`` raised there.

    Python raises the interrupt wherever the main thread is. When that is inside JAX, waiting for the device while
    Keras reads the logs, the interrupt was lost and training went on (Keras 3.15, JAX 0.11: ``tfmatch.train``
    kept running after SIGINT). So the handler only records the signal, and the callback raises it at the next
    batch end, or at the epoch's end when that batch is its last, after the checkpoint of that epoch is written
    (list this callback after ``PeriodicCheckpoint`` and ``StepCounter``). A second Ctrl-C raises at once. Use as
    a context manager around ``fit`` (it puts the previous handler back, also after an error).
    """

    def __init__(self, counter: StepCounter):
        super().__init__()
        self.counter = counter
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when SIGINT is ignored
            self._previous = signal.signal(signal.SIGINT, self._record)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def _record(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C interrupts at once

    def _stop(self):
        raise KeyboardInterrupt(f"interrupted at step {self.counter.step}")

    def on_train_batch_end(self, batch, logs=None):
        if self.requested and int(batch) + 1 < self.params.get("steps", float("inf")):
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        if self.requested:
            self._stop()


class TrainingLog(keras.callbacks.Callback):
    """Adds ``learning_rate`` and ``steps_per_second`` to the logs, prints plain log lines (when stdout is not a
    terminal, or always with ``print_lines``), and writes every log value to TensorBoard every ``every`` steps."""

    def __init__(self, counter: StepCounter, max_steps: int, every: int, summary_writer=None,
                 print_lines: bool | None = None):
        super().__init__()
        self.counter, self.max_steps, self.every = counter, max_steps, max(1, every)
        self.writer = summary_writer
        self.print_lines = (not sys.stdout.isatty()) if print_lines is None else print_lines
        self._t0 = None
        self._s0 = None

    def on_train_begin(self, logs=None):
        self._t0, self._s0 = time.perf_counter(), self.counter.step

    def on_train_batch_end(self, batch, logs=None):
        if logs is None or self.counter.step % self.every:
            return
        now = time.perf_counter()
        steps_per_second = (self.counter.step - self._s0) / max(now - self._t0, 1e-9)
        self._t0, self._s0 = now, self.counter.step
        logs["learning_rate"] = current_learning_rate(self.model.optimizer)
        logs["steps_per_second"] = steps_per_second
        values = {name: _scalar(value) for name, value in logs.items()}
        if self.print_lines:
            text = "  ".join(f"{name} {value:.4g}" for name, value in values.items())
            print(f"step {self.counter.step}/{self.max_steps}  {text}", flush=True)
        if self.writer is not None:
            import tensorflow as tf

            with self.writer.as_default(step=self.counter.step):
                for name, value in values.items():
                    tf.summary.scalar(name, value)
            self.writer.flush()


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Saves model and optimizer state at the end of every epoch (= ``steps_per_epoch`` steps)."""

    def __init__(self, model_dir: str, counter: StepCounter, keep: int = 5, enabled: bool = True):
        super().__init__()
        self.model_dir, self.counter, self.keep, self.enabled = model_dir, counter, keep, enabled
        self.last_saved = None

    def on_epoch_end(self, epoch, logs=None):
        if self.enabled:
            self.last_saved = checkpoints.save(self.model_dir, self.model, self.model.optimizer,
                                               self.counter.step, keep=self.keep)


class OperativeConfigWriter(keras.callbacks.Callback):
    """Writes ``operative_config.gin`` after the first step (when gin knows every value used) and shows it in
    TensorBoard."""

    def __init__(self, model_dir: str, summary_writer=None, enabled: bool = True):
        super().__init__()
        self.model_dir, self.writer, self.enabled = model_dir, summary_writer, enabled
        self.done = False

    def on_train_batch_end(self, batch, logs=None):
        if self.done or not self.enabled:
            return
        self.done = True
        path = config.write_operative_config(self.model_dir)
        if self.writer is not None:
            import tensorflow as tf

            with open(path) as f:
                text = f.read()
            with self.writer.as_default(step=0):
                tf.summary.text("operative_config", "```\n" + text + "\n```")


class MatchImages(keras.callbacks.Callback):
    """Every epoch, runs the model on a fixed batch and draws what its ``visualization()`` returns (keypoints
    and matches, correct green, wrong red) into TensorBoard."""

    def __init__(self, batch, counter: StepCounter, summary_writer, max_images: int = 2):
        super().__init__()
        self.batch, self.counter, self.writer, self.max_images = batch, counter, summary_writer, max_images

    def on_epoch_end(self, epoch, logs=None):
        from tfmatch.runtime import visualize

        predictions = self.model(self.batch, training=False)
        drawing = self.model.visualization(self.batch, predictions)
        if drawing is None:
            return
        drawing = {k: keras.ops.convert_to_numpy(v) for k, v in drawing.items()}
        images = visualize.draw_batch(drawing, self.max_images)
        import tensorflow as tf

        with self.writer.as_default(step=self.counter.step):
            tf.summary.image("matches", images, max_outputs=self.max_images)
        self.writer.flush()
