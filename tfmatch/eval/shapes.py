"""Corner detection on held-out Synthetic Shapes: MagicPoint (a SavedModel) next to OpenCV's classical detectors.

    python -m tfmatch.evaluate shapes (--saved_model S | --method fast|harris|shi_tomasi) --out OUT
        [--shapes_data DIR] [--max_images N]

The spec's protocol (1.6, rpautrat ``compute_pr``): the test split of Synthetic Shapes at 120x160 without
augmentation (drawn from the seed, or read from a set written by ``python -m data_tools.synthetic_shapes``), the
model's own detection threshold and NMS (MagicPoint recipe: 0.001, radius 4), at most ``max_keypoints`` (300) per
image, a detection correct within ``distance`` (2 px) of a ground-truth corner, each corner claimed once; precision,
recall and average precision over all images (``tfmatch/eval/detection.py``). The classical detectors get the same
budget and NMS radius: FAST (threshold 10, its response as score), Harris (block 4, aperture 3, k 0.04) and
Shi-Tomasi (minimum eigenvalue, block 4, aperture 3), local maxima of the response over a (2 r + 1)^2 window.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from tfmatch.eval.detection import detection_pr, keypoint_map_to_points

CLASSICAL = ("fast", "harris", "shi_tomasi")


@dataclass(frozen=True)
class ShapesProtocol:
    split: str = "test"
    image_size: tuple = (120, 160)
    canvas_size: tuple = (960, 1280)
    seed: int = 0
    data: str | None = None  # a fixed set (data_tools.synthetic_shapes); None: drawn from the seed
    max_images: int | None = None  # None: the whole split
    max_keypoints: int = 300
    nms_radius: int = 4  # classical detectors; a model uses its own
    distance: float = 2.0


def classical_corners(name: str, image: np.ndarray, max_keypoints: int = 300, nms_radius: int = 4):
    """OpenCV corners of a uint8 gray image: ``(points [N, 2] (x, y), scores [N])``, strongest first."""
    if name == "fast":
        found = cv2.FastFeatureDetector_create(threshold=10).detect(image)
        found = sorted(found, key=lambda k: -k.response)[:max_keypoints]
        return (np.array([k.pt for k in found], np.float64).reshape(-1, 2),
                np.array([k.response for k in found], np.float64))
    if name not in CLASSICAL:
        raise ValueError(f"tfmatch/eval/shapes.py: detector must be one of {CLASSICAL}, got {name!r}")
    gray = np.float32(image)
    response = cv2.cornerHarris(gray, 4, 3, 0.04) if name == "harris" else cv2.cornerMinEigenVal(gray, 4, 3)
    size = 2 * nms_radius + 1
    pooled = cv2.dilate(response, np.ones((size, size), np.uint8))
    ys, xs = np.nonzero((response == pooled) & (response > 1e-6 * max(float(response.max()), 1e-12)))
    order = np.argsort(-response[ys, xs], kind="stable")[:max_keypoints]
    return np.stack([xs[order], ys[order]], -1).astype(np.float64), response[ys, xs][order].astype(np.float64)


def held_out_shapes(protocol: ShapesProtocol):
    """The protocol's images (uint8 [H, W]) and their corners ([M, 2] (x, y)), without augmentation."""
    from tfmatch.data.synthetic_shapes import SyntheticShapes

    source = SyntheticShapes(protocol.split, protocol.seed, protocol.image_size, protocol.canvas_size,
                             data_dir=protocol.data, augment=False)
    count = len(source) if protocol.max_images is None else min(len(source), int(protocol.max_images))
    images, corners = [], []
    for index in range(count):
        image, keypoint_map, _ = source.sample(index)
        images.append(np.clip(np.round(image), 0, 255).astype(np.uint8))
        corners.append(keypoint_map_to_points(keypoint_map))
    return images, corners


def _cached_held_out_shapes(protocol: ShapesProtocol, path: str):
    """``held_out_shapes`` drawn once per OUT (about 80 ms an image at the 960x1280 canvas, so minutes for the
    split), then read back for every further method; the caller has checked that OUT holds this protocol."""
    if os.path.isfile(path):
        with np.load(path) as cached:
            images, points, counts = cached["images"], cached["points"], cached["counts"]
        return list(images), np.split(points, np.cumsum(counts)[:-1])
    images, corners = held_out_shapes(protocol)
    with open(path + ".tmp", "wb") as f:
        np.savez(f, images=np.stack(images), points=np.concatenate(corners).reshape(-1, 2),
                 counts=np.array([len(c) for c in corners]))
    os.replace(path + ".tmp", path)
    return images, corners


def evaluate_shapes(detect, name: str, out: str, protocol: ShapesProtocol, progress: bool = True) -> dict:
    """Runs ``detect(image uint8 [H, W]) -> (points, scores)`` on the held-out shapes; writes ``OUT/<name>.json``,
    ``OUT/protocol.json`` (refused when OUT holds another protocol) and ``OUT/held_out.npz`` (the images and
    corners, reused by the next method), returns the summary."""
    os.makedirs(out, exist_ok=True)
    protocol_path = os.path.join(out, "protocol.json")
    record = json.loads(json.dumps(asdict(protocol)))
    if os.path.exists(protocol_path):
        with open(protocol_path) as f:
            if json.load(f) != record:
                raise ValueError(f"{protocol_path}: OUT holds results of another protocol; use another --out")
    with open(protocol_path, "w") as f:  # first: held_out.npz below always belongs to this protocol
        json.dump(record, f, indent=2)
    images, corners = _cached_held_out_shapes(protocol, os.path.join(out, "held_out.npz"))
    iterator = images
    if progress:
        from tqdm import tqdm

        iterator = tqdm(images, desc=f"shapes {name}", unit="img")
    detections = []
    for image in iterator:
        points, scores = detect(image)
        order = np.argsort(-np.asarray(scores), kind="stable")[: protocol.max_keypoints]
        detections.append((np.asarray(points)[order], np.asarray(scores)[order]))
    summary = {"method": name, "images": len(images), **detection_pr(detections, corners, protocol.distance)}
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
