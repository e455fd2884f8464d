"""Export: the SavedModel, loaded in a fresh process, gives the Keras model's outputs; JAX-trained runs export too."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.runtime._cli import run_cli, train_args

LOAD_AND_RUN = """
import json, sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
out = {}
for h, w in ((48, 64), (40, 40)):
    images = tf.constant(np.load(sys.argv[2])[:, :h, :w])
    result = loaded.extract(images)
    out[f"{h}x{w}"] = {k: np.asarray(v).tolist() for k, v in result.items()}
print("RESULT" + json.dumps(out))
"""


def _keras_outputs(model_dir, images):
    from tfmatch.runtime import checkpoints

    model = checkpoints.load_model(str(model_dir))
    out = {}
    for h, w in ((48, 64), (40, 40)):
        result = model.extract(images[:, :h, :w])
        out[f"{h}x{w}"] = {k: np.asarray(v) for k, v in result.items()}
    return out


def _saved_model_outputs(export_dir, images_path, repo_root, env):
    script = os.path.join(os.path.dirname(images_path), "load.py")
    with open(script, "w") as f:
        f.write(LOAD_AND_RUN)
    proc = subprocess.run([sys.executable, script, str(export_dir), images_path], env=env, cwd=repo_root,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return {size: {k: np.asarray(v) for k, v in d.items()} for size, d in json.loads(line[6:]).items()}


def _check_export(model_dir, tmp_path, repo_root, env):
    run_cli("tfmatch.export", ["--model_dir", str(model_dir)], env, repo_root)
    export_dir = model_dir / "export"
    metadata = json.loads((export_dir / "metadata.json").read_text())
    assert metadata["endpoint"] == "extract" and metadata["max_keypoints"] == 16
    assert metadata["checkpoint_step"] == 10
    assert (export_dir / "assets" / "operative_config.gin").read_text().startswith("import tests.support.toy")
    images = np.random.default_rng(1).uniform(0, 255, (2, 48, 64, 1)).astype("float32")
    images_path = str(tmp_path / "images.npy")
    np.save(images_path, images)
    got = _saved_model_outputs(export_dir, images_path, repo_root, env)
    want = _keras_outputs(model_dir, images)
    for size in want:
        assert got[size]["keypoints"].shape == (2, 16, 2)
        for key in ("keypoints", "scores", "descriptors", "valid"):
            np.testing.assert_allclose(got[size][key], want[size][key], rtol=1e-4, atol=1e-5)


def test_export_round_trip_in_a_fresh_process(tmp_path, repo_root, subprocess_env):
    model_dir = tmp_path / "tf_run"
    run_cli("tfmatch.train", train_args(model_dir, "train.max_steps = 10"), subprocess_env, repo_root)
    _check_export(model_dir, tmp_path, repo_root, subprocess_env)


def test_weights_trained_on_jax_export_on_tensorflow(tmp_path, repo_root, subprocess_env):
    model_dir = tmp_path / "jax_run"
    jax_env = dict(subprocess_env, KERAS_BACKEND="jax")
    proc = run_cli("tfmatch.train", train_args(model_dir, "train.max_steps = 10"), jax_env, repo_root)
    assert "jax backend" in proc.stdout
    # export re-executes itself on the TensorFlow backend even when asked from a JAX environment
    _check_export(model_dir, tmp_path, repo_root, jax_env)
