"""The staged recipe chained as scripts/superpoint_pipeline.sh does: MagicPoint -> HA labels -> SuperPoint."""

import os
import subprocess
import sys

import numpy as np
import pytest

# The recipes name these data sets (the package import registers them too once tfmatch/data/__init__ lists them).
from tfmatch.data import image_folder, synthetic_shapes  # noqa: F401

TINY_NET = ["{}.encoder_channels = (4, 4, 8, 8)", "{}.head_channels = 8"]


def _train(recipe, model_dir, bindings):
    from tfmatch import config
    from tfmatch.runtime import trainer

    config.parse([recipe, "mixins/tiny.gin"], bindings + ["train.max_steps = 2", "train.steps_per_epoch = 2",
                                                          "train.jit_compile = False"])
    return trainer.train(model_dir)


@pytest.mark.slow
def test_magicpoint_labels_superpoint_chain(tmp_path, repo_root, subprocess_env):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(0, 255, (40, 56)).astype(np.uint8)
        cv2.rectangle(image, (10, 8), (30, 25), 255, -1)
        cv2.imwrite(str(images / f"{i}.jpg"), image)
    magicpoint = str(tmp_path / "magicpoint")
    _train("methods/superpoint/magicpoint.gin", magicpoint,
           [b.format("MagicPoint") for b in TINY_NET] + ["IMAGE_SIZE = (32, 40)",
                                                         "synthetic_shapes_dataset.canvas_size = (120, 160)"])
    labels = str(tmp_path / "labels")
    cmd = [sys.executable, "-m", "data_tools.superpoint_export_labels", "--model_dir", magicpoint, "--images",
           str(images), "--out", labels, "--num_homographies", "3", "--height", "32", "--width", "48",
           "--detection_threshold", "0.0", "--top_k", "30"]
    result = subprocess.run(cmd, cwd=repo_root, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 written" in result.stdout and os.path.isfile(os.path.join(labels, ".complete"))
    with np.load(os.path.join(labels, "0.npz")) as data:
        assert 0 < len(data["pts"]) <= 30

    model = _train("methods/superpoint/superpoint.gin", str(tmp_path / "superpoint"),
                   [b.format("SuperPoint") for b in TINY_NET] + [
                       "SuperPoint.descriptor_dim = 8", "IMAGE_SIZE = (32, 48)", f"IMAGE_DIR = '{images}'",
                       f"LABEL_DIR = '{labels}'", f"MAGICPOINT_DIR = '{magicpoint}'",
                       "image_folder_dataset.validation_fraction = 0.0"])
    from tfmatch.runtime import checkpoints

    magic = checkpoints.load_model(magicpoint)
    # SuperPoint started from MagicPoint: 2 Adam steps at lr 1e-4 move a weight by at most ~2e-4.
    for name in ("conv1a", "convPb"):
        ours = next(l for l in model.net.encoder + [model.net.conv_pb] if l.name == name).conv.kernel.numpy()
        theirs = next(l for l in magic.net.encoder + [magic.net.conv_pb] if l.name == name).conv.kernel.numpy()
        assert np.abs(ours - theirs).max() < 1e-3, name
    probe = rng.uniform(0, 255, (1, 32, 48, 1)).astype(np.float32)
    out = model.extract(probe)
    assert out["descriptors"].shape[-1] == 8


@pytest.mark.slow
def test_magicpoint_recipe_one_mirrored_step_via_cli(tmp_path, repo_root, subprocess_env):
    """python -m tfmatch.train with the recipe, tiny.gin and MirroredStrategy on two logical CPUs."""
    runner = ("import sys; from tfmatch.data import synthetic_shapes; from absl import app; from tfmatch import train; "
              "sys.argv[0] = 'tfmatch.train'; app.run(train.main)")
    model_dir = str(tmp_path / "mp")
    cmd = [sys.executable, "-c", runner, "--gin_file", "methods/superpoint/magicpoint.gin",
           "--gin_file", "mixins/tiny.gin", "--logical_cpus", "2", "--model_dir", model_dir,
           "--gin_bindings", "train.strategy = 'mirrored'", "--gin_bindings", "train.max_steps = 2",
           "--gin_bindings", "train.steps_per_epoch = 2", "--gin_bindings", "train.jit_compile = False",
           "--gin_bindings", "MagicPoint.encoder_channels = (4, 4, 8, 8)",
           "--gin_bindings", "MagicPoint.head_channels = 8",
           "--gin_bindings", "synthetic_shapes_dataset.canvas_size = (120, 160)"]
    result = subprocess.run(cmd, cwd=repo_root, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica" in result.stdout + result.stderr, (result.stdout + result.stderr)[-2000:]
    assert os.path.isfile(os.path.join(model_dir, "checkpoints", "ckpt-00000002.h5"))
    assert "MagicPoint" in open(os.path.join(model_dir, "operative_config.gin")).read()
