"""Checkpoints keyed by variable path: exact round trip, partial restore report, pruning, atomic writes."""

import os

import keras
import numpy as np
import pytest

from tests.support.toy import ToyDescriptor
from tfmatch.runtime import checkpoints


def _built(**kwargs):
    model = ToyDescriptor(**kwargs)
    model.build_for_inference(16, 16)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    return model, optimizer


def test_round_trip_is_exact_and_includes_optimizer(tmp_path):
    model, optimizer = _built()
    optimizer.iterations.assign(7)
    path = checkpoints.save(str(tmp_path), model, optimizer, step=7)
    assert os.path.basename(path) == "ckpt-00000007.h5" and not os.path.exists(path + ".tmp")
    other, other_opt = _built()
    report = checkpoints.restore(str(tmp_path), other, other_opt)
    assert report.step == 7 and report.optimizer_restored and not report.missing_in_checkpoint
    for a, b in zip(model.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(other_opt.iterations.numpy()) == 7


def test_partial_restore_reports_mismatch_and_exclusions(tmp_path):
    model, _ = _built()
    checkpoints.save(str(tmp_path), model, step=1)
    wider, _ = _built(descriptor_dim=32)
    with pytest.raises(ValueError, match="shape mismatch"):
        checkpoints.restore(str(tmp_path), wider, strict=True)
    report = checkpoints.restore(str(tmp_path), wider, exclude=("conv0/bias",), strict=False)
    assert report.restored == ["conv0/kernel"] and report.excluded == ["conv0/bias"]
    assert len(report.shape_mismatch) == 2 and "conv1/kernel" in report.summary()
    np.testing.assert_array_equal(wider.conv0.kernel.numpy(), model.conv0.kernel.numpy())


def test_keeps_only_the_newest(tmp_path):
    model, _ = _built()
    for step in (1, 2, 3, 4):
        checkpoints.save(str(tmp_path), model, step=step, keep=2)
    assert [s for s, _ in checkpoints.list_checkpoints(str(tmp_path))] == [3, 4]
    assert checkpoints.latest_checkpoint(str(tmp_path)).endswith("ckpt-00000004.h5")


def test_missing_and_corrupt_checkpoints_are_named(tmp_path):
    model, _ = _built()
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        checkpoints.restore(str(tmp_path), model)
    bad = tmp_path / "checkpoints" / "ckpt-00000005.h5"
    bad.parent.mkdir()
    bad.write_bytes(b"not hdf5")
    with pytest.raises(OSError, match="ckpt-00000005.h5: cannot read checkpoint"):
        checkpoints.restore(str(tmp_path), model)
