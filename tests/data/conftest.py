"""Fixtures of the GL3D tests: one tiny synthetic GL3D set per session, copied for tests that modify it."""

import os
import shutil

import pytest

# Small enough to generate in about a second: 256x256 images (64x64 depth), 3 scenes of 4 images.
GL3D_TINY = dict(scenes=3, images_per_scene=4, seed=0, image_size=256, max_keypoints=600)
GL3D_NUM_CORR = 128


@pytest.fixture(scope="session")
def gl3d_synthetic_root(tmp_path_factory):
    """A synthetic GL3D root without match sets (do not modify: copy it with ``gl3d_copy``)."""
    from data_tools import make_synthetic_gl3d

    root = str(tmp_path_factory.mktemp("gl3d_synthetic"))
    make_synthetic_gl3d.generate(root, workers=1, **GL3D_TINY)
    return root


@pytest.fixture(scope="session")
def gl3d_root(tmp_path_factory, gl3d_synthetic_root):
    """A synthetic GL3D root with match sets for num_corr = GL3D_NUM_CORR (do not modify)."""
    from data_tools import gl3d_match_sets

    root = str(tmp_path_factory.mktemp("gl3d_match_sets") / "gl3d")
    shutil.copytree(gl3d_synthetic_root, root)
    summary = gl3d_match_sets.build_split(root, "gl3d", num_corr=GL3D_NUM_CORR, progress=False)
    assert summary.complete and not summary.skipped, summary.as_dict()
    return root


@pytest.fixture
def gl3d_copy(tmp_path):
    """Returns a function copying a GL3D root into this test's temporary folder."""

    def copy(root, name="gl3d"):
        target = os.path.join(str(tmp_path), name)
        shutil.copytree(root, target)
        return target

    return copy
