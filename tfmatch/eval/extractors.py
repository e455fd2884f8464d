"""One loader for every feature source of the evaluation: an exported SavedModel or an OpenCV baseline.

``make_extractor(saved_model=... | method="sift"|"orb", max_keypoints, resize)`` returns an ``Extractor``: a
callable ``(image [H, W, C] uint8, rot=0) -> (keypoints [N, 2], scores [N], descriptors [N, D])`` with keypoints
in the pixels of the image it was given (integer = pixel centre), whatever ``resize`` and quarter turns ``rot``
the extraction ran at, and without the padded (invalid) rows of the SavedModel output. Evaluation never imports
method code: a model is only its SavedModel (``extract`` or ``describe`` endpoint) and ``metadata.json``
(docs/developing.md, "Export").

Baseline descriptors: SIFT rows are L2-normalised (the extractor contract); ORB's 256 bits are unpacked to 0/1
floats, so that the squared Euclidean distance the matchers use is the Hamming distance.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from tfmatch.eval.io import resize_image
from tfmatch.eval.pipeline import rotate_points_back

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


def sift_keypoints(gray: np.ndarray, settings: dict, max_keypoints: int | None = None) -> tuple:
    """SIFT keypoints for a patch descriptor, detected and selected as its SavedModel's ``metadata.json`` says.

    ``settings`` is the ``detector`` entry of the metadata (GeoDesc/ContextDesc: 3 octave layers, contrast
    threshold 0.0067, edge 10, sigma 1.6, ``selection = "by_octave"``). ``by_octave`` keeps whole octaves, largest
    keypoints first, until at least ``max_keypoints`` are kept (the originals' rule: a budget never splits an
    octave); ``strongest`` keeps the highest responses. ``upright`` sets every angle to 0 and drops the duplicates
    OpenCV makes for several orientations. Returns ``keypoints [N, 4]`` (x, y, size, angle) and ``scores [N]``.
    """
    budget = int(max_keypoints or settings.get("max_keypoints", 4000))
    detector = cv2.SIFT_create(nfeatures=0, nOctaveLayers=int(settings.get("n_octave_layers", 3)),
                               contrastThreshold=float(settings.get("contrast_threshold", 0.04)),
                               edgeThreshold=float(settings.get("edge_threshold", 10.0)),
                               sigma=float(settings.get("sigma", 1.6)))
    found = detector.detect(gray, None)
    keypoints = np.array([[k.pt[0], k.pt[1], k.size, k.angle] for k in found], np.float32).reshape(-1, 4)
    scores = np.array([k.response for k in found], np.float32)
    if settings.get("upright", False) and len(keypoints):
        keypoints[:, 3] = 0.0
        _, first = np.unique(keypoints[:, :3], axis=0, return_index=True)
        first.sort()
        keypoints, scores = keypoints[first], scores[first]
    selection = settings.get("selection", "strongest")
    if selection == "by_octave" and len(keypoints) > budget:
        # OpenCV packs the octave in the low byte of KeyPoint.octave, as a signed 8-bit number (-1: upsampled).
        octave = np.array([((k.octave & 255) ^ 128) - 128 for k in found], np.int64)
        if settings.get("upright", False):
            octave = octave[first]
        order = np.lexsort((-keypoints[:, 2], -octave))  # largest octave first, then by size within it
        counts = np.cumsum(np.bincount(np.searchsorted(np.unique(-octave), -octave[order])))
        keep = counts[np.searchsorted(counts, budget)] if counts[-1] > budget else counts[-1]
        order = order[:keep]
        return keypoints[order], scores[order]
    if selection not in ("by_octave", "strongest"):
        raise ValueError(f"detector selection must be 'by_octave' or 'strongest', got {selection!r}")
    order = np.argsort(-scores, kind="stable")[:budget]
    return keypoints[order], scores[order]


class Extractor:
    """Callable ``(image [H, W, C] uint8, rot=0) -> (keypoints [N,2], scores [N], descriptors [N,D])``.

    The image is resized first, then turned by ``rot`` quarter turns (``np.rot90``), as SuperGlue's
    ``read_image`` does (so an exact ``resize`` (W, H) applies to the upright image, not to the turned one);
    keypoints come back in the pixels of the image as given.

    Attributes:
      name: a short tag ("sift", "orb", or the SavedModel's method).
      config: what identifies the features (for cache checks); JSON-serialisable.
      channels: channels the images must have when read (1 or 3).
    """

    def __init__(self, name: str, config: dict, channels: int, run, resize: tuple[int, ...] = ()):
        self.name, self.config, self.channels = name, dict(config, resize=list(resize)), channels
        self._run, self._resize = run, tuple(resize)

    def __call__(self, image: np.ndarray, rot: int = 0):
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 [H, W, C], got {image.dtype} {image.shape}")
        small, (sx, sy) = resize_image(image, self._resize)
        if rot % 4:
            keypoints, scores, descriptors = self._run(np.ascontiguousarray(np.rot90(small, rot)))
            keypoints = rotate_points_back(keypoints, rot, small.shape[1], small.shape[0])
        else:
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


def _saved_model_extractor(path, max_keypoints: int, resize, describe_keypoints: str = "model") -> Extractor:
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
            if "descriptors" in out:
                descriptors = np.asarray(out["descriptors"])[0][valid]
            else:  # a detector only (MagicPoint): keypoints for the detection protocols
                descriptors = np.zeros((len(keypoints), 0), np.float32)
            return _top_k(keypoints, scores, descriptors, max_keypoints)
    elif endpoint == "describe":
        detector = dict(metadata.get("detector") or {"name": "sift"})
        if detector.get("name", "sift") != "sift":
            raise ValueError(f"{saved_model}/metadata.json: describe models take SIFT keypoints, "
                             f"got detector {detector.get('name')!r}")

        if describe_keypoints not in ("model", "opencv"):
            raise ValueError(f"describe_keypoints must be 'model' or 'opencv', got {describe_keypoints!r}")

        def run(image):
            if describe_keypoints == "model":
                keypoints, scores = sift_keypoints(_gray(image), detector, max_keypoints)
            else:  # the keypoints of --method sift with the same budget: the descriptors alone are compared
                keypoints, scores, _ = opencv_keypoints("sift", _gray(image), max_keypoints or 4000)
            if len(keypoints) == 0:
                return keypoints[:, :2], scores, np.zeros((0, int(metadata.get("descriptor_dim", 128))), np.float32)
            out = model.describe(as_batch(image), tf.constant(keypoints[None], tf.float32))
            return keypoints[:, :2], scores, np.asarray(out["descriptors"])[0]
    else:
        raise ValueError(f"{saved_model}/metadata.json: endpoint must be 'extract' or 'describe', got {endpoint!r}")

    name = str(metadata.get("method", saved_model.parent.name)).lower()
    config = {"source": "saved_model", "path": str(saved_model.resolve()), "metadata": metadata,
              "max_keypoints": max_keypoints}
    if endpoint == "describe":
        config["describe_keypoints"] = describe_keypoints
    return Extractor(name, config, channels, run, resize)


def make_extractor(saved_model=None, method=None, max_keypoints: int = 4000, resize=(),
                   describe_keypoints: str = "model") -> Extractor:
    """Exactly one of ``saved_model`` (a SavedModel or model_dir) and ``method`` ("sift" or "orb").

    ``max_keypoints``: the budget of the baselines; for a SavedModel, the strongest valid keypoints kept
    (0 = all it returns); for a ``describe`` model, the budget of its detector (0 = metadata's).
    ``describe_keypoints``: for a ``describe`` model, ``"model"`` detects SIFT as its ``metadata.json`` says (the
    originals' settings and by-octave budget) and ``"opencv"`` takes the keypoints of ``method="sift"`` with the
    same budget, so that the two compare the descriptors alone.
    """
    if (saved_model is None) == (method is None):
        raise ValueError("give exactly one of --saved_model and --method")
    if method is not None:
        if method not in BASELINES:
            raise ValueError(f"--method must be one of {BASELINES}, got {method!r}")
        return _opencv_extractor(method, int(max_keypoints), tuple(resize))
    return _saved_model_extractor(saved_model, int(max_keypoints), tuple(resize), describe_keypoints)
