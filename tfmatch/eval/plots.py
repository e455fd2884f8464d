"""Evaluation figures: match images (inliers green, outliers red) and MMA curves of several methods."""

from __future__ import annotations

import os

import cv2
import numpy as np

GREEN, RED = (0, 200, 0), (0, 0, 230)  # BGR, as cv2.imwrite expects


def _to_bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[0], image.shape[1]), cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


def draw_matches(path, image0, image1, points0, points1, inliers, max_height: int = 480) -> None:
    """Writes both images side by side with one line per match: green for inliers, red for outliers.

    Shape:
      image0 ``[H0, W0, C]``, image1 ``[H1, W1, C]`` uint8 (RGB or gray); points0, points1 ``[M, 2]`` (x, y)
      of the matched keypoints; inliers ``[M] bool``.
    """
    canvases, scales = [], []
    for image in (image0, image1):
        scale = min(1.0, max_height / image.shape[0])
        canvas = _to_bgr(image)
        if scale < 1.0:
            canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvases.append(canvas)
        scales.append(scale)
    height = max(c.shape[0] for c in canvases)
    margin = 10
    out = np.full((height, canvases[0].shape[1] + margin + canvases[1].shape[1], 3), 255, np.uint8)
    out[:canvases[0].shape[0], :canvases[0].shape[1]] = canvases[0]
    offset = canvases[0].shape[1] + margin
    out[:canvases[1].shape[0], offset:] = canvases[1]
    points0 = np.asarray(points0, np.float64).reshape(-1, 2) * scales[0]
    points1 = np.asarray(points1, np.float64).reshape(-1, 2) * scales[1] + [offset, 0]
    inliers = np.asarray(inliers, bool).reshape(-1)
    for draw_inliers in (False, True):  # inliers on top
        for p0, p1, good in zip(points0, points1, inliers):
            if good != draw_inliers:
                continue
            color = GREEN if good else RED
            a, b = tuple(int(round(v)) for v in p0), tuple(int(round(v)) for v in p1)
            cv2.line(out, a, b, color, 1, cv2.LINE_AA)
            cv2.circle(out, a, 2, color, -1, cv2.LINE_AA)
            cv2.circle(out, b, 2, color, -1, cv2.LINE_AA)
    text = f"{int(inliers.sum())}/{len(inliers)} inliers"
    cv2.putText(out, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 3, cv2.LINE_AA)
    cv2.putText(out, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(str(path), out):
        raise OSError(f"{path}: could not write the match image")


def plot_mma(path, summaries: dict) -> None:
    """One figure, three panels (overall, illumination, viewpoint): MMA against the threshold for every method.

    Args:
      summaries: ``{method name: summary dict}`` with ``mma``, ``mma_i``, ``mma_v`` maps from "1".."10" (a
        subset may be None when the data has no sequence of that kind).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("mma", "Overall"), ("mma_i", "Illumination"), ("mma_v", "Viewpoint"))
    figure, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for axis, (key, title) in zip(axes, panels):
        for name in sorted(summaries):
            curve = summaries[name].get(key)
            if not curve:
                continue
            thresholds = sorted(curve, key=float)
            axis.plot([float(t) for t in thresholds], [curve[t] for t in thresholds], marker="o", markersize=3,
                      label=name)
        axis.set_title(title)
        axis.set_xlabel("threshold [px]")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("MMA")
    axes[0].legend(loc="lower right")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
