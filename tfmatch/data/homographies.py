"""The SuperPoint homography sampler and NumPy/OpenCV warping helpers for the input pipelines.

Spec: ``specs/superpoint-posfeat-pump-imp.md`` section 1.4. The sampler follows rpautrat/SuperPoint (current
version: the source and the target quadrilateral both start as the centred ``patch_ratio`` patch, so there is no
implicit zoom); ``zoom=True`` gives pytorch-superpoint's older behaviour (the whole image maps onto the patch, a
zoom-in of 1/patch_ratio on average).

Convention: the returned ``H`` maps **input** pixels to **warped** pixels (``p_warped ~ H p_input``), the convention
of ``tfmatch.geometry.homography`` and of ``cv2.warpPerspective``. The spec's (and rpautrat's) H is the inverse of
this one. Pixel coordinates are (x, y) with integer values at pixel centres.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class HomographyConfig:
    """Parameters of :func:`sample_homography` (defaults: the rpautrat defaults)."""

    perspective: bool = True
    scaling: bool = True
    rotation: bool = True
    translation: bool = True
    n_scales: int = 5  # candidate scales besides 1
    n_angles: int = 25  # candidate angles in [-max_angle, max_angle], plus 0
    scaling_amplitude: float = 0.1  # std of the scale is amplitude / 2 (truncated at 2 std)
    perspective_amplitude_x: float = 0.1
    perspective_amplitude_y: float = 0.1
    patch_ratio: float = 0.5  # side of the centred patch, relative to the image
    max_angle: float = np.pi / 2
    allow_artifacts: bool = False  # allow the warped patch to leave the image (black borders)
    translation_overflow: float = 0.0  # extra translation range when artifacts are allowed
    zoom: bool = False  # pytorch-superpoint: the full image maps onto the patch


# The settings the recipes use (spec 1.2, 1.4, 1.5).
MAGICPOINT_AUGMENTATION = HomographyConfig(scaling_amplitude=0.2, perspective_amplitude_x=0.2,
                                           perspective_amplitude_y=0.2, patch_ratio=0.8, max_angle=1.57,
                                           allow_artifacts=True, translation_overflow=0.05)
ADAPTATION = HomographyConfig(scaling_amplitude=0.2, perspective_amplitude_x=0.2, perspective_amplitude_y=0.2,
                              patch_ratio=0.85, max_angle=np.pi, allow_artifacts=True)
SUPERPOINT_PAIRS = HomographyConfig(scaling_amplitude=0.2, perspective_amplitude_x=0.2, perspective_amplitude_y=0.2,
                                    patch_ratio=0.85, max_angle=1.57, allow_artifacts=True)


def _truncated_normal(rng: np.random.Generator, mean: float, std: float, size=None):
    """Normal draws resampled until they lie within 2 std of the mean."""
    values = np.atleast_1d(rng.normal(mean, std, size)).astype(np.float64)
    bad = np.abs(values - mean) > 2 * std
    while bad.any():
        values[bad] = rng.normal(mean, std, int(bad.sum()))
        bad = np.abs(values - mean) > 2 * std
    return values if size is not None else float(values[0])


def sample_homography(rng: np.random.Generator, height: int, width: int,
                      config: HomographyConfig = HomographyConfig()) -> np.ndarray:
    """Draws one homography (perspective, scale, translation, rotation, in this order).

    Returns:
      ``H [3, 3]`` float64 mapping input pixels to warped pixels, for images of ``height`` x ``width``.
    """
    c = config
    margin = (1.0 - c.patch_ratio) / 2.0
    patch = margin + np.array([[0, 0], [0, c.patch_ratio], [c.patch_ratio, c.patch_ratio], [c.patch_ratio, 0]])
    # Output quadrilateral (warped image) and input quadrilateral; corners TL, BL, BR, TR, in [0, 1] units (x, y).
    pts_out = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], np.float64) if c.zoom else patch.copy()
    pts_in = patch.copy()

    if c.perspective:
        amp_x, amp_y = c.perspective_amplitude_x, c.perspective_amplitude_y
        if not c.allow_artifacts:
            amp_x, amp_y = min(amp_x, margin), min(amp_y, margin)
        dy = _truncated_normal(rng, 0.0, amp_y / 2)
        dx_left = _truncated_normal(rng, 0.0, amp_x / 2)
        dx_right = _truncated_normal(rng, 0.0, amp_x / 2)
        pts_in += np.array([[dx_left, dy], [dx_left, -dy], [dx_right, dy], [dx_right, -dy]])

    if c.scaling:
        scales = np.concatenate([[1.0], _truncated_normal(rng, 1.0, c.scaling_amplitude / 2, c.n_scales)])
        centre = pts_in.mean(axis=0)
        scaled = (pts_in - centre)[None] * scales[:, None, None] + centre
        if c.allow_artifacts:
            candidates = np.arange(1, c.n_scales + 1)  # every drawn scale (not the identity)
        else:
            candidates = np.flatnonzero(np.all((scaled >= 0) & (scaled <= 1), axis=(1, 2)))
        pts_in = scaled[rng.choice(candidates)]

    if c.translation:
        t_min, t_max = pts_in.min(axis=0), (1.0 - pts_in).min(axis=0)
        if c.allow_artifacts:
            t_min, t_max = t_min + c.translation_overflow, t_max + c.translation_overflow
        # low + (high - low) u, as tf.random.uniform: the bounds may cross once the patch left the image.
        pts_in += -t_min + (t_max + t_min) * rng.random(2)

    if c.rotation:
        angles = np.concatenate([np.linspace(-c.max_angle, c.max_angle, c.n_angles), [0.0]])
        centre = pts_in.mean(axis=0)
        cos, sin = np.cos(angles), np.sin(angles)
        rotations = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # [A, 2, 2]
        rotated = np.einsum("nj,aij->ani", pts_in - centre, rotations) + centre
        if c.allow_artifacts:
            candidates = np.arange(c.n_angles)
        else:
            candidates = np.flatnonzero(np.all((rotated >= 0) & (rotated < 1), axis=(1, 2)))
        pts_in = rotated[rng.choice(candidates)]

    size = np.array([width, height], np.float64)
    # Solve from the 4 correspondences, input -> warped (the inverse of the spec's warped -> input).
    return cv2.getPerspectiveTransform((pts_in * size).astype(np.float32), (pts_out * size).astype(np.float32))


def warp_points(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``p' ~ H p``. Shape: homography ``[3, 3]``, points ``[N, 2]`` (x, y) -> ``[N, 2]``."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    projected = np.concatenate([points, np.ones((len(points), 1))], 1) @ np.asarray(homography, np.float64).T
    return projected[:, :2] / projected[:, 2:3]


def warp_image(image: np.ndarray, homography: np.ndarray, height: int, width: int,
               interpolation=cv2.INTER_LINEAR) -> np.ndarray:
    """Output pixel p samples the input at ``H^-1 p`` (zero outside).

    Shape: ``[h, w(, C)]`` -> ``[height, width(, C)]``.
    """
    return cv2.warpPerspective(image, np.asarray(homography, np.float64), (width, height), flags=interpolation,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Erodes a 0/1 mask with an elliptical kernel of size ``2 * radius`` (as rpautrat's ``compute_valid_mask``)."""
    if radius <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius, 2 * radius))
    return cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)


def valid_mask(homography: np.ndarray, in_height: int, in_width: int, out_height: int, out_width: int,
               erosion_radius: int = 0) -> np.ndarray:
    """Which warped pixels come from inside the input image (nearest sampling, then eroded).

    Shape: ``-> [out_height, out_width]`` float32 in {0, 1}.
    """
    ones = np.ones((in_height, in_width), np.float32)
    mask = warp_image(ones, homography, out_height, out_width, interpolation=cv2.INTER_NEAREST)
    return erode(mask, erosion_radius).astype(np.float32)


def points_inside(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rows of ``points [N, 2]`` whose rounded position lies in the image. Shape: ``-> [N] bool``."""
    rounded = np.round(points)
    return (rounded[:, 0] >= 0) & (rounded[:, 0] <= width - 1) & (rounded[:, 1] >= 0) & (rounded[:, 1] <= height - 1)


def keypoint_map(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Binary map with 1 at every rounded point inside the image. Shape: ``[N, 2]`` -> ``[height, width]`` float32."""
    out = np.zeros((height, width), np.float32)
    points = np.asarray(points).reshape(-1, 2)
    points = np.round(points[points_inside(points, height, width)]).astype(np.int64)
    out[points[:, 1], points[:, 0]] = 1.0
    return out
