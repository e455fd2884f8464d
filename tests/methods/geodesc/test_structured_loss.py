"""Known-answer tests of the structured losses (tfmatch/losses/structured.py)."""

import math

import numpy as np
import pytest
from keras import ops

from tfmatch.losses import structured


def _case():
    # Row a of f0 matches row a of f1 for a < 2; row 2 is padding (still a negative in every softmax).
    f0 = np.array([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]], np.float32)
    f1 = np.array([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]], np.float32)
    # S = f0 f1^T = [[1, .6, 0], [0, .8, 1], [.6, 1, .8]]
    return f0, f1, np.array([2], np.int32)


def test_log_softmax_loss_hand_computed_3x3():
    f0, f1, n = _case()
    t = 2.0
    e = math.exp
    row0 = -math.log(e(2.0) / (e(2.0) + e(1.2) + e(0.0)))
    col0 = -math.log(e(2.0) / (e(2.0) + e(0.0) + e(1.2)))  # column 0 = [1, 0, .6]
    row1 = -math.log(e(1.6) / (e(0.0) + e(1.6) + e(2.0)))
    col1 = -math.log(e(1.6) / (e(1.2) + e(1.6) + e(2.0)))  # column 1 = [.6, .8, 1]
    expected = ((row0 + col0) / 2 + (row1 + col1) / 2) / 2
    got = float(structured.log_softmax_loss(f0, f1, n, temperature=t))
    assert got == pytest.approx(expected, rel=1e-5)


def test_log_softmax_loss_averages_samples_and_ignores_padding_rows():
    f0, f1, n = _case()
    single = float(structured.log_softmax_loss(f0, f1, n, 2.0))
    # A second sample whose padding row is garbage-but-different only enters denominators of the inlier rows.
    eye = np.eye(3, dtype=np.float32)[None, :, :2] * 0 + np.array([[[1, 0], [0, 1], [0, 1]]], np.float32)
    second = float(structured.log_softmax_loss(eye, eye, np.array([1], np.int32), 2.0))
    both = float(structured.log_softmax_loss(np.concatenate([f0, eye]), np.concatenate([f1, eye]),
                                             np.array([2, 1], np.int32), 2.0))
    assert both == pytest.approx((single + second) / 2, rel=1e-5)
    # second: row 0 = [1, 0, 0] -> -log(e^2 / (e^2 + 2)), column 0 likewise
    assert second == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)), rel=1e-5)


def test_hard_triplet_loss_hand_computed():
    f0 = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)
    swapped = f0[:, ::-1]
    n = np.array([2], np.int32)
    # identical rows: d_aa = sqrt(1e-6) = 1e-3, hardest negative sqrt(2)
    assert float(structured.hard_triplet_loss(f0, f0, n)) == pytest.approx(0.0, abs=1e-6)
    # swapped rows: d_aa = sqrt(2); the negatives are at 1e-3 < 0.008, so they are pushed out of the min (+10)
    expected = 1.0 + math.sqrt(2.0) - (1e-3 + 10.0)
    assert float(structured.hard_triplet_loss(f0, swapped, n)) == pytest.approx(max(expected, 0.0), abs=1e-6)
    f1 = np.array([[[0.6, 0.8], [0.8, 0.6]]], np.float32)  # S = [[.6, .8], [.8, .6]]
    d_pos, d_neg = math.sqrt(2 - 1.2), math.sqrt(2 - 1.6)
    assert float(structured.hard_triplet_loss(f0, f1, n)) == pytest.approx(1 + d_pos - d_neg, rel=1e-5)


def test_quadruple_ranking_loss_hand_computed():
    m0 = np.array([[0.0, 1.0, 2.0, 9.0]], np.float32)
    m1 = np.array([[0.0, 2.0, 1.0, -9.0]], np.float32)  # the 4th row is padding
    # pairs (0,1): 1*2 = 2 -> 0; (0,2): 2*1 = 2 -> 0; (1,2): 1*(-1) = -1 -> 2; both orders: 4 / (3*2)
    got = float(structured.quadruple_ranking_loss(m0, m1, np.array([3], np.int32)))
    assert got == pytest.approx(4.0 / 6.0, rel=1e-6)


def test_matching_accuracy_and_shape_errors():
    f0, f1, n = _case()
    # row 0 and column 0 pick their match; row 1 = [0, .8, 1] and column 1 = [.6, .8, 1] pick the padding row.
    assert float(structured.matching_accuracy(f0, f1, n)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="structured.py"):
        structured.log_softmax_loss(f0[0], f1[0], n)


def test_temperature_gradient_is_finite_and_nonzero():
    import tensorflow as tf

    f0, f1, n = _case()
    t = tf.Variable(1.0)
    with tf.GradientTape() as tape:
        loss = structured.log_softmax_loss(ops.convert_to_tensor(f0), ops.convert_to_tensor(f1), n, t)
    grad = tape.gradient(loss, t)
    assert np.isfinite(float(grad)) and abs(float(grad)) > 1e-4
