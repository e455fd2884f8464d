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
