"""A tiny ASLFeat training on synthetic plane pairs improves MMA@3px on held-out pairs (other photographs)."""

import keras
import numpy as np
import pytest

from tests.methods.aslfeat.planes import TEST_PHOTOS, TRAIN_PHOTOS, make_batch, make_pair, mutual_nn_mma
from tfmatch.methods.aslfeat import ASLFeat

SIZE = 48
STEPS = 150
KEYS = ("image0", "image1", "depth0", "depth1", "K0", "K1", "R_0to1", "t_0to1")


def _held_out_mma(model, pairs):
    images0 = np.stack([p["image0"] for p in pairs])
    images1 = np.stack([p["image1"] for p in pairs])
    out0 = {k: np.asarray(v) for k, v in model.extract(images0).items()}
    out1 = {k: np.asarray(v) for k, v in model.extract(images1).items()}
    scores = [mutual_nn_mma({k: v[i] for k, v in out0.items()}, {k: v[i] for k, v in out1.items()}, p["H"])
              for i, p in enumerate(pairs)]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


@pytest.mark.slow
def test_training_improves_held_out_mma():
    import tensorflow as tf  # the input pipeline (tf.data), as the trainer's

    rng = np.random.default_rng(0)
    train = [make_batch(rng, TRAIN_PHOTOS, batch_size=2, size=SIZE) for _ in range(32)]
    held_out = [make_pair(np.random.default_rng(1000 + i), TEST_PHOTOS, size=SIZE) for i in range(64)]
    model = ASLFeat(max_keypoints=256, num_corr=128, min_corr=16, safe_radius=4.0, score_threshold=0.0)
    before, _ = _held_out_mma(model, held_out)

    data = {k: np.concatenate([b[k] for b in train]) for k in KEYS}
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(2, drop_remainder=True).repeat()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    history = model.fit(dataset, steps_per_epoch=STEPS // 3, epochs=3, verbose=0)
    losses = history.history["descriptor_loss"]
    after, matches = _held_out_mma(model, held_out)
    assert losses[-1] < losses[0]
    assert matches >= 3
    # Untrained: 0.50 (two seeds). After 150 steps: 0.61-0.66 over seven runs whose gradients differ only by float
    # rounding (the hand-written peakiness gradient vs autodiff, a learning rate changed by 1e-6): the trajectory is
    # chaotic, so the margin is set below that spread; an untrained network never gains it. 64 held-out pairs
    # (about 400 mutual matches) keep the metric's own noise small.
    assert after > before + 0.08, (before, after)
