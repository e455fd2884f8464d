"""GeoDesc: patch sampler vs OpenCV, shapes, serialisation, and a tiny training that beats raw pixels."""

import math

import cv2
import keras
import numpy as np
import pytest

from tests.methods.geodesc import _patch_pairs as pp
from tfmatch.eval.metrics import fpr_at_95_recall
from tfmatch.methods.geodesc import GeoDesc
from tfmatch.methods.geodesc.network import SIFT_SUPPORT_RADIUS


def _reference_patch(image, x, y, size, angle):
    """The GeoDesc inference crop rebuilt with OpenCV: the original's affine (orientation 360 - angle, radius
    3 * sigma * sqrt(2) * 5 / 2 with sigma = size / 2, grid i / 32 * 2 - 1) applied by warpAffine."""
    ori = math.radians(360.0 - angle)
    radius = 3.0 * (size * 0.5) * math.sqrt(2.0) * 5 * 0.5
    c, s = math.cos(ori) * radius, math.sin(ori) * radius
    # input pixel = [gx, gy, 1] @ [[c, -s], [s, c], [x, y]] with g = j * 2 / 32 - 1 for output pixel j
    lin = np.array([[c, s], [-s, c]]) * (2.0 / 32.0)
    offset = np.array([x, y]) - np.array([[c, s], [-s, c]]) @ np.array([1.0, 1.0])
    M = np.concatenate([lin, offset[:, None]], axis=1).astype(np.float64)
    return cv2.warpAffine(image, M, (32, 32), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def test_crop_matches_opencv_warpaffine_reference():
    image = pp.gray_image("camera")[100:260, 120:300].copy()
    keypoints = np.array([[[80.0, 70.0, 4.0, 0.0], [90.3, 75.7, 3.2, 37.0], [60.0, 90.0, 5.5, 250.0],
                           [100.0, 60.0, 2.0, 123.4]]], np.float32)
    model = GeoDesc()
    patches = np.asarray(model.crop(image[None, :, :, None], keypoints))
    assert patches.shape == (1, 4, 32, 32, 1)
    for k, (x, y, size, angle) in enumerate(keypoints[0]):
        ref = _reference_patch(image, x, y, size, angle)
        np.testing.assert_allclose(patches[0, k, :, :, 0], ref, atol=0.5)  # OpenCV: 5-bit fixed-point weights
    assert SIFT_SUPPORT_RADIUS == pytest.approx(5.3033, abs=1e-4)


def test_crop_follows_keypoint_rotation():
    """A patch cut at a keypoint of a rotated image (angle + phi) equals the patch of the original."""
    image = pp.gray_image("camera")
    h, w = image.shape
    phi = 30.0
    centre = np.array([w / 2, h / 2])
    rot = np.array([[math.cos(math.radians(phi)), -math.sin(math.radians(phi))],
                    [math.sin(math.radians(phi)), math.cos(math.radians(phi))]])
    M = np.concatenate([rot, (centre - rot @ centre)[:, None]], 1)
    rotated = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR)
    xy = np.array([230.0, 270.0])
    xy_r = rot @ xy + M[:, 2]
    model = GeoDesc()
    p0 = np.asarray(model.crop(image[None, ..., None], np.array([[[*xy, 4.0, 10.0]]], np.float32)))
    p1 = np.asarray(model.crop(rotated[None, ..., None], np.array([[[*xy_r, 4.0, 10.0 + phi]]], np.float32)))
    p_wrong = np.asarray(model.crop(rotated[None, ..., None], np.array([[[*xy_r, 4.0, 10.0 - phi]]], np.float32)))
    err = np.abs(p0 - p1).mean()
    assert err < 6.0 and np.abs(p0 - p_wrong).mean() > 2 * err


def test_describe_shapes_norm_and_metadata():
    model = GeoDesc(max_keypoints=4000)
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 40, 1)).astype(np.float32)
    keypoints = np.tile(np.array([[[10.0, 12.0, 3.0, 45.0], [30.0, 20.0, 2.0, 0.0], [5.0, 40.0, 4.0, 300.0]]],
                                 np.float32), (2, 1, 1))
    out = model.describe(images, keypoints)
    desc = np.asarray(out["descriptors"])
    assert desc.shape == (2, 3, 128)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=-1), 1.0, atol=1e-5)
    meta = model.export_metadata()
    assert meta["endpoint"] == "describe" and meta["descriptor_dim"] == 128
    assert meta["detector"]["name"] == "sift" and meta["detector"]["max_keypoints"] == 4000
    assert model.tower.count_params() == pytest.approx(1.335e6, rel=0.01)  # spec: ~1.33 M
    with pytest.raises(ValueError, match="keypoints must be"):
        model.describe(images, keypoints[..., :2])


def test_keras_round_trip_gives_identical_descriptors(tmp_path):
    model = GeoDesc(loss_type="L2NET")
    images = np.random.default_rng(1).uniform(0, 255, (1, 40, 40, 1)).astype(np.float32)
    keypoints = np.array([[[20.0, 20.0, 3.0, 30.0], [12.0, 25.0, 2.5, 200.0]]], np.float32)
    before = np.asarray(model.describe(images, keypoints)["descriptors"])
    path = str(tmp_path / "geodesc.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.get_config()["loss_type"] == "L2NET"
    after = np.asarray(restored.describe(images, keypoints)["descriptors"])
    np.testing.assert_allclose(before, after, atol=1e-6)


def _batches(data, rows, num_inliers, steps, seed):
    """Training batches of 2 'match sets': rows random pairs each, the last rows - num_inliers mismatched."""
    rng = np.random.default_rng(seed)
    p0 = data["patches0"].reshape(-1, 32, 32, 1)
    p1 = data["patches1"].reshape(-1, 32, 32, 1)
    for _ in range(steps):
        idx = rng.choice(p0.shape[0], size=(2, rows), replace=False)
        other = idx.copy()
        other[:, num_inliers:] = rng.choice(p0.shape[0], size=(2, rows - num_inliers))  # padding: non-matching
        yield {"patches0": p0[idx], "patches1": p1[other], "num_inliers": np.full((2,), num_inliers, np.int32)}


def held_out_fpr(model, data):
    d0 = np.asarray(model.describe_patches(data["patches0"].reshape(1, -1, 32, 32, 1))["descriptors"])[0]
    d1 = np.asarray(model.describe_patches(data["patches1"].reshape(1, -1, 32, 32, 1))["descriptors"])[0]
    return fpr_at_95_recall(d0, d1)


@pytest.mark.slow
def test_tiny_training_lowers_fpr95_below_untrained_and_raw_pixels():
    """GeoDesc at a quarter of its width (CPU budget), 60 steps of 2 x 64 pairs, LOG loss."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = GeoDesc(width=0.25)
    train = pp.make_patch_pairs(model.crop, pp.TRAIN_IMAGES, pairs_per_view=200, views_per_image=4, seed=0)
    held_out = pp.make_patch_pairs(model.crop, pp.HELD_OUT_IMAGES, pairs_per_view=200, views_per_image=2, seed=1)
    raw = fpr_at_95_recall(pp.raw_pixel_descriptors(held_out["patches0"].reshape(-1, 32, 32, 1)),
                           pp.raw_pixel_descriptors(held_out["patches1"].reshape(-1, 32, 32, 1)))
    untrained = held_out_fpr(model, held_out)
    batches = list(_batches(train, rows=64, num_inliers=60, steps=60, seed=0))
    ds = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature={
        "patches0": tf.TensorSpec((2, 64, 32, 32, 1), tf.float32),
        "patches1": tf.TensorSpec((2, 64, 32, 32, 1), tf.float32),
        "num_inliers": tf.TensorSpec((2,), tf.int32)})
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)  # XLA compile costs more here
    history = model.fit(ds, epochs=1, steps_per_epoch=len(batches), verbose=0)
    trained = held_out_fpr(model, held_out)
    print(f"FPR95 held out: raw pixels {raw:.3f}, untrained {untrained:.3f}, trained {trained:.3f}; "
          f"loss {history.history['descriptor_loss'][-1]:.3f}, temperature {float(model.temperature):.2f}")
    assert trained < 0.7 * untrained and trained < 0.7 * raw
    assert float(model.temperature) > 1.0  # the learnable temperature grows as descriptors separate
