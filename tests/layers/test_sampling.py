"""Known-answer tests for tfmatch.layers.sampling."""

import keras
import numpy as np
import pytest
from keras import ops

from tfmatch.layers.sampling import bilinear_sample, points_in_image


def _np(x):
    return ops.convert_to_numpy(x)


def _map():
    rng = np.random.default_rng(0)
    return rng.normal(size=(2, 5, 6, 3)).astype("float32")


def test_integer_points_return_the_pixel():
    fmap = _map()
    ys, xs = np.meshgrid(np.arange(5), np.arange(6), indexing="ij")
    pts = np.stack([xs.ravel(), ys.ravel()], -1).astype("float32")
    pts = np.stack([pts, pts[::-1]])  # [2, 30, 2], batch items differ
    out = _np(bilinear_sample(fmap, pts))
    for b in range(2):
        expected = fmap[b, pts[b, :, 1].astype(int), pts[b, :, 0].astype(int)]
        np.testing.assert_allclose(out[b], expected, rtol=0, atol=1e-6)


def test_half_pixels_return_the_mean():
    fmap = _map()
    pts = np.array([[[1.5, 2.0], [3.0, 0.5], [2.5, 3.5]]] * 2, "float32")
    out = _np(bilinear_sample(fmap, pts))
    for b in range(2):
        np.testing.assert_allclose(out[b, 0], (fmap[b, 2, 1] + fmap[b, 2, 2]) / 2, atol=1e-6)
        np.testing.assert_allclose(out[b, 1], (fmap[b, 0, 3] + fmap[b, 1, 3]) / 2, atol=1e-6)
        np.testing.assert_allclose(out[b, 2], fmap[b, 3:5, 2:4].mean(axis=(0, 1)), atol=1e-6)


def test_general_point_matches_reference_formula():
    fmap = _map()
    x, y = 3.3, 1.8
    out = _np(bilinear_sample(fmap, np.array([[[x, y]]] * 2, "float32")))
    wx, wy = x - 3, y - 1
    ref = ((1 - wy) * ((1 - wx) * fmap[:, 1, 3] + wx * fmap[:, 1, 4])
           + wy * ((1 - wx) * fmap[:, 2, 3] + wx * fmap[:, 2, 4]))
    np.testing.assert_allclose(out[:, 0], ref, atol=1e-5)


def test_out_of_map_points_are_clamped():
    fmap = _map()
    pts = np.array([[[-3.0, -1.0], [5.0, 4.0], [9.0, 2.0], [5.7, 4.9]]] * 2, "float32")
    out = _np(bilinear_sample(fmap, pts))
    np.testing.assert_allclose(out[:, 0], fmap[:, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], fmap[:, 4, 5], atol=1e-6)
    np.testing.assert_allclose(out[:, 2], fmap[:, 2, 5], atol=1e-6)
    np.testing.assert_allclose(out[:, 3], fmap[:, 4, 5], atol=1e-6)


def test_unknown_batch_size_under_tf_function_and_xla():
    tf = pytest.importorskip("tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("checks the TensorFlow backend's graph mode")
    fmap = _map()
    pts = np.array([[[1.5, 2.0], [0.0, 4.0]]] * 2, "float32")
    expected = _np(bilinear_sample(fmap, pts))
    for jit in (False, True):
        fn = tf.function(
            bilinear_sample,
            input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, 2])],
            jit_compile=jit,
        )
        assert fn.get_concrete_function().structured_outputs.shape.as_list() == [None, None, 3]
        np.testing.assert_allclose(fn(fmap, pts).numpy(), expected, atol=1e-6)


def test_mixed_precision_keeps_dtype():
    fmap = _map().astype("float16")
    out = bilinear_sample(fmap, np.array([[[1.5, 2.0]]] * 2, "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="points"):
        bilinear_sample(_map(), np.zeros((2, 4, 3), "float32"))
    with pytest.raises(ValueError, match="feature_map"):
        bilinear_sample(np.zeros((5, 6, 3), "float32"), np.zeros((2, 4, 2), "float32"))


def test_points_in_image():
    pts = np.array([[[0, 0], [5, 4], [5.01, 4], [-0.01, 2], [2, 2], [1, 1], [4, 3], [4.5, 3]]], "float32")
    np.testing.assert_array_equal(
        _np(points_in_image(pts, 5, 6)), [[True, True, False, False, True, True, True, True]])
    np.testing.assert_array_equal(
        _np(points_in_image(pts, 5, 6, border=1)), [[False, False, False, False, True, True, True, False]])
