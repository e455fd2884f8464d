"""The Synthetic Shapes corner-detection protocol: classical detectors on a known square, perfect and empty
detectors through the metric, and a detector-only SavedModel (no descriptors) through the CLI."""

import json

import numpy as np
import pytest

from tests.eval._archives import write_extract_archive
from tests.runtime._cli import run_cli
from tfmatch.eval.shapes import ShapesProtocol, classical_corners, evaluate_shapes, held_out_shapes

SMALL = dict(image_size=(32, 40), canvas_size=(64, 80), max_images=12)


@pytest.mark.parametrize("name", ["fast", "harris", "shi_tomasi"])
def test_classical_detectors_find_the_corners_of_a_square(name):
    import cv2

    image = np.zeros((40, 40), np.uint8)
    image[10:30, 10:30] = 255
    image = cv2.GaussianBlur(image, (5, 5), 0)  # as the shapes are (FAST misses a perfectly sharp corner)
    points, scores = classical_corners(name, image, max_keypoints=4, nms_radius=4)
    assert len(points) == 4 and np.all(np.diff(scores) <= 0)
    for corner in ((10, 10), (29, 10), (10, 29), (29, 29)):  # the square's corner pixels
        assert np.min(np.linalg.norm(points - corner, axis=1)) <= 2.0, (name, corner, points)


def test_perfect_and_empty_detectors(tmp_path):
    protocol = ShapesProtocol(**SMALL)
    images, corners = held_out_shapes(protocol)
    assert len(images) == 12 and images[0].dtype == np.uint8 and sum(len(c) for c in corners) > 0
    lookup = {image.tobytes(): c for image, c in zip(images, corners)}
    perfect = evaluate_shapes(lambda im: (lookup[im.tobytes()], np.ones(len(lookup[im.tobytes()]))), "perfect",
                              str(tmp_path), protocol, progress=False)
    assert perfect["average_precision"] == 1.0 and perfect["precision"] == 1.0 and perfect["recall"] == 1.0
    empty = evaluate_shapes(lambda im: (np.zeros((0, 2)), np.zeros(0)), "empty", str(tmp_path), protocol,
                            progress=False)
    assert empty["average_precision"] == 0.0 and empty["recall"] == 0.0
    assert json.loads((tmp_path / "perfect.json").read_text())["images"] == 12
    with pytest.raises(ValueError, match="another protocol"):
        evaluate_shapes(lambda im: (np.zeros((0, 2)), np.zeros(0)), "x", str(tmp_path),
                        ShapesProtocol(**dict(SMALL, max_images=3)), progress=False)


def _export_corner_detector(path, corners):
    """A SavedModel whose extract returns the given corners (and one invalid row), without descriptors."""
    import tensorflow as tf

    points = tf.constant(np.concatenate([corners, [[0.0, 0.0]]]), tf.float32)
    valid = tf.constant([True] * len(corners) + [False])

    def extract(images):
        batch = tf.shape(images)[0]
        tile = lambda t: tf.tile(t[None], [batch] + [1] * len(t.shape))  # noqa: E731
        return {"keypoints": tile(points), "scores": tile(tf.cast(valid, tf.float32)), "valid": tile(valid)}

    write_extract_archive(path, extract, "corners", {"method": "Corners", "endpoint": "extract",
                                                     "input": {"channels": 1}, "descriptor_dim": 0})


def test_cli_with_a_detector_only_saved_model_and_a_baseline(tmp_path, repo_root, subprocess_env):
    images, corners = held_out_shapes(ShapesProtocol(image_size=(120, 160), max_images=1))
    _export_corner_detector(tmp_path / "export", corners[0])
    out = tmp_path / "eval"
    args = ["shapes", "--max_images", "1", "--out", str(out), "--noprogress"]
    proc = run_cli("tfmatch.evaluate", args + ["--saved_model", str(tmp_path / "export")], subprocess_env, repo_root)
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["method"] == "corners" and summary["recall"] == 1.0 and summary["precision"] == 1.0
    run_cli("tfmatch.evaluate", args + ["--method", "harris"], subprocess_env, repo_root)
    harris = json.loads((out / "harris.json").read_text())
    assert 0.0 < harris["recall"] <= 1.0 and harris["num_ground_truth"] == len(corners[0])
    bad = run_cli("tfmatch.evaluate", ["hpatches", "--data", "x", "--out", str(tmp_path / "h"), "--method", "fast"],
                  subprocess_env, repo_root, check=False)
    assert bad.returncode != 0 and "shapes protocol only" in bad.stderr
