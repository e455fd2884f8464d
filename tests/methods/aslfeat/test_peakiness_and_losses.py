"""Known answers: peakiness score, hardest-contrastive and circle losses, legacy resize, edge mask."""

import math

import keras
import numpy as np
import pytest
from tfmatch.layers.peakiness import Peakiness, dilated_average_pool, peakiness_score, peakiness_score_autodiff
from tfmatch.losses.contrastive import circle_loss, hardest_contrastive_loss
from tfmatch.methods.aslfeat.network import edge_mask, resize_bilinear_legacy, subpixel_offsets


def softplus(x):
    return math.log1p(math.exp(x))


def _peak_tensor():
    # [1, 3, 3, 2]: channel 0 has a single 3 in the centre, channel 1 is zero.
    y = np.zeros((1, 3, 3, 2), np.float32)
    y[0, 1, 1, 0] = 3.0
    return y


def test_peakiness_by_hand():
    layer = Peakiness(dilation=1, name="conv6_peakiness")
    score = np.asarray(layer(_peak_tensor(), training=False))[0]
    # Centre: 3x3 mean of channel 0 = 3/9; channel mean = 1.5. Channel 1: y = 0, mean 0, channel term 0 - 1.5.
    centre = max(softplus(3 - 1 / 3) * softplus(3 - 1.5), softplus(0.0) * softplus(-1.5))
    # Corner (0, 0): the reflected window reads rows (1, 0, 1) x cols (1, 0, 1): the centre 4 times -> 12/9.
    corner = max(softplus(0 - 12 / 9) * softplus(0.0), softplus(0.0) * softplus(0.0))
    # Edge (0, 1): rows (1, 0, 1) x cols (0, 1, 2): the centre twice -> 6/9.
    edge = max(softplus(0 - 6 / 9) * softplus(0.0), softplus(0.0) * softplus(0.0))
    np.testing.assert_allclose(score[1, 1], centre, rtol=1e-5)
    np.testing.assert_allclose(score[0, 0], corner, rtol=1e-5)
    np.testing.assert_allclose(score[0, 1], edge, rtol=1e-5)
    assert score.shape == (3, 3)


def test_peakiness_instance_max_ema_and_dilation():
    layer = Peakiness(dilation=1, name="conv6_peakiness")
    y = _peak_tensor()
    layer(y, training=True)  # m <- 1 - 0.01 (1 - 3) = 1.02, then y / 1.02
    np.testing.assert_allclose(float(layer.instance_max), 1.02, rtol=1e-6)
    score = np.asarray(layer(y, training=False))[0]
    v = 3 / 1.02
    np.testing.assert_allclose(score[1, 1], softplus(v - v / 9) * softplus(v / 2), rtol=1e-5)
    assert not layer.trainable_weights
    # Dilation 2 on a 5x5 map: the centre's window reads rows/cols (0, 2, 4).
    x = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    avg = np.asarray(dilated_average_pool(x, 2))[0, :, :, 0]
    np.testing.assert_allclose(avg[2, 2], np.mean(x[0, 0:5:2, 0:5:2, 0]), rtol=1e-6)
    # Corner (0, 0) with reflect pad 2: rows (2, 0, 2), cols (2, 0, 2).
    expected = np.mean([x[0, r, c, 0] for r in (2, 0, 2) for c in (2, 0, 2)])
    np.testing.assert_allclose(avg[0, 0], expected, rtol=1e-6)


def _score_and_gradient(score_fn, features, upstream, dilation, scale=None):
    import tensorflow as tf

    x = tf.constant(features)
    with tf.GradientTape() as tape:
        tape.watch(x)
        if scale is None:
            score = score_fn(x, dilation)
        else:  # the hand-written function divides by the scale inside; autodiff gets the divided map
            score = score_fn(x, dilation, scale) if score_fn is peakiness_score else score_fn(x / scale, dilation)
        value = tf.reduce_sum(score * upstream)
    return float(value), tape.gradient(value, x).numpy()


@pytest.mark.parametrize("scale", [None, 1.7, "per_sample"])
@pytest.mark.parametrize("shape,dilation", [((2, 7, 9, 5), 1), ((1, 11, 10, 4), 3), ((2, 8, 8, 3), 2),
                                            ((2, 4, 6, 3), 3)])  # 4 rows: the smallest height for dilation 3
def test_peakiness_hand_written_gradient_equals_autodiff(shape, dilation, scale):
    rng = np.random.default_rng(0)
    features = rng.normal(size=shape).astype(np.float32)
    upstream = rng.normal(size=shape[:3]).astype(np.float32)
    if scale == "per_sample":
        scale = rng.uniform(0.5, 2.0, size=(shape[0], 1, 1, 1)).astype(np.float32)
    value, grad = _score_and_gradient(peakiness_score, features, upstream, dilation, scale)
    ref_value, ref_grad = _score_and_gradient(peakiness_score_autodiff, features, upstream, dilation, scale)
    assert value == pytest.approx(ref_value, rel=1e-6)
    np.testing.assert_allclose(grad, ref_grad, atol=2e-6 * np.abs(ref_grad).max())
    # The border rows get gradient through the reflect padding too (the padding's gradient is folded back).
    assert np.abs(grad[:, 0]).sum() > 0 and np.abs(grad[:, :, -1]).sum() > 0


def test_peakiness_gradient_with_respect_to_the_scale():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    features = tf.constant(rng.normal(size=(2, 6, 7, 3)).astype(np.float32))
    upstream = rng.normal(size=(2, 6, 7)).astype(np.float32)
    for scale in (np.float32(1.3), rng.uniform(0.5, 2.0, size=(2, 1, 1, 1)).astype(np.float32)):
        grads = []
        for fn in (lambda s: peakiness_score(features, 2, s), lambda s: peakiness_score_autodiff(features / s, 2)):
            s = tf.constant(scale)
            with tf.GradientTape() as tape:
                tape.watch(s)
                value = tf.reduce_sum(fn(s) * upstream)
            grads.append(tape.gradient(value, s).numpy())
        assert grads[0].shape == np.shape(scale)
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_peakiness_of_bfloat16_features_is_float32_and_close():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(1, 9, 8, 4)).astype(np.float32)
    reference = np.asarray(peakiness_score(features, 2))
    score = peakiness_score(keras.ops.cast(features, "bfloat16"), 2)
    assert keras.backend.standardize_dtype(score.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(score), reference, rtol=0.05, atol=0.02)


def test_peakiness_groups_equal_separate_calls():
    """Two towers in one call of two groups: the same scores and the same running maximum as two calls."""
    rng = np.random.default_rng(4)
    part0 = 2.0 * rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    part1 = 5.0 * rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    separate, grouped = Peakiness(dilation=2, name="a"), Peakiness(dilation=2, name="b")
    expected = np.concatenate([np.asarray(separate(part0, training=True)),
                               np.asarray(separate(part1, training=True))])
    score = np.asarray(grouped(np.concatenate([part0, part1]), training=True, groups=2))
    np.testing.assert_allclose(score, expected, rtol=1e-6)
    np.testing.assert_allclose(float(grouped.instance_max), float(separate.instance_max), rtol=1e-7)
    m1 = 1.0 - 0.01 * (1.0 - part0.max())
    np.testing.assert_allclose(float(grouped.instance_max), m1 - 0.01 * (m1 - part1.max()), rtol=1e-6)


def test_peakiness_gradient_at_ties_goes_to_one_channel():
    # Two identical channels tie everywhere: autodiff of the max gives each half; the hand-written gradient gives
    # the whole to one of them (the backend's arg-max), which is the gradient of that channel's product alone.
    import tensorflow as tf

    from tfmatch.layers.peakiness import _peakiness_terms, _reflect_pad

    one = np.random.default_rng(1).normal(size=(1, 5, 6, 1)).astype(np.float32)
    features = np.concatenate([one, one], axis=-1)
    upstream = np.ones((1, 5, 6), np.float32)
    _, grad = _score_and_gradient(peakiness_score, features, upstream, 1)
    _, ref_grad = _score_and_gradient(peakiness_score_autodiff, features, upstream, 1)
    np.testing.assert_allclose(grad.sum(-1), ref_grad.sum(-1), atol=1e-6)
    x = tf.constant(features)
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, _, alpha, beta = _peakiness_terms(x, _reflect_pad(x, 1), 1)
        value = tf.reduce_sum(upstream * alpha[..., 0] * beta[..., 0])
    channel0_wins = tape.gradient(value, x).numpy()
    winner = 0 if np.allclose(grad, channel0_wins, atol=1e-6) else 1
    np.testing.assert_allclose(grad, channel0_wins[..., ::-1] if winner else channel0_wins, atol=1e-6)
    assert not np.allclose(grad[..., 0], grad[..., 1], atol=1e-3)  # not autodiff's equal shares


def _two_correspondences(far=True, padded=False):
    a = math.pi / 3
    d0 = [[1.0, 0.0], [0.0, 1.0]]
    d1 = [[math.cos(a), math.sin(a)], [0.0, 1.0]]
    p0 = [[0.0, 0.0], [30.0, 0.0]] if far else [[0.0, 0.0], [3.0, 0.0]]
    p1 = [[0.0, 0.0], [30.0, 0.0]] if far else [[0.0, 0.0], [3.0, 0.0]]
    valid = [True, True]
    if padded:  # a third, invalid row that must change nothing
        d0.append([0.6, 0.8])
        d1.append([0.8, 0.6])
        p0.append([60.0, 0.0])
        p1.append([60.0, 0.0])
        valid.append(False)
    as_batch = lambda v, dt="float32": np.asarray([v], dtype=dt)  # noqa: E731
    return as_batch(d0), as_batch(d1), as_batch(p0), as_batch(p1), as_batch(valid, "bool")


@pytest.mark.parametrize("padded", [False, True])
def test_hardest_contrastive_by_hand(padded):
    d0, d1, p0, p1, valid = _two_correspondences(padded=padded)
    # Distances sqrt(2 - 2 cos): D00 = 1, D01 = sqrt(2), D10 = sqrt(2 - sqrt(3)), D11 = sqrt(1e-6).
    d10 = math.sqrt(2 - 2 * math.sin(math.pi / 3))
    m0 = (1.0 - 0.2) + 0.5 * (max(0.0, 1 - math.sqrt(2)) + max(0.0, 1 - d10))  # row: D01; column: D10
    m1 = max(0.0, 1e-3 - 0.2) + 0.5 * (max(0.0, 1 - d10) + max(0.0, 1 - math.sqrt(2)))
    loss = hardest_contrastive_loss(d0, d1, p0, p1, valid, safe_radius=12.0, min_valid=1)
    np.testing.assert_allclose(np.asarray(loss), [(m0 + m1) / 2], rtol=1e-5)
    weights = np.asarray([[1.0, 3.0, 7.0][: d0.shape[1]]], np.float32)
    loss = hardest_contrastive_loss(d0, d1, p0, p1, valid, weights, safe_radius=12.0, min_valid=1)
    np.testing.assert_allclose(np.asarray(loss), [(m0 + 3 * m1) / (4 + 1e-6)], rtol=1e-5)


def test_hardest_contrastive_safe_radius_and_min_valid():
    d0, d1, p0, p1, valid = _two_correspondences(far=False)
    # Both points lie within the safe radius of each other: no negatives, only the positive term remains.
    loss = hardest_contrastive_loss(d0, d1, p0, p1, valid, safe_radius=12.0, min_valid=1)
    np.testing.assert_allclose(np.asarray(loss), [(0.8 + 0.0) / 2], rtol=1e-5)
    loss = hardest_contrastive_loss(d0, d1, p0, p1, valid, safe_radius=12.0, min_valid=3)
    np.testing.assert_allclose(np.asarray(loss), [0.0])


@pytest.mark.parametrize("padded", [False, True])
def test_circle_loss_by_hand(padded):
    d0, d1, p0, p1, valid = _two_correspondences(padded=padded)
    gamma, m = 4.0, 0.1
    s = [[0.5, 0.0], [math.sin(math.pi / 3), 1.0]]  # cosine similarities d0 . d1

    def term(pos, negatives):
        logit_pos = -gamma * (pos - (1 - m)) * max(1 + m - pos, 0.0)
        logits = [0.0]  # the masked diagonal contributes exp(0) (TFMatch's -128 shift)
        logits += [gamma * (n - m) * max(n + m, 0.0) for n in negatives]
        return softplus(logit_pos + math.log(sum(math.exp(v) for v in logits))) / gamma

    m0 = 0.5 * (term(s[0][0], [s[0][1]]) + term(s[0][0], [s[1][0]]))
    m1 = 0.5 * (term(s[1][1], [s[1][0]]) + term(s[1][1], [s[0][1]]))
    loss = circle_loss(d0, d1, p0, p1, valid, scale=gamma, margin=m, safe_radius=12.0, min_valid=1)
    np.testing.assert_allclose(np.asarray(loss), [(m0 + m1) / 2], rtol=1e-5)


def test_loss_shape_errors():
    d0, d1, p0, p1, valid = _two_correspondences()
    with pytest.raises(ValueError, match="points1"):
        hardest_contrastive_loss(d0, d1, p0, p1[:, :, :1], valid)


def test_resize_bilinear_legacy_known_values():
    x = np.asarray([[[0.0, 2.0], [4.0, 6.0]]], np.float32)  # [1, 2, 2]
    out = np.asarray(resize_bilinear_legacy(x, 4, 4))[0]
    # TF1 (no half-pixel centres): output i reads input i * 2 / 4 = i / 2; the far neighbour is clamped.
    np.testing.assert_allclose(out[0], [0.0, 1.0, 2.0, 2.0])
    np.testing.assert_allclose(out[:, 0], [0.0, 2.0, 4.0, 4.0])
    np.testing.assert_allclose(out[1, 1], 3.0)


@pytest.mark.parametrize("size_in, size_out", [((60, 80), (240, 320)), ((120, 160), (240, 320)),
                                               ((240, 320), (240, 320)), ((1, 5), (3, 15)), ((61, 79), (240, 320))])
def test_resize_bilinear_legacy_equals_tf1_on_both_paths(size_in, size_out):
    """Integer factors (the three ASLFeat levels when H and W are multiples of 4) take the gather-free path, other
    sizes the gather path: both must equal TF1's resize_bilinear (align_corners=False, no half-pixel centres)."""
    import tensorflow as tf

    maps = np.random.default_rng(0).standard_normal((2, *size_in)).astype(np.float32)
    expected = tf.compat.v1.image.resize_bilinear(maps[..., None], size_out, align_corners=False,
                                                  half_pixel_centers=False).numpy()[..., 0]
    np.testing.assert_allclose(np.asarray(resize_bilinear_legacy(maps, *size_out)), expected, atol=1e-5)


def test_edge_mask_and_subpixel_on_a_blob():
    ys, xs = np.mgrid[0:15, 0:15].astype(np.float32)
    blob = np.exp(-((xs - 7.3) ** 2 + (ys - 6.8) ** 2) / 8.0)[None]
    ridge = np.exp(-((xs - 7.0) ** 2) / 8.0)[None] * np.ones_like(blob)
    assert bool(np.asarray(edge_mask(blob, 10.0, dilation=3))[0, 7, 7])
    assert not bool(np.asarray(edge_mask(ridge, 10.0, dilation=3))[0, 7, 7])
    offset = np.asarray(subpixel_offsets(blob))[0, 7, 7]  # (dx, dy) towards the true peak (7.3, 6.8)
    assert 0.1 < offset[0] < 0.5 and -0.5 < offset[1] < -0.05
