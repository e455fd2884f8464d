r"""Writes a fixed Synthetic Shapes set (MagicPoint data) to disk.

    python -m data_tools.synthetic_shapes --out data_cache/synthetic_shapes [--train 10000 --val 200 --test 500]
        [--workers N]

Layout: ``OUT/<primitive>/<split>/<index>.png`` (uint8 gray at ``--height x --width``, 120x160 by default) and
``<index>.npy`` (corners ``[N,2]`` float32 (x, y), integer = pixel centre). Sizes are per primitive before the
spec's truncation (ellipses 30%, stripes 20%, noise 10%). Every image is a function of (seed, split, index), so an
interrupted run resumes where it stopped (each file is written under a temporary name, then renamed) and
``OUT/.complete`` is written last; ``--regenerate`` starts over. Training reads the set with
``synthetic_shapes_dataset.data_dir = 'OUT'`` (on-the-fly generation is the default and needs no files).
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from tfmatch.data import synthetic_shapes as ss


def _primitive_seed(primitive: str) -> int:
    return ss.PRIMITIVES.index(primitive)


def _paths(out, primitive, split, index):
    folder = os.path.join(out, primitive, split)
    return folder, os.path.join(folder, f"{index:06d}.png"), os.path.join(folder, f"{index:06d}.npy")


def _write_one(job) -> None:
    """Draws and writes one image and its corners (a worker process runs this too)."""
    import cv2

    out, primitive, split, index, seed, image_size, canvas_size = job
    folder, png, npy = _paths(out, primitive, split, index)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng([seed, ss.SPLITS.index(split), _primitive_seed(primitive), index])
    image, points = ss.generate_shape(rng, primitive, image_size, canvas_size)
    # Points first: an image without its points file would be regenerated, never read half-written.
    with open(npy + ".tmp", "wb") as f:
        np.save(f, points.astype(np.float32))
    os.replace(npy + ".tmp", npy)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{png}: PNG encoding failed")
    with open(png + ".tmp", "wb") as f:
        f.write(encoded.tobytes())
    os.replace(png + ".tmp", png)


def write_set(out: str, sizes: dict, image_size=ss.IMAGE_SIZE, canvas_size=ss.CANVAS_SIZE, seed: int = 0,
              primitives=ss.PRIMITIVES, regenerate: bool = False, progress: bool = True, workers: int = 1) -> int:
    """Writes the set (in ``workers`` processes when > 1; the same files); returns the number of images written by
    this call (0 when it was already complete)."""
    from tqdm import tqdm

    if regenerate and os.path.isdir(out):
        shutil.rmtree(out)
    marker = os.path.join(out, ".complete")
    if os.path.isfile(marker):
        return 0
    jobs = [(p, split, i) for p in primitives for split in ss.SPLITS for i in range(ss.split_size(p, split, sizes))]
    todo = [(out, p, split, i, seed, tuple(image_size), tuple(canvas_size)) for p, split, i in jobs
            if not all(os.path.isfile(path) for path in _paths(out, p, split, i)[1:])]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="synthetic shapes", unit="img",
               disable=not progress)
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        from tfmatch.data.worker_pool import single_threaded_opencv

        with multiprocessing.get_context("spawn").Pool(workers, initializer=single_threaded_opencv) as pool:
            for _ in pool.imap_unordered(_write_one, todo, chunksize=16):
                bar.update()
    else:
        for job in todo:
            _write_one(job)
            bar.update()
    bar.close()
    written = len(todo)
    with open(marker, "w") as f:
        f.write(f"{len(jobs)} images, seed {seed}, size {image_size[0]}x{image_size[1]}\n")
    return written


def main(argv):
    del argv
    from absl import flags

    FLAGS = flags.FLAGS
    sizes = {"train": FLAGS.train, "val": FLAGS.val, "test": FLAGS.test}
    written = write_set(FLAGS.out, sizes, (FLAGS.height, FLAGS.width), (FLAGS.canvas_height, FLAGS.canvas_width),
                        FLAGS.seed, tuple(FLAGS.primitives), FLAGS.regenerate, workers=FLAGS.workers)
    print(f"{FLAGS.out}: {written} images written" + ("" if written else " (already complete)"))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("out", None, "output directory")
    flags.DEFINE_integer("train", ss.SPLIT_SIZES["train"], "training images per primitive (before truncation)")
    flags.DEFINE_integer("val", ss.SPLIT_SIZES["val"], "validation images per primitive")
    flags.DEFINE_integer("test", ss.SPLIT_SIZES["test"], "test images per primitive")
    flags.DEFINE_integer("height", ss.IMAGE_SIZE[0], "stored image height")
    flags.DEFINE_integer("width", ss.IMAGE_SIZE[1], "stored image width")
    flags.DEFINE_integer("canvas_height", ss.CANVAS_SIZE[0], "drawing resolution")
    flags.DEFINE_integer("canvas_width", ss.CANVAS_SIZE[1], "drawing resolution")
    flags.DEFINE_integer("seed", 0, "seed of the set")
    flags.DEFINE_list("primitives", list(ss.PRIMITIVES), "primitives to draw")
    flags.DEFINE_bool("regenerate", False, "delete OUT and write it again")
    flags.DEFINE_integer("workers", 1, "processes drawing in parallel (the same files)")
    flags.mark_flag_as_required("out")
    app.run(main)
