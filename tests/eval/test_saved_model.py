"""The SavedModel path of the harness: a tiny exported model (``keras.export.ExportArchive``) whose ``extract``
returns a fixed grid of keypoints (some marked invalid) with descriptors = L2-normalised raw 5x5 patches."""

import numpy as np
import pytest

from tests.eval._archives import write_extract_archive

STEP, GRID, PATCH = 12, 20, 2  # grid x, y = 6, 18, ... (GRID x GRID candidates); patch radius


def _export(path):
    import tensorflow as tf

    offsets = tf.constant([(dy, dx) for dy in range(-PATCH, PATCH + 1) for dx in range(-PATCH, PATCH + 1)],
                          tf.int32)
    coords = tf.range(GRID, dtype=tf.int32) * STEP + STEP // 2
    gy, gx = tf.meshgrid(coords, coords, indexing="ij")
    grid = tf.stack([tf.reshape(gx, [-1]), tf.reshape(gy, [-1])], axis=1)  # [N, 2] (x, y)

    def extract(images):
        batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
        x, y = grid[:, 0], grid[:, 1]
        valid = (x >= PATCH) & (y >= PATCH) & (x < width - PATCH) & (y < height - PATCH)
        ys = tf.clip_by_value(y[:, None] + offsets[None, :, 0], 0, height - 1)
        xs = tf.clip_by_value(x[:, None] + offsets[None, :, 1], 0, width - 1)
        patches = tf.map_fn(lambda im: tf.gather_nd(im[..., 0], tf.stack([ys, xs], -1)), images)  # [B, N, 25]
        patches = patches - tf.reduce_mean(patches, axis=-1, keepdims=True)
        descriptors = tf.math.l2_normalize(patches, axis=-1)
        tile = lambda t: tf.tile(t[None], [batch] + [1] * len(t.shape))  # noqa: E731
        return {"keypoints": tile(tf.cast(grid, tf.float32)), "scores": tile(tf.cast(valid, tf.float32)),
                "descriptors": descriptors, "valid": tile(valid)}

    write_extract_archive(path, extract, "grid_patches",
                          {"method": "GridPatches", "endpoint": "extract", "input": {"channels": 1}})


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "export"
    _export(path)
    return path


def test_saved_model_extractor_drops_invalid_rows(saved_model):
    from tfmatch.eval.extractors import make_extractor

    extractor = make_extractor(saved_model=saved_model.parent, max_keypoints=0)  # a model_dir with export/
    image = np.random.default_rng(0).integers(0, 255, size=(50, 40, 3), dtype=np.uint8)
    keypoints, scores, descriptors = extractor(image)
    # Grid x in {6, 18, 30} (< 38), y in {6, 18, 30, 42} (< 48): 12 valid of 400.
    assert keypoints.shape == (12, 2) and scores.shape == (12,) and descriptors.shape == (12, 25)
    assert set(keypoints[:, 0]) == {6, 18, 30} and set(keypoints[:, 1]) == {6, 18, 30, 42}
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)
    gray = image.astype(np.float32) @ [0.299, 0.587, 0.114]
    x, y = keypoints[0].astype(int)
    patch = descriptors[0]
    expected = gray[y - 2:y + 3, x - 2:x + 3].ravel()
    expected = (expected - expected.mean()) / np.linalg.norm(expected - expected.mean())
    np.testing.assert_allclose(patch, expected, atol=0.02)  # OpenCV's gray conversion rounds to uint8


def test_evaluate_hpatches_with_a_saved_model(saved_model, tmp_path):
    from data_tools.make_hpatches_demo import make_demo
    from tfmatch.eval import hpatches
    from tfmatch.eval.extractors import make_extractor

    demo = make_demo(tmp_path / "demo", num_sequences=2, size=160)
    extractor = make_extractor(saved_model=saved_model, max_keypoints=0)
    protocol = hpatches.HPatchesProtocol(max_keypoints=0, sequences="^i_")
    summary = hpatches.evaluate_hpatches(demo, extractor, tmp_path / "out", protocol, progress=False,
                                         num_match_images=1)
    # Identity homographies and the same grid in every image: every keypoint is repeated exactly.
    assert summary["repeatability"] == 1.0 and summary["localization_error"] == 0.0
    assert summary["num_keypoints"] == 13 * 13  # x, y in 6, 18, .., 150 on the 160 x 160 image
    assert summary["mma"]["1"] > 0.5 and summary["mma_v"] is None
    assert (tmp_path / "out" / "gridpatches" / "summary.json").is_file()


def test_matcher_saved_model(tmp_path):
    """A ``match`` SavedModel (mutual NN written in TensorFlow) gives the numpy matcher's answer."""
    import keras
    import tensorflow as tf

    from tfmatch.eval.matchers import make_matcher, mutual_nearest_neighbour

    def match(data):
        d0, d1 = data["descriptors0"], data["descriptors1"]
        similarity = tf.einsum("bnd,bmd->bnm", d0, d1)
        nn01 = tf.argmax(similarity, axis=2, output_type=tf.int32)
        nn10 = tf.argmax(similarity, axis=1, output_type=tf.int32)
        mutual = tf.gather(nn10, nn01, batch_dims=1) == tf.range(tf.shape(d0)[1])[None]
        return {"matches0": tf.where(mutual, nn01, -1),
                "matching_scores0": tf.where(mutual, tf.reduce_max(similarity, axis=2), 0.0)}

    spec = {}
    for s in "01":
        spec.update({f"keypoints{s}": tf.TensorSpec([None, None, 2], tf.float32),
                     f"descriptors{s}": tf.TensorSpec([None, None, None], tf.float32),
                     f"scores{s}": tf.TensorSpec([None, None], tf.float32),
                     f"image_size{s}": tf.TensorSpec([None, 2], tf.float32)})
    model = keras.Sequential([keras.layers.Identity(name="identity")], name="nn_matcher")
    model.build((None, 1))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("match", match, input_signature=[spec])
    archive.write_out(str(tmp_path / "matcher"))

    rng = np.random.default_rng(0)
    d1 = rng.normal(size=(30, 8)).astype(np.float32)
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    d0 = d1[rng.permutation(30)[:20]] + rng.normal(scale=0.05, size=(20, 8)).astype(np.float32)
    d0 /= np.linalg.norm(d0, axis=1, keepdims=True)
    feats = [{"keypoints": rng.uniform(size=(len(d), 2)), "scores": np.ones(len(d)), "descriptors": d,
              "image_size": np.array([64, 48])} for d in (d0, d1)]
    matches0, scores0 = make_matcher(str(tmp_path / "matcher"))(*feats)
    expected, _ = mutual_nearest_neighbour(d0, d1)
    np.testing.assert_array_equal(matches0, expected)
    assert (matches0 >= 0).sum() > 15 and matches0.dtype == np.int32
