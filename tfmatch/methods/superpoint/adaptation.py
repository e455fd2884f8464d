"""Homographic Adaptation (keras.ops): the detector's heatmap averaged over random warps of the image.

Spec 1.4 (rpautrat ``homography_adaptation``). Homographies map input pixels to warped pixels (``p_w ~ H p``, the
``tfmatch.geometry.homography`` convention). For view i with homography H_i:

- ``warped_i = warp(I, H_i)``; ``mask_i = erode(warp(ones, H_i))`` (where the warped view shows the image);
- ``back_i = warp(heatmap(warped_i) * mask_i, H_i^-1) * count_i`` with ``count_i = erode(warp(ones, H_i^-1))``;
- the identity view contributes ``heatmap(I)`` with count 1;
- aggregation ``sum``: ``sum(back_i) / sum(count_i)``; ``max``: the element-wise maximum.

Masks use nearest-like sampling (bilinear of ones, rounded) and an elliptical erosion of size 2 * margin.
The views of all images are stacked along the batch axis and processed in chunks.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from tfmatch.geometry.homography import invert_homography, warp_image

AGGREGATIONS = ("sum", "max")


def _ellipse_kernel(margin: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin, 2 * margin)).astype(np.float32)


def erode_mask(mask, margin: int):
    """Erodes a {0,1} mask by an elliptical kernel of size ``2 * margin`` (outside the image counts as 0).

    Shape: ``[B, H, W]`` -> ``[B, H, W]``.
    """
    if margin <= 0:
        return mask
    kernel = _ellipse_kernel(margin)
    # A pixel survives when no kernel tap covers a 0 of the mask; pad with 0 (outside = invalid).
    kh, kw = kernel.shape
    top, left = kh // 2, kw // 2  # OpenCV's anchor for even sizes
    holes = ops.pad(1.0 - mask, [[0, 0], [top, kh - 1 - top], [left, kw - 1 - left]], constant_values=1.0)
    hits = ops.conv(holes[..., None], ops.convert_to_tensor(kernel[:, :, None, None]), padding="valid")[..., 0]
    return ops.cast(hits < 0.5, mask.dtype)


def homographic_adaptation(heatmap_fn, images, homographies, valid_border_margin: int = 3,
                           aggregation: str = "sum", chunk_size: int = 32):
    """Aggregated heatmap over the identity and the given homographies.

    Args:
      heatmap_fn: ``images [b,H,W,1] 0..255 -> heatmap [b,H,W]`` (e.g. ``MagicPoint.heatmap``).
      images: ``[B, H, W, 1]`` float32 0..255.
      homographies: ``[B, N, 3, 3]`` (N extra views per image; the identity view is always added).
      valid_border_margin: erosion of the warped masks, pixels (3 in the export configs).
      aggregation: "sum" (mean over the views that see a pixel) or "max".
      chunk_size: views per network call.

    Shape:
      -> heatmap ``[B, H, W]`` float32, and counts ``[B, H, W]`` (how many views saw each pixel).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"adaptation.py: aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    images = ops.cast(ops.convert_to_tensor(images), "float32")
    homographies = ops.cast(ops.convert_to_tensor(homographies), "float32")
    if len(images.shape) != 4 or len(homographies.shape) != 4 or tuple(homographies.shape[2:]) != (3, 3):
        raise ValueError(f"adaptation.py: expected images [B,H,W,1] and homographies [B,N,3,3], got "
                         f"{images.shape} and {homographies.shape}")
    b, h, w = int(images.shape[0]), int(images.shape[1]), int(images.shape[2])
    n = int(homographies.shape[1])
    total = ops.cast(heatmap_fn(images), "float32")
    counts = ops.ones_like(total)
    if n == 0:
        return total, counts
    flat_h = ops.reshape(homographies, (b * n, 3, 3))
    view_images = ops.reshape(ops.repeat(images[:, None], n, axis=1), (b * n, h, w, 1))
    ones = ops.ones((1, h, w, 1), "float32")
    back_sum, count_sum = [], []
    for start in range(0, b * n, chunk_size):
        hs = flat_h[start:start + chunk_size]
        m = int(hs.shape[0])
        inverse = invert_homography(hs)
        warped = warp_image(view_images[start:start + chunk_size], hs, (h, w))
        ones_m = ops.repeat(ones, m, axis=0)
        mask = erode_mask(ops.round(warp_image(ones_m, hs, (h, w))[..., 0]), valid_border_margin)
        count = erode_mask(ops.round(warp_image(ones_m, inverse, (h, w))[..., 0]), valid_border_margin)
        prob = ops.cast(heatmap_fn(warped), "float32") * mask
        back = warp_image(prob[..., None], inverse, (h, w))[..., 0] * count
        back_sum.append(back)
        count_sum.append(count)
    back = ops.reshape(ops.concatenate(back_sum, axis=0), (b, n, h, w))
    count = ops.reshape(ops.concatenate(count_sum, axis=0), (b, n, h, w))
    counts = counts + ops.sum(count, axis=1)
    if aggregation == "sum":
        return (total + ops.sum(back, axis=1)) / counts, counts
    return ops.maximum(total, ops.max(back, axis=1)), counts
