"""The worker pool's transport: integer-valued float outputs travel as uint8 and come back identical."""

import numpy as np

from tfmatch.data import worker_pool


def test_integer_valued_floats_travel_as_uint8_and_come_back_equal():
    mask = np.array([[0.0, 1.0], [255.0, 7.0]], np.float32)
    sent, dtype = worker_pool._compact(mask)
    assert sent.dtype == np.uint8
    (back,) = worker_pool._restore([(sent, dtype)])
    assert back.dtype == np.float32 and np.array_equal(back, mask)


def test_values_that_uint8_cannot_hold_travel_unchanged():
    for values in (np.array([0.5, 1.0], np.float32), np.array([256.0, 1.0], np.float32),
                   np.array([-1.0, 1.0], np.float64), np.array([np.nan, 1.0], np.float32),
                   np.array([3, 4], np.int64)):
        sent, dtype = worker_pool._compact(values)
        assert dtype is None and sent is values
