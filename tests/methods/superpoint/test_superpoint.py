"""SuperPoint / MagicPoint: cell decode, losses (known answers), Homographic Adaptation, model contract."""

import numpy as np
import pytest
from keras import ops

from tfmatch.methods.superpoint import MagicPoint, SuperPoint, losses
from tfmatch.methods.superpoint.adaptation import erode_mask, homographic_adaptation
from tfmatch.methods.superpoint.network import ConvUnit, depth_to_space, logits_to_heatmap, space_to_depth

TINY = dict(encoder_channels=(4, 4, 8, 8), head_channels=8, max_keypoints=16)


def _one_per_cell_map(rng, b=2, hc=3, wc=4, fill=0.6):
    kmap = np.zeros((b, hc * 8, wc * 8), np.float32)
    for n in range(b):
        for i in range(hc):
            for j in range(wc):
                if rng.random() < fill:
                    kmap[n, 8 * i + rng.integers(8), 8 * j + rng.integers(8)] = 1
    return kmap


def test_depth_to_space_layout_and_inverse():
    cells = np.arange(2 * 2 * 3 * 64, dtype=np.float32).reshape(2, 2, 3, 64)
    image = np.asarray(depth_to_space(cells))
    # channel c = 8 r + s of cell (i, j) -> pixel (8 i + r, 8 j + s)
    assert image[1, 8 * 1 + 2, 8 * 2 + 5] == cells[1, 1, 2, 8 * 2 + 5]
    np.testing.assert_array_equal(np.asarray(space_to_depth(image)), cells)


@pytest.mark.parametrize("channels,kernel_size", [(1, 3), (3, 3), (2, 1)])
def test_conv_as_matmul_equals_the_convolution(channels, kernel_size):
    """im2col + matmul (the GPU path of the 1-channel input layer) gives the convolution's result, borders too."""
    rng = np.random.default_rng(channels)
    images = rng.normal(size=(2, 16, 24, channels)).astype(np.float32)
    unit = ConvUnit(5, kernel_size, name="unit")
    unit.build(images.shape)
    unit.conv.bias.assign(rng.normal(size=5).astype(np.float32))
    expected = np.asarray(unit(images))
    unit.as_matmul = True
    np.testing.assert_allclose(np.asarray(unit(images)), expected, atol=1e-5)
    assert ConvUnit.from_config(unit.get_config()).as_matmul


def test_cell_decode_inverts_label_encode():
    kmap = _one_per_cell_map(np.random.default_rng(0))
    labels = np.asarray(losses.detector_labels(kmap))
    assert labels.shape == (2, 3, 4) and (labels == 64).any() and (labels < 64).any()
    logits = 50.0 * np.eye(65, dtype=np.float32)[labels]
    heatmap = np.asarray(logits_to_heatmap(logits))
    np.testing.assert_array_equal(heatmap > 0.5, kmap > 0.5)


def test_label_noise_picks_one_of_the_corners_of_a_cell():
    kmap = np.zeros((1, 8, 8), np.float32)
    kmap[0, 1, 2] = kmap[0, 5, 6] = 1  # positions 10 and 46 of the cell
    assert int(np.asarray(losses.detector_labels(kmap))[0, 0, 0]) == 10  # no noise: first in raster order
    rng = np.random.default_rng(0)
    picks = {int(np.asarray(losses.detector_labels(kmap, rng.uniform(0, 0.1, (1, 1, 1, 65))))[0, 0, 0])
             for _ in range(40)}
    assert picks == {10, 46}


def test_detector_loss_known_answers():
    labels = np.array([[[3, 64]]], np.int32)
    uniform = np.zeros((1, 1, 2, 65), np.float32)
    assert float(losses.detector_loss(uniform, labels, np.ones((1, 1, 2)))) == pytest.approx(np.log(65), rel=1e-5)
    logits = np.zeros((1, 1, 2, 65), np.float32)
    logits[0, 0, 0, 3] = np.log(64.0)  # p(label) = 64 / (64 + 64) = 0.5 in cell 0
    weights = np.array([[[1.0, 0.0]]])  # cell 1 does not count (and is not in the denominator)
    assert float(losses.detector_loss(logits, labels, weights)) == pytest.approx(np.log(2), rel=1e-5)


def test_cell_valid_mask_needs_every_pixel():
    mask = np.ones((1, 8, 16), np.float32)
    mask[0, 7, 15] = 0
    np.testing.assert_array_equal(np.asarray(losses.cell_valid_mask(mask)), [[[1.0, 0.0]]])


def _two_cell_descriptors():
    d0 = np.array([[[[1.0, 0.0], [0.0, 1.0]]]], np.float32)  # cells a, b  [1, 1, 2, 2]
    d1 = np.array([[[[1.0, 0.0], [0.6, 0.8]]]], np.float32)  # cells c, d
    return d0, d1


def test_dense_descriptor_loss_hand_computed():
    d0, d1 = _two_cell_descriptors()
    identity = np.eye(3, dtype=np.float32)[None]
    valid = np.ones((1, 8, 16), np.float32)
    kwargs = dict(positive_margin=1.0, negative_margin=0.2, lambda_d=250.0, distance_threshold=7.5)
    # Identity: pairs (a,c) and (b,d) positive. Terms: 250*0 + 0.4 + 0 + 250*0.2 = 50.4, over 2 valid x 2 cells.
    assert float(losses.dense_descriptor_loss(d0, d1, identity, valid, **kwargs)) == pytest.approx(50.4 / 4, rel=1e-5)
    # Image-1 cell c invalid: only column d counts: (0.4 + 50) / (1 x 2).
    valid_d = valid.copy()
    valid_d[0, 0, 0] = 0
    assert float(losses.dense_descriptor_loss(d0, d1, identity, valid_d, **kwargs)) == pytest.approx(25.2, rel=1e-5)
    # Shift by +8 px: a -> d positive, nothing else. (a,c) 0.8 + (a,d) 250*0.4 + (b,c) 0 + (b,d) 0.6 = 101.4.
    shift = np.array([[[1, 0, 8], [0, 1, 0], [0, 0, 1]]], np.float32)
    assert float(losses.dense_descriptor_loss(d0, d1, shift, valid, **kwargs)) == pytest.approx(101.4 / 4, rel=1e-5)


def test_sparse_descriptor_loss_hand_computed():
    d0 = np.array([[[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]]], np.float32)  # [1, 1, 3, 2]
    d1 = np.array([[[[0.6, 0.8], [1.0, 0.0], [0.8, 0.6]]]], np.float32)
    identity = np.eye(3, dtype=np.float32)[None]
    valid = np.ones((1, 8, 24), np.float32)
    anchors = np.array([[0]])
    # Positive: cell 0 of image 1, 1 - 0.6 = 0.4. Negative cell 2: 0.8 - 0.2 = 0.6, one non-zero -> 0.6 / 2.
    loss = losses.sparse_descriptor_loss(d0, d1, identity, valid, anchors, np.array([[[2]]]), lambda_d=1.0)
    assert float(loss) == pytest.approx(0.4 + 0.3, rel=1e-5)
    # A negative next to the positive (cell 1) is dropped.
    loss = losses.sparse_descriptor_loss(d0, d1, identity, valid, anchors, np.array([[[1]]]), lambda_d=1.0)
    assert float(loss) == pytest.approx(0.4, rel=1e-5)
    # A warp that leaves the image drops the anchor altogether.
    away = np.array([[[1, 0, 100], [0, 1, 0], [0, 0, 1]]], np.float32)
    loss = losses.sparse_descriptor_loss(d0, d1, away, valid, anchors, np.array([[[2]]]), lambda_d=1.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-7)


def test_erode_mask_matches_opencv():
    import cv2

    rng = np.random.default_rng(1)
    mask = (rng.random((20, 24)) > 0.1).astype(np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (6, 6))
    expected = cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    np.testing.assert_array_equal(np.asarray(erode_mask(ops.convert_to_tensor(mask[None]), 3))[0], expected)


def test_homographic_adaptation_with_identities_equals_one_prediction():
    model = MagicPoint(**TINY)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 40, 1)).astype(np.float32)
    single = np.asarray(model.heatmap(images))
    identities = np.tile(np.eye(3, dtype=np.float32), (2, 5, 1, 1))
    for aggregation in ("sum", "max"):
        aggregated, counts = homographic_adaptation(model.heatmap, images, identities, 3, aggregation, chunk_size=4)
        np.testing.assert_allclose(np.asarray(aggregated), single, rtol=1e-5, atol=1e-7)
    counts = np.asarray(counts)
    assert counts.max() == 6 and counts.min() == 1  # interior seen by all views, border only by the identity


def test_homographic_adaptation_undoes_the_warps():
    """With a pointwise "detector", every view warped back reports the input itself where it sees it."""
    ys, xs = np.mgrid[:48, :56]
    images = (127 + 100 * np.sin(xs / 5.0) * np.cos(ys / 7.0)).astype(np.float32)[None, :, :, None]  # smooth
    pointwise = lambda x: x[..., 0] / 255.0  # noqa: E731
    shift = np.array([[1, 0, 8], [0, 1, 16], [0, 0, 1]], np.float32)
    rotation = np.array([[np.cos(0.3), -np.sin(0.3), 5], [np.sin(0.3), np.cos(0.3), -4], [0, 0, 1]], np.float32)
    expected = images[0, :, :, 0] / 255.0

    def one_view(h):
        aggregated, counts = homographic_adaptation(pointwise, images, h[None, None], 0, "sum")
        err = np.abs(np.asarray(aggregated)[0] - expected)
        counts = np.asarray(counts)[0]
        assert counts.min() == 1 and counts.max() == 2 and err[counts == 1].max() < 1e-6
        return err[counts == 2]

    assert one_view(shift).max() < 1e-5  # an integer shift comes back exactly
    assert np.median(one_view(rotation)) < 0.05  # bilinear there and back blurs a little
    assert one_view(np.linalg.inv(shift).astype(np.float32)).max() < 1e-5
    wrong = np.abs(expected - np.roll(expected, (16, 8), axis=(0, 1)))[16:, 8:]
    assert np.median(wrong) > 0.1  # what a wrong warp direction would give


def _pair_batch(rng, b=2, h=32, w=40):
    kmap = np.zeros((b, h, w), np.float32)
    kmap[:, rng.integers(0, h, 20), rng.integers(0, w, 20)] = 1
    shift = np.tile(np.array([[1, 0, 8], [0, 1, 0], [0, 0, 1]], np.float32), (b, 1, 1))
    image = rng.uniform(0, 255, (b, h, w, 1)).astype(np.float32)
    return {"image0": image, "image1": np.roll(image, 8, axis=2), "keypoint_map0": kmap,
            "keypoint_map1": np.roll(kmap, 8, axis=2), "valid_mask0": np.ones((b, h, w), np.float32),
            "valid_mask1": np.ones((b, h, w), np.float32), "homography": shift}


@pytest.mark.parametrize("descriptor_loss", ["dense", "sparse"])
def test_superpoint_step_shapes_and_finite_loss(descriptor_loss):
    import keras

    model = SuperPoint(descriptor_dim=8, descriptor_loss=descriptor_loss, num_matches=16, num_negatives=4, **TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    batch = _pair_batch(np.random.default_rng(0))
    history = model.fit(batch, batch_size=1, epochs=1, verbose=0)
    for name in ("loss", "detector", "detector_warped", "descriptor"):
        assert np.all(np.isfinite(history.history[name])), name
    assert history.history["descriptor"][0] > 0
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)
    out = model.extract(batch["image0"])
    assert tuple(out["keypoints"].shape) == (2, 16, 2) and tuple(out["descriptors"].shape) == (2, 16, 8)
    assert out["valid"].dtype == "bool"
    norms = np.linalg.norm(np.asarray(out["descriptors"]), axis=-1)[np.asarray(out["valid"])]
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    kp = np.asarray(out["keypoints"])[np.asarray(out["valid"])]
    assert kp.min() >= 4 and kp[:, 0].max() <= 40 - 5 and kp[:, 1].max() <= 32 - 5  # border 4


def test_config_round_trip_and_bad_arguments():
    model = SuperPoint(descriptor_dim=8, batch_norm="conv_relu_bn", dustbin_bias=2.0, **TINY)
    clone = SuperPoint.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    images = np.random.default_rng(0).uniform(0, 255, (1, 16, 24, 1)).astype(np.float32)
    model.build_for_inference(16, 24)
    clone.build_for_inference(16, 24)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(clone.heatmap(images)), np.asarray(model.heatmap(images)), rtol=1e-5)
    with pytest.raises(ValueError, match="batch_norm"):
        SuperPoint(batch_norm="bn_first")
    with pytest.raises(ValueError, match="max_keypoints"):
        MagicPoint(max_keypoints=0)
    with pytest.raises(ValueError, match="multiples of 8"):
        model.heatmap(np.zeros((1, 20, 24, 1), np.float32))


def test_cell_candidates_select_the_same_keypoints():
    # After NMS with radius 4 a 5x5 block holds at most one maximum, so ranking one pixel per block is exact.
    images = np.random.default_rng(3).uniform(0, 255, (2, 64, 96, 1)).astype(np.float32)
    outs = []
    for cell_candidates in (True, False):
        model = MagicPoint(encoder_channels=(4, 4, 8, 8), head_channels=8, max_keypoints=64, detection_threshold=0.0,
                           cell_candidates=cell_candidates)
        model.build_for_inference(64, 96)
        if outs:
            model.set_weights(weights)
        weights = model.get_weights()
        outs.append({k: np.asarray(v) for k, v in model.extract(images).items()})
    assert outs[0]["valid"].sum() > 20
    np.testing.assert_array_equal(outs[0]["valid"], outs[1]["valid"])
    np.testing.assert_array_equal(outs[0]["keypoints"], outs[1]["keypoints"])
    np.testing.assert_allclose(outs[0]["scores"], outs[1]["scores"])


def test_magicpoint_checkpoint_initialises_superpoint(tmp_path):
    from tfmatch.runtime import checkpoints

    magic = MagicPoint(**TINY)
    magic.build_for_inference()
    checkpoints.save(str(tmp_path), magic, step=1)
    sp = SuperPoint(descriptor_dim=8, **TINY)
    sp.build_for_inference()
    report = checkpoints.restore(str(tmp_path), sp, strict=False)
    restored = [k for k in report.restored if not k.startswith("seed_generator")]
    assert restored and all(k.startswith("superpoint/conv") for k in restored)
    assert all("convD" in k for k in report.missing_in_checkpoint)  # only the descriptor head is new
    images = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(sp.heatmap(images)), np.asarray(magic.heatmap(images)), rtol=1e-5)
