"""The device loop's fetch thread: order, end of data, errors (the loop itself: test_train.py, on JAX)."""

import pytest

from tfmatch.runtime.device_loop import _Fetcher


def test_fetcher_keeps_order_and_ends_like_the_iterator():
    fetcher = _Fetcher(iter(range(7)), depth=2)
    assert [fetcher.get() for _ in range(7)] == list(range(7))
    for _ in range(2):  # the end stays the end
        with pytest.raises(StopIteration):
            fetcher.get()


def test_fetcher_raises_the_iterators_error_in_the_caller():
    def broken():
        yield 1
        raise ValueError("bad record in file x")

    fetcher = _Fetcher(broken())
    assert fetcher.get() == 1
    with pytest.raises(ValueError, match="bad record in file x"):
        fetcher.get()


def test_stopped_fetcher_takes_no_more_than_it_holds():
    taken = []

    def counting():
        for i in range(1000):
            taken.append(i)
            yield i

    fetcher = _Fetcher(counting(), depth=2)
    assert fetcher.get() == 0
    fetcher.stop()
    assert not fetcher.thread.is_alive()  # stop() waits for it: no thread left inside the pipeline at exit
    assert len(taken) <= 4  # the one returned, two queued, one waiting to be queued


def test_stop_waits_for_the_element_being_fetched():
    import time

    def slow():
        yield 0
        time.sleep(0.5)  # the pipeline busy producing the next element when stop() comes
        yield 1

    fetcher = _Fetcher(slow(), depth=1)
    assert fetcher.get() == 0
    time.sleep(0.05)
    fetcher.stop()
    assert not fetcher.thread.is_alive()


def test_device_loop_takes_endless_and_unknown_sized_pipelines_not_finite_ones():
    import tensorflow as tf

    from tfmatch.runtime.trainer import _is_infinite

    endless = tf.data.Dataset.range(10).repeat()
    assert _is_infinite(endless)
    assert _is_infinite(endless.filter(lambda x: x % 2 == 0))  # unknown size, as GL3D's pipeline after its filters
    assert not _is_infinite(tf.data.Dataset.range(10).batch(2))


def test_ctrl_c_while_waiting_for_the_next_element_stops_training():
    """A KeyboardInterrupt that arrives while the train function waits for the next element propagates (it was
    once caught with the pipeline's errors, so that Ctrl-C left `tfmatch.train` running)."""
    import signal
    import threading
    import time

    import jax.numpy as jnp
    import numpy as np

    from tfmatch.runtime import device_loop

    class Model:
        def train_step(self, state, batch):
            return {"loss": jnp.sum(batch)}, state + 1

    def elements():
        yield np.ones((2, 3), np.float32)
        time.sleep(2.0)  # the pipeline is slow to produce the next element: the main thread waits for it
        yield np.ones((2, 3), np.float32)

    model = Model()
    device_loop.install(model, steps=2)
    model.train_function(jnp.zeros(()), iter([np.ones((2, 3), np.float32)]))  # compiled now, not under the timer
    timer = threading.Timer(0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            model.train_function(jnp.zeros(()), elements())
    finally:
        timer.cancel()
        device_loop.close(model)


@pytest.mark.parametrize("steps_ahead", [1, 2, 3])
def test_steps_dispatched_ahead_are_used_only_for_the_state_they_started_from(steps_ahead):
    import jax.numpy as jnp
    import numpy as np

    from tfmatch.runtime import device_loop

    class Model:  # the state counts the steps; the loss reads the batch and the state
        def train_step(self, state, batch):
            return {"loss": jnp.sum(batch) + state}, state + 1

    elements = [np.full((3, 2), float(i), np.float32) for i in range(4)]  # 4 calls of 3 steps
    model = Model()
    device_loop.install(model, steps=3, steps_ahead=steps_ahead)
    iterator = iter(elements)
    logs, state = model.train_function(jnp.zeros(()), iterator)
    assert float(state) == 3 and float(logs["loss"]) == 0 * 2 + 2
    logs, state = model.train_function(state, iterator)  # the state returned: continues the steps dispatched ahead
    assert float(state) == 6 and float(logs["loss"]) == 1 * 2 + 5
    logs, state = model.train_function(jnp.asarray(100.0), iterator)  # a state a callback replaced: run again
    assert float(state) == 103 and float(logs["loss"]) == 2 * 2 + 102
    logs, state = model.train_function(state, iterator)
    assert float(state) == 106 and float(logs["loss"]) == 3 * 2 + 105
    assert model.train_function.stats == {"calls": 4, "calls_started_ahead": 2}
    device_loop.close(model)
