"""Relative pose from two-view matches, scored as SuperGlue does (``pairs_with_gt`` format, AUC at 5/10/20 deg).

Defaults (``PoseProtocol``), stated in ``OUT/protocol.json`` and printed: images resized to 640 x 480 (the
SuperGlue ScanNet setting), 1024 keypoints, mutual nearest neighbour; the essential matrix from points
normalised by the intrinsics with OpenCV USAC_MAGSAC, threshold 1 px of the resized image divided by the mean
focal length of the resized intrinsics, confidence 0.99999; ``cv2.recoverPose`` picks the solution with the
most inliers. Keypoints are stored in original-image pixels, so the original intrinsics apply (identical to
scaling the intrinsics to the resized image). A pair fails (error = inf) with fewer than 5 matches or no
estimate. AUC as fractions (multiply by 100 for the percentages of the papers).

Output layout: as the HPatches protocol (``OUT/<tag>/...``, ``OUT/summary.json`` with ``auc``, ``num_pairs``,
``failures``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import h5py
import numpy as np

from tfmatch.eval import io, metrics, pipeline, plots
from tfmatch.eval.hpatches import _json_safe, _write_json


@dataclasses.dataclass(frozen=True)
class PoseProtocol:
    resize: tuple = (640, 480)  # (W, H) as SuperGlue on ScanNet; () = full resolution; (L,) = longer side
    max_keypoints: int = 1024  # SuperGlue's ScanNet budget
    ransac_threshold: float = 1.0  # px of the resized image
    estimator: str = "magsac"  # "magsac" (cv2.USAC_MAGSAC) or "ransac" (cv2.RANSAC, SuperGlue's original)
    confidence: float = 0.99999
    auc_thresholds: tuple = (5, 10, 20)  # degrees

    def describe(self) -> dict:
        out = dataclasses.asdict(self)
        out["resize"] = list(self.resize)
        out["name"] = "SuperGlue relative pose: max(R, t) angular error, AUC by the trapezoid rule"
        return out


_ESTIMATORS = {"ransac": cv2.RANSAC, "magsac": cv2.USAC_MAGSAC}


def normalise_points(points, K) -> np.ndarray:
    """Pixels to normalised camera coordinates. Shape: points ``[N, 2]``, K ``[3, 3]`` -> ``[N, 2]``."""
    K = np.asarray(K, np.float64)
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return (points - K[[0, 1], [2, 2]][None]) / K[[0, 1], [0, 1]][None]


def estimate_pose(points0, points1, K0, K1, threshold_px: float, estimator: str = "magsac",
                  confidence: float = 0.99999):
    """Essential matrix and relative pose (x1 = R x0 + t, |t| = 1) from matched pixels.

    Args:
      threshold_px: inlier threshold in the pixels of ``K0``/``K1`` (converted by their mean focal length).

    Returns:
      ``(R [3,3], t [3], inliers [M] bool)`` or ``None`` when there are fewer than 5 matches or no estimate.
    """
    points0 = np.asarray(points0, np.float64).reshape(-1, 2)
    points1 = np.asarray(points1, np.float64).reshape(-1, 2)
    if len(points0) < 5:
        return None
    n0, n1 = normalise_points(points0, K0), normalise_points(points1, K1)
    focal = np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    E, mask = cv2.findEssentialMat(n0, n1, np.eye(3), method=_ESTIMATORS[estimator], prob=confidence,
                                   threshold=threshold_px / focal)
    if E is None or mask is None:
        return None
    best = None
    for candidate in np.split(E, len(E) // 3):  # several solutions may be stacked
        count, R, t, _ = cv2.recoverPose(candidate, n0, n1, np.eye(3), 1e9, mask=mask.copy())
        if best is None or count > best[0]:
            best = (count, R, t.reshape(-1))
    return best[1], best[2], mask.reshape(-1).astype(bool)


def evaluate_pose(pairs_file, images, extractor, out, protocol: PoseProtocol = PoseProtocol(), name: str = "",
                  matcher: str = "mnn", ratio: float = 0.8, overwrite: bool = False, num_match_images: int = 5,
                  progress: bool = True) -> dict:
    """Both passes for one method on a SuperGlue pairs-with-ground-truth file; returns the summary."""
    from tfmatch.eval.matchers import make_matcher

    pairs = io.read_pairs(pairs_file, with_gt=True)  # validates every line before any work
    images = Path(images)
    if not images.is_dir():
        raise io.EvalInputError(f"{images}: image directory not found")
    out = Path(out)
    tag = name or (extractor.name if matcher == "mnn" else f"{extractor.name}+{Path(matcher).name}")
    method_dir = out / tag
    description = dict(protocol.describe(), pairs=str(Path(pairs_file).resolve()), images=str(images.resolve()))
    pipeline.check_json_config(out / "protocol.json", description, overwrite)
    pipeline.check_json_config(method_dir / "config.json", {"protocol": description, "extractor": extractor.config,
                                                            "matcher": matcher, "ratio": ratio}, overwrite)
    print("pose protocol: " + json.dumps(description, sort_keys=True), flush=True)

    def key(name_, rot):
        return name_ if rot == 0 else f"{name_}.rot{rot}"

    items, seen, keyed_pairs = [], set(), []
    for pair in pairs:
        for name_, rot in ((pair.name0, pair.rot0), (pair.name1, pair.rot1)):
            if key(name_, rot) not in seen:
                seen.add(key(name_, rot))
                items.append((key(name_, rot), name_, rot))
        keyed_pairs.append((key(pair.name0, pair.rot0), key(pair.name1, pair.rot1)))

    features_path, matches_path = method_dir / "features.h5", method_dir / "matches.h5"
    pipeline.extract_features(extractor, images, items, features_path, overwrite, progress)
    pipeline.match_features(features_path, keyed_pairs, make_matcher(matcher, ratio), matches_path,
                            {"matcher": matcher, "ratio": ratio}, overwrite, progress)
    summary, records = pose_pass2(pairs, keyed_pairs, features_path, matches_path, protocol,
                                  draw=(method_dir / "matches", images, num_match_images))
    _write_json(method_dir / "pairs.json", _json_safe(records))
    _write_json(method_dir / "summary.json", summary)
    _write_json(out / "summary.json", summary)
    return summary


def pose_pass2(pairs, keyed_pairs, features_path, matches_path, protocol: PoseProtocol, draw=None):
    """Pass 2: pose errors and AUC from the h5 caches. Returns (summary, per-pair records)."""
    records, errors = [], []
    with h5py.File(features_path, "r") as features, h5py.File(matches_path, "r") as matches:
        for index, (pair, (key0, key1)) in enumerate(zip(pairs, keyed_pairs)):
            f0 = io.read_features(features, key0, str(features_path))
            f1 = io.read_features(features, key1, str(features_path))
            matches0, _ = io.read_matches(matches, key0, key1)
            valid = matches0 >= 0
            points0, points1 = f0["keypoints"][valid], f1["keypoints"][matches0[valid]]
            # The threshold is given in resized pixels; keypoints are in original pixels.
            width, height = f0["image_size"]
            new_w, new_h = io.resized_size(width, height, tuple(protocol.resize))
            scale = 0.5 * (width / new_w + height / new_h)
            result = estimate_pose(points0, points1, pair.K0, pair.K1, protocol.ransac_threshold * scale,
                                   protocol.estimator, protocol.confidence)
            if result is None:
                error_R = error_t = float("inf")
                inliers = np.zeros(len(points0), bool)
            else:
                R, t, inliers = result
                error_R, error_t = metrics.pose_errors(R, t, pair.T_0to1)
            errors.append(max(error_R, error_t))
            records.append({"pair": [pair.name0, pair.name1], "error_R": error_R, "error_t": error_t,
                            "num_matches": int(valid.sum()), "num_inliers": int(inliers.sum()),
                            "failed": result is None})
            if draw is not None and index < draw[2]:
                image0 = io.read_image(Path(draw[1]) / pair.name0)  # keypoints are in unrotated pixels
                image1 = io.read_image(Path(draw[1]) / pair.name1)
                filename = f"{Path(pair.name0).stem}_{Path(pair.name1).stem}.png"
                plots.draw_matches(Path(draw[0]) / filename, image0, image1, points0, points1, inliers)
    aucs = metrics.pose_auc(errors, protocol.auc_thresholds)
    summary = {"auc": {str(t): a for t, a in zip(protocol.auc_thresholds, aucs)}, "num_pairs": len(pairs),
               "failures": int(sum(r["failed"] for r in records))}
    return _json_safe(summary), _json_safe(records)
