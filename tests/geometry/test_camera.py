"""Known-answer tests for tfmatch.geometry.camera."""

import numpy as np
import pytest
from keras import ops

from tests.geometry._synthetic import scene
from tfmatch.geometry.camera import (
    backproject,
    essential_from_pose,
    project,
    relative_pose,
    scale_intrinsics,
    transform,
)


def _np(x):
    return ops.convert_to_numpy(x)


def test_project_of_backproject_is_identity():
    s = scene()
    depth = s["cam0"][..., 2]
    xyz = backproject(s["pix0"], depth, s["K0"])
    np.testing.assert_allclose(_np(xyz), s["cam0"], rtol=1e-4, atol=1e-4)
    pts, z = project(xyz, s["K0"])
    np.testing.assert_allclose(_np(pts), s["pix0"], atol=1e-3)
    np.testing.assert_allclose(_np(z), depth, rtol=1e-5)


def test_project_known_answer():
    K = np.array([[[10.0, 0, 5], [0, 20, 6], [0, 0, 1]]], "float32")
    pts, z = project(np.array([[[1.0, -1.0, 2.0], [0.0, 0.0, 4.0]]], "float32"), K)
    np.testing.assert_allclose(_np(pts), [[[10.0, -4.0], [5.0, 6.0]]], atol=1e-5)
    np.testing.assert_allclose(_np(z), [[2.0, 4.0]])


def test_transform_and_relative_pose_agree_with_world_points():
    s = scene()
    np.testing.assert_allclose(_np(transform(s["world"], s["R0"], s["t0"])), s["cam0"], atol=1e-4)
    R, t = relative_pose(s["R0"], s["t0"], s["R1"], s["t1"])
    np.testing.assert_allclose(_np(transform(s["cam0"], R, t)), s["cam1"], atol=1e-4)
    np.testing.assert_allclose(_np(R) @ np.swapaxes(_np(R), 1, 2), np.stack([np.eye(3)] * 2), atol=1e-5)


def test_essential_vanishes_on_exact_correspondences():
    s = scene()
    R, t = relative_pose(s["R0"], s["t0"], s["R1"], s["t1"])
    E = _np(essential_from_pose(R, t))
    x0 = s["cam0"] / s["cam0"][..., 2:]
    x1 = s["cam1"] / s["cam1"][..., 2:]
    residual = np.einsum("bni,bij,bnj->bn", x1, E, x0)
    np.testing.assert_allclose(residual, 0, atol=1e-5)
    # ... and is far from 0 for shuffled (wrong) correspondences: the check can fail.
    wrong = np.einsum("bni,bij,bnj->bn", x1[:, ::-1], E, x0)
    assert np.abs(wrong).max() > 1e-2
    # E = [t]_x R: for t = (1, 0, 0) and R = I it is the cross-product matrix of x.
    E_x = _np(essential_from_pose(np.eye(3, dtype="float32")[None], np.array([[1.0, 0, 0]], "float32")))
    np.testing.assert_allclose(E_x[0], [[0, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-7)


def test_scale_intrinsics():
    K = np.array([[[100.0, 0, 50], [0, 120, 40], [0, 0, 1]]] * 2, "float32")
    out = _np(scale_intrinsics(K, 0.5, np.array([2.0, 0.25], "float32")))
    np.testing.assert_allclose(out[0], [[50, 0, 25], [0, 240, 80], [0, 0, 1]])
    np.testing.assert_allclose(out[1], [[50, 0, 25], [0, 30, 10], [0, 0, 1]])
    # Projections scale with the image: pixel (x, y) -> (sx x, sy y).
    X = np.array([[[0.3, -0.2, 2.0]]] * 2, "float32")
    p, _ = project(X, K)
    p_scaled, _ = project(X, out)
    np.testing.assert_allclose(_np(p_scaled), _np(p) * np.array([[[0.5, 2.0]], [[0.5, 0.25]]]), rtol=1e-5)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="K must be"):
        project(np.zeros((1, 2, 3), "float32"), np.zeros((1, 3, 4), "float32"))
    with pytest.raises(ValueError, match="depth must be"):
        backproject(np.zeros((1, 2, 2), "float32"), np.zeros((1, 2, 1), "float32"), np.eye(3)[None])
