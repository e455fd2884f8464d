"""Writes a tiny SavedModel with an ``extract`` endpoint, as the harness loads them (for tests only)."""

import json


def write_extract_archive(path, extract, name: str, metadata: dict):
    """``extract(images [B,H,W,1] float32) -> dict`` becomes the endpoint of an otherwise empty Keras model; the
    harness's ``metadata.json`` is written beside it."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.layers.Identity(name="identity")], name=name)
    model.build((None, None, None, 1))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("extract", extract, input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    archive.write_out(str(path))
    (path / "metadata.json").write_text(json.dumps(metadata))
