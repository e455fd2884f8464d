r"""Regional features for ContextDesc: one raw float32 file per GL3D image from a ResNet-50 trunk.

    python -m data_tools.extract_regional_features --gl3d ROOT --split gl3d [--weights W.h5] [--resolution 448]

For every image of ``list/<split>/image_list.txt`` it writes ``data/<pid>/reg_feat/XXXXXXXX.bin``: the image as
grayscale replicated to 3 channels (the ContextDesc model does the same at inference), resized to
``resolution x resolution``, through ``tfmatch.methods.contextdesc.network.build_regional_trunk`` (ResNet-50 up to
the pre-ReLU sum of its last block, stride 32), saved as raw float32 ``(resolution/32)^2 x 2048`` (14x14x2048 at
448), row-major, the layout ``tfmatch.data.gl3d_patches`` reads. It then writes ``list/<split>/
regional_feat_list.txt`` (one path per image, relative to the root) and a ``.regional_features.complete`` marker.

Resumable: files are written under a temporary name and renamed, so a file that exists is complete and is
skipped (``--regenerate`` rewrites everything). Weights: ``--weights`` (the retrieval model the features should
come from, as a Keras weights file), else ImageNet weights if Keras has them on disk, else random with a loud
warning (features then carry no meaning; fine only for tests of the pipeline).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS


def _define_flags():
    # Defined only when run as a program, so that importing extract() into another absl program cannot clash.
    flags.DEFINE_string("gl3d", None, "GL3D root (contains list/ and data/)")
    flags.DEFINE_string("split", "gl3d", "list folder: gl3d, tourism, comb, blendedmvg")
    flags.DEFINE_string("weights", None, "Keras weights of the ResNet-50 trunk (.weights.h5) or of a no-top "
                        "ResNet50 (.h5)")
    flags.DEFINE_integer("resolution", 448, "images are resized to resolution x resolution (multiple of 32)")
    flags.DEFINE_integer("batch_size", 8, "images per forward pass")
    flags.DEFINE_boolean("regenerate", False, "rewrite files that already exist")


MARKER = ".regional_features.complete"


def regional_path(image_path: str) -> str:
    """``data/<pid>/undist_images/X.jpg`` (or ``blended_images``) -> ``data/<pid>/reg_feat/X.bin``."""
    folder, name = os.path.split(image_path)
    return os.path.join(os.path.dirname(folder), "reg_feat", os.path.splitext(name)[0] + ".bin")


def load_gray(path: str, resolution: int) -> np.ndarray:
    import cv2

    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"{path}: cannot read image (missing or corrupt)")
    return cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_AREA).astype(np.float32)


def write_atomic(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    np.ascontiguousarray(array, dtype="<f4").tofile(tmp)
    os.replace(tmp, path)


def extract(gl3d_root: str, split: str, weights: str | None = None, resolution: int = 448, batch_size: int = 8,
            regenerate: bool = False) -> dict:
    """Writes the regional features of every image of the split; returns counts."""
    from tqdm import tqdm

    from tfmatch.data import gl3d_io
    from tfmatch.methods.contextdesc.network import build_regional_trunk, preprocess_regional

    if resolution % 32:
        raise ValueError(f"resolution must be a multiple of 32, got {resolution}")
    lists = gl3d_io.read_split_lists(gl3d_root, split)
    targets = [regional_path(p) for p in lists.images]
    todo = [i for i, t in enumerate(targets) if regenerate or not os.path.isfile(os.path.join(gl3d_root, t))]
    trunk = build_regional_trunk(weights) if todo else None
    written = 0
    for start in tqdm(range(0, len(todo), batch_size), desc=f"regional features ({split})", unit="batch"):
        chunk = todo[start:start + batch_size]
        images = np.stack([load_gray(os.path.join(gl3d_root, lists.images[i]), resolution) for i in chunk])
        feats = np.asarray(trunk(preprocess_regional(images[..., None]), training=False))
        for i, feat in zip(chunk, feats):
            out = os.path.join(gl3d_root, targets[i])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            write_atomic(out, feat)
            written += 1
    list_path = os.path.join(gl3d_root, "list", split, "regional_feat_list.txt")
    gl3d_io.write_atomic(list_path, ("\n".join(targets) + "\n").encode())
    grid = resolution // 32
    info = {"images": len(targets), "written": written, "skipped": len(targets) - len(todo),
            "shape": [grid, grid, 2048], "dtype": "float32", "resolution": resolution,
            "weights": weights or "imagenet-local-or-random"}
    gl3d_io.write_atomic(os.path.join(gl3d_root, "list", split, MARKER), json.dumps(info).encode())
    return info


def main(argv):
    del argv
    if not FLAGS.gl3d:
        logging.error("--gl3d is required")
        return 2
    try:
        info = extract(FLAGS.gl3d, FLAGS.split, FLAGS.weights, FLAGS.resolution, FLAGS.batch_size, FLAGS.regenerate)
    except (ValueError, OSError) as err:
        logging.error("%s", err)
        return 2
    logging.info("regional features: %s", info)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
