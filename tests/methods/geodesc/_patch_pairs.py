"""Synthetic patch pairs for the GeoDesc/ContextDesc learning tests (numpy + OpenCV; no GL3D needed).

Keypoints are drawn on scikit-image photographs; view 1 is the photograph under a random affine warp (rotation,
scale, anisotropy, shear) with a photometric change and noise, and its keypoints are the warped keypoints. Both
views are cropped with the model's own sampler, so pairs show the same surface under a local affine change.
The held-out figure is ``tfmatch.eval.metrics.fpr_at_95_recall``.
"""

import math

import cv2
import numpy as np
import skimage.color
import skimage.data

TRAIN_IMAGES = ("camera", "astronaut", "coffee", "rocket", "brick")
HELD_OUT_IMAGES = ("chelsea", "coins", "immunohistochemistry")


def gray_image(name):
    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = skimage.color.rgb2gray(image[..., :3]) * 255.0
    return image.astype(np.float32)


def random_view_pair(image, num, rng, max_angle=25.0):
    """Returns (image0, keypoints0 [num,4], image1, keypoints1 [num,4], centres0 normalised [num, 2])."""
    h, w = image.shape
    phi = math.radians(rng.uniform(-max_angle, max_angle))
    scale = rng.uniform(0.8, 1.25)
    anis = 2.0 ** rng.uniform(-0.2, 0.2)
    shear = rng.uniform(-0.1, 0.1)
    lin = scale * np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]]) @ np.array(
        [[anis, shear], [0.0, 1.0 / anis]])
    centre = np.array([w / 2.0, h / 2.0])
    M = np.concatenate([lin, (centre - lin @ centre)[:, None]], axis=1)
    image1 = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    image1 = np.clip(image1 * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30) + rng.normal(0, 4, image1.shape), 0, 255)
    margin = 40
    xy0 = np.stack([rng.uniform(margin, w - margin, num), rng.uniform(margin, h - margin, num)], axis=1)
    xy1 = xy0 @ lin.T + M[:, 2]
    size0 = rng.uniform(2.5, 5.0, num)
    angle0 = rng.uniform(0.0, 360.0, num)
    kp0 = np.stack([xy0[:, 0], xy0[:, 1], size0, angle0], axis=1)
    # Detector noise on view 1 (position, scale, orientation), so that raw pixels no longer line up.
    xy1 = xy1 + rng.normal(0.0, 1.5, xy1.shape)
    size1 = size0 * math.sqrt(abs(np.linalg.det(lin))) * 2.0 ** rng.normal(0.0, 0.15, num)
    angle1 = (angle0 + math.degrees(phi) + rng.normal(0.0, 12.0, num)) % 360.0
    kp1 = np.stack([xy1[:, 0], xy1[:, 1], size1, angle1], axis=1)
    norm0 = (xy0 - centre) / centre
    return image.astype(np.float32), kp0.astype(np.float32), image1.astype(np.float32), kp1.astype(np.float32), \
        norm0.astype(np.float32)


def make_patch_pairs(crop_fn, names, pairs_per_view, views_per_image, seed):
    """Patch pairs of several random views per photograph.

    Returns dict of ``patches0, patches1 [V, n, 32, 32, 1]``, ``keypoints0, keypoints1 [V, n, 2]`` (normalised)
    and ``image_ids [V]``; V = len(names) * views_per_image.
    """
    rng = np.random.default_rng(seed)
    out = {"patches0": [], "patches1": [], "keypoints0": [], "keypoints1": [], "image_ids": []}
    for image_id, name in enumerate(names):
        image = gray_image(name)
        for _ in range(views_per_image):
            im0, kp0, im1, kp1, norm0 = random_view_pair(image, pairs_per_view, rng)
            out["patches0"].append(np.asarray(crop_fn(im0[None, :, :, None], kp0[None]))[0])
            out["patches1"].append(np.asarray(crop_fn(im1[None, :, :, None], kp1[None]))[0])
            h, w = im1.shape
            out["keypoints0"].append(norm0)
            out["keypoints1"].append(((kp1[:, :2] - [w / 2, h / 2]) / [w / 2, h / 2]).astype(np.float32))
            out["image_ids"].append(image_id)
    return {k: np.stack(v) for k, v in out.items()}


def raw_pixel_descriptors(patches):
    """Standardised raw pixels as a descriptor. Shape: [n, 32, 32, 1] -> [n, 1024]."""
    flat = patches.reshape(patches.shape[0], -1).astype(np.float64)
    flat = (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-5)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)
