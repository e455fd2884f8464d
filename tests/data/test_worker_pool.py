"""The worker pool's transport: batches through spool files, binary maps as uint8, nothing left behind."""

import itertools
import os

import numpy as np
import pytest

from tfmatch.data import worker_pool


class Source:
    """A module-level source the spawned workers can import: sample i is a function of i."""

    def __init__(self, size=4):
        self.size = size

    def sample(self, index):
        image = np.full((self.size, self.size), index + 0.5, np.float32)
        mask = (np.arange(self.size * self.size).reshape(self.size, self.size) % (index + 2) == 0).astype(np.float32)
        return image, mask


def test_batches_come_back_equal_and_binary_maps_as_uint8(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the spool directory goes here, so the test can see it emptied
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    batches = list(worker_pool.batches_from_processes(Source, (), iter(range(7)), 2, 3, (None, np.uint8)))
    assert [len(b[0]) for b in batches] == [3, 3, 1]
    images = np.concatenate([b[0] for b in batches])
    masks = np.concatenate([b[1] for b in batches])
    expected = [Source().sample(i) for i in range(7)]
    assert images.dtype == np.float32 and np.array_equal(images, np.stack([e[0] for e in expected]))
    assert masks.dtype == np.uint8 and np.array_equal(masks, np.stack([e[1] for e in expected]))
    assert os.listdir(tmp_path) == []  # spool directory and its files removed


def test_a_transport_dtype_that_cannot_hold_the_values_is_an_error():
    with pytest.raises(ValueError, match="output 0 of Source is not exactly representable as uint8"):
        next(worker_pool.batches_from_processes(Source, (), itertools.count(), 1, 2, (np.uint8, None)))


def test_float_outputs_are_cast_like_the_in_process_pipeline():
    """float32 transport of a float64 output rounds (as np.asarray(v, float32) did), it does not raise."""
    batch = next(worker_pool.batches_from_processes(Float64Source, (), itertools.count(), 1, 2, (np.float32,)))
    assert batch[0].dtype == np.float32 and np.allclose(batch[0], 0.1)


class Float64Source:
    def sample(self, index):
        return (np.full((2, 2), 0.1, np.float64),)
