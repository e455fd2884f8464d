"""Where ``python -m tfmatch.train``'s step time goes on one GPU (JAX): the GPU's busy time against the wall time.

    KERAS_BACKEND=jax python3 scripts/gpu/aslfeat_trainer_profile.py OUT_JSON GL3D_ROOT [gin bindings ...]

Runs the trainer on ``configs/methods/aslfeat/base.gin`` (real GL3D ``tf.data`` pipeline, the recipe's
``steps_per_execution``), lets it reach step ``START`` (default 600: compilation and the pipeline's start are
over), traces the next ``STEPS`` steps (default 200) with ``jax.profiler``, then stops the run. Reports wall ms per
step, the GPU's busy ms per step (kernels on the compute stream, summed, and the union of their intervals), the
longest host-to-device copies, and the kernels that take the time (``aslfeat_profile.summarise``). A busy time well
below the wall time means the device waits for the host (data, dispatch, callbacks), not the other way round.

``HOST_TIMING=1``: no trace (it slows the host); instead the host's time per step in each part of Keras' loop over
the same steps: reading a batch from ``tf.data`` into numpy, sending it to the device, dispatching the step, and the
callbacks (where the loop waits for the device when a callback reads the logs).
"""

import glob
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import jax  # noqa: E402
import keras  # noqa: E402

START = int(os.environ.get("START", "600"))
STEPS = int(os.environ.get("STEPS", "200"))


def busy_union_ms(xspace_path):
    """``{line name: (summed ms, union ms, events)}`` of the GPU planes' lines: the union counts overlapping kernels
    (several streams) once."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    out = {}
    for plane in space.planes:
        if "GPU" not in plane.name:
            continue
        for line in plane.lines:
            spans = sorted((line.timestamp_ns * 1000 + e.offset_ps, e.duration_ps) for e in line.events)
            if not spans:
                continue
            union, end = 0, None
            for begin, duration in spans:
                stop = begin + duration
                if end is None or begin >= end:
                    union += duration
                    end = stop
                elif stop > end:
                    union += stop - end
                    end = stop
            out[f"{plane.name} / {line.name}"] = (sum(d for _, d in spans) / 1e9, union / 1e9, len(spans))
    return out


class HostTimers:
    """Wraps the parts of Keras' JAX loop with timers that count only while ``active``."""

    def __init__(self):
        self.active, self.seconds, self.calls = False, {}, {}

    def wrap(self, owner, name, label, generator=False):
        original = getattr(owner, name)
        timers = self

        def add(seconds):
            if timers.active:
                timers.seconds[label] = timers.seconds.get(label, 0.0) + seconds
                timers.calls[label] = timers.calls.get(label, 0) + 1

        if generator:  # time each next() of the generator the method returns
            def wrapped(*args, **kwargs):
                iterator = iter(original(*args, **kwargs))
                while True:
                    start = time.perf_counter()
                    try:
                        item = next(iterator)
                    except StopIteration:
                        return
                    add(time.perf_counter() - start)
                    yield item
        else:
            def wrapped(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    add(time.perf_counter() - start)

        setattr(owner, name, wrapped)


class TraceSteps(keras.callbacks.Callback):
    """Starts a trace at the first batch end at or after ``START`` steps, stops it ``STEPS`` steps later."""

    def __init__(self, trace_dir, results, host_timers=None):
        super().__init__()
        self.trace_dir, self.results, self.host_timers = trace_dir, results, host_timers
        self.steps, self.begin = 0, None

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_start = self.steps

    def on_train_batch_end(self, batch, logs=None):
        self.steps = getattr(self, "epoch_start", 0) + int(batch) + 1  # Keras counts batches per epoch
        if self.begin is None and self.steps >= START:
            jax.block_until_ready(logs)
            if self.host_timers:
                self.host_timers.active = True
            else:
                jax.profiler.start_trace(self.trace_dir)
            self.begin = (self.steps, time.perf_counter())
        elif self.begin is not None and self.steps >= self.begin[0] + STEPS:
            jax.block_until_ready(logs)
            seconds = time.perf_counter() - self.begin[1]
            if self.host_timers:
                self.host_timers.active = False
            else:
                jax.profiler.stop_trace()
            self.results["traced_steps"] = self.steps - self.begin[0]
            self.results["wall_ms_per_step"] = round(1000 * seconds / self.results["traced_steps"], 3)
            self.model.stop_training = True
            self.begin = (float("inf"), 0.0)


def main():
    import aslfeat_profile as profile

    from tfmatch import config
    from tfmatch.runtime.trainer import train

    out_path, gl3d_root, bindings = sys.argv[1], sys.argv[2], sys.argv[3:]
    results = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "keras": keras.__version__,
               "date": time.strftime("%Y-%m-%d"), "bindings": bindings, "start": START}
    trace_dir = tempfile.mkdtemp()
    host_timers = None
    if os.environ.get("HOST_TIMING"):
        from keras.src.backend.jax import trainer as jax_trainer
        from keras.src.callbacks.callback_list import CallbackList
        from keras.src.trainers.data_adapters.tf_dataset_adapter import TFDatasetAdapter

        host_timers = HostTimers()
        host_timers.wrap(TFDatasetAdapter, "get_jax_iterator", "tf.data to numpy", generator=True)
        host_timers.wrap(jax_trainer, "_distribute_data", "device_put")
        host_timers.wrap(CallbackList, "on_train_batch_end", "callbacks (batch end)")
        host_timers.wrap(CallbackList, "on_train_batch_begin", "callbacks (batch begin)")
        make = jax_trainer.JAXTrainer.make_train_function

        def make_timed(self, force=False):
            make(self, force=force)
            if not getattr(self.train_function, "_timed", False):
                original = self.train_function
                holder = type("Holder", (), {"fn": staticmethod(original)})
                host_timers.wrap(holder, "fn", "train_function (data + device_put + dispatch of k steps)")
                self.train_function = holder.fn
                self.train_function.__dict__.update(getattr(original, "__dict__", {}))  # the device loop's stats, close
                self.train_function._timed = True

        jax_trainer.JAXTrainer.make_train_function = make_timed
    tracer = TraceSteps(trace_dir, results, host_timers)
    fit = keras.Model.fit

    def fit_with_trace(self, *args, callbacks=None, **kwargs):
        return fit(self, *args, callbacks=list(callbacks or []) + [tracer], **kwargs)

    keras.Model.fit = fit_with_trace
    model_dir = tempfile.mkdtemp()
    config.parse(["configs/methods/aslfeat/base.gin"],
                 [f"GL3D_ROOT = '{gl3d_root}'", "train.steps_per_epoch = 2000", "train.log_every = 200"] + bindings,
                 model_dir=model_dir)
    train(model_dir)
    paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    steps = results.get("traced_steps")
    if host_timers and steps:
        results["host_ms_per_step"] = {label: round(1000 * seconds / steps, 3)
                                       for label, seconds in host_timers.seconds.items()}
        results["host_calls_per_step"] = {label: round(calls / steps, 2) for label, calls in host_timers.calls.items()}
    elif not paths or not steps:
        results["error"] = "no trace written (the run ended before START + STEPS steps?)"
    else:
        results["gpu_lines_ms_per_step"] = {name: [round(total / steps, 3), round(union / steps, 3), events // steps]
                                            for name, (total, union, events) in busy_union_ms(paths[0]).items()}
        results["kernels"] = profile.summarise(paths[0], steps)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps({k: v for k, v in results.items() if k != "kernels"}, indent=1), flush=True)


if __name__ == "__main__":
    main()
