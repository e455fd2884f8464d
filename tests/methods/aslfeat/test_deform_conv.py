"""Deformable convolution: plain-conv equivalence, zero init, gradients vs finite differences, restore by path."""

import numpy as np
import pytest
from keras import ops

from tests.methods.aslfeat._grad import gradients
from tfmatch.layers.deform_conv import DeformConv2D, deformable_sample


def _plain_conv(x, kernel):
    return np.asarray(ops.conv(x, kernel, strides=1, padding="same"))


def test_zero_offsets_unit_modulation_equals_plain_conv():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 3)).astype("float64")
    layer = DeformConv2D(4, deform_type="u", name="conv", dtype="float64")
    layer.build(x.shape)
    layer.kernel.assign(rng.normal(size=(3, 3, 3, 4)))
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    out = layer.convolve(padded, np.zeros((2, 5, 7, 9, 2)), amplitude_logits=None)
    np.testing.assert_allclose(np.asarray(out), _plain_conv(x, np.asarray(layer.kernel)), atol=1e-12)


@pytest.mark.parametrize("deform_type", ["u", "a", "h"])
def test_fresh_layer_is_half_the_plain_conv(deform_type):
    # Zero-initialised offset/orientation/scale/amplitude convs: regular grid, amplitude sigmoid(0) = 0.5.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 6, 5, 2)).astype("float64")
    layer = DeformConv2D(3, deform_type=deform_type, name="conv", dtype="float64")
    out = np.asarray(layer(x))
    np.testing.assert_allclose(out, 0.5 * _plain_conv(x, np.asarray(layer.kernel)), atol=1e-12)
    assert layer.kernel.path == "conv/kernel"
    assert tuple(layer.kernel.shape) == (3, 3, 2, 3)


def test_integer_offsets_shift_the_window():
    # A tap moved by (dy, dx) = (0, 1) everywhere reads the next column: same as convolving the shifted input.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 4, 6, 1)).astype("float64")
    layer = DeformConv2D(1, deform_type="u", name="conv", dtype="float64")
    layer.build(x.shape)
    kernel = np.zeros((3, 3, 1, 1))
    kernel[1, 1, 0, 0] = 1.0  # centre tap only: output = input sampled at (i + dy, j + dx)
    layer.kernel.assign(kernel)
    offsets = np.zeros((1, 4, 6, 9, 2))
    offsets[..., 1] = 1.0
    out = np.asarray(layer.convolve(np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]), offsets))
    expected = np.concatenate([x[:, :, 1:], np.zeros((1, 4, 1, 1))], axis=2)  # last column reads zero padding
    np.testing.assert_allclose(out, expected, atol=1e-12)
    # Half a pixel: the mean of two neighbouring columns.
    offsets[..., 1] = 0.5
    out = np.asarray(layer.convolve(np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]), offsets))
    np.testing.assert_allclose(out, 0.5 * (x + expected), atol=1e-12)


def _fractional_offsets(rng, shape):
    # Bilinear sampling is piecewise linear: keep sample points away from integer coordinates (kinks).
    magnitude = rng.uniform(0.2, 0.8, size=shape)
    return magnitude * rng.choice([-1.0, 1.0], size=shape) + rng.integers(-1, 2, size=shape)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    batch, h, w, cin, cout = 1, 3, 4, 2, 2
    layer = DeformConv2D(cout, deform_type="u", name="conv", dtype="float64")
    layer.build((batch, h, w, cin))
    layer.kernel.assign(rng.normal(size=(3, 3, cin, cout)))
    padded = rng.normal(size=(batch, h + 2, w + 2, cin))
    offsets = _fractional_offsets(rng, (batch, h, w, 9, 2))
    logits = rng.normal(size=(batch, h, w, 9))
    weights = rng.normal(size=(batch, h, w, cout))

    def objective(p, o, a):
        return ops.sum(layer.convolve(p, o, a) * weights)

    analytic = gradients(objective, padded, offsets, logits)
    eps = 1e-6
    for arg_index, base in enumerate((padded, offsets, logits)):
        flat_indices = rng.choice(base.size, size=min(base.size, 10), replace=False)
        for flat in flat_indices:
            idx = np.unravel_index(flat, base.shape)
            args = [padded, offsets, logits]
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[arg_index][idx] += eps
            minus[arg_index][idx] -= eps
            numeric = (float(objective(*plus)) - float(objective(*minus))) / (2 * eps)
            assert abs(numeric - analytic[arg_index][idx]) < 1e-6 * max(1.0, abs(numeric)), (arg_index, idx)
    assert np.abs(analytic[1]).sum() > 0  # offsets do receive gradient


@pytest.mark.parametrize("deform_type", ["a", "h"])
def test_constrained_offsets_follow_their_geometry(deform_type):
    layer = DeformConv2D(1, deform_type=deform_type, name="conv", dtype="float64")
    angle = np.deg2rad(20.0)
    x = np.zeros((1, 3, 3, 1))
    layer.build(x.shape)
    if deform_type == "a":
        # Orientation bias (cos, sin) = (0, 1): 90 degrees; scale 0 -> exp(tanh(0)) = 1.
        layer.orientation.bias.assign(np.array([0.0, 1.0]))
    else:
        # Corner moves (0.95 tanh of the offset conv) of a similarity: rotation by 20 degrees, scale 0.9; the
        # fitted homography must reproduce it on every tap.
        corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], np.float64)
        targets = 0.9 * corners @ np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        moves = (targets - corners).reshape(-1) / 0.95
        layer.offset.bias.assign(np.arctanh(moves))
    offsets = np.asarray(layer.compute_offsets(np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])))[0, 1, 1]
    r = np.array([-1.0, 0.0, 1.0])
    ty, tx = np.repeat(r, 3), np.tile(r, 3)
    if deform_type == "a":
        # [x y] [[cos, sin], [-sin, cos]] with cos 0, sin 1 -> (-y, x)
        new_x, new_y = -ty, tx
    else:
        new_x = 0.9 * (np.cos(angle) * tx - np.sin(angle) * ty)
        new_y = 0.9 * (np.sin(angle) * tx + np.cos(angle) * ty)
    np.testing.assert_allclose(offsets[:, 0], new_y - ty, atol=1e-9)
    np.testing.assert_allclose(offsets[:, 1], new_x - tx, atol=1e-9)


def test_get_config_round_trip():
    layer = DeformConv2D(5, deform_type="a", modulated=False, name="conv6")
    clone = DeformConv2D.from_config(layer.get_config())
    assert clone.filters == 5 and clone.deform_type == "a" and clone.modulated is False
    with pytest.raises(ValueError, match="deform_type"):
        DeformConv2D(3, deform_type="x")


def _compiled(fn):
    """``fn`` compiled with XLA on the active backend (the export runs the SavedModel with ``jit_compile``); on a
    backend without XLA (torch), ``fn`` itself, so the eager result is still checked against the reference."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def _reference_sample(padded, offsets, k):
    """numpy deformable_sample: positions clipped to the padded map, bilinear from clipped integer neighbours."""
    b, hp, wp, c = padded.shape
    h, w = hp - k + 1, wp - k + 1
    ti, tj = np.repeat(np.arange(k), k), np.tile(np.arange(k), k)
    y = np.clip(np.arange(h)[:, None, None] + ti + offsets[..., 0], 0, hp - 1)
    x = np.clip(np.arange(w)[None, :, None] + tj + offsets[..., 1], 0, wp - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, hp - 1), np.minimum(x0 + 1, wp - 1)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    bi = np.arange(b)[:, None, None, None]
    return ((padded[bi, y0, x0] * (1 - wx) + padded[bi, y0, x1] * wx) * (1 - wy)
            + (padded[bi, y1, x0] * (1 - wx) + padded[bi, y1, x1] * wx) * wy)


def test_samples_outside_the_map_are_clipped_the_same_eagerly_and_under_xla():
    # Issue #4 hypothesis: out-of-range gather indices behave differently eagerly (TF: error on CPU, zeros on GPU)
    # and under XLA (clamped). deformable_sample clips the positions and both neighbours before any gather, so
    # offsets far outside the map (here up to 40 px on a 6 x 7 map, and exactly on the last row/column) read the
    # border values the same way everywhere, as the numpy reference.
    rng = np.random.default_rng(4)
    padded = rng.normal(size=(2, 6, 7, 3)).astype("float32")
    offsets = rng.uniform(-40.0, 40.0, size=(2, 4, 5, 9, 2)).astype("float32")
    offsets[:, :, :, 0, 0] = 5.0 - np.arange(4)[None, :, None]  # tap (0, 0) lands exactly on the last row
    outside = (np.arange(4)[:, None, None] + np.repeat(np.arange(3), 3) + offsets[..., 0] > 5) | (
        np.arange(4)[:, None, None] + np.repeat(np.arange(3), 3) + offsets[..., 0] < 0)
    assert outside.mean() > 0.5  # most samples really lie outside the map
    reference = _reference_sample(padded.astype("float64"), offsets.astype("float64"), 3)
    eager = np.asarray(deformable_sample(padded, offsets, 3))
    xla = np.asarray(_compiled(lambda p, o: deformable_sample(p, o, 3))(padded, offsets))
    np.testing.assert_allclose(eager, reference, atol=1e-5)
    np.testing.assert_allclose(xla, reference, atol=1e-5)
