"""ContextDesc (Luo et al., CVPR 2019; "ContextDesc++" of TFMatch: end-to-end) as a tfmatch ``Method``.

Training batch (``tfmatch.data.gl3d_patches`` with ``regional=True``): the GeoDesc batch
(``patches0, patches1 [B,N,32,32,1]``, ``num_inliers [B]``) plus ``keypoints0, keypoints1 [B,N,2]`` (keypoint
centres in normalised image coordinates, [-1, 1]) and ``regional0, regional1 [B,h,w,Dr]`` (precomputed regional
features, 14x14x2048 by default).

Inference: ``describe(images, keypoints)``: the model computes the regional features itself from the image
with its ResNet-50 trunk (weights from ``regional_weights``), so the SavedModel has the same signature as GeoDesc.
"""

from __future__ import annotations

import keras
from keras import ops

from tfmatch.losses import structured
from tfmatch.methods.contextdesc import losses
from tfmatch.methods.contextdesc.network import (GeometricContext, MatchabilityPredictor, VisualContext,
                                                 apply_homography, build_regional_trunk, normalized_keypoint_xy,
                                                 preprocess_regional, random_corner_homography)
from tfmatch.methods.geodesc.model import PATCH_SIZE, PatchDescriptorMethod, check_patch_batch
from tfmatch.methods.geodesc.network import SIFT_SUPPORT_RADIUS, GeoDescTower, l2_normalize


@keras.saving.register_keras_serializable(package="tfmatch.contextdesc")
class ContextDesc(PatchDescriptorMethod):
    """ContextDesc: GeoDesc local features + visual context + geometric context + matchability.

    Args:
      descriptor_dim: descriptor size (128).
      regional_dim: channels of the regional features (2048: ResNet-50; the original training config said 1024,
        which does not fit its own 14x14x2048 feature files).
      interpolation: "mean3" (the original's effective 3-nearest-cell mean; default, weight-compatible) or
        "inverse_distance" (what the original meant to compute).
      regional_weights: weights file of the ResNet-50 trunk used by ``describe`` (the same file given to
        ``data_tools.extract_regional_features``); None = local ImageNet weights or random with a warning.
      keypoint_perturbation: corner shift of the random homography applied to the keypoint layout in training.
      aug_weight, raw_weight, quad_weight: loss weights (all 1 in TFMatch).
      weight_decay: TFMatch weight decay (1e-4) on kernels and biases; +1e-4 * temperature per LOG loss.
      support_radius: patch half-width in units of the OpenCV keypoint size (~10.6 sigma).
      max_keypoints: SIFT keypoints the evaluator should detect (contextdesc HPatches: 2048).
      width: channel multiplier of the GeoDesc tower (paper: 1.0; CI-sized runs use less).

    Shape:
        call: batch dict (module docstring) -> ``descriptors0/1 [B,N,D]``, ``raw_descriptors0/1 [B,N,D]``,
        ``matchability0/1 [B,N]`` (logits)
        describe: images [B,H,W,1] 0..255, keypoints [B,N,4] -> ``descriptors [B,N,D]``
    """

    loss_term_names = ("aug_loss", "raw_loss", "quad_loss")

    def __init__(self, descriptor_dim: int = 128, regional_dim: int = 2048, interpolation: str = "mean3",
                 regional_weights: str | None = None, keypoint_perturbation: float = 0.3, aug_weight: float = 1.0,
                 raw_weight: float = 1.0, quad_weight: float = 1.0, weight_decay: float = 1e-4,
                 support_radius: float = SIFT_SUPPORT_RADIUS, max_keypoints: int = 2048, seed: int = 0,
                 width: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if regional_dim <= 0:
            raise ValueError(f"regional_dim must be > 0, got {regional_dim}")
        if max_keypoints <= 0:
            raise ValueError(f"max_keypoints must be > 0, got {max_keypoints}")
        self.descriptor_dim = descriptor_dim
        self.regional_dim = regional_dim
        self.interpolation = interpolation
        self.regional_weights = regional_weights
        self.keypoint_perturbation = keypoint_perturbation
        self.aug_weight = aug_weight
        self.raw_weight = raw_weight
        self.quad_weight = quad_weight
        self.weight_decay = weight_decay
        self.support_radius = support_radius
        self.max_keypoints = max_keypoints
        self.seed = seed
        self.width = width
        self.tower = GeoDescTower(descriptor_dim, weight_decay, width, name="geodesc")
        self.matchability = MatchabilityPredictor(weight_decay, name="kpt_m")
        self.visual_context = VisualContext(descriptor_dim, interpolation, weight_decay, name="vis_context")
        self.geometric_context = GeometricContext(descriptor_dim, weight_decay=weight_decay, name="geo_context")
        # Used by describe only (training reads precomputed features), but built here so that checkpoints carry
        # the trunk the features were made with and export restores exactly it.
        self.regional_trunk = build_regional_trunk(regional_weights)
        self.temperature = self.add_temperature("scale_temperature")
        self.raw_temperature = self.add_temperature("raw_scale_temperature")
        self.seed_generator = keras.random.SeedGenerator(seed, name="perturbation_seed")
        self.accuracy_tracker = keras.metrics.Mean(name="matching_accuracy")
        # Create every variable now (one dummy image pair of 3 keypoints), so checkpoints hold them all.
        dummy_raw, _, dummy_m = self._local(ops.zeros((1, 3, PATCH_SIZE, PATCH_SIZE, 1)), training=False)
        self.augment(dummy_raw, dummy_m, ops.zeros((1, 2, 2, regional_dim)), ops.zeros((1, 3, 2)),
                     ops.zeros((1, 3, 2)), training=False)
        self.built = True

    # ---------------------------------------------------------------------------------------------------------
    def regional_features(self, images):
        """ResNet-50 regional features of gray images. Shape: [B,H,W,1] 0..255 -> [B,H/32,W/32,2048]."""
        return self.regional_trunk(preprocess_regional(images), training=False)

    def _local(self, patches, training):
        out, batch, num = self.tower_outputs(patches, training=training)
        m_logit, m = self.matchability(out["conv5"], training=training)
        raw = ops.reshape(out["raw"], (batch, num, self.descriptor_dim))
        return raw, ops.reshape(m_logit, (batch, num)), ops.reshape(m, (batch, num))

    def augment(self, raw, m, regional, points_xy, layout_xy, training=False):
        """Fuses the local features with visual and geometric context.

        Shape:
            raw [B,K,D], m [B,K], regional [B,h,w,Dr], points_xy and layout_xy [B,K,2] -> [B,K,D] normalised
        """
        if regional.shape[-1] is not None and regional.shape[-1] != self.regional_dim:
            raise ValueError(f"tfmatch/methods/contextdesc/model.py: regional features have {regional.shape[-1]}"
                             f" channels, ContextDesc.regional_dim is {self.regional_dim}")
        visual = self.visual_context(regional, raw, points_xy, training=training)
        geometric = self.geometric_context(ops.concatenate([m[..., None], layout_xy], axis=-1), training=training)
        return l2_normalize(raw + visual + geometric)

    def call(self, batch, training=False):
        check_patch_batch(batch, ("patches0", "patches1", "num_inliers", "keypoints0", "keypoints1",
                                  "regional0", "regional1"))
        out = {}
        for i in ("0", "1"):
            raw, m_logit, m = self._local(batch["patches" + i], training)
            xy = ops.cast(batch["keypoints" + i], "float32")
            layout = xy
            if training and self.keypoint_perturbation > 0:
                homography = random_corner_homography(ops.shape(xy)[0], self.keypoint_perturbation,
                                                      self.seed_generator)
                layout = apply_homography(homography, xy)
            out["descriptors" + i] = self.augment(raw, m, ops.cast(batch["regional" + i], "float32"), xy, layout,
                                                  training=training)
            out["raw_descriptors" + i] = l2_normalize(raw)
            out["matchability" + i] = m_logit
        return out

    def loss_terms(self, batch, predictions, training=True):
        n = batch["num_inliers"]
        self.accuracy_tracker.update_state(
            structured.matching_accuracy(predictions["descriptors0"], predictions["descriptors1"], n))
        terms = losses.contextdesc_losses(predictions, n, self.temperature, self.raw_temperature)
        return {"aug_loss": self.aug_weight * terms["aug_loss"], "raw_loss": self.raw_weight * terms["raw_loss"],
                "quad_loss": self.quad_weight * terms["quad_loss"]}

    # ---------------------------------------------------------------------------------------------------------
    def describe(self, images, keypoints):
        """Shape: images [B,H,W,1] 0..255, keypoints [B,N,4] (x, y, size, angle) -> descriptors [B,N,D].

        Context normalisation mixes all N keypoints of an image: pass only real keypoints (no padding)."""
        raw, _, m = self._local(self.crop(images, keypoints), training=False)
        shape = ops.shape(images)
        xy = normalized_keypoint_xy(keypoints, shape[1], shape[2])
        regional = self.regional_features(images)
        return {"descriptors": self.augment(raw, m, regional, xy, xy, training=False)}

    def build_for_inference(self, height: int = 64, width: int = 64) -> None:
        # The trunk needs at least one 32-pixel cell; 3 nearest cells need 3 cells.
        super().build_for_inference(max(height, 96), max(width, 96))

    def export_metadata(self):
        meta = super().export_metadata()
        meta.update(regional_features={"trunk": "ResNet-50 (keras.applications) up to conv5_block3_add",
                                       "computed": "inside the model from the input image", "stride": 32,
                                       "dim": self.regional_dim, "weights": self.regional_weights or "none given"})
        return meta

    def get_config(self):
        config = super().get_config()
        config.update(descriptor_dim=self.descriptor_dim, regional_dim=self.regional_dim,
                      interpolation=self.interpolation, regional_weights=self.regional_weights,
                      keypoint_perturbation=self.keypoint_perturbation, aug_weight=self.aug_weight,
                      raw_weight=self.raw_weight, quad_weight=self.quad_weight, weight_decay=self.weight_decay,
                      support_radius=self.support_radius, max_keypoints=self.max_keypoints, seed=self.seed,
                      width=self.width)
        return config
