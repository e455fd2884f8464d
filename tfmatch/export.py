"""Exports a trained run to a SavedModel: ``python -m tfmatch.export --model_dir D [--out DIR]``.

Writes ``DIR`` (default ``D/export``) with one endpoint, ``extract(images)`` or ``describe(images, keypoints)``
(dynamic batch, height and width), ``assets/operative_config.gin`` and ``metadata.json``. Any TensorFlow user
loads it with ``tf.saved_model.load(DIR).extract(images)``; ``tfmatch.evaluate`` uses nothing else.

Export always runs on the TensorFlow backend (Keras weight files are backend-neutral, so a run trained on
JAX exports the same way); the command re-executes itself with ``KERAS_BACKEND=tensorflow`` when needed.
"""

import json
import os
import shutil
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def _ensure_tensorflow_backend():
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        os.execve(sys.executable, [sys.executable, "-m", "tfmatch.export"] + sys.argv[1:], env)


def _signature(model, tf):
    images = tf.TensorSpec([None, None, None, model.input_channels], tf.float32, name="images")
    if model.endpoint == "describe":
        return [images, tf.TensorSpec([None, None, 4], tf.float32, name="keypoints")]
    return [images]


def _probe_inputs(model, tf):
    images = tf.random.uniform([1, 96, 128, model.input_channels], 0, 255, seed=0)
    if model.endpoint == "describe":
        keypoints = tf.constant([[[40.0, 50.0, 12.0, 30.0], [70.0, 30.0, 20.0, -60.0]]])
        return [images, keypoints]
    return [images]


def export(model_dir: str, out: str | None = None, gin_bindings=(), jit_compile: str = "auto",
           overwrite: bool = True) -> str:
    """Exports ``model_dir`` and returns the SavedModel directory."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tfmatch import config
    from tfmatch.runtime import checkpoints

    out = out or os.path.join(model_dir, "export")
    if os.path.exists(out):
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    model = checkpoints.load_model(model_dir, gin_bindings=gin_bindings)
    endpoint = getattr(model, model.endpoint)
    probe = _probe_inputs(model, tf)
    expected = endpoint(*probe)

    use_jit = jit_compile == "true"
    if jit_compile == "auto":
        try:
            tf.function(endpoint, jit_compile=True)(*probe)
            use_jit = True
        except Exception as err:  # an op without an XLA kernel: export without XLA and say so
            print(f"[tfmatch.export] XLA compilation failed, exporting without it: {str(err).splitlines()[0]}")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=model.endpoint, fn=endpoint, input_signature=_signature(model, tf),
                         jit_compile=use_jit)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    archive.write_out(tmp, verbose=False)

    os.makedirs(os.path.join(tmp, "assets"), exist_ok=True)
    shutil.copy(os.path.join(model_dir, config.OPERATIVE_CONFIG), os.path.join(tmp, "assets", config.OPERATIVE_CONFIG))
    metadata = dict(model.export_metadata())
    metadata.update({
        "checkpoint_step": _latest_step(model_dir),
        "jit_compile": use_jit,
        "signature": {"name": model.endpoint,
                      "inputs": ["images [B,H,W,C] float32 0..255"] + (
                          ["keypoints [B,N,4] float32 (x, y, size, angle)"] if model.endpoint == "describe" else []),
                      "outputs": sorted(expected.keys())},
    })
    with open(os.path.join(tmp, "metadata.json"), "w") as f:
        json.dump(metadata, f, indent=2)
    os.replace(tmp, out)

    # Check: the SavedModel gives the Keras model's outputs.
    loaded = tf.saved_model.load(out)
    got = getattr(loaded, model.endpoint)(*probe)
    worst = max(float(np.max(np.abs(np.asarray(got[k], np.float64) - np.asarray(expected[k], np.float64))))
                if np.size(expected[k]) else 0.0 for k in expected)
    print(f"[tfmatch.export] wrote {out} (endpoint {model.endpoint}, XLA {use_jit}); "
          f"max abs difference to the Keras model {worst:.3g}")
    return out


def _latest_step(model_dir: str) -> int:
    from tfmatch.runtime import checkpoints

    found = checkpoints.list_checkpoints(model_dir)
    return found[-1][0] if found else 0


def _define_flags():
    """Flags exist only when run as a command, so ``export()`` can be imported next to other CLIs' flags."""
    flags.DEFINE_string("model_dir", None, "the trained run (its operative_config.gin and latest checkpoint)")
    flags.DEFINE_string("out", None, "output directory (default: MODEL_DIR/export)")
    flags.DEFINE_multi_string("gin_bindings", [], "extra bindings applied after the run's config (e.g. max_keypoints)")
    flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                      "compile the endpoint with XLA (auto: when it compiles, else without, with a warning)")
    flags.DEFINE_bool("overwrite", True, "replace an existing export")
    flags.mark_flag_as_required("model_dir")


def main(argv):
    del argv
    _ensure_tensorflow_backend()
    export(FLAGS.model_dir, FLAGS.out, FLAGS.gin_bindings, FLAGS.jit_compile, FLAGS.overwrite)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
