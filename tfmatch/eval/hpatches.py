"""The HPatches protocol: pairs (1, k), k = 2..6, of every sequence, scored against the ground-truth homography.

Defaults (``HPatchesProtocol``), stated in ``OUT/protocol.json`` and printed:
* D2-Net / ASLFeat MMA: full-resolution images, mutual nearest neighbour on descriptors, mean over pairs of
  the share of matches within t px (t = 1..10) of ``H_1_k`` applied to the image-1 keypoint; a pair without
  matches counts 0. ``mma_i`` / ``mma_v``: the same over ``i_`` / ``v_`` sequences (null when none).
* pytorch-superpoint detector and homography metrics: repeatability and localisation error on the shared
  keypoints, top 1000 by score, eps = 3 px; homography from the same matches with ``cv2.findHomography``
  (RANSAC, 3 px), correct when the mean error of the four corners is <= 1 / 3 / 5 px.
* matching score = correct (<= 3 px) matches / mean number of shared keypoints of the two images;
  NN mAP = average precision of the matches ranked by descriptor distance, labels = correct (<= 3 px).
Keypoint budget 4000 (the ``../shared/data`` SIFT reference).

Output layout of ``OUT`` (one protocol, several methods, each under its tag):
``OUT/protocol.json``; ``OUT/<tag>/{features.h5, matches.h5, config.json, pairs.json, summary.json,
matches/*.png}``; ``OUT/summary.json`` (the summary of the method just evaluated) and ``OUT/mma.png`` (the
curves of every method evaluated into OUT under this protocol).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import cv2
import h5py
import numpy as np

from tfmatch.eval import io, metrics, pipeline, plots

SUMMARY_KEYS = ("mma", "mma_i", "mma_v", "homography_accuracy", "repeatability", "localization_error", "nn_map",
                "matching_score", "num_keypoints", "num_matches")


@dataclasses.dataclass(frozen=True)
class HPatchesProtocol:
    resize: tuple = ()  # () full resolution (D2-Net); (L,) longer side L; (W, H) exact size
    max_keypoints: int = 4000  # keypoint budget per image
    mma_thresholds: tuple = tuple(range(1, 11))  # px
    homography_estimator: str = "ransac"  # "ransac" (cv2.RANSAC, the protocols of the specs) or "magsac"
    homography_ransac_threshold: float = 3.0  # px, the cv2.findHomography default
    homography_thresholds: tuple = (1, 3, 5)  # px of mean corner error
    repeatability_keep_k: int = 1000  # pytorch-superpoint top_K
    repeatability_epsilon: float = 3.0  # px
    correct_threshold: float = 3.0  # px: a correct match for matching score and NN mAP
    sequences: str = ""  # regular expression on sequence names ("" = all)

    def describe(self) -> dict:
        out = dataclasses.asdict(self)
        out["resize"] = list(self.resize)
        out["name"] = ("D2-Net MMA (mutual NN) + pytorch-superpoint repeatability / localisation error / "
                       "homography accuracy; matching score and NN mAP against the ground-truth homography")
        return out


_ESTIMATORS = {"ransac": cv2.RANSAC, "magsac": cv2.USAC_MAGSAC}


def estimate_homography(points0, points1, estimator: str = "ransac", threshold: float = 3.0):
    """Robust homography from matched points; returns (H or None, inlier mask [M] bool).

    Shape:
      points0, points1 ``[M, 2]``.
    """
    points0 = np.asarray(points0, np.float64).reshape(-1, 2)
    points1 = np.asarray(points1, np.float64).reshape(-1, 2)
    if len(points0) < 4:
        return None, np.zeros(len(points0), bool)
    H, mask = cv2.findHomography(points0, points1, _ESTIMATORS[estimator], threshold, maxIters=10000,
                                 confidence=0.9999)
    if H is None or mask is None:
        return None, np.zeros(len(points0), bool)
    return H, mask.reshape(-1).astype(bool)


def pair_metrics(features0: dict, features1: dict, matches0, H, protocol: HPatchesProtocol) -> dict:
    """Every metric of one pair. ``features``: dicts of ``io.read_features``; ``H`` maps image 0 to image 1."""
    kp0, kp1 = features0["keypoints"], features1["keypoints"]
    size0, size1 = tuple(features0["image_size"]), tuple(features1["image_size"])
    matches0 = np.asarray(matches0).reshape(-1)
    valid = matches0 >= 0
    errors = metrics.match_errors(kp0, kp1, matches0, H)
    mma = metrics.matching_accuracy(errors, protocol.mma_thresholds)
    points0, points1 = kp0[valid], kp1[matches0[valid]]
    H_est, inliers = estimate_homography(points0, points1, protocol.homography_estimator,
                                         protocol.homography_ransac_threshold)
    corner = metrics.corner_error(H_est, H, *size0)
    rep, loc = metrics.repeatability(kp0, features0["scores"], kp1, features1["scores"], H, size0, size1,
                                     protocol.repeatability_keep_k, protocol.repeatability_epsilon)
    shared0, shared1 = metrics.shared_keypoints(kp0, kp1, H, size0, size1)
    correct = errors <= protocol.correct_threshold
    mean_shared = (shared0.sum() + shared1.sum()) / 2.0
    distance = np.linalg.norm(features0["descriptors"][valid] - features1["descriptors"][matches0[valid]], axis=1)
    return {
        "mma": mma.tolist(),
        "corner_error": corner,
        "repeatability": rep,
        "localization_error": loc,
        "matching_score": float(correct.sum() / mean_shared) if mean_shared > 0 else 0.0,
        "nn_map": metrics.average_precision(correct, -distance),
        "num_keypoints": [int(len(kp0)), int(len(kp1))],
        "num_matches": int(valid.sum()),
        "num_inliers": int(inliers.sum()),
    }


def summarize(records: list[dict], protocol: HPatchesProtocol) -> dict:
    """Averages per-pair records (each with ``sequence``) into the summary of the issue's keys."""
    def curve(subset):
        if not subset:
            return None
        mean = np.mean([r["mma"] for r in subset], axis=0)
        return {str(t): float(v) for t, v in zip(protocol.mma_thresholds, mean)}

    def mean_finite(values):
        values = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
        return float(values.mean()) if values.size else None

    corners = np.asarray([r["corner_error"] for r in records], np.float64)
    return {
        "mma": curve(records),
        "mma_i": curve([r for r in records if r["sequence"].startswith("i_")]),
        "mma_v": curve([r for r in records if r["sequence"].startswith("v_")]),
        "homography_accuracy": {str(t): float(np.mean(corners <= t)) for t in protocol.homography_thresholds},
        "repeatability": mean_finite([r["repeatability"] for r in records]),
        "localization_error": mean_finite([r["localization_error"] for r in records]),
        "nn_map": mean_finite([r["nn_map"] for r in records]),
        "matching_score": mean_finite([r["matching_score"] for r in records]),
        "num_keypoints": float(np.mean([n for r in records for n in r["num_keypoints"]])),
        "num_matches": float(np.mean([r["num_matches"] for r in records])),
    }


def _write_json(path, data) -> None:
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _json_safe(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def evaluate_hpatches(data, extractor, out, protocol: HPatchesProtocol = HPatchesProtocol(), name: str = "",
                      matcher: str = "mnn", ratio: float = 0.8, overwrite: bool = False,
                      num_match_images: int = 5, progress: bool = True) -> dict:
    """Runs both passes for one method and returns its summary (also written to ``OUT/summary.json``).

    Args:
      data: root of the HPatches sequence layout.
      extractor: a ``tfmatch.eval.extractors.Extractor``.
      name: the method's tag in OUT (default: the extractor's name, plus the matcher when not mnn).
    """
    from tfmatch.eval.matchers import make_matcher

    sequences = io.read_hpatches(data, sequences=protocol.sequences)  # validates the layout before any work
    out = Path(out)
    tag = name or (extractor.name if matcher == "mnn" else f"{extractor.name}+{Path(matcher).name}")
    method_dir = out / tag
    description = dict(protocol.describe(), data=str(Path(data).resolve()))
    pipeline.check_json_config(out / "protocol.json", description, overwrite)
    run_config = {"protocol": description, "extractor": extractor.config, "matcher": matcher, "ratio": ratio}
    pipeline.check_json_config(method_dir / "config.json", run_config, overwrite)
    print("HPatches protocol: " + json.dumps(description, sort_keys=True), flush=True)

    root = Path(data)
    items, pairs, homographies = [], [], {}
    for seq in sequences:
        keys = [f"{seq.name}/{p.name}" for p in seq.images]
        items += [(key, str(p.relative_to(root)), 0) for key, p in zip(keys, seq.images)]
        for k in range(1, len(keys)):
            pairs.append((keys[0], keys[k]))
            homographies[(keys[0], keys[k])] = (seq.name, seq.homographies[k - 1])

    features_path, matches_path = method_dir / "features.h5", method_dir / "matches.h5"
    pipeline.extract_features(extractor, root, items, features_path, overwrite, progress)
    pipeline.match_features(features_path, pairs, make_matcher(matcher, ratio), matches_path,
                            {"matcher": matcher, "ratio": ratio}, overwrite, progress)

    # Pass 2: metrics from the caches only.
    records = []
    with h5py.File(features_path, "r") as features, h5py.File(matches_path, "r") as matches:
        for index, (key0, key1) in enumerate(pairs):
            sequence, H = homographies[(key0, key1)]
            f0 = io.read_features(features, key0, str(features_path))
            f1 = io.read_features(features, key1, str(features_path))
            matches0, _ = io.read_matches(matches, key0, key1)
            record = pair_metrics(f0, f1, matches0, H, protocol)
            record.update(sequence=sequence, pair=[key0, key1])
            records.append(record)
            if index < num_match_images:
                _draw_pair(method_dir / "matches", root, items, key0, key1, f0, f1, matches0, protocol)

    summary = _json_safe(summarize(records, protocol))
    _write_json(method_dir / "pairs.json", _json_safe(records))
    _write_json(method_dir / "summary.json", summary)
    _write_json(out / "summary.json", summary)
    plots.plot_mma(out / "mma.png", _comparable_summaries(out, description))
    return summary


def _draw_pair(directory, root, items, key0, key1, f0, f1, matches0, protocol) -> None:
    paths = {key: relative for key, relative, _ in items}
    valid = matches0 >= 0
    points0, points1 = f0["keypoints"][valid], f1["keypoints"][matches0[valid]]
    _, inliers = estimate_homography(points0, points1, protocol.homography_estimator,
                                     protocol.homography_ransac_threshold)
    image0, image1 = io.read_image(root / paths[key0]), io.read_image(root / paths[key1])
    filename = f"{key0.replace('/', '-')}_{key1.replace('/', '-')}".replace(".", "_") + ".png"
    plots.draw_matches(Path(directory) / filename, image0, image1, points0, points1, inliers)


def _comparable_summaries(out: Path, description: dict) -> dict:
    """Summaries of every method in OUT evaluated under the current protocol."""
    found = {}
    for config_path in sorted(out.glob("*/config.json")):
        summary_path = config_path.parent / "summary.json"
        if not summary_path.is_file():
            continue
        config = json.loads(config_path.read_text())
        if pipeline._canonical(config.get("protocol")) == pipeline._canonical(description):
            found[config_path.parent.name] = json.loads(summary_path.read_text())
    return found
