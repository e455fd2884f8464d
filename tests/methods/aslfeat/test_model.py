"""ASLFeat model: extract contract, stage 1 -> stage 2 restore by variable path, stage-2 freezing and BN mode."""

import numpy as np
import pytest

from tests.methods.aslfeat.planes import TRAIN_PHOTOS, make_batch
from tfmatch.methods.aslfeat import ASLFeat
from tfmatch.methods.aslfeat.network import standardize
from tfmatch.runtime import checkpoints

SIZE = 40
DCN = dict(deform_type="u", trainable_scopes=("conv6_0", "conv6_1", "conv6"), update_bn_moving_stats=False,
           weight_decay=0.0)


@pytest.fixture(scope="module")
def batch():
    return make_batch(np.random.default_rng(0), TRAIN_PHOTOS, batch_size=2, size=SIZE)


@pytest.mark.parametrize("multi_scale", [False, True])
def test_extract_fixed_n_valid_and_inside(batch, multi_scale):
    model = ASLFeat(max_keypoints=300, score_threshold=0.0, multi_scale=multi_scale, num_scales=2)
    out = {k: np.asarray(v) for k, v in model.extract(batch["image0"]).items()}
    assert out["keypoints"].shape == (2, 300, 2) and out["descriptors"].shape == (2, 300, 128)
    assert out["scores"].shape == (2, 300) and out["valid"].dtype == bool
    valid = out["valid"]
    assert 0 < valid.sum(axis=1).min() and valid.sum(axis=1).max() < 300  # padded: fewer maxima than N
    kp = out["keypoints"][valid]
    assert (kp >= 0).all() and (kp[:, 0] <= SIZE - 1).all() and (kp[:, 1] <= SIZE - 1).all()
    if not multi_scale:  # border 5, sub-pixel steps of at most 0.5
        assert (kp >= 4.5).all() and (kp <= SIZE - 1 - 4.5).all()
    np.testing.assert_allclose(np.linalg.norm(out["descriptors"][valid], axis=-1), 1.0, rtol=1e-5)
    assert (out["scores"][~valid] == 0).all()
    scores = np.where(valid, out["scores"], -np.inf)
    assert (np.diff(scores, axis=1)[:, : valid.sum(axis=1).min() - 1] <= 0).all()  # sorted by score


def test_training_outputs_and_weight_decay(batch):
    model = ASLFeat(num_corr=64, min_corr=8)
    pred = model(batch, training=True)
    assert tuple(pred["descriptors0"].shape) == (2, 64, 128)
    assert np.asarray(pred["corr_valid"]).sum() > 100
    loss = float(model.loss_terms(batch, pred)["descriptor_loss"])
    assert np.isfinite(loss) and loss > 0
    assert len(model.losses) == 9  # L2 on the nine conv kernels (no biases, BN has no parameters)
    stage2 = ASLFeat(**DCN)
    stage2(batch, training=False)
    assert not stage2.losses  # stage 2: no weight decay (spec 1.6)


@pytest.mark.parametrize("stage", [{}, DCN])
def test_two_towers_in_one_call_equal_two_calls(batch, stage):
    """ASLFeat.call runs both towers as one call of two groups: the same maps, and the same BN moving statistics
    and running maxima afterwards, as the original's two calls (each tower with its own batch statistics)."""
    model = ASLFeat(num_corr=64, min_corr=8, **stage)
    model(batch, training=False)
    net = model.net
    before = [np.array(v.numpy()) for v in net.non_trainable_variables]
    x0, x1 = standardize(batch["image0"]), standardize(batch["image1"])
    separate = [net(x0, training=True), net(x1, training=True)]
    after_separate = [np.array(v.numpy()) for v in net.non_trainable_variables]
    for v, value in zip(net.non_trainable_variables, before):
        v.assign(value)
    both = net(np.concatenate([x0, x1]), training=True, groups=2)
    for key in ("descriptor_map", "score_map"):
        np.testing.assert_allclose(np.asarray(both[key]),
                                   np.concatenate([np.asarray(out[key]) for out in separate]), rtol=2e-5, atol=2e-6)
    moved = 0
    for v, expected, initial in zip(net.non_trainable_variables, after_separate, before):
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, err_msg=v.path)
        moved += not np.allclose(expected, initial)
    # Both stages move the three running maxima; stage 1 also the mean and variance of the eight BNs, stage 2 none.
    assert moved == (3 if stage else 3 + 8 * 2)


def _snapshot(model):
    return {checkpoints.variable_key(v, model.name): np.array(v.numpy()) for v in model.variables}


def test_stage2_restores_stage1_and_trains_only_conv6(batch, tmp_path):
    stage1 = ASLFeat(num_corr=64, min_corr=8)
    stage1(batch, training=True)  # builds and moves BN / instance-max statistics away from their init
    for v in stage1.trainable_variables:
        v.assign(v.numpy() + np.random.default_rng(1).normal(scale=0.01, size=v.shape).astype("float32"))
    checkpoints.save(str(tmp_path), stage1, step=1)
    before = _snapshot(stage1)

    stage2 = ASLFeat(**DCN)
    stage2(batch, training=False)
    report = checkpoints.restore(str(tmp_path), stage2, strict=False)
    after = _snapshot(stage2)
    assert not report.shape_mismatch and not report.unused_in_checkpoint
    # Only the new offset/amplitude convs (and the sampling seed) are left as initialised.
    assert all("/offset/" in k or "/amplitude/" in k or "seed" in k for k in report.missing_in_checkpoint)
    assert any("conv6/conv/offset/kernel" == k.split("net/")[-1] for k in report.missing_in_checkpoint)
    for key, value in before.items():
        if "seed" not in key:
            np.testing.assert_array_equal(after[key], value, err_msg=key)

    # Fresh DCN = the plain conv at amplitude 0.5: in training mode BN removes the factor on conv6_0/conv6_1 and
    # conv6 is halved, so the dense descriptors are half those of stage 1 (the same after L2 normalisation).
    images = standardize(batch["image0"])
    d1, d2 = [np.asarray(m.net(images, training=True)["descriptor_map"]) for m in (stage1, stage2)]
    np.testing.assert_allclose(d2, 0.5 * d1, rtol=1e-3, atol=1e-4)

    trainable = {checkpoints.variable_key(v, stage2.name) for v in stage2.trainable_variables}
    assert trainable and all(k.startswith(("net/conv6_0/", "net/conv6_1/", "net/conv6/")) for k in trainable)
    assert "net/conv6/conv/kernel" in trainable and "net/conv6/conv/offset/kernel" in trainable

    import keras

    stage2.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), run_eagerly=True)  # no tracing: one step
    stage2.train_on_batch(batch)
    trained = _snapshot(stage2)
    changed = {k for k in trained if not np.array_equal(trained[k], after[k])}
    assert "net/conv6/conv/kernel" in changed and "net/conv0/conv/kernel" not in changed
    # BN: batch statistics in training, moving averages frozen; the peakiness instance max still moves.
    assert not any("moving_" in k for k in changed)
    assert "net/conv6_peakiness/instance_max" in changed


@pytest.mark.parametrize("stage", [{}, DCN])
def test_bfloat16_compute_matches_float32_with_the_same_weights(batch, stage):
    """compute_dtype='bfloat16': same variables (float32, same paths), outputs close to float32, finite gradients."""
    import keras

    reference = ASLFeat(num_corr=64, min_corr=8, seed=3, **stage)
    fast = ASLFeat(num_corr=64, min_corr=8, seed=3, compute_dtype="bfloat16", **stage)
    reference(batch, training=False)
    fast(batch, training=False)
    assert _snapshot(reference).keys() == _snapshot(fast).keys()
    assert all(v.dtype == "float32" for v in fast.variables if "seed" not in v.path)
    rng = np.random.default_rng(2)
    for a, b in zip(reference.variables, fast.variables):
        if a.trainable and ("offset" in a.path or "amplitude" in a.path):  # DCN: leave the regular grid
            a.assign(rng.normal(scale=0.05, size=a.shape).astype("float32"))
        b.assign(a.numpy())
    out32 = {k: np.asarray(v, "float32") for k, v in reference.extract(batch["image0"]).items()}
    out16 = {k: np.asarray(v, "float32") for k, v in fast.extract(batch["image0"]).items()}
    assert out16["descriptors"].dtype == np.float32 and out16["scores"].dtype == np.float32
    maps32 = reference.net(standardize(batch["image0"]))
    maps16 = fast.net(standardize(batch["image0"]))
    assert keras.backend.standardize_dtype(maps16["score_map"].dtype) == "float32"
    for key in ("score_map", "descriptor_map"):
        a, b = np.asarray(maps32[key], "float32"), np.asarray(maps16[key], "float32")
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < 3e-2, key  # bfloat16 operands: 1e-3 .. 1e-2
    assert np.isfinite(out16["descriptors"]).all()
    # The loss of one training call stays finite and close (same seed state: the same correspondences).
    losses = []
    for model in (reference, fast):
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        pred, _ = model.stateless_call(trainable, non_trainable, batch, training=True)
        losses.append(float(model.loss_terms(batch, pred)["descriptor_loss"]))
    assert np.isfinite(losses).all() and abs(losses[0] - losses[1]) < 0.05 * abs(losses[0])


def test_config_round_trip_and_errors():
    model = ASLFeat(deform_type="a", max_keypoints=77, loss="circle", trainable_scopes=("conv6",))
    clone = ASLFeat.from_config(model.get_config())
    assert clone.max_keypoints == 77 and clone.loss == "circle" and clone.deform_type == "a"
    assert clone.trainable_scopes == ("conv6",)
    with pytest.raises(ValueError, match="max_keypoints"):
        ASLFeat(max_keypoints=0)
    with pytest.raises(ValueError, match="trainable_scopes"):
        ASLFeat(trainable_scopes=("conv9",))
    with pytest.raises(ValueError, match="lacks"):
        ASLFeat()({"image0": np.zeros((1, 8, 8, 1), "float32")})


def test_visualization_marks_true_partners(batch):
    model = ASLFeat(num_corr=32, min_corr=8)
    pred = model(batch, training=False)
    vis = model.visualization(batch, pred)
    assert vis["keypoints0"].shape == (2, 32, 2) and vis["correct"].shape == (2, 32)
    # Identical descriptors on both sides: every valid row finds itself.
    pred = dict(pred, descriptors1=pred["descriptors0"])
    vis = model.visualization(batch, pred)
    np.testing.assert_array_equal(vis["correct"], np.asarray(pred["corr_valid"]))


def test_recipes_parse_and_build_both_stages():
    import gin

    from tfmatch import config
    from tfmatch.runtime import trainer

    try:
        config.parse(["methods/aslfeat/base.gin", "mixins/tiny.gin"], ["GL3D_ROOT = 'unused'"], finalize=False)
        base = trainer.build_model()
        assert base.deform_type is None and base.weight_decay == 5e-5 and base.max_keypoints == 128
        assert gin.query_parameter("keras.optimizers.schedules.ExponentialDecay.initial_learning_rate") == 0.1
        assert gin.query_parameter("keras.optimizers.SGD.momentum") == 0.9
        config.parse(["methods/aslfeat/dcn.gin"], ["GL3D_ROOT = 'unused'", "BASE_MODEL_DIR = 'stage1'"],
                     finalize=False)
        dcn = trainer.build_model()
        assert dcn.deform_type == "u" and dcn.weight_decay == 0.0 and not dcn.update_bn_moving_stats
        assert dcn.trainable_scopes == ("conv6_0", "conv6_1", "conv6") and dcn.max_keypoints == 5000
        assert gin.query_parameter("keras.optimizers.schedules.ExponentialDecay.initial_learning_rate") == 0.01
        assert gin.query_parameter("%BASE_MODEL_DIR") == "stage1"
        assert "BASE_MODEL_DIR" in repr(gin.query_parameter("train.init_checkpoint"))
    finally:
        gin.clear_config()


def test_shifted_moments_far_from_zero_and_their_gradient():
    import tensorflow as tf

    from tfmatch.methods.aslfeat.network import shifted_moments

    rng = np.random.default_rng(5)
    # Mean 1000, spread 0.5: E[x^2] - E[x]^2 without the shift loses the variance to float32 rounding.
    parts = (1000.0 + 0.5 * rng.normal(size=(2, 2, 5, 6, 3))).astype(np.float32)
    x = tf.constant(parts)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        mean, variance = shifted_moments(x)
        ref_mean, ref_variance = tf.nn.moments(x, axes=[1, 2, 3], keepdims=True)
        weights = rng.normal(size=(2, 1, 1, 1, 3)).astype(np.float32)
        value, ref_value = (tf.reduce_sum(weights * (m + v)) for m, v in ((mean, variance), (ref_mean, ref_variance)))
    exact = parts.astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), exact.mean(axis=(1, 2, 3), keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(variance.numpy(), exact.var(axis=(1, 2, 3), keepdims=True), rtol=2e-3)
    np.testing.assert_allclose(tape.gradient(value, x).numpy(), tape.gradient(ref_value, x).numpy(), atol=2e-3)
