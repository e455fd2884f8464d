"""Gradients through sampling and geometry are finite, and exact on a linear map."""

import keras
import numpy as np
from keras import ops

from tfmatch.geometry.depth_warp import warp_with_depth
from tfmatch.geometry.epipolar import sampson_distance
from tfmatch.geometry.homography import warp_image, warp_points
from tfmatch.layers.keypoints import sample_descriptors
from tfmatch.layers.sampling import bilinear_sample


def _grad(fn, *args):
    """Gradients of the scalar fn(*args) with respect to every arg, on the active backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xs = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            y = fn(*xs)
        return [g.numpy() for g in tape.gradient(y, xs)]
    if backend == "jax":
        import jax

        return [np.asarray(g) for g in jax.grad(fn, argnums=tuple(range(len(args))))(*args)]
    import torch

    xs = [torch.tensor(a, requires_grad=True) for a in args]
    fn(*xs).backward()
    return [x.grad.numpy() for x in xs]


def test_bilinear_gradient_on_a_linear_map_is_its_slope():
    ys, xs = np.meshgrid(np.arange(5), np.arange(6), indexing="ij")
    fmap = (2.0 * xs + 3.0 * ys).astype("float32")[None, :, :, None]
    points = np.array([[[1.3, 2.6], [4.2, 0.4]]], "float32")
    _, g_points = _grad(lambda f, p: ops.sum(bilinear_sample(f, p)), fmap, points)
    np.testing.assert_allclose(g_points, [[[2.0, 3.0], [2.0, 3.0]]], atol=1e-5)


def test_gradients_are_finite_through_the_geometry():
    rng = np.random.default_rng(0)
    fmap = rng.normal(size=(1, 8, 10, 4)).astype("float32")
    H = np.array([[[1.05, 0.02, 0.3], [-0.01, 0.98, 0.2], [1e-3, 0.0, 1.0]]], "float32")
    points = rng.uniform(0, 7, size=(1, 6, 2)).astype("float32")
    depth = np.full((1, 8, 10), 5.0, "float32")
    K = np.array([[[10.0, 0, 4.5], [0, 10, 3.5], [0, 0, 1]]], "float32")
    R = np.eye(3, dtype="float32")[None]
    t = np.array([[0.5, 0.1, 0.2]], "float32")
    F = np.array([[[0, 0, 0.01], [0, 0, -0.1], [-0.01, 0.1, 0.05]]], "float32")

    def loss(fmap, H, points, depth0):
        warped = warp_points(H, points)
        total = ops.sum(bilinear_sample(fmap, warped) ** 2)
        total += ops.sum(sample_descriptors(fmap, warped, stride=1, convention="centre"))
        total += ops.sum(warp_image(fmap, H, (8, 10)))
        points1, valid = warp_with_depth(points, depth0, depth + 0.2, K, K, R, t)  # plane at z = 5.2 in view 1
        total += ops.sum(ops.where(valid[..., None], points1, 0.0)) + ops.sum(ops.cast(valid, "float32"))
        total += ops.sum(sampson_distance(points, warped, F))
        return total

    grads = _grad(loss, fmap, H, points, depth)
    for name, g in zip(("fmap", "H", "points", "depth0"), grads):
        assert np.isfinite(g).all(), f"gradient of {name} is not finite"
        assert np.abs(g).sum() > 0, f"gradient of {name} is zero"
