r"""Homographic Adaptation: exports keypoint labels for a folder of images with a trained MagicPoint (or SuperPoint).

    python -m data_tools.superpoint_export_labels --model_dir ckpt/magicpoint --images DIR --out LABELS \
        [--num_homographies 100] [--height 240 --width 320]

Every image under ``--images`` (recursively: jpg, jpeg, png, ppm, pgm, bmp) is converted to gray and resized to
``height x width`` (the training resolution of the next stage; ``tfmatch.data.image_folder`` resizes the same way).
The model's heatmap is aggregated over the identity and ``num_homographies - 1`` random homographies (the spec's
sampler with the export settings: scaling 0.2, perspective 0.2, patch 0.85, rotation up to pi, artifacts allowed),
then NMS (radius 4), threshold (0.015) and top-k give the labels.

Output: ``LABELS/<relative path without extension>.npz`` with ``pts [N,2]`` float32 (x, y) pixels at
``image_size``, ``scores [N]`` and ``image_size [2]`` (height, width); each file is written under a temporary name
and renamed, finished images are skipped on a rerun (resume), and ``LABELS/.complete`` is written last
(``--regenerate`` starts over). Unreadable images are skipped, counted and listed in ``LABELS/skipped.txt``.
"""

from __future__ import annotations

import os
import shutil
import zlib

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp")


def list_images(image_dir: str) -> list[str]:
    """Relative paths of every image under ``image_dir``, sorted."""
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"{image_dir}: not a directory")
    found = []
    for root, _, files in os.walk(image_dir, followlinks=True):
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(root, name), image_dir))
    return sorted(found)


def label_path(label_dir: str, relative_image: str) -> str:
    return os.path.join(label_dir, os.path.splitext(relative_image)[0] + ".npz")


def read_gray(path: str, height: int, width: int):
    """Gray float32 0..255 resized to ``height x width``, or None if the file cannot be decoded."""
    import cv2

    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)


def _write_npz(path: str, **arrays) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def export_labels(model, image_dir: str, out: str, num_homographies: int = 100, height: int = 240,
                  width: int = 320, batch_size: int = 1, aggregation: str = "sum", valid_border_margin: int = 3,
                  seed: int = 0, regenerate: bool = False, chunk_size: int = 64, progress: bool = True) -> dict:
    """Runs Homographic Adaptation over a folder; returns ``{"written", "skipped_existing", "unreadable"}``.

    ``model`` provides ``heatmap(images)`` and ``detect(heatmap)`` (MagicPoint / SuperPoint).
    """
    from keras import ops
    from tqdm import tqdm

    from tfmatch.data import homographies as hom
    from tfmatch.methods.superpoint.adaptation import homographic_adaptation

    if height % 8 or width % 8:
        raise ValueError(f"superpoint_export_labels: height and width must be multiples of 8, got {height}x{width}")
    if num_homographies < 1:
        raise ValueError(f"superpoint_export_labels: num_homographies must be >= 1, got {num_homographies}")
    if regenerate and os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    complete = os.path.join(out, ".complete")
    if os.path.exists(complete):
        os.remove(complete)  # rewritten at the end; its absence marks an unfinished export
    images = list_images(image_dir)
    if not images:
        raise FileNotFoundError(f"{image_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    todo = [rel for rel in images if not os.path.isfile(label_path(out, rel))]
    stats = {"written": 0, "skipped_existing": len(images) - len(todo), "unreadable": []}

    def flush(batch):
        arrays = np.stack([a for _, a in batch])[..., None]
        # Each image's homographies depend on the seed and its path only, so a resumed run draws the same ones.
        hs = np.stack([
            np.stack([hom.sample_homography(np.random.default_rng([seed, zlib.crc32(rel.encode()), i]),
                                            height, width, hom.ADAPTATION) for i in range(num_homographies - 1)])
            if num_homographies > 1 else np.zeros((0, 3, 3)) for rel, _ in batch]).astype(np.float32)
        heatmap, _ = homographic_adaptation(model.heatmap, arrays, hs, valid_border_margin, aggregation, chunk_size)
        keypoints, scores, valid = (np.asarray(t) for t in model.detect(ops.convert_to_tensor(heatmap)))
        for k, (rel, _) in enumerate(batch):
            _write_npz(label_path(out, rel), pts=keypoints[k][valid[k]].astype(np.float32),
                       scores=scores[k][valid[k]].astype(np.float32), image_size=np.array([height, width]))
            stats["written"] += 1

    batch = []
    for rel in tqdm(todo, desc="homographic adaptation", unit="img", disable=not progress):
        image = read_gray(os.path.join(image_dir, rel), height, width)
        if image is None:
            stats["unreadable"].append(rel)
            continue
        batch.append((rel, image))
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if stats["unreadable"]:
        with open(os.path.join(out, "skipped.txt"), "w") as f:
            f.write("\n".join(stats["unreadable"]) + "\n")
    with open(complete, "w") as f:
        f.write(f"{len(images) - len(stats['unreadable'])} labels\n")
    return stats


def main(argv):
    del argv
    from absl import flags

    # The run's operative config names these data sets; import them even where tfmatch.data does not yet.
    from tfmatch.data import image_folder, synthetic_shapes  # noqa: F401
    from tfmatch.runtime import checkpoints

    FLAGS = flags.FLAGS
    model = checkpoints.load_model(FLAGS.model_dir)
    # Export settings of the originals (spec 1.4), independent of the training run's inference settings.
    model.nms_radius = FLAGS.nms_radius
    model.detection_threshold = FLAGS.detection_threshold
    if FLAGS.top_k:
        model.max_keypoints = FLAGS.top_k
    stats = export_labels(model, FLAGS.images, FLAGS.out, FLAGS.num_homographies, FLAGS.height, FLAGS.width,
                          FLAGS.batch_size, FLAGS.aggregation, FLAGS.valid_border_margin, FLAGS.seed,
                          FLAGS.regenerate)
    print(f"labels in {FLAGS.out}: {stats['written']} written, {stats['skipped_existing']} already there, "
          f"{len(stats['unreadable'])} unreadable" + (" (see skipped.txt)" if stats["unreadable"] else ""))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("model_dir", None, "trained MagicPoint (or SuperPoint) model_dir")
    flags.DEFINE_string("images", None, "folder of images (searched recursively)")
    flags.DEFINE_string("out", None, "label folder to write")
    flags.DEFINE_integer("num_homographies", 100, "views per image, the identity included")
    flags.DEFINE_integer("height", 240, "label resolution: images are resized to height x width")
    flags.DEFINE_integer("width", 320, "label resolution")
    flags.DEFINE_integer("batch_size", 1, "images per step (each brings num_homographies views)")
    flags.DEFINE_enum("aggregation", "sum", ["sum", "max"], "how the views are combined")
    flags.DEFINE_integer("valid_border_margin", 3, "erosion of the warped masks, pixels")
    flags.DEFINE_float("detection_threshold", 0.015, "heatmap threshold of the labels")
    flags.DEFINE_integer("nms_radius", 4, "NMS radius, pixels")
    flags.DEFINE_integer("top_k", 0, "keep at most this many labels per image (0: the model's max_keypoints)")
    flags.DEFINE_integer("seed", 0, "seed of the homographies")
    flags.DEFINE_bool("regenerate", False, "delete LABELS and start over")
    flags.mark_flags_as_required(["model_dir", "images", "out"])
    app.run(main)
