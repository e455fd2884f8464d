"""Drawing of keypoints and matches (numpy / OpenCV), for TensorBoard and the evaluation plots."""

from __future__ import annotations

import cv2
import numpy as np

GREEN = (0, 200, 0)
RED = (220, 0, 0)


def _to_rgb(image) -> np.ndarray:
    image = np.asarray(image, np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.min() < 0.0 or image.max() > 255.0:  # standardised input: stretch for display
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6) * 255.0
    image = np.clip(image, 0, 255).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image


def draw_matches(image0, image1, keypoints0, keypoints1, correct=None, max_lines: int = 200) -> np.ndarray:
    """Draws two images side by side with lines between matched keypoints.

    Shape:
      image0, image1: [H, W] or [H, W, 1|3], 0..255 (standardised images are stretched).
      keypoints0, keypoints1: [N, 2] (x, y); row i of one matches row i of the other.
      correct: [N] bool or None; correct matches are green, wrong ones red.
    Returns:
      [max(H0, H1), W0 + W1, 3] uint8 RGB.
    """
    a, b = _to_rgb(image0), _to_rgb(image1)
    height = max(a.shape[0], b.shape[0])
    canvas = np.zeros((height, a.shape[1] + b.shape[1], 3), np.uint8)
    canvas[: a.shape[0], : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1]:] = b
    keypoints0 = np.asarray(keypoints0, np.float32).reshape(-1, 2)
    keypoints1 = np.asarray(keypoints1, np.float32).reshape(-1, 2)
    if correct is None:
        correct = np.ones(len(keypoints0), bool)
    order = np.arange(len(keypoints0))
    if len(order) > max_lines:
        order = np.random.default_rng(0).choice(order, max_lines, replace=False)
    for i in order:
        p0 = (int(round(keypoints0[i, 0])), int(round(keypoints0[i, 1])))
        p1 = (int(round(keypoints1[i, 0])) + a.shape[1], int(round(keypoints1[i, 1])))
        color = GREEN if correct[i] else RED
        cv2.line(canvas, p0, p1, color, 1, cv2.LINE_AA)
        cv2.circle(canvas, p0, 2, color, -1)
        cv2.circle(canvas, p1, 2, color, -1)
    return canvas


def draw_batch(visualization: dict, max_images: int = 2) -> np.ndarray:
    """Turns a method's ``visualization()`` dict into ``[K, H, W, 3] uint8`` for ``tf.summary.image``."""
    out = []
    count = min(max_images, len(visualization["image0"]))
    for i in range(count):
        correct = visualization.get("correct")
        out.append(draw_matches(visualization["image0"][i], visualization["image1"][i],
                                visualization["keypoints0"][i], visualization["keypoints1"][i],
                                None if correct is None else correct[i]))
    return np.stack(out)
