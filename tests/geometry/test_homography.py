"""Known-answer tests for tfmatch.geometry.homography."""

import numpy as np
import pytest
from keras import ops

from tfmatch.geometry.homography import corners_error, invert_homography, warp_image, warp_points


def _np(x):
    return ops.convert_to_numpy(x)


def _translation(tx, ty):
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], "float32")


def _images(b=2, h=6, w=7, c=2):
    return np.random.default_rng(1).uniform(0, 255, size=(b, h, w, c)).astype("float32")


def _points(b=2, n=10):
    return np.random.default_rng(2).uniform(-5, 20, size=(b, n, 2)).astype("float32")


def test_identity_leaves_points_and_images_unchanged():
    eye = np.stack([np.eye(3, dtype="float32")] * 2)
    pts = _points()
    np.testing.assert_allclose(_np(warp_points(eye, pts)), pts, atol=1e-5)
    images = _images()
    np.testing.assert_allclose(_np(warp_image(images, eye, (6, 7))), images, atol=1e-3)


def test_translation_shifts_points_and_images_by_the_exact_amount():
    H = np.stack([_translation(2, 1), _translation(-1, 3)])
    pts = _points()
    np.testing.assert_allclose(_np(warp_points(H, pts)), pts + np.array([[[2, 1]], [[-1, 3]]]), atol=1e-5)
    images = _images()
    out = _np(warp_image(images, H, (6, 7)))
    # Output pixel (x, y) shows input (x - tx, y - ty); pixels with no source are 0.
    np.testing.assert_allclose(out[0, 1:, 2:], images[0, :5, :5], atol=1e-3)
    np.testing.assert_array_equal(out[0, 0], 0)
    np.testing.assert_array_equal(out[0, :, :2], 0)
    np.testing.assert_allclose(out[1, 3:, :6], images[1, :3, 1:], atol=1e-3)
    np.testing.assert_array_equal(out[1, :3], 0)
    np.testing.assert_array_equal(out[1, :, 6], 0)


def test_half_pixel_translation_averages_neighbours():
    H = np.stack([_translation(0.5, 0)] * 2)
    images = _images()
    out = _np(warp_image(images, H, (6, 7)))
    np.testing.assert_allclose(out[:, :, 1:], (images[:, :, :-1] + images[:, :, 1:]) / 2, atol=1e-3)
    # Output x = 0 samples input x = -0.5: half of pixel 0, half of the zero outside.
    np.testing.assert_allclose(out[:, :, 0], images[:, :, 0] / 2, atol=1e-3)


def test_image_content_follows_warp_points():
    # A scale by 2 about the origin plus a shift: input pixel (3, 2) lands on output (7, 5).
    H = np.array([[[2, 0, 1], [0, 2, 1], [0, 0, 1]]], "float32")
    image = np.zeros((1, 6, 7, 1), "float32")
    image[0, 2, 3, 0] = 1.0
    out = _np(warp_image(image, H, (12, 14)))
    assert out[0, 5, 7, 0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(_np(warp_points(H, np.array([[[3.0, 2.0]]], "float32"))), [[[7, 5]]], atol=1e-5)
    # Upsampled by 2, the pixel becomes a tent 0.5, 1, 0.5 along each axis: total weight 2 x 2.
    assert out.sum() == pytest.approx(4.0, abs=1e-4)


def test_projective_warp_matches_numpy_and_inverts():
    H = np.array([[[1.1, 0.05, 3], [-0.02, 0.95, -2], [1e-3, -2e-3, 1]],
                  [[0.9, -0.1, 1], [0.1, 1.2, 0.5], [-1e-3, 1e-3, 1.05]]], "float32")
    pts = _points()
    ph = np.concatenate([pts, np.ones_like(pts[..., :1])], -1) @ np.swapaxes(H, 1, 2)
    np.testing.assert_allclose(_np(warp_points(H, pts)), ph[..., :2] / ph[..., 2:], rtol=1e-5, atol=1e-4)
    back = warp_points(invert_homography(H), warp_points(H, pts))
    np.testing.assert_allclose(_np(back), pts, atol=1e-3)
    inv = np.linalg.inv(H.astype("float64"))
    np.testing.assert_allclose(_np(invert_homography(H)), inv / inv[:, 2:, 2:], rtol=1e-4, atol=1e-6)


def test_corners_error():
    eye = np.stack([np.eye(3, dtype="float32")] * 2)
    H = np.stack([_translation(3, 4), np.eye(3, dtype="float32")])
    np.testing.assert_allclose(_np(corners_error(H, eye, 10, 20)), [5.0, 0.0], atol=1e-5)
    # A scale by 2 about the origin moves corners by |c|: 0, 19, 9, sqrt(19^2 + 9^2) -> mean.
    S = np.stack([np.diag([2.0, 2.0, 1.0]).astype("float32")] * 2)
    expected = (0 + 19 + 9 + np.hypot(19, 9)) / 4
    np.testing.assert_allclose(_np(corners_error(S, eye, 10, 20)), [expected] * 2, rtol=1e-5)


def test_warp_image_compiles_with_unknown_batch():
    tf = pytest.importorskip("tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("checks the TensorFlow backend's graph mode")
    fn = tf.function(lambda im, h: warp_image(im, h, (6, 7)),
                     input_signature=[tf.TensorSpec([None, 6, 7, 2]), tf.TensorSpec([None, 3, 3])],
                     jit_compile=True)
    H = np.stack([_translation(2, 1), _translation(-1, 3)])
    images = _images()
    np.testing.assert_allclose(fn(images, H).numpy(), _np(warp_image(images, H, (6, 7))), atol=1e-3)
