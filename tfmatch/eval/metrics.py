"""Pure numpy metrics of the evaluation harness: homography protocol (MMA, corner error, repeatability,
localisation error, NN mAP, matching score), relative pose (angular errors, AUC as SuperGlue computes it) and
patch-pair verification (FPR at 95% recall, the Brown et al. / GeoDesc patch benchmark figure).

Points are ``[N, 2]`` float arrays of (x, y) pixels, integer = pixel centre. A homography ``H`` maps image-0
pixels to image-1 pixels (HPatches ``H_1_k``).
"""

from __future__ import annotations

import numpy as np


def _check_points(name: str, points) -> np.ndarray:
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must be [N, 2], got shape {points.shape}")
    return points


def warp_points(H, points) -> np.ndarray:
    """Applies a homography. Points that land at infinity get +inf.

    Shape:
      H: ``[3, 3]``; points: ``[N, 2]`` -> ``[N, 2]``.
    """
    points = _check_points("points", points)
    H = np.asarray(H, np.float64)
    if H.shape != (3, 3):
        raise ValueError(f"H must be [3, 3], got shape {H.shape}")
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ H.T
    z = homogeneous[:, 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = homogeneous[:, :2] / z
    out[np.abs(z[:, 0]) < 1e-12] = np.inf
    return out


def points_inside(points, width: int, height: int) -> np.ndarray:
    """``[N] bool``: the point lies on the image (pixel centres 0..W-1, 0..H-1, half a pixel of margin)."""
    points = _check_points("points", points)
    return ((points[:, 0] >= -0.5) & (points[:, 0] <= width - 0.5)
            & (points[:, 1] >= -0.5) & (points[:, 1] <= height - 0.5))


# ----------------------------------------------------------------------------------------------------------------
# Matching accuracy
def match_errors(keypoints0, keypoints1, matches0, H) -> np.ndarray:
    """Reprojection error of every match: ``|H x0 - x1|`` in image-1 pixels.

    Shape:
      keypoints0 ``[N0,2]``, keypoints1 ``[N1,2]``, matches0 ``[N0]`` int (-1 = none) -> ``[M]``.
    """
    keypoints0 = _check_points("keypoints0", keypoints0)
    keypoints1 = _check_points("keypoints1", keypoints1)
    matches0 = np.asarray(matches0).reshape(-1)
    if len(matches0) != len(keypoints0):
        raise ValueError(f"matches0 has {len(matches0)} entries for {len(keypoints0)} keypoints0")
    valid = matches0 >= 0
    projected = warp_points(H, keypoints0[valid])
    return np.linalg.norm(projected - keypoints1[matches0[valid]], axis=1)


def matching_accuracy(errors, thresholds) -> np.ndarray:
    """Share of matches with error <= t for each t (0 when there are no matches, as a failed pair).

    Shape:
      errors ``[M]``, thresholds ``[T]`` -> ``[T]``.
    """
    errors = np.asarray(errors, np.float64).reshape(-1)
    thresholds = np.asarray(thresholds, np.float64).reshape(-1)
    if errors.size == 0:
        return np.zeros(len(thresholds))
    return (errors[None, :] <= thresholds[:, None]).mean(axis=1)


def corner_error(H_est, H_true, width: int, height: int) -> float:
    """Mean distance between the four image corners warped by ``H_est`` and by ``H_true`` (inf if no estimate).
    Corners (0,0), (W-1,0), (0,H-1), (W-1,H-1), as pytorch-superpoint."""
    if H_est is None:
        return float("inf")
    corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], np.float64)
    distance = np.linalg.norm(warp_points(H_est, corners) - warp_points(H_true, corners), axis=1)
    value = float(distance.mean())
    return value if np.isfinite(value) else float("inf")


# ----------------------------------------------------------------------------------------------------------------
# Detector metrics
def shared_keypoints(keypoints0, keypoints1, H, size0, size1) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the keypoints seen by both images: image-0 points that land inside image 1 under H, image-1
    points that land inside image 0 under H^-1. ``size`` = (width, height)."""
    inside0 = points_inside(warp_points(H, keypoints0), *size1)
    inside1 = points_inside(warp_points(np.linalg.inv(H), keypoints1), *size0)
    return inside0, inside1


def repeatability(keypoints0, scores0, keypoints1, scores1, H, size0, size1, keep_k: int = 1000,
                  epsilon: float = 3.0) -> tuple[float, float]:
    """Repeatability and localisation error (pytorch-superpoint): keep shared keypoints, the top ``keep_k`` by
    score in each image; a point counts when its nearest warped point of the other image is within ``epsilon``.

    Returns:
      (repeatability = (count0 + count1) / (N0 + N1), localisation error = mean distance of the counted nearest
      pairs from both sides; nan when nothing is counted).
    """
    keypoints0 = _check_points("keypoints0", keypoints0)
    keypoints1 = _check_points("keypoints1", keypoints1)
    inside0, inside1 = shared_keypoints(keypoints0, keypoints1, H, size0, size1)
    top0 = _top_k(keypoints0[inside0], np.asarray(scores0)[inside0], keep_k)
    top1 = _top_k(keypoints1[inside1], np.asarray(scores1)[inside1], keep_k)
    if len(top0) == 0 or len(top1) == 0:
        return 0.0, float("nan")
    distance = np.linalg.norm(warp_points(H, top0)[:, None, :] - top1[None, :, :], axis=2)
    nearest0, nearest1 = distance.min(axis=1), distance.min(axis=0)
    counted0, counted1 = nearest0 <= epsilon, nearest1 <= epsilon
    count = counted0.sum() + counted1.sum()
    rep = float(count / (len(top0) + len(top1)))
    loc = float(np.concatenate([nearest0[counted0], nearest1[counted1]]).mean()) if count else float("nan")
    return rep, loc


def _top_k(points, scores, k):
    if k and len(points) > k:
        order = np.argsort(-np.asarray(scores), kind="stable")[:k]
        return points[order]
    return points


def average_precision(labels, scores) -> float:
    """Average precision of a ranking (as ``sklearn.metrics.average_precision_score`` without ties): the mean
    of the precision at the rank of each positive. 0 when there is no positive."""
    labels = np.asarray(labels, bool).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if labels.sum() == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / hits.sum())


# ----------------------------------------------------------------------------------------------------------------
# Relative pose
def angle_error_rotation(R, R_gt) -> float:
    """Angle in degrees of ``R^T R_gt``."""
    cos = (np.trace(np.asarray(R).T @ np.asarray(R_gt)) - 1.0) / 2.0
    return float(np.rad2deg(np.abs(np.arccos(np.clip(cos, -1.0, 1.0)))))


def angle_error_vector(v, v_gt) -> float:
    """Angle in degrees between two vectors."""
    v, v_gt = np.asarray(v, np.float64).reshape(-1), np.asarray(v_gt, np.float64).reshape(-1)
    norm = np.linalg.norm(v) * np.linalg.norm(v_gt)
    if norm == 0:
        return float("inf")
    return float(np.rad2deg(np.arccos(np.clip(np.dot(v, v_gt) / norm, -1.0, 1.0))))


def pose_errors(R, t, T_0to1) -> tuple[float, float]:
    """(rotation error, translation-direction error) in degrees; the sign of t is unobservable from an
    essential matrix, so the translation error is min(theta, 180 - theta) as SuperGlue."""
    T_0to1 = np.asarray(T_0to1, np.float64)
    error_t = angle_error_vector(t, T_0to1[:3, 3])
    error_t = min(error_t, 180.0 - error_t)
    return angle_error_rotation(R, T_0to1[:3, :3]), error_t


def pose_auc(errors, thresholds=(5, 10, 20)) -> list[float]:
    """Area under the cumulative error curve up to each threshold, divided by it (SuperGlue's ``pose_auc``):
    errors sorted, recall points (0, 0) and (e_i, i/N), the curve cut at the threshold, trapezoid rule.
    Failures are given as inf (they only count in N)."""
    errors = np.sort(np.asarray(errors, np.float64).reshape(-1))
    if errors.size == 0:
        return [0.0 for _ in thresholds]
    recall = np.arange(1, len(errors) + 1) / len(errors)
    errors = np.concatenate([[0.0], errors])
    recall = np.concatenate([[0.0], recall])
    aucs = []
    for threshold in thresholds:
        last = int(np.searchsorted(errors, threshold))
        curve_r = np.concatenate([recall[:last], [recall[last - 1]]])
        curve_e = np.concatenate([errors[:last], [threshold]])
        area = np.sum((curve_e[1:] - curve_e[:-1]) * (curve_r[1:] + curve_r[:-1]) / 2.0)
        aucs.append(float(area / threshold))
    return aucs


# ----------------------------------------------------------------------------------------------------------------
# Patch-pair verification
def fpr_at_recall(positive_distances, negative_distances, recall: float = 0.95) -> float:
    """False-positive rate at the distance threshold that accepts ``recall`` of the matching pairs.

    The threshold is ``np.quantile(positive_distances, recall)`` (linear interpolation); a pair is accepted when
    its distance is <= the threshold, and the FPR is the share of non-matching pairs accepted.

    Shape:
      positive_distances ``[P]``, negative_distances ``[Q]`` -> float.
    """
    positive = np.asarray(positive_distances).reshape(-1)
    negative = np.asarray(negative_distances).reshape(-1)
    if positive.size == 0 or negative.size == 0:
        raise ValueError(f"need matching and non-matching pairs, got {positive.size} and {negative.size}")
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    threshold = np.quantile(positive, recall)
    return float(np.mean(negative <= threshold))


def fpr_at_95_recall(descriptors0, descriptors1, rng=None) -> float:
    """FPR at 95% recall of descriptor pairs: row i of ``descriptors0`` matches row i of ``descriptors1``;
    the non-matching pairs are row i against row ``(i + k_i) mod n``, ``k_i`` uniform in 1..n-1 (never i itself),
    drawn from ``rng`` (default ``np.random.default_rng(0)``, so the value is deterministic). Euclidean distance.

    Shape:
      descriptors0, descriptors1 ``[n, D]`` with n >= 2 -> float.
    """
    descriptors0, descriptors1 = np.asarray(descriptors0), np.asarray(descriptors1)
    if descriptors0.ndim != 2 or descriptors0.shape != descriptors1.shape or descriptors0.shape[0] < 2:
        raise ValueError(f"descriptors must be two [n, D] arrays of the same shape with n >= 2, got "
                         f"{descriptors0.shape} and {descriptors1.shape}")
    rng = rng if rng is not None else np.random.default_rng(0)
    n = descriptors0.shape[0]
    positive = np.linalg.norm(descriptors0 - descriptors1, axis=1)
    perm = (np.arange(n) + rng.integers(1, n, n)) % n  # never i itself
    negative = np.linalg.norm(descriptors0 - descriptors1[perm], axis=1)
    return fpr_at_recall(positive, negative, 0.95)
