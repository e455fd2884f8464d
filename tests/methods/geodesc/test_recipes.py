"""The GeoDesc / ContextDesc gin recipes parse, and GeoDesc trains through ``python -m tfmatch.train``."""

import json
import os
import re
import subprocess
import sys

import gin
import pytest

from tests.methods.geodesc.test_gl3d_patches import _tiny_gl3d
from tfmatch import config


@pytest.mark.parametrize("recipe, model", [("methods/geodesc/geodesc.gin", "GeoDesc"),
                                           ("methods/contextdesc/contextdesc.gin", "ContextDesc")])
def test_recipes_parse_with_paper_values(recipe, model):
    try:
        config.parse([recipe], finalize=False)
        assert gin.query_parameter("train.model_fn").selector.endswith(model)
        assert gin.query_parameter("train.max_steps") is not None
        assert gin.query_parameter("keras.optimizers.SGD.momentum") == 0.9
        assert gin.query_parameter("keras.optimizers.schedules.ExponentialDecay.staircase") is False
        if model == "ContextDesc":
            assert gin.query_parameter("ContextDesc.regional_dim") == 2048
            assert gin.query_parameter("gl3d_patch_dataset.regional") is True
    finally:
        gin.clear_config()


@pytest.mark.slow
def test_geodesc_trains_through_the_trainer_on_a_tiny_gl3d(tmp_path, subprocess_env, repo_root):
    root = _tiny_gl3d(str(tmp_path / "gl3d"))
    model_dir = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "tfmatch.train", "--gin_file", "methods/geodesc/geodesc.gin",
           "--gin_file", "mixins/tiny.gin", "--gin_bindings", f"GL3D_ROOT = '{root}'",
           "--gin_bindings", "train.max_steps = 2", "--gin_bindings", "train.steps_per_epoch = 2",
           "--gin_bindings", "GeoDesc.width = 0.25", "--model_dir", model_dir]
    result = subprocess.run(cmd, cwd=repo_root, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(os.path.join(model_dir, "operative_config.gin"))
    with open(os.path.join(model_dir, "operative_config.gin")) as f:
        assert "gl3d_patch_dataset" in f.read()
    # SavedModel round trip: tfmatch.export reloads the SavedModel and compares it with the Keras model.
    result = subprocess.run([sys.executable, "-m", "tfmatch.export", "--model_dir", model_dir], cwd=repo_root,
                            env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"max abs difference to the Keras model ([0-9.e+-]+)", result.stdout + result.stderr)
    assert match and float(match.group(1)) < 1e-4, (result.stdout + result.stderr)[-2000:]
    with open(os.path.join(model_dir, "export", "metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["endpoint"] == "describe" and metadata["detector"]["name"] == "sift"
