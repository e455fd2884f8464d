"""Known-answer tests for tfmatch.geometry.epipolar."""

import numpy as np
from keras import ops

from tests.geometry._synthetic import scene
from tfmatch.geometry.camera import essential_from_pose, relative_pose
from tfmatch.geometry.epipolar import (
    epipolar_line_distances,
    fundamental_from_essential,
    sampson_distance,
    symmetric_epipolar_distance,
)


def _np(x):
    return ops.convert_to_numpy(x)


def _fundamental(s):
    R, t = relative_pose(s["R0"], s["t0"], s["R1"], s["t1"])
    return _np(fundamental_from_essential(essential_from_pose(R, t), s["K0"], s["K1"]))


def test_fundamental_vanishes_on_exact_pixel_correspondences():
    s = scene()
    F = _fundamental(s)
    h0 = np.concatenate([s["pix0"], np.ones_like(s["pix0"][..., :1])], -1).astype("float64")
    h1 = np.concatenate([s["pix1"], np.ones_like(s["pix1"][..., :1])], -1).astype("float64")
    residual = np.einsum("bni,bij,bnj->bn", h1, F.astype("float64"), h0)
    scale = np.abs(np.einsum("bni,bij,bnj->bn", h1[:, ::-1], F.astype("float64"), h0)).max()
    assert np.abs(residual).max() < 1e-4 * scale


def test_points_on_the_epipolar_line_have_zero_distance():
    s = scene()
    F = _fundamental(s)
    d0, d1 = epipolar_line_distances(s["pix0"], s["pix1"], F)
    for value in (d0, d1, symmetric_epipolar_distance(s["pix0"], s["pix1"], F, squared=False),
                  sampson_distance(s["pix0"], s["pix1"], F, squared=False)):
        np.testing.assert_allclose(_np(value), 0, atol=2e-2)  # pixels, float32 round-off


def test_offset_perpendicular_to_the_line_gives_the_offset():
    s = scene()
    F = _fundamental(s).astype("float64")
    h0 = np.concatenate([s["pix0"], np.ones_like(s["pix0"][..., :1])], -1).astype("float64")
    line1 = np.einsum("bij,bnj->bni", F, h0)
    normal = line1[..., :2] / np.linalg.norm(line1[..., :2], axis=-1, keepdims=True)
    d = np.linspace(0.5, 7.0, s["pix0"].shape[1])[None, :, None]
    moved = (s["pix1"] + d * normal).astype("float32")
    _, d1 = epipolar_line_distances(s["pix0"], moved, F.astype("float32"))
    np.testing.assert_allclose(_np(d1), d[..., 0].repeat(2, 0), atol=2e-2)


def test_pure_translation_analytic_sampson_and_symmetric():
    # Same K, R = I, t = (1, 0, 0): epipolar lines are the rows y = const in both views. Moving x1 by d
    # across its row puts each point d away from the other's line: d0 = d1 = d, so the symmetric distance
    # (H&Z 11.10) is d^2 + d^2 and the Sampson error (H&Z 11.9) is d^2 / 2.
    K = np.array([[[50.0, 0, 20], [0, 50, 15], [0, 0, 1]]], "float32")
    E = _np(essential_from_pose(np.eye(3, dtype="float32")[None], np.array([[1.0, 0, 0]], "float32")))
    F = _np(fundamental_from_essential(E, K, K))
    d = np.array([0.0, 1.0, 2.5, 4.0], "float32")
    p0 = np.array([[[3.0, 7.0], [10.0, 2.0], [30.0, 20.0], [1.0, 29.0]]], "float32")
    p1 = p0 + np.stack([np.array([5.0, -3.0, 0.5, 2.0]), d], -1)[None].astype("float32")
    d0, d1 = epipolar_line_distances(p0, p1, F)
    np.testing.assert_allclose(_np(d0)[0], d, atol=1e-4)
    np.testing.assert_allclose(_np(d1)[0], d, atol=1e-4)
    np.testing.assert_allclose(_np(symmetric_epipolar_distance(p0, p1, F))[0], 2 * d**2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_np(symmetric_epipolar_distance(p0, p1, F, squared=False))[0],
                               np.sqrt(2) * d, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_np(sampson_distance(p0, p1, F))[0], d**2 / 2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_np(sampson_distance(p0, p1, F, squared=False))[0], d / np.sqrt(2),
                               rtol=1e-4, atol=1e-4)
