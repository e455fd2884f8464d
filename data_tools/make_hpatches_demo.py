"""Build a small HPatches-format set from the photographs shipped with scikit-image.

    python -m data_tools.make_hpatches_demo --out DIR [--seed 0] [--num_sequences 4] [--size 320]
        [--strength 0.15] [--regenerate]

``v_<photo>`` sequences: image k = image 1 warped by a random homography ``H_1_k`` whose corner displacement
grows with k (at most ``strength`` x image size at k = 6: perspective, rotation, scale, shear).
``i_<photo>`` sequences: ``H_1_k`` = identity; image k = image 1 under a photometric change of growing strength
(brightness, contrast, gamma, Gaussian blur, Gaussian noise). Sequences alternate v_ / i_ over the photographs
available offline. Images are PNG, at most ``size`` pixels on the longer side. The set is written under a
temporary name, renamed, and marked complete by ``DIR/.complete`` (``--regenerate`` rebuilds it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from absl import app, flags

from data_tools.photos import PHOTOS, load_photo

COMPLETE = ".complete"


def random_homography(rng: np.random.Generator, width: int, height: int, strength: float) -> np.ndarray:
    """A homography that moves each image corner by up to ``strength`` x the image size (random directions),
    about the image centre, so the warped image stays mostly in view. Shape: -> ``[3, 3]``."""
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float32)
    angle = rng.uniform(-1, 1) * strength * np.pi / 2  # up to 27 degrees at strength 0.3
    scale = 1.0 + rng.uniform(-0.5, 0.5) * strength
    centre = np.array([(width - 1) / 2, (height - 1) / 2], np.float32)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    moved = (corners - centre) @ rotation.T * scale + centre
    moved += rng.uniform(-1, 1, size=(4, 2)).astype(np.float32) * strength * 0.5 * np.array([width, height])
    H = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
    return H / H[2, 2]


def photometric(rng: np.random.Generator, image: np.ndarray, level: float) -> np.ndarray:
    """Brightness, contrast, gamma, blur and noise, each scaled by ``level`` in (0, 1]. Shape: as the input."""
    x = image.astype(np.float32) / 255.0
    x = np.clip(x ** np.exp(rng.uniform(-1, 1) * 0.6 * level), 0, 1)  # gamma
    x = (x - 0.5) * (1.0 + rng.uniform(-0.5, 0.5) * level) + 0.5  # contrast
    x = x + rng.uniform(-0.25, 0.25) * level  # brightness
    sigma = 1.5 * level * rng.uniform(0.3, 1.0)
    if sigma > 0.3:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    x = x + rng.normal(0, 0.02 * level, size=x.shape)
    return (np.clip(x, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write the image")


def make_demo(out, seed: int = 0, num_sequences: int = 4, size: int = 320, strength: float = 0.15,
              regenerate: bool = False) -> Path:
    """Writes the set (see the module docstring) and returns its directory; an existing complete set with the
    same settings is kept unless ``regenerate``."""
    out = Path(out)
    settings = {"seed": seed, "num_sequences": num_sequences, "size": size, "strength": strength}
    marker = out / COMPLETE
    if marker.is_file() and not regenerate:
        if json.loads(marker.read_text()) == settings:
            return out
        raise FileExistsError(f"{out}: holds a demo set made with other settings "
                              f"({marker.read_text().strip()}); pass --regenerate")
    if not 0 < num_sequences <= 2 * len(PHOTOS):
        raise ValueError(f"num_sequences must be in 1..{2 * len(PHOTOS)}, got {num_sequences}")
    rng = np.random.default_rng(seed)
    tmp = out.parent / (out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for index in range(num_sequences):
        photo = PHOTOS[index // 2]  # each photograph gives one v_ and one i_ sequence
        kind = "v" if index % 2 == 0 else "i"
        image = load_photo(photo, size)
        height, width = image.shape[:2]
        seq = tmp / f"{kind}_{photo}"
        seq.mkdir()
        _write_png(seq / "1.png", image)
        for k in range(2, 7):
            level = (k - 1) / 5.0
            if kind == "v":
                H = random_homography(rng, width, height, strength * level)
                warped = cv2.warpPerspective(image, H, (width, height), flags=cv2.INTER_LINEAR)
            else:
                H = np.eye(3)
                warped = photometric(rng, image, level)
            _write_png(seq / f"{k}.png", warped)
            np.savetxt(seq / f"H_1_{k}", H, fmt="%.10g")
    (tmp / COMPLETE).write_text(json.dumps(settings) + "\n")  # last: marks the set complete
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("num_sequences", 4, "Sequences (alternating v_ and i_).")
flags.DEFINE_integer("size", 320, "Longer image side [px].")
flags.DEFINE_float("strength", 0.15, "Homography strength at image 6 (corner displacement / image size).")
flags.DEFINE_boolean("regenerate", False, "Rebuild an existing set.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    path = make_demo(FLAGS.out, FLAGS.seed, FLAGS.num_sequences, FLAGS.size, FLAGS.strength, FLAGS.regenerate)
    print(f"{path}: HPatches demo set ready")


if __name__ == "__main__":
    app.run(main)
