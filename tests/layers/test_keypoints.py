"""Known-answer tests for tfmatch.layers.keypoints."""

import numpy as np
import pytest
from keras import ops

from tfmatch.layers.keypoints import sample_descriptors, select_top_k


def _np(x):
    return ops.convert_to_numpy(x)


def test_top_k_with_border_fixed_n_and_valid_mask():
    s = np.zeros((2, 5, 6), "float32")
    s[0, 2, 3], s[0, 1, 1], s[0, 3, 4], s[0, 0, 2], s[0, 4, 5] = 0.9, 0.5, 0.7, 1.0, 0.95  # last two in border
    s[1, 2, 2] = 0.2
    kpts, scores, valid = select_top_k(s, 4, border=1, threshold=0.0)
    np.testing.assert_allclose(_np(kpts)[0], [[3, 2], [4, 3], [1, 1], [0, 0]])
    np.testing.assert_allclose(_np(scores)[0], [0.9, 0.7, 0.5, 0.0])
    np.testing.assert_array_equal(_np(valid), [[True, True, True, False], [True, False, False, False]])
    np.testing.assert_allclose(_np(kpts)[1], [[2, 2], [0, 0], [0, 0], [0, 0]])
    # Without border, the border maxima come first.
    kpts, scores, _ = select_top_k(s, 2)
    np.testing.assert_allclose(_np(kpts)[0], [[2, 0], [5, 4]])
    np.testing.assert_allclose(_np(scores)[0], [1.0, 0.95])
    # A threshold invalidates weak points but keeps the shape.
    _, _, valid = select_top_k(s, 3, border=1, threshold=0.6)
    np.testing.assert_array_equal(_np(valid)[0], [True, True, False])


def test_top_k_larger_than_the_map_is_padded():
    s = np.arange(6, dtype="float32").reshape(1, 2, 3)
    kpts, scores, valid = select_top_k(s, 8)
    assert tuple(kpts.shape) == (1, 8, 2)
    np.testing.assert_array_equal(_np(valid)[0], [True] * 6 + [False] * 2)
    np.testing.assert_allclose(_np(scores)[0], [5, 4, 3, 2, 1, 0, 0, 0])
    np.testing.assert_allclose(_np(kpts)[0, :2], [[2, 1], [1, 1]])
    with pytest.raises(ValueError, match="k must be"):
        select_top_k(s, 0)


@pytest.mark.parametrize("cell, size", [(2, (37, 50)), (3, (30, 31))])
def test_top_k_of_cells_equals_the_plain_top_k_after_nms(cell, size):
    from tfmatch.layers.nms import max_pool_nms

    rng = np.random.default_rng(cell)
    s = _np(max_pool_nms(rng.uniform(size=(2,) + size).astype("float32"), cell - 1))  # no ties: one max per cell
    for k in (40, 2000):  # fewer, and more slots than maxima
        plain = [_np(x) for x in select_top_k(s, k, border=3, threshold=0.0)]
        cells = [_np(x) for x in select_top_k(s, k, border=3, threshold=0.0, cell=cell)]
        for a, b in zip(plain, cells):
            np.testing.assert_array_equal(a, b)
    # A plateau (two equal neighbouring maxima) keeps one of the two.
    t = np.zeros((1, 6, 6), "float32")
    t[0, 2, 2] = t[0, 2, 3] = 1.0
    _, _, valid = select_top_k(t, 4, threshold=0.0, cell=2)
    assert _np(valid).sum() == 1
    with pytest.raises(ValueError, match="cell must be"):
        select_top_k(t, 4, cell=0)


def _dense():
    # [1, 2, 3, 2]: cell (i, j) holds (j + 1, 10 * (i + 1)); descriptors are distinct in direction.
    d = np.zeros((1, 2, 3, 2), "float32")
    for i in range(2):
        for j in range(3):
            d[0, i, j] = [j + 1, 10 * (i + 1)]
    return d


def _unit(v):
    v = np.asarray(v, "float64")
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_sample_descriptors_corner_convention():
    # Cell (i, j) sits at pixel (4 j, 4 i).
    kpts = np.array([[[4.0, 4.0], [2.0, 0.0], [0.0, 0.0]]], "float32")
    out = _np(sample_descriptors(_dense(), kpts, stride=4, convention="corner"))
    np.testing.assert_allclose(out[0], _unit([[2, 20], [1.5, 10], [1, 10]]), atol=1e-6)


def test_sample_descriptors_centre_convention():
    # Cell (i, j) sits at pixel (4 j + 1.5, 4 i + 1.5).
    kpts = np.array([[[5.5, 5.5], [3.5, 1.5], [1.5, 1.5], [0.0, 0.0]]], "float32")
    out = _np(sample_descriptors(_dense(), kpts, stride=4, convention="centre"))
    # Pixel (0, 0) is left of / above the first centre: clamped to cell (0, 0).
    np.testing.assert_allclose(out[0], _unit([[2, 20], [1.5, 10], [1, 10], [1, 10]]), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-6)
    # The two conventions differ by half a cell minus half a pixel, as the spec warns.
    corner = _np(sample_descriptors(_dense(), kpts, stride=4, convention="corner"))
    assert np.abs(corner - out).max() > 1e-2
    with pytest.raises(ValueError, match="convention"):
        sample_descriptors(_dense(), kpts, stride=4, convention="center")


def test_selection_and_sampling_compile_with_unknown_batch():
    tf = pytest.importorskip("tensorflow")
    import keras

    from tfmatch.layers.nms import max_pool_nms

    if keras.backend.backend() != "tensorflow":
        pytest.skip("checks the TensorFlow backend's graph mode")

    def detect(scores, dense):
        kpts, sc, valid = select_top_k(max_pool_nms(scores, 2), 5, border=2, threshold=0.0)
        return kpts, sc, valid, sample_descriptors(dense, kpts, 4, "centre")

    fn = tf.function(detect, jit_compile=True,
                     input_signature=[tf.TensorSpec([None, None, None]), tf.TensorSpec([None, None, None, 4])])
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=(2, 16, 20)).astype("float32")
    dense = rng.normal(size=(2, 4, 5, 4)).astype("float32")
    assert fn.get_concrete_function().structured_outputs[3].shape.as_list() == [None, 5, 4]
    for got, want in zip(fn(scores, dense), detect(scores, dense)):
        np.testing.assert_allclose(_np(got), _np(want), atol=1e-6)
