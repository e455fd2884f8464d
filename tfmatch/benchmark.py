"""Speed and memory of a recipe, on any backend; prints one JSON line.

    python -m tfmatch.benchmark --gin_file F --mode infer --batch 16 --height 480 --width 640 [--steps 50]
    python -m tfmatch.benchmark --gin_file F --mode train --batch 2 [--steps 50] [--synthetic_data]
    python -m tfmatch.benchmark --gin_file F --mode data --batch 2 [--steps 50]

* ``infer``: the method's inference endpoint (``extract`` / ``describe``) on random images, compiled (XLA on TF
  via ``tf.function(jit_compile=True)``, ``jax.jit`` on JAX). Reports images per second twice:
  ``images_per_second`` with the images already on the device and the outputs left there (the compute), and
  ``images_per_second_with_transfers`` with the images sent from host memory and every output fetched back into
  numpy each step (what a loop that writes features to disk sees, without overlap of transfers and compute).
* ``train``: ``fit`` steps of the recipe on its real ``tf.data`` pipeline (``--synthetic_data``: one cached batch
  repeated, which leaves the pipeline out), compiled as the trainer compiles them (the recipe's
  ``train.steps_per_execution``, the JAX device loop). Reports pairs (samples) per second.
* ``data``: the ``tf.data`` pipeline alone. Reports samples per second.

With ``--height``/``--width`` in train and data mode the ``IMAGE_SIZE`` macro is set (square recipes only).
Measured numbers go to ``docs/benchmarks.md`` with the command, the machine and the date.
"""

import datetime
import json
import os
import platform
import resource
import time

from absl import app, flags

from tfmatch import config

config.add_gin_flags()
flags.DEFINE_enum("mode", "infer", ["infer", "train", "data"], "what to time")
flags.DEFINE_integer("batch", 1, "batch size (global, in train and data mode)")
flags.DEFINE_integer("height", 480, "image height (infer), or IMAGE_SIZE for train/data when given")
flags.DEFINE_integer("width", 640, "image width (infer)")
flags.DEFINE_integer("steps", 20, "timed steps")
flags.DEFINE_integer("warmup", 3, "untimed steps first (compilation)")
flags.DEFINE_integer("num_keypoints", 1024, "keypoints per image for describe endpoints")
flags.DEFINE_bool("synthetic_data", False, "train mode: repeat one cached batch instead of the real pipeline")
FLAGS = flags.FLAGS


def _device_description():
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.local_devices()[0]
        return f"{device.platform}:{getattr(device, 'device_kind', '')} x{len(jax.local_devices())}"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"gpu:{details.get('device_name', 'GPU')} x{len(gpus)}"
    return f"cpu:{platform.processor() or platform.machine()} x{os.cpu_count()}"


def _peak_device_memory_mb():
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            stats = jax.local_devices()[0].memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                return stats["peak_bytes_in_use"] / 2**20
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    except Exception:  # memory statistics are optional on some platforms
        return None
    return None


def _compiled_endpoint(model):
    """The inference endpoint compiled for the backend, as a function of the inputs only."""
    import keras

    fn = getattr(model, model.endpoint)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend == "jax":
        import jax

        variables = model.variables

        def stateless(values, *inputs):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*inputs)

        jitted = jax.jit(stateless)
        values = [v.value for v in variables]
        return lambda *inputs: jitted(values, *inputs)
    return fn


def _block(outputs):
    import keras

    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def _wait(outputs):
    """Waits for a step without copying its outputs: all come from one compiled program, so fetching the smallest
    one waits for all of them."""
    import keras

    smallest = min(outputs.values(), key=lambda v: int(keras.ops.size(v)))
    keras.ops.convert_to_numpy(smallest)


def _timed(fn, inputs, steps, warmup, finish):
    for _ in range(warmup):
        finish(fn(*inputs))
    start = time.perf_counter()
    for _ in range(steps):
        finish(fn(*inputs))
    return time.perf_counter() - start


def benchmark_infer(batch, height, width, steps, warmup, num_keypoints):
    import keras
    import numpy as np

    from tfmatch.runtime.trainer import build_model

    model = build_model()
    model.build_for_inference(height, width)
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 255, (batch, height, width, model.input_channels)).astype("float32")]
    if model.endpoint == "describe":
        xy = rng.uniform(16, [width - 16, height - 16], (batch, num_keypoints, 2))
        extra = np.stack([rng.uniform(4, 30, (batch, num_keypoints)), rng.uniform(-180, 180, (batch, num_keypoints))], -1)
        inputs.append(np.concatenate([xy, extra], -1).astype("float32"))
    fn = _compiled_endpoint(model)
    with_transfers = _timed(fn, inputs, steps, warmup, _block)
    on_device = [keras.ops.convert_to_tensor(x) for x in inputs]  # the accelerator's memory, where there is one
    compute = _timed(fn, on_device, steps, warmup, _wait)
    return type(model).__name__, {"images_per_second": batch * steps / compute, "ms_per_step": 1000 * compute / steps,
                                  "images_per_second_with_transfers": batch * steps / with_transfers,
                                  "ms_per_step_with_transfers": 1000 * with_transfers / steps}


def benchmark_train(batch, steps, warmup, synthetic_data):
    import gin
    import keras

    from tfmatch.runtime.strategy import make_distribution, resolve_jit_compile

    dataset_fn = gin.query_parameter("train.dataset_fn").scoped_configurable_fn
    optimizer_fn = gin.query_parameter("train.optimizer_fn").scoped_configurable_fn
    from tfmatch.runtime import device_loop
    from tfmatch.runtime.trainer import build_model, compile_for_fit

    distribution = make_distribution(gin.query_parameter("train.strategy"))
    try:
        per_execution = max(1, int(gin.query_parameter("train.steps_per_execution")))
    except ValueError:  # not bound: the trainer's default
        per_execution = 1
    steps = -(-steps // per_execution) * per_execution  # whole executions
    warmup = -(-max(warmup, 1) // per_execution) * per_execution
    try:
        use_device_loop = bool(gin.query_parameter("train.device_loop"))
    except ValueError:
        use_device_loop = True
    dataset = dataset_fn("train", batch)
    if synthetic_data:
        dataset = dataset.take(1).cache().repeat()
    # As the trainer does: variables from one batch, then compile; the JAX device loop where it applies.
    model, _, dataset, _ = compile_for_fit(build_model, optimizer_fn, dataset, distribution,
                                           resolve_jit_compile(gin.query_parameter("train.jit_compile"),
                                                               distribution), per_execution, use_device_loop)

    class Timer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.elapsed = time.perf_counter() - self.start

    try:
        model.fit(dataset, epochs=1, steps_per_epoch=warmup, verbose=0)
        timer = Timer()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    finally:
        device_loop.close(model)
    return type(model).__name__, {"pairs_per_second": batch * steps / timer.elapsed,
                                  "ms_per_step": 1000 * timer.elapsed / steps,
                                  "replicas": distribution.num_replicas, "steps_per_execution": per_execution,
                                  "timed_steps": steps}


def benchmark_data(batch, steps, warmup):
    import gin

    dataset_fn = gin.query_parameter("train.dataset_fn").scoped_configurable_fn
    iterator = iter(dataset_fn("train", batch))
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    elapsed = time.perf_counter() - start
    return getattr(dataset_fn, "__name__", "data"), {"samples_per_second": batch * steps / elapsed, "ms_per_batch": 1000 * elapsed / steps}


def main(argv):
    del argv
    bindings = list(FLAGS.gin_bindings)
    if FLAGS.mode != "infer" and FLAGS["height"].present:
        if FLAGS["width"].present and FLAGS.width != FLAGS.height:
            raise app.UsageError("train/data mode: --height sets the square IMAGE_SIZE; leave --width out")
        bindings.append(f"IMAGE_SIZE = {FLAGS.height}")
    config.parse(FLAGS.gin_file, bindings, finalize=False)
    import keras

    if FLAGS.mode == "infer":
        method, result = benchmark_infer(FLAGS.batch, FLAGS.height, FLAGS.width, FLAGS.steps, FLAGS.warmup,
                                         FLAGS.num_keypoints)
    elif FLAGS.mode == "train":
        method, result = benchmark_train(FLAGS.batch, FLAGS.steps, FLAGS.warmup, FLAGS.synthetic_data)
    else:
        method, result = benchmark_data(FLAGS.batch, FLAGS.steps, FLAGS.warmup)
    record = {
        "method": method, "mode": FLAGS.mode, "backend": keras.backend.backend(), "device": _device_description(),
        "batch": FLAGS.batch, "height": FLAGS.height, "width": FLAGS.width if FLAGS.mode == "infer" else None,
        "steps": FLAGS.steps, **{k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()},
        "peak_device_memory_mb": _peak_device_memory_mb(),
        "peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "gin_files": list(FLAGS.gin_file), "date": datetime.date.today().isoformat(),
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    app.run(main)
