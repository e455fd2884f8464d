r"""Writes a folder of real photographs for SuperPoint's Homographic Adaptation and joint training, with no download.

    python -m data_tools.make_photo_folder --out data_cache/photos [--count 200] [--height 240 --width 320]
        [--seed 0] [--regenerate]

The images are random crops of the photographs that scikit-image ships (the list of
``data_tools.make_hpatches_demo``), each photo rescaled by a random factor before the crop so that the crops see
different scales, flipped at random, written as JPEG ``OUT/<photo>_<index>.jpg`` (colour, ``height x width``).
This is a stand-in for COCO (the originals train on 80k COCO images): enough for the pipeline to run end to end
and for a short joint training, not for a paper-quality model. ``OUT/.complete`` is written last; a complete
folder is left alone unless ``--regenerate``.
"""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
from absl import app, flags

from data_tools.photos import PHOTOS, load_photo

COMPLETE = ".complete"


def random_crop(photo: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A ``height x width`` crop of ``photo`` after a random rescale (the crop always fits). -> ``[H, W, 3]``."""
    smallest = max(height / photo.shape[0], width / photo.shape[1])
    scale = max(smallest, rng.uniform(0.5, 1.0))
    resized = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1
                         else cv2.INTER_LINEAR)
    h, w = resized.shape[:2]
    y, x = rng.integers(0, h - height + 1), rng.integers(0, w - width + 1)
    crop = resized[y:y + height, x:x + width]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def write_folder(out: str, count: int = 200, height: int = 240, width: int = 320, seed: int = 0,
                 regenerate: bool = False) -> int:
    """Writes ``count`` crops; returns how many were written (0 when the folder was already complete)."""
    if os.path.isfile(os.path.join(out, COMPLETE)) and not regenerate:
        return 0
    if regenerate and os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    # Photos are loaded at twice the crop's longer side so that a crop is a real part of a photo, not all of it.
    photos = [(name, load_photo(name, 2 * max(height, width))) for name in PHOTOS]
    for index in range(count):
        name, photo = photos[index % len(photos)]
        crop = random_crop(photo, np.random.default_rng([seed, index]), height, width)
        path = os.path.join(out, f"{name}_{index:05d}.jpg")
        tmp = path + ".tmp.jpg"
        cv2.imwrite(tmp, np.ascontiguousarray(crop[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
        os.replace(tmp, path)
    with open(os.path.join(out, COMPLETE), "w") as f:
        f.write(f"{count} photos {height}x{width} seed {seed}\n")
    return count


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    written = write_folder(FLAGS.out, FLAGS.count, FLAGS.height, FLAGS.width, FLAGS.seed, FLAGS.regenerate)
    print(f"{FLAGS.out}: {written} photos written" if written else f"{FLAGS.out}: already complete")


if __name__ == "__main__":
    flags.DEFINE_string("out", None, "folder to write")
    flags.DEFINE_integer("count", 200, "number of crops")
    flags.DEFINE_integer("height", 240, "crop height")
    flags.DEFINE_integer("width", 320, "crop width")
    flags.DEFINE_integer("seed", 0, "seed of the crops")
    flags.DEFINE_bool("regenerate", False, "delete OUT and write it again")
    flags.mark_flag_as_required("out")
    app.run(main)
