"""data_tools/extract_regional_features.py on a tiny GL3D tree, read back by the patch dataset."""

import os

import numpy as np
import pytest

from data_tools import extract_regional_features as erf
from tests.methods.geodesc.test_gl3d_patches import _tiny_gl3d
from tfmatch.data import gl3d_patches
from tfmatch.methods.contextdesc import build_regional_trunk, preprocess_regional


def test_extract_writes_trunk_features_resumes_and_feeds_the_dataset(tmp_path):
    root = _tiny_gl3d(str(tmp_path / "gl3d"))
    with pytest.warns(UserWarning, match="RANDOM"):  # no weights anywhere: random trunk, loudly
        trunk = build_regional_trunk(None)
    weights = str(tmp_path / "trunk.weights.h5")
    trunk.save_weights(weights)
    info = erf.extract(root, "gl3d", weights=weights, resolution=64, batch_size=3, regenerate=True)
    assert info["written"] == 4 and info["shape"] == [2, 2, 2048]
    with open(os.path.join(root, "list", "gl3d", "regional_feat_list.txt")) as f:
        listed = f.read().split()
    assert listed[1] == "data/a/reg_feat/00000001.bin" and len(listed) == 4
    # Known answer: the file is the trunk's output for the gray image resized to 64 x 64, row-major h, w, c.
    gray = erf.load_gray(os.path.join(root, "data/a/undist_images/00000001.jpg"), 64)
    expected = np.asarray(trunk(preprocess_regional(gray[None, :, :, None])))[0]
    np.testing.assert_allclose(np.fromfile(os.path.join(root, listed[1]), "<f4").reshape(2, 2, 2048), expected,
                               rtol=1e-4, atol=1e-4)
    again = erf.extract(root, "gl3d", weights=weights, resolution=64)
    assert again["written"] == 0 and again["skipped"] == 4  # resumable: complete files are kept
    assert os.path.isfile(os.path.join(root, "list", "gl3d", erf.MARKER))
    batch = next(iter(gl3d_patches.gl3d_patch_dataset("train", 2, gl3d_root=root, regional=True,
                                                      regional_resolution=2, regional_dim=2048)))
    assert batch["regional0"].shape == (2, 2, 2, 2048)
    with pytest.raises(ValueError, match="multiple of 32"):
        erf.extract(root, "gl3d", resolution=70)
