"""ContextDesc: context blocks (known answers), shapes, describe with the in-model ResNet-50, SavedModel round
trip, tiny training."""

import json

import keras
import numpy as np
import pytest

from tests.methods.geodesc import _patch_pairs as pp
from tfmatch.eval.metrics import fpr_at_95_recall
from tfmatch.methods.contextdesc import ContextDesc
from tfmatch.methods.contextdesc import model as cd_model
from tfmatch.methods.contextdesc import network as cn


def test_interpolate_cells_known_answers():
    # 2x2 grid: cells at (-1,-1), (1,-1), (-1,1), (1,1) with features 0, 1, 2, 3.
    centres = cn.grid_cell_centres(2, 2)
    np.testing.assert_allclose(np.asarray(centres), [[-1, -1], [1, -1], [-1, 1], [1, 1]])
    feats = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
    point = np.array([[[-0.8, -0.9]]], np.float32)  # nearest: 0 (d~.22), then 2 (d~1.9), 1 (d~1.8) -> 0, 1, 2
    mean3 = float(np.asarray(cn.interpolate_cells(feats, centres, point, "mean3"))[0, 0, 0])
    assert mean3 == pytest.approx((0 + 1 + 2) / 3)
    d = np.array([np.hypot(0.2, 0.1), np.hypot(1.8, 0.1), np.hypot(0.2, 1.9)])
    w = (1 / d) / (1 / d).sum()
    inv = float(np.asarray(cn.interpolate_cells(feats, centres, point, "inverse_distance"))[0, 0, 0])
    assert inv == pytest.approx(w @ [0, 1, 2], rel=1e-5)
    with pytest.raises(ValueError, match="interpolation"):
        cn.interpolate_cells(feats, centres, point, "bilinear")


def test_context_normalization_and_homography():
    x = np.random.default_rng(0).normal(3, 2, (2, 50, 4)).astype(np.float32)
    y = np.asarray(cn.context_normalization(x))
    np.testing.assert_allclose(y.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(1), 1, atol=1e-3)
    seed = keras.random.SeedGenerator(0)
    h = cn.random_corner_homography(3, 0.0, seed)
    np.testing.assert_allclose(np.asarray(h), np.tile(np.eye(3), (3, 1, 1)), atol=1e-5)
    h = cn.random_corner_homography(3, 0.3, seed)
    corners = np.array([[[-1, -1], [1, -1], [1, 1], [-1, 1]]] * 3, np.float32)
    moved = np.asarray(cn.apply_homography(h, corners)) - corners
    assert np.all(np.abs(moved) <= 0.3 + 1e-5) and np.abs(moved).max() > 0.01


def _batch(rng, b=2, n=6, reso=3, dim=16):
    return {"patches0": rng.uniform(0, 255, (b, n, 32, 32, 1)).astype("float32"),
            "patches1": rng.uniform(0, 255, (b, n, 32, 32, 1)).astype("float32"),
            "num_inliers": np.array([4, 6], "int32"),
            "keypoints0": rng.uniform(-1, 1, (b, n, 2)).astype("float32"),
            "keypoints1": rng.uniform(-1, 1, (b, n, 2)).astype("float32"),
            "regional0": rng.normal(size=(b, reso, reso, dim)).astype("float32"),
            "regional1": rng.normal(size=(b, reso, reso, dim)).astype("float32")}


def test_call_loss_terms_describe_and_metadata():
    with pytest.warns(UserWarning, match="RANDOM"):
        model = ContextDesc()  # no weights file: random trunk, loudly
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="regional_dim"):
        model(_batch(rng), training=True)
    batch = _batch(rng, dim=2048)
    out = model(batch, training=True)
    assert tuple(out["descriptors0"].shape) == (2, 6, 128) and tuple(out["matchability1"].shape) == (2, 6)
    terms = model.loss_terms(batch, out)
    assert set(terms) == {"aug_loss", "raw_loss", "quad_loss"}
    assert all(np.isfinite(float(v)) for v in terms.values())
    image = rng.uniform(0, 255, (1, 100, 130, 1)).astype("float32")
    keypoints = np.array([[[30, 30, 4, 30], [10, 10, 2, 0], [90, 50, 3, 100]]], "float32")
    desc = np.asarray(model.describe(image, keypoints)["descriptors"])
    assert desc.shape == (1, 3, 128)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=-1), 1, atol=1e-5)
    assert tuple(model.regional_features(image).shape) == (1, 4, 5, 2048)  # stride 32
    meta = model.export_metadata()
    assert meta["detector"]["name"] == "sift" and meta["regional_features"]["computed"].startswith("inside")


def _stand_in_trunk(weights=None, name="regional_trunk"):
    """A stride-32 stand-in for the ResNet-50 trunk (16 channels): the full trunk's SavedModel (25 M weights,
    about 200 MB) takes 30 s or more to write and load on 2 CPU cores. Everything after the trunk is the real model."""
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(16, 32, strides=32, padding="same", name="stand_in_conv")(inputs)
    trunk = keras.Model(inputs, outputs, name=name)
    trunk.trainable = False
    return trunk


def test_saved_model_round_trip_at_any_image_size(tmp_path, monkeypatch):
    """Export a ContextDesc model_dir and reload it with ``tf.saved_model.load``: the ``describe`` endpoint takes
    images of sizes it was not traced with and gives the Keras model's descriptors (regional features are computed
    inside; the grid of regional cells follows the image size)."""
    import gin
    import tensorflow as tf

    from tfmatch import config
    from tfmatch.export import export
    from tfmatch.runtime import checkpoints

    monkeypatch.setattr(cd_model, "build_regional_trunk", _stand_in_trunk)
    model = ContextDesc(regional_dim=16, width=0.25, max_keypoints=500)
    model.build_for_inference()
    model_dir = tmp_path / "contextdesc"
    model_dir.mkdir()
    (model_dir / config.OPERATIVE_CONFIG).write_text(
        "import tfmatch.methods\n\ntrain.model_fn = @ContextDesc\nContextDesc.regional_dim = 16\n"
        "ContextDesc.width = 0.25\nContextDesc.max_keypoints = 500\n")
    checkpoints.save(str(model_dir), model, step=3)
    try:
        out = export(str(model_dir), jit_compile="false")
    finally:
        gin.clear_config()
    metadata = json.loads((tmp_path / "contextdesc" / "export" / "metadata.json").read_text())
    assert metadata["endpoint"] == "describe" and metadata["checkpoint_step"] == 3
    assert metadata["detector"]["max_keypoints"] == 500 and metadata["regional_features"]["dim"] == 16
    loaded = tf.saved_model.load(out)
    rng = np.random.default_rng(0)
    for height, width, num in ((100, 130, 3), (200, 70, 7)):  # 4 x 5 and 7 x 3 regional cells
        images = rng.uniform(0, 255, (1, height, width, 1)).astype("float32")
        keypoints = np.stack([rng.uniform(5, width - 5, num), rng.uniform(5, height - 5, num),
                              rng.uniform(2, 6, num), rng.uniform(0, 360, num)], -1)[None].astype("float32")
        want = np.asarray(model.describe(images, keypoints)["descriptors"])
        got = np.asarray(loaded.describe(tf.constant(images), tf.constant(keypoints))["descriptors"])
        assert got.shape == (1, num, 128)
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow
def test_tiny_training_lowers_fpr95_of_augmented_descriptors():
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    with pytest.warns(UserWarning):
        model = ContextDesc(regional_dim=32, width=0.25)  # a quarter-width tower: CPU budget
    train = pp.make_patch_pairs(model.crop, pp.TRAIN_IMAGES, pairs_per_view=64, views_per_image=6, seed=0)
    held_out = pp.make_patch_pairs(model.crop, pp.HELD_OUT_IMAGES, pairs_per_view=64, views_per_image=2, seed=1)
    rng = np.random.default_rng(0)
    image_regional = rng.normal(size=(len(pp.TRAIN_IMAGES) + len(pp.HELD_OUT_IMAGES), 4, 4, 32)).astype("float32")

    def as_batch(data, views, offset=0):
        reg = image_regional[data["image_ids"][views] + offset]
        return {"patches0": data["patches0"][views], "patches1": data["patches1"][views],
                "num_inliers": np.full((len(views),), data["patches0"].shape[1], np.int32),
                "keypoints0": data["keypoints0"][views], "keypoints1": data["keypoints1"][views],
                "regional0": reg, "regional1": reg}

    def held_out_fpr():
        batch = as_batch(held_out, np.arange(held_out["patches0"].shape[0]), len(pp.TRAIN_IMAGES))
        out = model(batch, training=False)
        d0 = np.asarray(out["descriptors0"]).reshape(-1, 128)
        d1 = np.asarray(out["descriptors1"]).reshape(-1, 128)
        return fpr_at_95_recall(d0, d1)

    untrained = held_out_fpr()
    views = [rng.choice(train["patches0"].shape[0], 2, replace=False) for _ in range(40)]
    batches = [as_batch(train, v) for v in views]
    spec = {k: tf.TensorSpec(v.shape, v.dtype) for k, v in batches[0].items()}
    ds = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)  # XLA compile costs more here
    history = model.fit(ds, epochs=1, steps_per_epoch=len(batches), verbose=0)
    trained = held_out_fpr()
    print(f"ContextDesc FPR95 held out: untrained {untrained:.3f}, trained {trained:.3f}; "
          f"terms {[round(history.history[k][-1], 3) for k in ('aug_loss', 'raw_loss', 'quad_loss')]}")
    assert trained < 0.7 * untrained
