r"""Throughput of the ASLFeat GL3D input (``gl3d_dense_dataset``): prints one JSON line with samples per second.

    python -m data_tools.gl3d_benchmark --gl3d ROOT [--batch_size 2] [--image_size 480] [--batches 200]
        [--threads N] [--busy_python_thread]

Self-contained with ``--synthetic_scenes K``: when ROOT holds no GL3D lists yet, a synthetic set of K scenes is
generated there first (``data_tools.make_synthetic_gl3d``, default image size 1000 as GL3D) and its match sets
are built (the JSON line then also reports both times). A sample is one pair: two 1000x1000 JPEG decodes, two
PFM reads, resizes, photometric augmentation (train split).

``--threads N`` runs the pipeline on a private tf.data thread pool of N threads: compare N = 1 with N = cores to
see the per-thread rate and whether the pipeline scales with cores. ``--busy_python_thread`` keeps a pure-Python
thread running during the timed batches, as a Python training loop does: a pipeline whose map calls need the GIL
(``numpy_function``, ``py_function``) slows down far more than the CPU the thread takes (a check that also works
on a small, shared machine, where scaling cannot be seen).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time


def _busy_loop(stop: threading.Event, cpu_seconds: list) -> None:
    start, count = time.thread_time(), 0
    while not stop.is_set():
        count += 1
    cpu_seconds.append(time.thread_time() - start)  # not the pipeline's: subtracted from the process CPU time


def main(argv=None) -> int:
    from absl import flags

    flags.DEFINE_string("gl3d", None, "GL3D root", required=True)
    flags.DEFINE_string("data_split", "gl3d", "list/<split>")
    flags.DEFINE_string("split", "train", "train (shuffled, augmented) or test")
    flags.DEFINE_integer("batch_size", 2, "pairs per batch (TFMatch: 2)")
    flags.DEFINE_integer("image_size", 480, "dense input size (ASLFeat: 480)")
    flags.DEFINE_integer("num_corr", 1024, "correspondences per pair")
    flags.DEFINE_integer("batches", 200, "timed batches")
    flags.DEFINE_integer("warmup", 20, "untimed batches first (pipeline start, autotuning)")
    flags.DEFINE_integer("threads", 0, "tf.data private thread pool size (0: TensorFlow's default, all cores)")
    flags.DEFINE_bool("busy_python_thread", False, "run a pure-Python busy loop during the timed batches")
    flags.DEFINE_integer("synthetic_scenes", 0, "generate a synthetic set of this many scenes if ROOT has none")
    flags.DEFINE_integer("synthetic_images_per_scene", 6, "images per synthetic scene")
    FLAGS = flags.FLAGS
    FLAGS(argv if argv is not None else sys.argv)

    result = {"benchmark": "gl3d_dense_dataset"}
    if FLAGS.synthetic_scenes and not os.path.isdir(os.path.join(FLAGS.gl3d, "list", FLAGS.data_split)):
        from data_tools import gl3d_match_sets, make_synthetic_gl3d

        start = time.perf_counter()
        make_synthetic_gl3d.generate(FLAGS.gl3d, FLAGS.synthetic_scenes, FLAGS.synthetic_images_per_scene,
                                     workers=os.cpu_count() or 1)
        result["synthetic_generation_s"] = round(time.perf_counter() - start, 2)
        summary = gl3d_match_sets.build_split(FLAGS.gl3d, FLAGS.data_split, FLAGS.num_corr,
                                              workers=min(FLAGS.synthetic_scenes, os.cpu_count() or 1),
                                              progress=False)
        result["match_sets"] = summary.as_dict()

    import tensorflow as tf

    from tfmatch.data import gl3d

    ds = gl3d.gl3d_dense_dataset(FLAGS.split, FLAGS.batch_size, gl3d_root=FLAGS.gl3d, image_size=FLAGS.image_size,
                                 num_corr=FLAGS.num_corr, data_split=FLAGS.data_split)
    if FLAGS.split != "train":
        ds = ds.repeat()
    if FLAGS.threads > 0:
        options = tf.data.Options()
        options.threading.private_threadpool_size = FLAGS.threads
        ds = ds.with_options(options)
    iterator = iter(ds)
    for _ in range(FLAGS.warmup):
        next(iterator)
    stop, busy_cpu_seconds = threading.Event(), []
    busy = threading.Thread(target=_busy_loop, args=(stop, busy_cpu_seconds), daemon=True)
    if FLAGS.busy_python_thread:
        busy.start()
    start, cpu_start = time.perf_counter(), os.times()
    for _ in range(FLAGS.batches):
        batch = next(iterator)
    batch["image0"].numpy()
    seconds, cpu_end = time.perf_counter() - start, os.times()
    stop.set()
    if FLAGS.busy_python_thread:
        busy.join()
    # CPU time per sample (all threads of this process): with other load on the machine, cpu_count / this is a
    # better estimate of the throughput of an idle machine than samples_per_s.
    cpu_seconds = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system) - sum(busy_cpu_seconds)
    result.update({
        "samples_per_s": round(FLAGS.batches * FLAGS.batch_size / seconds, 2),
        "batches_per_s": round(FLAGS.batches / seconds, 2),
        "cpu_ms_per_sample": round(1000 * cpu_seconds / (FLAGS.batches * FLAGS.batch_size), 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "batch_size": FLAGS.batch_size, "image_size": FLAGS.image_size, "num_corr": FLAGS.num_corr,
        "split": FLAGS.split, "batches": FLAGS.batches, "threads": FLAGS.threads or None,
        "busy_python_thread": FLAGS.busy_python_thread,
        "cpu_count": os.cpu_count(),
        "host": platform.node(), "tensorflow": tf.__version__,
        "date": time.strftime("%Y-%m-%d"),
    })
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
