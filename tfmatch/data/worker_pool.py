"""Samples made in worker processes, for pipelines whose per-sample work is numpy/OpenCV.

Inside ``tf.data`` such work runs through ``tf.numpy_function`` and holds the GIL, so more threads do not make it
faster (Synthetic Shapes: about 500 images/s whatever the cores; a GPU trains MagicPoint on several thousand).
Here a pool of ``spawn`` processes (no copy of the parent's TensorFlow state) builds the same source object and
makes the samples of an index sequence in order, one batch per task, with at most two batches per process in
flight; a generator hands the stacked batches to ``tf.data``. Every sample is a function of its index, so the
batches equal the in-process ones.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import multiprocessing

import numpy as np

_SOURCES = {}  # per worker process: the source object of each (factory, args), built once


def single_threaded_opencv():
    """Pool initializer: one OpenCV thread per worker. By default each process runs OpenCV's pool of one thread per
    core, so N workers oversubscribe the cores N-fold; with 16 workers on 16 cores MagicPoint's augmentation (a
    large Gaussian blur per sample) delivered 830 samples/s where one core alone makes about 650."""
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(1)


def _compact(values):
    """Float arrays whose values are all integers in 0..255 (keypoint maps, masks, undistorted images) travel as
    uint8: a quarter of the bytes to pickle, send and unpickle. Returns ``(array, dtype to restore)``."""
    if values.dtype.kind == "f":
        small = values.astype(np.uint8)
        if np.array_equal(small, values):  # exact: anything outside 0..255 or fractional compares unequal
            return small, values.dtype.str
    return values, None


def _make_samples(factory, args, indices):
    key = (factory, args)
    source = _SOURCES.get(key)
    if source is None:
        source = _SOURCES[key] = factory(*args)
    samples = [source.sample(int(i)) for i in indices]
    return tuple(_compact(np.stack([sample[k] for sample in samples])) for k in range(len(samples[0])))


def _restore(parts):
    return tuple(values if dtype is None else values.astype(dtype) for values, dtype in parts)


def batches_from_processes(factory, args: tuple, indices, processes: int, batch_size: int):
    """Yields the samples ``factory(*args).sample(i)`` of the iterator ``indices``, in order, ``batch_size`` at a time
    (each output stacked, the last batch possibly shorter), made in ``processes`` worker processes. ``factory`` and
    ``args`` must pickle (a module-level class and plain values).

    A ``ProcessPoolExecutor``, not a ``multiprocessing.Pool``: closing the generator early (``take(n)``, the end of
    training) cancels what is queued and lets the workers finish alone, while ``Pool.terminate()`` could hang on
    its task-feeding thread (seen in CI).
    """
    executor = concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=single_threaded_opencv)
    pending = collections.deque()
    try:
        while True:
            while len(pending) < 2 * processes:
                part = list(itertools.islice(indices, batch_size))
                if not part:
                    break
                pending.append(executor.submit(_make_samples, factory, args, part))
            if not pending:
                return
            yield _restore(pending.popleft().result())
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def process_dataset(factory, args: tuple, names, shapes, processes: int, first: int, stride: int, stop,
                    batch_size: int, drop_remainder: bool):
    """A ``tf.data.Dataset`` of batches, dicts ``name -> float32 [B, ...]`` (names starting with 'image' get a
    channel axis), over indices ``first, first + stride, ...`` (endless when ``stop`` is None). The workers make
    whole batches, so nothing is split into samples and batched again in this process."""
    import tensorflow as tf

    def generate():  # a new pool for every pass over the dataset
        own = itertools.count(first, stride) if stop is None else iter(range(first, stop, stride))
        for values in batches_from_processes(factory, args, own, processes, max(1, batch_size)):
            if drop_remainder and len(values[0]) < batch_size:
                return
            yield {name: (np.asarray(v, np.float32)[..., None] if name.startswith("image") else np.asarray(v, np.float32))
                   for name, v in zip(names, values)}

    batch_dim = batch_size if drop_remainder else None
    signature = {name: tf.TensorSpec((batch_dim,) + tuple(shape) + ((1,) if name.startswith("image") else ()),
                                     tf.float32) for name, shape in zip(names, shapes)}
    return tf.data.Dataset.from_generator(generate, output_signature=signature)
