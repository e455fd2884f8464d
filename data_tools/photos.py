"""The real photographs that scikit-image ships (no download): the texture source of the demo data sets."""

from __future__ import annotations

import cv2
import numpy as np

# Photographs of skimage.data that need no download (the ones with texture enough for local features).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "brick", "gravel",
          "grass", "coins", "moon", "clock", "hubble_deep_field")


def load_photo(name: str, size: int) -> np.ndarray:
    """A scikit-image photograph as uint8 RGB, longer side at most ``size``. Shape: -> ``[H, W, 3]``."""
    from skimage import data as skdata

    image = np.asarray(getattr(skdata, name)())
    if image.dtype != np.uint8:
        raise ValueError(f"skimage.data.{name}: expected uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    scale = size / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)
