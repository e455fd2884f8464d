"""Samples made in worker processes, for pipelines whose per-sample work is numpy/OpenCV.

Inside ``tf.data`` such work runs through ``tf.numpy_function`` and holds the GIL, so more threads do not make it
faster (Synthetic Shapes: about 500 images/s whatever the cores; a GPU trains MagicPoint on several thousand).
Here a pool of ``spawn`` processes (no copy of the parent's TensorFlow state) builds the same source object and
makes the samples of an index sequence in order, one batch per task, with at most two batches per process in
flight; a generator hands the stacked batches to ``tf.data``. Every sample is a function of its index, so the
batches equal the in-process ones.

Batches travel through files in a spool directory, one write and one read per array, not through the pool's
result pipe: that pipe moves 64 KB per system call and cost the parent about 13 ms of CPU per 7 MB batch (on the
2-core CI machine), and the parent process, which also runs the training loop, is where the pipeline stalls.
Binary maps (keypoint maps, masks) can travel as uint8 (``transport``) and become float32 inside ``tf.data``.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import itertools
import multiprocessing
import os
import shutil
import tempfile

import numpy as np

_SOURCES = {}  # per worker process: the source object of each (factory, args), built once
_WRITTEN = itertools.count()  # per worker process: a serial number for spool file names
_SPOOLS = set()  # in the parent: spool directories not yet removed (removed again at exit, see below)


@atexit.register
def _remove_spools():
    for spool in list(_SPOOLS):
        shutil.rmtree(spool, ignore_errors=True)


def single_threaded_opencv():
    """Pool initializer: one OpenCV thread per worker. By default each process runs OpenCV's pool of one thread per
    core, so N workers oversubscribe the cores N-fold; with 16 workers on 16 cores MagicPoint's augmentation (a
    large Gaussian blur per sample) delivered 830 samples/s where one core alone makes about 650."""
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(1)


def _make_samples(factory, args, indices, spool: str, transport: tuple):
    """Makes the samples of ``indices`` and writes each stacked output to a file in ``spool``, cast to its
    ``transport`` dtype (None: as made; a cast to an integer dtype must be exact); returns
    ``[(path, dtype, shape)]``."""
    key = (factory, args)
    source = _SOURCES.get(key)
    if source is None:
        source = _SOURCES[key] = factory(*args)
    samples = [source.sample(int(i)) for i in indices]
    serial = next(_WRITTEN)
    files = []
    for k in range(len(samples[0])):
        values = np.ascontiguousarray(np.stack([sample[k] for sample in samples]))
        dtype = transport[k] if k < len(transport) else None
        if dtype is not None and np.dtype(dtype) != values.dtype:
            sent = values.astype(dtype)
            if sent.dtype.kind in "iub" and not np.array_equal(sent, values):
                raise ValueError(f"worker_pool: output {k} of {factory.__name__} is not exactly representable as "
                                 f"{np.dtype(dtype).name} (values {values.min()}..{values.max()})")
            values = sent
        path = os.path.join(spool, f"{os.getpid()}-{serial}-{k}.bin")
        values.tofile(path)
        files.append((path, values.dtype.str, values.shape))
    return files


def _read(files):
    """Reads (and deletes) the files of one batch."""
    arrays = []
    for path, dtype, shape in files:
        arrays.append(np.fromfile(path, dtype).reshape(shape))
        os.remove(path)
    return tuple(arrays)


def batches_from_processes(factory, args: tuple, indices, processes: int, batch_size: int, transport=()):
    """Yields the samples ``factory(*args).sample(i)`` of the iterator ``indices``, in order, ``batch_size`` at a time
    (each output stacked, the last batch possibly shorter), made in ``processes`` worker processes. ``factory`` and
    ``args`` must pickle (a module-level class and plain values). ``transport``: per output, a dtype to carry it in
    (an integer dtype must hold the values exactly, else the worker raises), or None to keep the source's dtype.

    A ``ProcessPoolExecutor``, not a ``multiprocessing.Pool``: closing the generator early (``take(n)``, the end of
    training) cancels what is queued and lets the workers finish alone, while ``Pool.terminate()`` could hang on
    its task-feeding thread (seen in CI).
    """
    spool = tempfile.mkdtemp(prefix="tfmatch-pool-")
    _SPOOLS.add(spool)  # removed again at exit: a worker may still write after the cleanup below
    executor = concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=single_threaded_opencv)
    transport = tuple(transport)
    pending = collections.deque()
    try:
        while True:
            while len(pending) < 2 * processes:
                part = list(itertools.islice(indices, batch_size))
                if not part:
                    break
                try:
                    pending.append(executor.submit(_make_samples, factory, args, part, spool, transport))
                except RuntimeError:  # the interpreter is exiting and has shut the pool down: end quietly
                    return
            if not pending:
                return
            yield _read(pending.popleft().result())
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(spool, ignore_errors=True)
        if not os.path.exists(spool):
            _SPOOLS.discard(spool)


def process_dataset(factory, args: tuple, names, shapes, processes: int, first: int, stride: int, stop,
                    batch_size: int, drop_remainder: bool, transport=None):
    """A ``tf.data.Dataset`` of batches, dicts ``name -> float32 [B, ...]`` (names starting with 'image' get a
    channel axis), over indices ``first, first + stride, ...`` (endless when ``stop`` is None). The workers make
    whole batches, so nothing is split into samples and batched again in this process. ``transport``: ``{name:
    dtype}`` for outputs that travel in a smaller dtype that holds them exactly (binary maps: uint8); they are cast
    to float32 inside ``tf.data``, outside the GIL. The other outputs travel as float32 (cast in the workers)."""
    import tensorflow as tf

    transport = dict(transport or {})
    unknown = set(transport) - set(names)
    if unknown:
        raise ValueError(f"worker_pool: transport names {sorted(unknown)} are not outputs {list(names)}")
    dtypes = [np.dtype(transport.get(name, np.float32)) for name in names]

    def generate():  # a new pool for every pass over the dataset
        own = itertools.count(first, stride) if stop is None else iter(range(first, stop, stride))
        for values in batches_from_processes(factory, args, own, processes, max(1, batch_size), dtypes):
            if drop_remainder and len(values[0]) < batch_size:
                return
            yield dict(zip(names, values))

    batch_dim = batch_size if drop_remainder else None
    signature = {name: tf.TensorSpec((batch_dim,) + tuple(shape), tf.as_dtype(dtype))
                 for name, shape, dtype in zip(names, shapes, dtypes)}

    def to_float(batch):
        return {name: (tf.cast(value, tf.float32)[..., None] if name.startswith("image") else tf.cast(value, tf.float32))
                for name, value in batch.items()}

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
