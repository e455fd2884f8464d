"""GeoDesc as a tfmatch ``Method``: patch pairs in training, SIFT keypoints -> patches -> descriptors at inference.

Training batch (``tfmatch.data.gl3d_patches``):
    ``patches0, patches1 [B, N, 32, 32, 1] float32 0..255`` (row r of one corresponds to row r of the other for
    r < num_inliers), ``num_inliers [B] int32``.
Inference: ``describe(images [B,H,W,1] 0..255, keypoints [B,N,4] = x, y, size, angle) -> {"descriptors"}``.
"""

from __future__ import annotations

import keras
from keras import ops

from tfmatch.losses import structured
from tfmatch.methods.base import Method
from tfmatch.methods.geodesc import losses
from tfmatch.methods.geodesc.network import (SIFT_SETTINGS, SIFT_SUPPORT_RADIUS, GeoDescTower, crop_patches,
                                             keypoint_patch_transform, standardize_patches)

PATCH_SIZE = 32


@keras.saving.register_keras_serializable(package="tfmatch.geodesc")
class LinearPenalty(keras.regularizers.Regularizer):
    """``weight * w``: TFMatch puts the LOG temperature itself into the regularisation sum (+1e-4 * t)."""

    def __init__(self, weight=1e-4):
        self.weight = weight

    def __call__(self, x):
        return structured.linear_temperature_penalty(x, self.weight)

    def get_config(self):
        return {"weight": self.weight}


class PatchDescriptorMethod(Method):
    """What GeoDesc and ContextDesc share: OpenCV keypoints -> 32x32 patches -> the GeoDesc tower.

    A subclass sets ``self.tower`` (a ``GeoDescTower``), ``descriptor_dim``, ``weight_decay``,
    ``support_radius`` and ``max_keypoints`` (the SIFT budget the evaluator is told in ``export_metadata``).
    """

    endpoint = "describe"
    input_channels = 1

    def add_temperature(self, name: str, learnt: bool = True):
        """A softmax-loss temperature, initially 1; when learnt, TFMatch adds ``weight_decay * t`` to the loss."""
        return self.add_weight(name=name, shape=(), initializer=keras.initializers.Constant(1.0), trainable=learnt,
                               regularizer=LinearPenalty(self.weight_decay) if learnt else None)

    def crop(self, images, keypoints):
        """Patches around OpenCV keypoints. Shape: images [B,H,W,1], keypoints [B,N,4] -> [B,N,32,32,1]."""
        return crop_patches(images, keypoint_patch_transform(keypoints, self.support_radius), PATCH_SIZE)

    def tower_outputs(self, patches, training=False):
        """Standardises raw patches and runs the tower on them, flattened.

        Shape:
            patches: [B, N, 32, 32, 1] float32 0..255
            returns: ``(outputs, B, N)``; outputs as ``GeoDescTower`` over the B*N patches (``raw``,
            ``descriptors`` [B*N, D], ``conv5`` [B*N, 8, 8, C])
        """
        shape = ops.shape(patches)
        flat = ops.reshape(patches, (-1, PATCH_SIZE, PATCH_SIZE, 1))
        return self.tower(standardize_patches(ops.cast(flat, "float32")), training=training), shape[0], shape[1]

    def export_metadata(self):
        meta = super().export_metadata()
        meta.update(descriptor_dim=self.descriptor_dim, patch_size=PATCH_SIZE, support_radius=self.support_radius,
                    detector=dict(SIFT_SETTINGS, max_keypoints=self.max_keypoints))
        return meta


def check_patch_batch(batch, keys=("patches0", "patches1", "num_inliers")):
    for key in keys:
        if key not in batch:
            raise KeyError(f"tfmatch/methods/geodesc/model.py: training batch has no {key!r}; it has {sorted(batch)}")
    shape = tuple(batch["patches0"].shape)
    if len(shape) != 5 or shape[2:] != (PATCH_SIZE, PATCH_SIZE, 1):
        raise ValueError(f"tfmatch/methods/geodesc/model.py: patches0 must be [B, N, {PATCH_SIZE}, {PATCH_SIZE}, 1],"
                         f" got {shape}")


@keras.saving.register_keras_serializable(package="tfmatch.geodesc")
class GeoDesc(PatchDescriptorMethod):
    """GeoDesc (Luo et al., ECCV 2018) as trained by TFMatch.

    Args:
      descriptor_dim: descriptor size (paper: 128).
      loss_type: "LOG" (tfmatch default: softmax loss with learnable temperature), "L2NET", "HARD_TRIPLET".
      weight_decay: TFMatch weight decay on every kernel (1e-4), plus 1e-4 * temperature for LOG.
      support_radius: patch half-width in units of the OpenCV keypoint size (originals: ~5.30 = 10.6 sigma).
      max_keypoints: how many SIFT keypoints the evaluator should detect (GeoDesc demo: 8192, by octave).
      width: channel multiplier of the tower (paper: 1.0; CI-sized runs use less).

    Shape:
        call: batch dict (module docstring) -> ``descriptors0, descriptors1 [B, N, D]``
        describe: images [B, H, W, 1], keypoints [B, N, 4] -> ``descriptors [B, N, D]``
    """

    loss_term_names = ("descriptor_loss",)

    def __init__(self, descriptor_dim: int = 128, loss_type: str = "LOG", weight_decay: float = 1e-4,
                 support_radius: float = SIFT_SUPPORT_RADIUS, max_keypoints: int = 8192, width: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        losses.check_loss_type(loss_type)
        if max_keypoints <= 0:
            raise ValueError(f"max_keypoints must be > 0, got {max_keypoints}")
        if support_radius <= 0:
            raise ValueError(f"support_radius must be > 0, got {support_radius}")
        self.descriptor_dim = descriptor_dim
        self.loss_type = loss_type
        self.weight_decay = weight_decay
        self.support_radius = support_radius
        self.max_keypoints = max_keypoints
        self.width = width
        self.tower = GeoDescTower(descriptor_dim, weight_decay, width, name="geodesc")
        self.temperature = self.add_temperature("scale_temperature", learnt=loss_type == "LOG")
        self.accuracy_tracker = keras.metrics.Mean(name="matching_accuracy")
        # Create every variable now (one dummy patch), so that checkpoints and .keras files hold them all.
        self.tower(ops.zeros((1, PATCH_SIZE, PATCH_SIZE, 1)), training=False)
        self.built = True

    # ---------------------------------------------------------------------------------------------------------
    def describe_patches(self, patches, training=False):
        """Runs the tower on raw patches.

        Shape:
            patches: [B, N, 32, 32, 1] float32 0..255 (standardised here)
            returns: dict of ``raw [B,N,D]``, ``descriptors [B,N,D]``, ``conv5 [B,N,8,8,128 * width]``
        """
        out, batch, num = self.tower_outputs(patches, training=training)
        return {
            "raw": ops.reshape(out["raw"], (batch, num, self.descriptor_dim)),
            "descriptors": ops.reshape(out["descriptors"], (batch, num, self.descriptor_dim)),
            "conv5": ops.reshape(out["conv5"], (batch, num, 8, 8, out["conv5"].shape[-1])),
        }

    def call(self, batch, training=False):
        check_patch_batch(batch)
        # The two towers run separately, so each normalises with its own batch statistics (as TFMatch).
        out0 = self.describe_patches(batch["patches0"], training=training)
        out1 = self.describe_patches(batch["patches1"], training=training)
        return {"descriptors0": out0["descriptors"], "descriptors1": out1["descriptors"]}

    def loss_terms(self, batch, predictions, training=True):
        d0, d1 = predictions["descriptors0"], predictions["descriptors1"]
        self.accuracy_tracker.update_state(structured.matching_accuracy(d0, d1, batch["num_inliers"]))
        return {"descriptor_loss": losses.descriptor_loss(self.loss_type, d0, d1, batch["num_inliers"],
                                                          self.temperature)}

    # ---------------------------------------------------------------------------------------------------------
    def describe(self, images, keypoints):
        patches = self.crop(images, keypoints)
        return {"descriptors": self.describe_patches(patches, training=False)["descriptors"]}

    def get_config(self):
        config = super().get_config()
        config.update(descriptor_dim=self.descriptor_dim, loss_type=self.loss_type, weight_decay=self.weight_decay,
                      support_radius=self.support_radius, max_keypoints=self.max_keypoints, width=self.width)
        return config
