"""One loader for every feature source of the evaluation: an exported SavedModel or an OpenCV baseline.

``make_extractor(saved_model=... | method="sift"|"orb", max_keypoints, resize)`` returns an ``Extractor``: a
callable ``image [H, W, C] uint8 -> (keypoints [N, 2], scores [N], descriptors [N, D])`` with keypoints in the
pixels of the image it was given (integer = pixel centre), whatever ``resize`` the extraction ran at, and
without the padded (invalid) rows of the SavedModel output. Evaluation never imports method code: a model is
only its SavedModel (``extract`` or ``describe`` endpoint) and ``metadata.json`` (docs/developing.md, "Export").

Baseline descriptors: SIFT rows are L2-normalised (the extractor contract); ORB's 256 bits are unpacked to 0/1
floats, so that the squared Euclidean distance the matchers use is the Hamming distance.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from tfmatch.eval.io import resize_image

BASELINES = ("sift", "orb")


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image.reshape(image.shape[0], image.shape[1])


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _top_k(keypoints, scores, descriptors, k):
    if k and len(scores) > k:
        order = np.argsort(-scores, kind="stable")[:k]
        return keypoints[order], scores[order], descriptors[order]
    return keypoints, scores, descriptors


def opencv_keypoints(method: str, gray: np.ndarray, max_keypoints: int):
    """Runs an OpenCV detector + descriptor on a ``[H, W]`` uint8 image.

    Returns:
      ``keypoints [N, 4]`` = (x, y, size, angle in degrees) as ``cv2.KeyPoint``, ``scores [N]`` (responses),
      ``descriptors [N, D]`` float32 (SIFT: L2-normalised; ORB: unpacked bits), the strongest ``max_keypoints``.
    """
    if method == "sift":
        detector = cv2.SIFT_create(nfeatures=max_keypoints)
    elif method == "orb":
        detector = cv2.ORB_create(nfeatures=max_keypoints)
    else:
        raise ValueError(f"method must be one of {BASELINES}, got {method!r}")
    cv_keypoints, descriptors = detector.detectAndCompute(gray, None)
    if descriptors is None or not cv_keypoints:
        size = 128 if method == "sift" else 256
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, size), np.float32)
    keypoints = np.array([[k.pt[0], k.pt[1], k.size, k.angle] for k in cv_keypoints], np.float32)
    scores = np.array([k.response for k in cv_keypoints], np.float32)
    if method == "sift":
        descriptors = _l2_normalise(descriptors.astype(np.float32))
    else:
        descriptors = np.unpackbits(descriptors, axis=1).astype(np.float32)
    # OpenCV may return a few more than nfeatures (ties, several orientations): enforce the budget.
    return _top_k(keypoints, scores, descriptors, max_keypoints)


class Extractor:
    """Callable ``image [H, W, C] uint8 -> (keypoints [N,2], scores [N], descriptors [N,D])``.

    Attributes:
      name: a short tag ("sift", "orb", or the SavedModel's method).
      config: what identifies the features (for cache checks); JSON-serialisable.
      channels: channels the images must have when read (1 or 3).
    """

    def __init__(self, name: str, config: dict, channels: int, run, resize: tuple[int, ...] = ()):
        self.name, self.config, self.channels = name, dict(config, resize=list(resize)), channels
        self._run, self._resize = run, tuple(resize)

    def __call__(self, image: np.ndarray):
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 [H, W, C], got {image.dtype} {image.shape}")
        small, (sx, sy) = resize_image(image, self._resize)
        keypoints, scores, descriptors = self._run(small)
        keypoints = np.asarray(keypoints, np.float32).reshape(-1, 2).copy()
        if (sx, sy) != (1.0, 1.0):  # back to the given image; integer = pixel centre on both grids
            keypoints[:, 0] = (keypoints[:, 0] + 0.5) * sx - 0.5
            keypoints[:, 1] = (keypoints[:, 1] + 0.5) * sy - 0.5
        return keypoints, np.asarray(scores, np.float32).reshape(-1), np.asarray(descriptors, np.float32)


def _opencv_extractor(method: str, max_keypoints: int, resize) -> Extractor:
    def run(image):
        keypoints, scores, descriptors = opencv_keypoints(method, _gray(image), max_keypoints)
        return keypoints[:, :2], scores, descriptors

    config = {"source": "opencv", "method": method, "opencv": cv2.__version__, "max_keypoints": max_keypoints}
    return Extractor(method, config, 1, run, resize)


def find_saved_model(path) -> Path:
    """``path`` is a SavedModel directory or a model_dir whose ``export/`` is one."""
    path = Path(path)
    for candidate in (path, path / "export"):
        if (candidate / "saved_model.pb").is_file():
            return candidate
    raise FileNotFoundError(f"{path}: not a SavedModel directory (no saved_model.pb here or in export/)")


def read_metadata(saved_model: Path) -> dict:
    for candidate in (saved_model / "metadata.json", saved_model / "assets" / "metadata.json",
                      saved_model.parent / "metadata.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{candidate}: invalid JSON ({err})") from None
    raise FileNotFoundError(f"{saved_model}: metadata.json not found (looked in the SavedModel directory, its "
                            "assets/ and its parent)")


def _saved_model_extractor(path, max_keypoints: int, resize) -> Extractor:
    import tensorflow as tf  # only here: loading a SavedModel is the one use of TensorFlow in eval

    saved_model = find_saved_model(path)
    metadata = read_metadata(saved_model)
    channels = int(metadata.get("input", {}).get("channels", 1))
    if channels not in (1, 3):
        raise ValueError(f"{saved_model}/metadata.json: input.channels must be 1 or 3, got {channels}")
    model = tf.saved_model.load(str(saved_model))
    endpoint = metadata.get("endpoint") or ("describe" if hasattr(model, "describe") else "extract")
    if not hasattr(model, endpoint):
        raise ValueError(f"{saved_model}: the SavedModel has no {endpoint!r} endpoint (metadata.json says so)")

    def as_batch(image):
        if channels == 1 and image.shape[2] == 3:
            image = _gray(image)[:, :, None]
        elif channels == 3 and image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        return tf.constant(image[None].astype(np.float32))

    if endpoint == "extract":
        def run(image):
            out = model.extract(as_batch(image))
            valid = np.asarray(out["valid"])[0].astype(bool)
            keypoints = np.asarray(out["keypoints"])[0][valid]
            scores = np.asarray(out["scores"])[0][valid]
            descriptors = np.asarray(out["descriptors"])[0][valid]
            return _top_k(keypoints, scores, descriptors, max_keypoints)
    elif endpoint == "describe":
        detector = dict(metadata.get("detector") or {"name": "sift"})
        detector_name = detector.get("name", "sift")
        detector_budget = int(max_keypoints or detector.get("max_keypoints", 4000))

        def run(image):
            keypoints, scores, _ = opencv_keypoints(detector_name, _gray(image), detector_budget)
            if len(keypoints) == 0:
                return keypoints[:, :2], scores, np.zeros((0, int(metadata.get("descriptor_dim", 128))), np.float32)
            out = model.describe(as_batch(image), tf.constant(keypoints[None], tf.float32))
            return keypoints[:, :2], scores, np.asarray(out["descriptors"])[0]
    else:
        raise ValueError(f"{saved_model}/metadata.json: endpoint must be 'extract' or 'describe', got {endpoint!r}")

    name = str(metadata.get("method", saved_model.parent.name)).lower()
    config = {"source": "saved_model", "path": str(saved_model.resolve()), "metadata": metadata,
              "max_keypoints": max_keypoints}
    return Extractor(name, config, channels, run, resize)


def make_extractor(saved_model=None, method=None, max_keypoints: int = 4000, resize=()) -> Extractor:
    """Exactly one of ``saved_model`` (a SavedModel or model_dir) and ``method`` ("sift" or "orb").

    ``max_keypoints``: the budget of the baselines; for a SavedModel, the strongest valid keypoints kept
    (0 = all it returns); for a ``describe`` model, the budget of its detector (0 = metadata's).
    """
    if (saved_model is None) == (method is None):
        raise ValueError("give exactly one of --saved_model and --method")
    if method is not None:
        if method not in BASELINES:
            raise ValueError(f"--method must be one of {BASELINES}, got {method!r}")
        return _opencv_extractor(method, int(max_keypoints), tuple(resize))
    return _saved_model_extractor(saved_model, int(max_keypoints), tuple(resize))
