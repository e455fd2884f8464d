"""Distribution: a gin-selectable ``tf.distribute`` strategy on TensorFlow, ``keras.distribution`` on JAX.

| name           | TensorFlow backend                                             | JAX backend                      |
|----------------|----------------------------------------------------------------|----------------------------------|
| ``auto``       | MirroredStrategy when TF sees more than one GPU, else default  | DataParallel over all local devices when more than one |
| ``mirrored``   | MirroredStrategy over the GPUs, or over the logical CPUs       | DataParallel                     |
| ``multi_worker`` | MultiWorkerMirroredStrategy from ``TF_CONFIG`` (own loop)    | not supported                    |
| ``one_device`` | OneDeviceStrategy on the first GPU, else the CPU               | no distribution                  |
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import keras

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")


@dataclasses.dataclass
class Distribution:
    """What the trainer needs to know about how it runs."""

    name: str
    scope: object  # a context manager: strategy.scope() on TF, a null context elsewhere
    num_replicas: int
    tf_strategy: object = None  # the tf.distribute strategy (TF backend)
    is_chief: bool = True  # multi-worker: only the chief writes checkpoints and summaries
    worker_index: int = 0
    on_cpu_devices: bool = False  # replicas are logical CPU devices (XLA cannot compile across them)

    @property
    def custom_loop(self) -> bool:
        # Keras 3 fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585): the trainer runs its own loop.
        return self.name == "multi_worker"


def _tf_distribution(name: str) -> Distribution:
    import tensorflow as tf

    if name == "multi_worker":  # before anything touches the TF context: collectives are set up at start-up
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment variable (cluster and task)")
        tf_config = json.loads(os.environ["TF_CONFIG"])
        task = tf_config.get("task", {})
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        index = int(task.get("index", 0))
        is_chief = task.get("type", "worker") == "chief" or (
            task.get("type", "worker") == "worker" and index == 0 and "chief" not in tf_config.get("cluster", {}))
        return Distribution("multi_worker", strategy.scope(), strategy.num_replicas_in_sync, strategy,
                            is_chief=is_chief, worker_index=index, on_cpu_devices=not tf.config.list_physical_devices("GPU"))
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        device = gpus[0].name if gpus else cpus[0].name
        strategy = tf.distribute.OneDeviceStrategy(device)
        return Distribution("one_device", strategy.scope(), 1, strategy)
    if name == "mirrored":
        devices = [d.name for d in gpus] if gpus else [d.name for d in cpus]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Distribution("mirrored", strategy.scope(), strategy.num_replicas_in_sync, strategy,
                            on_cpu_devices=not gpus)
    raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")


def _jax_distribution(name: str) -> Distribution:
    import jax

    devices = jax.local_devices()
    if name == "multi_worker":
        raise ValueError("strategy 'multi_worker' needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    if name in ("auto", "mirrored") and len(devices) > 1:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return Distribution("data_parallel", contextlib.nullcontext(), len(devices))
    keras.distribution.set_distribution(None)
    return Distribution("one_device", contextlib.nullcontext(), 1)


def make_distribution(name: str = "auto") -> Distribution:
    """Creates the distribution for the current Keras backend (see the table above)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_distribution(name)
    if backend == "jax":
        return _jax_distribution(name)
    if name in ("mirrored", "multi_worker"):
        raise ValueError(f"strategy {name!r} is not available on the {backend} backend")
    return Distribution("one_device", contextlib.nullcontext(), 1)


def resolve_jit_compile(setting, distribution: Distribution) -> bool:
    """``auto``: XLA wherever it works. On TF, XLA cannot reach variables mirrored on other logical CPU devices
    (``tfvariable_on_a_different_device``), so replicated CPU runs go without it; JAX always compiles."""
    backend = keras.backend.backend()
    if setting == "auto":
        if backend == "jax":
            return True
        if backend == "tensorflow":
            return not (distribution.num_replicas > 1 and distribution.on_cpu_devices)
        return False
    return bool(setting)


def configure_logical_cpus(count: int) -> None:
    """Splits the CPU into ``count`` logical devices (TF backend; must run before any TF op)."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
