"""Known-answer tests for tfmatch.layers.nms."""

import numpy as np
import pytest
from keras import ops

from tfmatch.layers.nms import max_pool_nms


def _scores():
    s = np.zeros((2, 6, 7), "float32")
    s[0, 1, 1], s[0, 1, 2], s[0, 2, 3] = 0.5, 0.9, 0.8  # 0.9 beats both neighbours at radius 1
    s[0, 4, 5], s[0, 5, 6] = 0.7, 0.6  # 0.6 is next to 0.7: suppressed
    s[0, 5, 0] = 0.3  # alone in its corner: kept although the window leaves the map
    s[1] = np.arange(42, dtype="float32").reshape(6, 7) / 42  # increasing: only the last pixel survives
    return s


def test_hand_made_map_radius_1():
    out = ops.convert_to_numpy(max_pool_nms(_scores(), 1))
    expected = np.zeros((2, 6, 7), "float32")
    expected[0, 1, 2], expected[0, 4, 5], expected[0, 5, 0] = 0.9, 0.7, 0.3
    expected[1, 5, 6] = 41 / 42
    np.testing.assert_allclose(out, expected)


def test_radius_2_suppresses_farther_neighbours():
    out = ops.convert_to_numpy(max_pool_nms(_scores(), 2))
    kept = np.argwhere(out[0] > 0).tolist()
    # 0.7 at (4, 5) is 2 rows / 2 cols from 0.8 at (2, 3): suppressed, although 0.8 itself is suppressed by
    # 0.9 (one pass of max-pooling, no re-detection); 0.3 at (5, 0) is 3 columns from 0.7 and stays.
    assert kept == [[1, 2], [5, 0]]


def test_redetection_rounds_recover_maxima_next_to_suppressed_pixels():
    out = ops.convert_to_numpy(max_pool_nms(_scores(), 2, iterations=2))
    # 0.7 at (4, 5) lies outside the window of the kept 0.9; once 0.8 is suppressed it is a maximum again.
    assert np.argwhere(out[0] > 0).tolist() == [[1, 2], [4, 5], [5, 0]]
    np.testing.assert_allclose(out[0, 4, 5], 0.7)
    # Radius 1 on item 0: every suppressed pixel touches a kept maximum, nothing to recover.
    once = ops.convert_to_numpy(max_pool_nms(_scores(), 1))
    twice = ops.convert_to_numpy(max_pool_nms(_scores(), 1, iterations=2))
    np.testing.assert_array_equal(twice[0], once[0])
    # On the ramp (item 1) the pixel two columns left of the kept corner becomes a maximum.
    assert once[1, 5, 4] == 0 and twice[1, 5, 4] == np.float32(39 / 42)


def test_radius_0_is_identity_and_bad_arguments_fail():
    s = _scores()
    np.testing.assert_array_equal(ops.convert_to_numpy(max_pool_nms(s, 0)), s)
    with pytest.raises(ValueError, match="radius"):
        max_pool_nms(s, -1)
    with pytest.raises(ValueError, match="scores"):
        max_pool_nms(s[0], 1)
