"""top_k_of_uniform_keys picks the same entries as a full top-k, on every path."""

import numpy as np
import pytest
from keras import ops

from tfmatch.layers.random_subset import top_k_of_uniform_keys


def _keys(rng, rows, n, valid_fraction):
    keys = rng.uniform(0, 1, size=(rows, n)).astype(np.float32)
    return np.where(rng.uniform(size=(rows, n)) < valid_fraction, keys, -1.0).astype(np.float32)


def _as_sets(top, index):
    top, index = np.asarray(top), np.asarray(index)
    return [set(zip(np.round(t, 7), i)) for t, i in zip(top, index)]


@pytest.mark.parametrize("valid_fraction,k,rows", [(1.0, 64, 3), (0.3, 64, 3), (0.01, 64, 3), (1.0, 8, 200),
                                                    (0.5, 1, 200)])
def test_same_entries_as_a_full_top_k(valid_fraction, k, rows):
    rng = np.random.default_rng(0)
    keys = _keys(rng, rows, 20000, valid_fraction)
    top, index = top_k_of_uniform_keys(keys, k)
    ref_top, ref_index = ops.top_k(keys, k=k, sorted=False)
    assert tuple(top.shape) == (rows, k) and tuple(index.shape) == (rows, k)
    got, ref = np.asarray(top), np.asarray(ref_top)
    for row in range(rows):
        valid = ref[row] >= 0
        # The valid picks are the same (key, index) pairs; rows with fewer than k valid keys fill up with negatives.
        assert {p for p in _as_sets(top, index)[row] if p[0] >= 0} == {p for p in _as_sets(ref_top, ref_index)[row]
                                                                       if p[0] >= 0}
        assert (got[row] >= 0).sum() == valid.sum() == min(k, (keys[row] >= 0).sum())
    np.testing.assert_array_equal(np.take_along_axis(keys, np.asarray(index), 1)[got >= 0], got[got >= 0])


def test_rows_with_too_few_candidates_still_give_valid_entries():
    # Valid keys all close to 0 (not uniform): no candidate above the threshold of the first row, so it gets no
    # entry; the second row, uniform, gets the full top-k's.
    rng = np.random.default_rng(1)
    keys = np.stack([rng.uniform(0, 1e-3, size=5000), rng.uniform(0, 1, size=5000)]).astype(np.float32)
    top, index = top_k_of_uniform_keys(keys, 16)
    top, index = np.asarray(top), np.asarray(index)
    assert (top[0] < 0).all() and (index[0] == 0).all()
    ref_top, ref_index = ops.top_k(keys[1:], k=16, sorted=False)
    assert _as_sets(top[1:], index[1:]) == _as_sets(ref_top, ref_index)
