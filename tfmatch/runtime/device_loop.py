"""JAX: ``steps_per_execution`` training steps fed by one host-to-device copy, and no idle device between calls.

Keras' JAX trainer runs k = ``steps_per_execution`` steps as k calls, and for each it converts a ``tf.data`` batch to
numpy and copies it to the device on the Python thread; after the k steps a callback reads the logs, which waits
for the device, and only then does the loop fetch the next batch and dispatch the next step, while the device
idles. At ASLFeat's 4 ms steps on an H200 the host spent 4.4 ms per step (tf.data to numpy 1.6, copy 1.4, dispatch
and the rest 1.4; docs/benchmarks.md): the device waited for the host. Here:

* ``stack_steps``: the input pipeline batches k consecutive batches into one element (tf.data's threads do the
  stacking): one conversion and one copy per k steps;
* ``install``: ``model.train_function`` runs Keras' own ``model.train_step`` (the same loss, gradients, optimizer
  and metric updates) k times, step i on slice i of the element, selected on the device. The logs are those of the
  last step, as Keras' k calls give;
* a thread of its own takes the elements from Keras' iterator (which sends them to the device), two ahead, so the
  Python thread that dispatches the steps never waits for the input pipeline;
* after dispatching its k steps the function dispatches the next call's steps on the next element (all k by
  default), so the device has work while the callbacks wait for the logs, run, and the loop comes back. They are
  used only if the next call receives exactly the state this call returned (no callback replaced it); otherwise
  they are run again from the state received.

One ``jax.jit`` of a single step (a ``lax.scan`` over the k steps compiled to a loop that ran 13 times slower on a
CPU). Only for one device: under ``keras.distribution`` (several GPUs) Keras' own loop shards each batch.
"""

from __future__ import annotations

import queue
import threading

from absl import logging

__all__ = ["stack_steps", "install", "close"]

_END = object()


class _Fetcher:
    """``next(iterator)`` on a thread of its own, up to ``depth`` elements ahead; ``get()`` returns them in order
    and raises what the iterator raised (StopIteration at its end)."""

    def __init__(self, iterator, depth: int = 2):
        self.iterator = iterator
        self._queue = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._last = None
        self.thread = threading.Thread(target=self._run, name="tfmatch-device-loop-fetch", daemon=True)
        self.thread.start()

    def _run(self):
        import jax

        item = None
        while not self._stopped.is_set() and item is not _END and not isinstance(item, BaseException):
            try:
                # On the device already on GPU (Keras' iterator sends it); on a CPU it is numpy, sent here once.
                item = jax.tree_util.tree_map(jax.device_put, next(self.iterator))
            except StopIteration:
                item = _END
            except BaseException as error:  # raised again in the training thread
                item = error
            while not self._stopped.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def get(self):
        if self._last is None:
            item = self._queue.get()
            if item is _END or isinstance(item, BaseException):
                self._last = item  # the end (or error) stays: later calls see it too
            else:
                return item
        if self._last is _END:
            raise StopIteration
        raise self._last

    def stop(self, timeout: float = 60.0):
        """Ends the thread after the element it is fetching, and waits for that: a daemon thread still inside the
        pipeline's C++ code when the interpreter exits aborts the process (seen on a GPU: "FATAL: exception not
        rethrown" after ``tfmatch.benchmark`` had printed its result)."""
        self._stopped.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            logging.warning("device loop: the input pipeline did not return an element within %.0f s of the stop; "
                            "its fetch thread is left running", timeout)


def stack_steps(dataset, steps: int):
    """``[B, ...]`` batches -> ``[steps, B, ...]`` elements (a tf.data.Dataset)."""
    return dataset.batch(steps, drop_remainder=True)


def install(model, steps: int, steps_ahead: int | None = None) -> None:
    """Replaces the compiled ``model``'s train function (JAX backend) by the loop over stacked elements.

    Call after ``model.compile(steps_per_execution=steps)``, feed ``fit`` with ``stack_steps(dataset, steps)`` (an
    infinite dataset: Keras counts its elements as batches) and call ``close(model)`` after ``fit``. Keras calls the
    function once per ``steps`` steps and counts steps, logs and callbacks as usual.

    ``steps_ahead`` (default: ``steps``, the whole next call): how many of the next call's steps each call dispatches
    before it returns. They are used only if the next call receives exactly the state this call returned; otherwise
    (an epoch's end, where Keras resets the metrics, or a callback that changed the state) they are thrown away and
    run again from the state received, on the same element (no data is skipped).
    """
    import jax
    import numpy as np

    steps_ahead = steps if steps_ahead is None else max(1, min(int(steps_ahead), steps))

    def step_at(state, stacked, index):
        batch = jax.tree_util.tree_map(lambda v: jax.lax.dynamic_index_in_dim(v, index, keepdims=False), stacked)
        return model.train_step(state, batch)

    compiled = jax.jit(step_at)  # no donation: the state the steps dispatched ahead start from stays valid
    indices = []
    ahead = {"fetcher": None, "element": None, "returned": None, "dispatched": None}
    stats = {"calls": 0, "calls_started_ahead": 0}

    def same_state(state, returned):
        leaves, previous = jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(returned)
        return len(leaves) == len(previous) and all(a is b for a, b in zip(leaves, previous))

    def run(state, element, start, stop, logs=None):
        for i in range(start, stop):
            logs, state = compiled(state, element, indices[i])
        return logs, state

    def train_function(state, iterator):
        if not indices:
            indices.extend(jax.device_put(np.int32(i)) for i in range(steps))
        fetcher = ahead["fetcher"]
        if fetcher is None or fetcher.iterator is not iterator:  # a new fit() or epoch iterator
            if fetcher is not None:
                fetcher.stop()
            fetcher = _Fetcher(iterator)
            ahead.update(fetcher=fetcher, element=None, returned=None, dispatched=None)
        first, logs = 0, None
        if ahead["element"] is not None:
            element = ahead["element"]
            if ahead["dispatched"] is not None and same_state(state, ahead["returned"]):
                logs, state = ahead["dispatched"]
                first = steps_ahead
                stats["calls_started_ahead"] += 1
        else:
            element = fetcher.get()  # StopIteration ends the epoch, as in Keras' own function
        ahead.update(element=None, returned=None, dispatched=None)
        stats["calls"] += 1
        logs, state = run(state, element, first, steps, logs)
        try:  # fetched and sent by the thread while the device ran the earlier steps
            ahead["element"] = fetcher.get()
        except Exception:  # the end, or a pipeline error: these k steps count; the next call raises it again
            return logs, state  # (Ctrl-C, a KeyboardInterrupt while waiting here, is not caught: it stops fit)
        # The device works through these while the callbacks wait for this call's logs and run: without them it
        # idled there (0.4-0.5 ms per step of ASLFeat's 3.9 ms on an H200 with one step ahead, docs/benchmarks.md).
        ahead["returned"] = state
        ahead["dispatched"] = run(state, ahead["element"], 0, steps_ahead)
        return logs, state

    def close():
        """Stops the fetch thread and drops what it holds (call after ``fit``)."""
        if ahead["fetcher"] is not None:
            ahead["fetcher"].stop()
        ahead.update(fetcher=None, element=None, returned=None, dispatched=None)

    train_function.stats = stats  # calls, and how many started from steps dispatched ahead
    train_function.close = close
    model.train_function = train_function


def close(model) -> None:
    """After ``fit``: stops the device loop's fetch thread, if ``model`` has one (a no-op otherwise)."""
    close_loop = getattr(getattr(model, "train_function", None), "close", None)
    if close_loop is not None:
        close_loop()
