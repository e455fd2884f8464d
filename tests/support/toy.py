"""A small test-only method: dense descriptors learned on pairs of images related by a known shift.

It has what a real method has (gin registration, ``loss_terms``, ``extract``, ``visualization``) with no
BatchNorm, so one step under MirroredStrategy equals one step on one device exactly.
"""

import gin
import keras
import numpy as np
from keras import layers, ops

from tfmatch.methods.base import Method


class ToyDescriptor(Method):
    loss_term_names = ("descriptor_loss",)

    def __init__(self, channels: int = 8, descriptor_dim: int = 16, max_keypoints: int = 16,
                 temperature: float = 0.1, nan_at_step: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.nan_at_step = nan_at_step  # tests of the NaN guard: the loss turns NaN from this step on
        self.channels, self.descriptor_dim = channels, descriptor_dim
        self.max_keypoints, self.temperature = max_keypoints, temperature
        self.conv0 = layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv0")
        self.conv1 = layers.Conv2D(descriptor_dim, 3, padding="same", name="conv1")
        if nan_at_step:  # training calls so far: a counter that every backend's stateless step carries along
            self.training_calls = self.add_weight(name="training_calls", shape=(), initializer="zeros",
                                                  trainable=False, dtype="int32")

    def dense(self, images):
        x = (images - 128.0) / 64.0
        features = self.conv1(self.conv0(x))
        # Score = the raw descriptor's norm: enough for a test model that must also detect.
        return ops.normalize(features, axis=-1), ops.sqrt(ops.sum(ops.square(features), axis=-1))

    def call(self, batch, training=False):
        if self.nan_at_step and training:
            self.training_calls.assign(self.training_calls + 1)
        d0, s0 = self.dense(batch["image0"])
        d1, s1 = self.dense(batch["image1"])
        return {"descriptors0": d0, "descriptors1": d1, "scores0": s0, "scores1": s1}

    @staticmethod
    def _gather(dense, points):
        b, h, w, c = ops.shape(dense)
        flat = ops.reshape(dense, (b, h * w, c))
        index = ops.cast(points[..., 1] * w + points[..., 0], "int32")
        return ops.take_along_axis(flat, index[..., None], axis=1)

    def loss_terms(self, batch, predictions, training=True):
        f0 = self._gather(predictions["descriptors0"], batch["points0"])
        f1 = self._gather(predictions["descriptors1"], batch["points1"])
        logits = ops.einsum("bnc,bmc->bnm", f0, f1) / self.temperature
        labels = ops.broadcast_to(ops.arange(ops.shape(f0)[1])[None], ops.shape(logits)[:2])
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        loss = ops.mean(loss)
        if self.nan_at_step:
            loss = ops.where(self.training_calls >= self.nan_at_step, float("nan"), loss)
        return {"descriptor_loss": loss}

    def extract(self, images):
        descriptors, scores = self.dense(images)
        b, h, w = ops.shape(scores)[0], ops.shape(scores)[1], ops.shape(scores)[2]
        top_scores, index = ops.top_k(ops.reshape(scores, (b, -1)), self.max_keypoints)
        keypoints = ops.stack([index % w, index // w], axis=-1)
        flat = ops.reshape(descriptors, (b, -1, self.descriptor_dim))
        return {"keypoints": ops.cast(keypoints, "float32"), "scores": top_scores,
                "descriptors": ops.take_along_axis(flat, index[..., None], axis=1),
                "valid": ops.ones_like(top_scores, dtype="bool")}

    def visualization(self, batch, predictions):
        return {"image0": batch["image0"], "image1": batch["image1"], "keypoints0": batch["points0"],
                "keypoints1": batch["points1"], "correct": np.ones(np.shape(batch["points0"])[:2], bool)}

    def export_metadata(self):
        return {**super().export_metadata(), "max_keypoints": self.max_keypoints,
                "descriptor_dim": self.descriptor_dim}

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "descriptor_dim": self.descriptor_dim,
                "max_keypoints": self.max_keypoints, "temperature": self.temperature, "nan_at_step": self.nan_at_step}


gin.register(ToyDescriptor, module="toy")


def make_pair(rng, size: int, num_points: int):
    """A smooth random texture and a copy shifted by a random integer offset, with corresponding points."""
    import cv2

    noise = rng.uniform(0, 255, (size + 16, size + 16)).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), 1.5)
    texture = (texture - texture.min()) / (texture.max() - texture.min() + 1e-6) * 255
    dx, dy = rng.integers(-4, 5, size=2)
    image0 = texture[8:8 + size, 8:8 + size]
    image1 = texture[8 - dy:8 - dy + size, 8 - dx:8 - dx + size]
    points0 = rng.integers(6, size - 6, size=(num_points, 2))
    points1 = points0 + np.array([dx, dy])
    return image0[..., None], image1[..., None], points0.astype(np.int32), points1.astype(np.int32)


@gin.configurable
def toy_pairs_dataset(split, global_batch_size, input_context=None, image_size: int = 32, num_points: int = 32,
                      num_samples: int = 64, seed: int = 0):
    """``image0, image1 [B,S,S,1]`` 0..255, ``points0, points1 [B,P,2] int32`` (x, y), repeated when training."""
    import tensorflow as tf

    rng = np.random.default_rng(seed + (0 if split == "train" else 1000))
    pairs = [make_pair(rng, image_size, num_points) for _ in range(num_samples)]
    data = {name: np.stack([p[i] for p in pairs]) for i, name in enumerate(["image0", "image1", "points0", "points1"])}
    dataset = tf.data.Dataset.from_tensor_slices(data)
    batch = global_batch_size
    if input_context is not None:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch = input_context.get_per_replica_batch_size(global_batch_size)
    if split == "train":
        dataset = dataset.repeat()
    return dataset.batch(batch, drop_remainder=True).prefetch(2)
