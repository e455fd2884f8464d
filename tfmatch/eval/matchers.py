"""Nearest-neighbour matchers on descriptors (numpy), and the loader of matcher SavedModels.

Both return the matcher contract of DESIGN.md for one pair: ``matches0 [N0] int32`` (-1 = unmatched) and
``matching_scores0 [N0] float32`` (higher = better; for NN matchers 1 - distance / 2, so 1 = identical unit
descriptors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def distance_matrix(descriptors0, descriptors1) -> np.ndarray:
    """Euclidean distances. Binary descriptors are expected unpacked to 0/1 floats, where the squared distance
    is the Hamming distance.

    Shape:
      descriptors0 ``[N0, D]``, descriptors1 ``[N1, D]`` -> ``[N0, N1]``.
    """
    d0 = np.asarray(descriptors0, np.float32)
    d1 = np.asarray(descriptors1, np.float32)
    if d0.ndim != 2 or d1.ndim != 2 or d0.shape[1] != d1.shape[1]:
        raise ValueError(f"descriptors must be [N0, D] and [N1, D], got {d0.shape} and {d1.shape}")
    squared = (np.sum(d0 * d0, axis=1)[:, None] + np.sum(d1 * d1, axis=1)[None, :] - 2.0 * d0 @ d1.T)
    return np.sqrt(np.maximum(squared, 0.0))


def _empty(n0: int):
    return np.full(n0, -1, np.int32), np.zeros(n0, np.float32)


def mutual_nearest_neighbour(descriptors0, descriptors1, max_distance: float | None = None):
    """Keeps i <-> j when j is the nearest neighbour of i and i that of j (OpenCV BFMatcher cross-check).

    Returns:
      ``matches0 [N0] int32``, ``matching_scores0 [N0] float32``.
    """
    n0, n1 = len(descriptors0), len(descriptors1)
    if n0 == 0 or n1 == 0:
        return _empty(n0)
    distance = distance_matrix(descriptors0, descriptors1)
    nn01 = distance.argmin(axis=1)
    nn10 = distance.argmin(axis=0)
    best = distance[np.arange(n0), nn01]
    keep = nn10[nn01] == np.arange(n0)
    if max_distance is not None:
        keep &= best <= max_distance
    matches0 = np.where(keep, nn01, -1).astype(np.int32)
    return matches0, np.where(keep, 1.0 - best / 2.0, 0.0).astype(np.float32)


def ratio_test(descriptors0, descriptors1, ratio: float = 0.8, mutual: bool = True):
    """Lowe's ratio test (nearest / second nearest < ``ratio``), optionally with the mutual check."""
    n0, n1 = len(descriptors0), len(descriptors1)
    if n0 == 0 or n1 < 2:
        return _empty(n0)
    distance = distance_matrix(descriptors0, descriptors1)
    two = np.argpartition(distance, 1, axis=1)[:, :2]
    d_two = np.take_along_axis(distance, two, axis=1)
    order = np.argsort(d_two, axis=1)
    nearest = np.take_along_axis(two, order[:, :1], axis=1)[:, 0]
    d_first, d_second = np.sort(d_two, axis=1).T
    keep = d_first < ratio * d_second
    if mutual:
        keep &= distance.argmin(axis=0)[nearest] == np.arange(n0)
    return (np.where(keep, nearest, -1).astype(np.int32),
            np.where(keep, 1.0 - d_first / 2.0, 0.0).astype(np.float32))


class SavedModelMatcher:
    """A matcher SavedModel (``tfmatch.export`` of a ``match`` method, e.g. IMP).

    The endpoint ``match`` takes one dict of batched tensors ``keypoints0 [1,N0,2]``, ``keypoints1 [1,N1,2]``,
    ``descriptors0 [1,N0,D]``, ``descriptors1 [1,N1,D]``, ``scores0 [1,N0]``, ``scores1 [1,N1]``,
    ``image_size0 [1,2]``, ``image_size1 [1,2]`` (width, height; float32) and returns a dict with
    ``matches0 [1,N0] int32`` and ``matching_scores0 [1,N0]``.
    """

    def __init__(self, path):
        import tensorflow as tf  # only here: loading a SavedModel is the one use of TensorFlow in eval

        self.path = Path(path)
        if not (self.path / "saved_model.pb").is_file():
            raise FileNotFoundError(f"{self.path}: not a SavedModel directory (no saved_model.pb)")
        self._tf = tf
        self._model = tf.saved_model.load(str(self.path))
        if not hasattr(self._model, "match"):
            raise ValueError(f"{self.path}: the SavedModel has no 'match' endpoint")

    def __call__(self, features0: dict, features1: dict):
        tf = self._tf
        batch = {}
        for suffix, features in (("0", features0), ("1", features1)):
            batch["keypoints" + suffix] = tf.constant(features["keypoints"][None], tf.float32)
            batch["descriptors" + suffix] = tf.constant(features["descriptors"][None], tf.float32)
            batch["scores" + suffix] = tf.constant(features["scores"][None], tf.float32)
            batch["image_size" + suffix] = tf.constant(np.asarray(features["image_size"])[None], tf.float32)
        out = self._model.match(batch)
        return (np.asarray(out["matches0"])[0].astype(np.int32),
                np.asarray(out["matching_scores0"])[0].astype(np.float32))


def make_matcher(spec: str, ratio: float = 0.8):
    """``"mnn"``, ``"ratio"`` or a SavedModel directory -> callable(features0, features1) -> (matches0, scores0),
    where features are dicts with ``keypoints``, ``scores``, ``descriptors [N, D]``, ``image_size``."""
    if spec == "mnn":
        return lambda f0, f1: mutual_nearest_neighbour(f0["descriptors"], f1["descriptors"])
    if spec == "ratio":
        return lambda f0, f1: ratio_test(f0["descriptors"], f1["descriptors"], ratio=ratio)
    if Path(spec).is_dir():
        return SavedModelMatcher(spec)
    raise ValueError(f"--matcher must be 'mnn', 'ratio' or a SavedModel directory, got {spec!r}")
