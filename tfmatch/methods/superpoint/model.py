"""MagicPoint (detector only, trained on synthetic shapes) and SuperPoint (joint detector + descriptor).

Batches (see ``tfmatch/data/synthetic_shapes.py`` and ``tfmatch/data/image_folder.py``):

- MagicPoint: ``image [B,H,W,1]`` float32 0..255, ``keypoint_map [B,H,W]`` (1 at corners), ``valid_mask [B,H,W]``.
- SuperPoint: ``image0, image1 [B,H,W,1]``, ``keypoint_map0, keypoint_map1``, ``valid_mask0, valid_mask1`` and
  ``homography [B,3,3]`` mapping image-0 pixels to image-1 pixels.

H and W must be multiples of 8. Inference (``extract``) takes any such size; the heatmap goes through max-pool NMS,
a threshold and a fixed top-k, so the output has a static ``max_keypoints`` rows with a ``valid`` mask.
"""

from __future__ import annotations

import keras
from keras import ops

from tfmatch.layers import keypoints as keypoint_layers
from tfmatch.layers import nms as nms_layers
from tfmatch.methods.base import Method
from tfmatch.methods.superpoint import losses
from tfmatch.methods.superpoint.network import CELL, SuperPointNet, logits_to_heatmap

DESCRIPTOR_LOSSES = ("dense", "sparse")


def _check_images(images, name="images"):
    if len(images.shape) != 4 or images.shape[-1] != 1:
        raise ValueError(f"superpoint/model.py: {name} must be [B, H, W, 1] grayscale 0..255, got {images.shape}")
    for size in images.shape[1:3]:
        if size is not None and size % CELL:
            raise ValueError(f"superpoint/model.py: {name} height and width must be multiples of {CELL}, "
                             f"got {images.shape}")


@keras.saving.register_keras_serializable(package="tfmatch.superpoint")
class MagicPoint(Method):
    """The SuperPoint detector alone, trained with the 65-way cell cross-entropy on synthetic shapes.

    Args:
      encoder_channels, head_channels, batch_norm: see ``network.SuperPointNet`` (paper: (64, 64, 128, 128), 256,
        None for the Magic Leap network).
      max_keypoints: fixed number of keypoint rows ``extract`` returns (padded, with ``valid``).
      nms_radius: max-pool NMS radius in pixels (4 = a 9x9 window, as the originals).
      detection_threshold: heatmap threshold (0.015 Magic Leap demo and HA export; 0.001 rpautrat evaluation).
      border: keypoints closer than this to the image border are dropped (4 in every original).
      label_noise: break ties between several corners in one cell at random (rpautrat); False = first one.
      seed: seed of the model's random draws (label noise, sampled descriptor pairs).
      descriptor_dim: descriptor length (SuperPoint only; 256).
      dustbin_bias: initial dustbin logit (0 in the originals; see ``network.SuperPointNet``).
      cell_candidates: rank only the best pixel of each (nms_radius + 1)^2 block after NMS (a 25 times smaller
        top-k at radius 4; the same keypoints except where neighbouring maxima tie exactly, see
        ``keypoints.select_top_k``); False ranks every pixel.
    """

    loss_term_names = ("detector",)
    descriptor_head = False

    def __init__(self, encoder_channels=(64, 64, 128, 128), head_channels: int = 256, batch_norm: str | None = None,
                 max_keypoints: int = 1000, nms_radius: int = 4, detection_threshold: float = 0.015,
                 border: int = 4, label_noise: bool = True, seed: int = 0, descriptor_dim: int = 256,
                 dustbin_bias: float = 0.0, cell_candidates: bool = True, **kwargs):
        super().__init__(**kwargs)
        if max_keypoints <= 0:
            raise ValueError(f"superpoint/model.py: max_keypoints must be > 0, got {max_keypoints}")
        if nms_radius < 0:
            raise ValueError(f"superpoint/model.py: nms_radius must be >= 0, got {nms_radius}")
        self.encoder_channels = tuple(int(c) for c in encoder_channels)
        self.head_channels = int(head_channels)
        self.batch_norm = batch_norm
        self.max_keypoints = int(max_keypoints)
        self.nms_radius = int(nms_radius)
        self.detection_threshold = float(detection_threshold)
        self.border = int(border)
        self.label_noise = bool(label_noise)
        self.seed = int(seed)
        self.descriptor_dim = int(descriptor_dim)
        self.dustbin_bias = float(dustbin_bias)
        self.cell_candidates = bool(cell_candidates)
        # The same sub-layer name in MagicPoint and SuperPoint, so SuperPoint starts from a MagicPoint checkpoint.
        self.net = SuperPointNet(encoder_channels=self.encoder_channels, head_channels=self.head_channels,
                                 descriptor_dim=self.descriptor_dim, descriptor_head=self.descriptor_head,
                                 batch_norm=batch_norm, dustbin_bias=self.dustbin_bias, name="superpoint")
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")

    def get_config(self):
        config = super().get_config()
        config.update(encoder_channels=list(self.encoder_channels), head_channels=self.head_channels,
                      batch_norm=self.batch_norm, max_keypoints=self.max_keypoints, nms_radius=self.nms_radius,
                      detection_threshold=self.detection_threshold, border=self.border,
                      label_noise=self.label_noise, seed=self.seed, descriptor_dim=self.descriptor_dim,
                      dustbin_bias=self.dustbin_bias, cell_candidates=self.cell_candidates)
        return config

    # ----------------------------------------------------------------------------------------------------------
    # Network
    def run_network(self, images, training=False):
        """``images [B,H,W,1]`` 0..255 -> ``logits [B,H/8,W/8,65]`` (and ``descriptors [B,H/8,W/8,D]``)."""
        _check_images(images)
        return self.net(ops.cast(images, "float32") / 255.0, training=training)

    def _label_noise(self, logits):
        if not self.label_noise:
            return ops.zeros_like(logits)
        return keras.random.uniform(ops.shape(logits), 0.0, 0.1, seed=self.seed_generator)

    def call(self, batch, training=False):
        outputs = self.run_network(batch["image"], training=training)
        return {"logits": outputs["logits"], "label_noise": self._label_noise(outputs["logits"])}

    def loss_terms(self, batch, predictions, training=True):
        labels = losses.detector_labels(batch["keypoint_map"], predictions["label_noise"])
        weights = losses.cell_valid_mask(batch["valid_mask"])
        return {"detector": losses.detector_loss(predictions["logits"], labels, weights)}

    # ----------------------------------------------------------------------------------------------------------
    # Inference
    def heatmap(self, images):
        """Dense keypoint probability. Shape: ``images [B,H,W,1]`` 0..255 -> ``[B,H,W]`` in 0..1."""
        return logits_to_heatmap(self.run_network(images)["logits"])

    def detect(self, heatmap):
        """NMS, threshold, border and top-k on a heatmap.

        Shape:
          heatmap: ``[B,H,W]`` -> ``keypoints [B,N,2]`` (x, y), ``scores [B,N]``, ``valid [B,N]`` (N = max_keypoints).
        """
        suppressed = nms_layers.max_pool_nms(heatmap, self.nms_radius) if self.nms_radius > 0 else heatmap
        cell = self.nms_radius + 1 if self.cell_candidates and self.nms_radius > 0 else 1
        return keypoint_layers.select_top_k(suppressed, self.max_keypoints, border=self.border,
                                            threshold=self.detection_threshold, cell=cell)

    def extract(self, images):
        """``images [B,H,W,1]`` float32 0..255 -> ``keypoints [B,N,2]``, ``scores [B,N]``, ``valid [B,N]`` (MagicPoint
        has no descriptor head, so no ``descriptors``)."""
        keypoints, scores, valid = self.detect(self.heatmap(images))
        return {"keypoints": keypoints, "scores": scores, "valid": valid}

    def export_metadata(self):
        metadata = super().export_metadata()
        metadata.update(max_keypoints=self.max_keypoints, descriptor_dim=0, nms_radius=self.nms_radius,
                        detection_threshold=self.detection_threshold, input_multiple_of=CELL)
        return metadata


@keras.saving.register_keras_serializable(package="tfmatch.superpoint")
class SuperPoint(MagicPoint):
    """Joint detector and descriptor, trained on homographic pairs of real images with exported labels.

    Args (beyond MagicPoint's):
      descriptor_dim: descriptor length (256).
      descriptor_loss: "dense" (the paper's hinge over all cell pairs) or "sparse" (pytorch-superpoint's sampled
        pairs: ``num_matches`` anchors, each with ``num_negatives`` random negatives).
      positive_margin, negative_margin: hinge margins m_p, m_n (paper 1 and 0.2).
      lambda_d: weight of the positive term inside the descriptor loss (paper 250; dense recipes that train
        stably use 250..800, sparse uses 1).
      descriptor_weight: weight of the descriptor loss against the two detector losses (paper 1e-4 with the
        paper's lambda_d; 1 with the known-stable setting of rpautrat issue #27).
      distance_threshold: a dense pair is positive if the warped cell centre is within this many pixels (7.5).
    """

    loss_term_names = ("detector", "detector_warped", "descriptor")
    descriptor_head = True

    def __init__(self, encoder_channels=(64, 64, 128, 128), head_channels: int = 256, batch_norm: str | None = None,
                 max_keypoints: int = 1000, nms_radius: int = 4, detection_threshold: float = 0.015,
                 border: int = 4, label_noise: bool = True, seed: int = 0, descriptor_dim: int = 256,
                 dustbin_bias: float = 0.0, cell_candidates: bool = True, descriptor_loss: str = "dense",
                 positive_margin: float = 1.0, negative_margin: float = 0.2, lambda_d: float = 250.0,
                 descriptor_weight: float = 1.0, distance_threshold: float = 7.5, num_matches: int = 1000,
                 num_negatives: int = 100, **kwargs):
        # Every argument spelled out (not **kwargs) so that gin can check the bindings of a recipe.
        super().__init__(encoder_channels=encoder_channels, head_channels=head_channels, batch_norm=batch_norm,
                         max_keypoints=max_keypoints, nms_radius=nms_radius, detection_threshold=detection_threshold,
                         border=border, label_noise=label_noise, seed=seed, descriptor_dim=descriptor_dim,
                         dustbin_bias=dustbin_bias, cell_candidates=cell_candidates, **kwargs)
        if descriptor_loss not in DESCRIPTOR_LOSSES:
            raise ValueError(f"superpoint/model.py: descriptor_loss must be one of {DESCRIPTOR_LOSSES}, "
                             f"got {descriptor_loss!r}")
        self.descriptor_loss = descriptor_loss
        self.positive_margin = float(positive_margin)
        self.negative_margin = float(negative_margin)
        self.lambda_d = float(lambda_d)
        self.descriptor_weight = float(descriptor_weight)
        self.distance_threshold = float(distance_threshold)
        self.num_matches = int(num_matches)
        self.num_negatives = int(num_negatives)

    def get_config(self):
        config = super().get_config()
        config.update(descriptor_loss=self.descriptor_loss, positive_margin=self.positive_margin,
                      negative_margin=self.negative_margin, lambda_d=self.lambda_d,
                      descriptor_weight=self.descriptor_weight, distance_threshold=self.distance_threshold,
                      num_matches=self.num_matches, num_negatives=self.num_negatives)
        return config

    def call(self, batch, training=False):
        image0, image1 = batch["image0"], batch["image1"]
        _check_images(image1, "image1")
        # One pass over both images (shared BatchNorm statistics, one big matmul instead of two).
        outputs = self.run_network(ops.concatenate([image0, image1], axis=0), training=training)
        logits0, logits1 = ops.split(outputs["logits"], 2, axis=0)
        descriptors0, descriptors1 = ops.split(outputs["descriptors"], 2, axis=0)
        predictions = {"logits0": logits0, "logits1": logits1, "descriptors0": descriptors0,
                       "descriptors1": descriptors1, "label_noise0": self._label_noise(logits0),
                       "label_noise1": self._label_noise(logits1)}
        if self.descriptor_loss == "sparse":
            b = ops.shape(logits0)[0]
            num_cells = logits0.shape[1] * logits0.shape[2]
            predictions["anchor_cells"] = keras.random.randint((b, self.num_matches), 0, num_cells,
                                                               seed=self.seed_generator)
            predictions["negative_cells"] = keras.random.randint((b, self.num_matches, self.num_negatives), 0,
                                                                 num_cells, seed=self.seed_generator)
        return predictions

    def loss_terms(self, batch, predictions, training=True):
        terms = {}
        for suffix, name in (("0", "detector"), ("1", "detector_warped")):
            labels = losses.detector_labels(batch["keypoint_map" + suffix], predictions["label_noise" + suffix])
            weights = losses.cell_valid_mask(batch["valid_mask" + suffix])
            terms[name] = losses.detector_loss(predictions["logits" + suffix], labels, weights)
        if self.descriptor_loss == "dense":
            descriptor = losses.dense_descriptor_loss(
                predictions["descriptors0"], predictions["descriptors1"], batch["homography"], batch["valid_mask1"],
                self.positive_margin, self.negative_margin, self.lambda_d, self.distance_threshold)
        else:
            descriptor = losses.sparse_descriptor_loss(
                predictions["descriptors0"], predictions["descriptors1"], batch["homography"], batch["valid_mask1"],
                predictions["anchor_cells"], predictions["negative_cells"], self.positive_margin,
                self.negative_margin, self.lambda_d)
        terms["descriptor"] = self.descriptor_weight * descriptor
        return terms

    def extract(self, images):
        """``images [B,H,W,1]`` float32 0..255 -> ``keypoints [B,N,2]`` (x, y), ``scores [B,N]``,
        ``descriptors [B,N,D]`` (L2-normalised, sampled bilinearly from the coarse map with the "centre"
        convention: cell i <-> pixel 8i + 3.5), ``valid [B,N]``."""
        outputs = self.run_network(images)
        keypoints, scores, valid = self.detect(logits_to_heatmap(outputs["logits"]))
        descriptors = keypoint_layers.sample_descriptors(outputs["descriptors"], keypoints, CELL, convention="centre")
        return {"keypoints": keypoints, "scores": scores, "descriptors": descriptors, "valid": valid}

    def export_metadata(self):
        metadata = super().export_metadata()
        metadata.update(descriptor_dim=self.descriptor_dim, descriptor_sampling="bilinear, cell centre convention")
        return metadata
