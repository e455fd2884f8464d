"""Corner-detection metrics on synthetic shapes (NumPy): precision, recall and average precision at a distance.

Spec 1.6 (rpautrat ``compute_pr``, ``distance_thresh`` 2): a detection is correct when a ground-truth corner lies
within ``distance`` pixels; here each ground-truth corner can be claimed by one detection only (greedy by score),
so duplicates count as false positives and recall cannot exceed 1. Used by ``python -m tfmatch.evaluate shapes``
(tfmatch/eval/shapes.py) for models and the classical baselines alike (OpenCV FAST / Harris / Shi-Tomasi).
"""

from __future__ import annotations

import numpy as np


def _match(points: np.ndarray, scores: np.ndarray, gt: np.ndarray, distance: float):
    """Greedy one-to-one matching by decreasing score. Returns ``correct [N] bool`` in ``points`` order."""
    correct = np.zeros(len(points), bool)
    if len(points) == 0 or len(gt) == 0:
        return correct
    d = np.linalg.norm(points[:, None, :] - gt[None, :, :], axis=-1)
    taken = np.zeros(len(gt), bool)
    for i in np.argsort(-scores, kind="stable"):
        candidates = np.where(~taken & (d[i] <= distance))[0]
        if len(candidates):
            j = candidates[np.argmin(d[i, candidates])]
            taken[j] = True
            correct[i] = True
    return correct


def detection_pr(detections, ground_truth, distance: float = 2.0) -> dict:
    """Precision and recall over a set of images, and average precision of the score ranking.

    Args:
      detections: per image ``(points [N, 2] (x, y), scores [N])`` (valid detections only).
      ground_truth: per image corners ``[M, 2]`` (x, y).
      distance: pixels.

    Returns:
      ``{"precision", "recall", "average_precision", "num_detections", "num_ground_truth"}``.
    """
    all_scores, all_correct, num_gt = [], [], 0
    for (points, scores), gt in zip(detections, ground_truth):
        points = np.asarray(points, np.float64).reshape(-1, 2)
        scores = np.asarray(scores, np.float64).reshape(-1)
        gt = np.asarray(gt, np.float64).reshape(-1, 2)
        all_correct.append(_match(points, scores, gt, distance))
        all_scores.append(scores)
        num_gt += len(gt)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    correct = np.concatenate(all_correct) if all_correct else np.zeros(0, bool)
    tp = int(correct.sum())
    precision = tp / len(correct) if len(correct) else 0.0
    recall = tp / num_gt if num_gt else 0.0
    order = np.argsort(-scores, kind="stable")
    cum_tp = np.cumsum(correct[order])
    cum_precision = cum_tp / np.arange(1, len(order) + 1)
    # Step-wise area under the precision-recall curve: precision at each new true positive.
    ap = float(np.sum(cum_precision[correct[order]]) / num_gt) if num_gt else 0.0
    return {"precision": precision, "recall": recall, "average_precision": ap,
            "num_detections": int(len(correct)), "num_ground_truth": int(num_gt)}


def keypoint_map_to_points(keypoint_map: np.ndarray) -> np.ndarray:
    """``[H, W]`` binary map -> ``[M, 2]`` (x, y) of its ones."""
    ys, xs = np.nonzero(np.asarray(keypoint_map) > 0.5)
    return np.stack([xs, ys], -1).astype(np.float64)
