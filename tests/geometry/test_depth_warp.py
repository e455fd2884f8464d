"""Known-answer tests for tfmatch.geometry.depth_warp: a fronto-parallel plane seen by translated cameras."""

import numpy as np
import pytest
from keras import ops

from tfmatch.geometry.depth_warp import interpolate_depth, warp_with_depth

H, W = 8, 10
Z = 5.0
F = 10.0


def _np(x):
    return ops.convert_to_numpy(x)


def _setup(t, depth1_value=None):
    K = np.array([[[F, 0, 4.5], [0, F, 3.5], [0, 0, 1]]], "float32")
    depth0 = np.full((1, H, W), Z, "float32")
    depth1 = np.full((1, H, W), Z + t[2] if depth1_value is None else depth1_value, "float32")
    R = np.eye(3, dtype="float32")[None]
    return depth0, depth1, K, R, np.array([t], "float32")


def _grid():
    ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], -1)[None].astype("float32")


def test_sideways_translation_gives_analytic_shift_and_out_of_view_points_are_invalid():
    # Camera 1 at x = -1 sees the plane at depth Z: x1 = x0 + 1 -> a shift of F * 1 / Z = 2 px.
    depth0, depth1, K, R, t = _setup([1.0, 0.0, 0.0])
    pts = _grid()
    p1, valid = warp_with_depth(pts, depth0, depth1, K, K, R, t)
    np.testing.assert_allclose(_np(p1), pts + np.array([2.0, 0.0]), atol=1e-4)
    expected_valid = pts[..., 0] + 2 <= W - 1
    np.testing.assert_array_equal(_np(valid), expected_valid)
    assert expected_valid.sum() == (W - 2) * H  # the check can fail both ways


def test_forward_translation_scales_about_the_principal_point():
    depth0, depth1, K, R, t = _setup([0.0, 0.0, 1.0])
    pts = np.array([[[4.5, 3.5], [0.0, 0.0], [9.0, 7.0], [6.0, 2.0]]], "float32")
    p1, valid = warp_with_depth(pts, depth0, depth1, K, K, R, t)
    expected = (pts - np.array([4.5, 3.5])) * Z / (Z + 1.0) + np.array([4.5, 3.5])
    np.testing.assert_allclose(_np(p1), expected, atol=1e-4)
    assert _np(valid).all()


def test_occluded_missing_and_inconsistent_depth_are_invalid():
    depth0, depth1, K, R, t = _setup([1.0, 0.0, 0.0])
    depth0[0, 0, 0] = 0.0  # no depth at (0, 0) in view 0
    depth1[0, 4, 5] = Z - 1.0  # an occluder in front of the plane in view 1, seen at (5, 4)
    depth1[0, 6, 3] = Z + 0.04  # within the 0.05 tolerance
    depth1[0, 6, 4] = Z + 0.06  # beyond it
    pts = np.array([[[0.0, 0.0], [3.0, 4.0], [1.0, 6.0], [2.0, 6.0], [1.0, 1.0], [-0.5, 2.0]]], "float32")
    _, valid = warp_with_depth(pts, depth0, depth1, K, K, R, t, depth_tolerance=0.05)
    np.testing.assert_array_equal(_np(valid), [[False, False, True, False, True, False]])


def test_interpolate_depth_needs_four_positive_neighbours():
    depth = np.arange(1, 1 + H * W, dtype="float32").reshape(1, H, W)
    depth[0, 5, 5] = 0.0
    pts = np.array([[[2.5, 3.5], [2.0, 3.0], [9.0, 7.0], [4.5, 4.5], [5.0, 5.0], [9.2, 1.0]]], "float32")
    z, valid = interpolate_depth(depth, pts)
    np.testing.assert_array_equal(_np(valid), [[True, True, True, False, False, False]])
    np.testing.assert_allclose(_np(z)[0, :3], [depth[0, 3:5, 2:4].mean(), depth[0, 3, 2], depth[0, 7, 9]])
    np.testing.assert_array_equal(_np(z)[0, 3:], 0.0)


def test_compiles_with_unknown_batch_and_size():
    tf = pytest.importorskip("tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("checks the TensorFlow backend's graph mode")
    S = tf.TensorSpec
    fn = tf.function(warp_with_depth, jit_compile=True, input_signature=[
        S([None, None, 2]), S([None, None, None]), S([None, None, None]), S([None, 3, 3]), S([None, 3, 3]),
        S([None, 3, 3]), S([None, 3])])
    depth0, depth1, K, R, t = _setup([1.0, 0.0, 0.0])
    pts = _grid()
    p1, valid = fn(pts, depth0, depth1, K, K, R, t)
    np.testing.assert_allclose(p1.numpy(), pts + np.array([2.0, 0.0]), atol=1e-4)
    np.testing.assert_array_equal(valid.numpy(), pts[..., 0] + 2 <= W - 1)
