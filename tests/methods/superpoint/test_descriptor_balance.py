"""The joint recipe's dense descriptor loss must not reward collapse.

With the dense hinge, each image-0 cell's positive term weighs about ``lambda_d * (positives per cell) / (Hc Wc)``
against negatives that sum to about 1. If that ratio is above ~0.8, descriptors that are all the same score lower
than uncorrelated ones, so a fresh descriptor head is pulled towards collapse (seen on the GPU: mean cosine 0.85
within an image, HPatches MMA@3 0.007 after 2,500 steps with rpautrat's 7.5 px threshold and lambda_d 800).
"""

import gin
import numpy as np
import pytest

from tfmatch import config
from tfmatch.methods.superpoint import losses

HEIGHT, WIDTH, DIM = 240, 320, 64


def _homography():
    """A generic (not grid-aligned) homography: 10 degrees about the centre, scale 0.9, a sub-cell shift."""
    angle, scale = np.deg2rad(10.0), 0.9
    centre = np.array([[1, 0, WIDTH / 2], [0, 1, HEIGHT / 2], [0, 0, 1]])
    rotate = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 3.3],
                       [scale * np.sin(angle), scale * np.cos(angle), -2.7], [0, 0, 1]])
    return (centre @ rotate @ np.linalg.inv(centre)).astype(np.float32)[None]


def _losses(lambda_d, distance_threshold, positive_margin=1.0, negative_margin=0.2):
    hc, wc = HEIGHT // 8, WIDTH // 8
    rng = np.random.default_rng(0)
    uncorrelated = [rng.standard_normal((1, hc, wc, DIM)).astype(np.float32) for _ in range(2)]
    uncorrelated = [d / np.linalg.norm(d, axis=-1, keepdims=True) for d in uncorrelated]
    collapsed = np.full((1, hc, wc, DIM), 1.0 / np.sqrt(DIM), np.float32)
    valid = np.ones((1, HEIGHT, WIDTH), np.float32)

    def loss(d0, d1):
        return float(losses.dense_descriptor_loss(d0, d1, _homography(), valid, positive_margin, negative_margin,
                                                  lambda_d, distance_threshold))

    return loss(*uncorrelated), loss(collapsed, collapsed)


def test_collapse_is_uphill_with_the_recipe_settings():
    try:
        config.parse(["methods/superpoint/superpoint.gin"], finalize=False)
        settings = {name: gin.query_parameter(f"SuperPoint.{name}")
                    for name in ("lambda_d", "distance_threshold", "positive_margin", "negative_margin")}
    finally:
        gin.clear_config()
    uncorrelated, collapsed = _losses(**settings)
    # Collapsed: every non-positive pair pays dot - m_n = 0.8, positives nothing.
    assert collapsed == pytest.approx(0.8, abs=0.01)
    assert uncorrelated < 0.75 * collapsed, settings


def test_rpautrat_threshold_with_lambda_800_rewards_collapse():
    """The combination the recipe used before (7.5 px of rpautrat's code, lambda_d 800 of pytorch-superpoint's
    4 px dense config): the same check fails, which is what the test above guards against."""
    uncorrelated, collapsed = _losses(lambda_d=800.0, distance_threshold=7.5)
    assert uncorrelated > collapsed
