"""ASLFeat as a ``tfmatch`` method: two towers, dense depth-warped correspondences, descriptor loss, extraction.

Training (spec 4.4-4.6): the images 0 and the images 1 of the pairs go through the network as two towers, each with
its own BN statistics (one call of two groups, equal to the original's two calls);
every pixel of image 0 is warped into image 1 with depth and relative pose (``warp_with_depth``, tolerance 0.05);
up to ``num_corr`` valid correspondences per pair are drawn at random (a ``SeedGenerator`` owned by the model);
descriptors are sampled from conv6 at p/4 (corner-aligned) and scores from S at p; the loss is the score-weighted
hardest-contrastive (or circle) loss. There is no separate detector term: the detector learns through the weights.

Stage 2 (``dcn.gin``): ``deform_type='u'``, ``trainable_scopes=('conv6_0', 'conv6_1', 'conv6')`` (the rest frozen),
``update_bn_moving_stats=False`` (every BN still uses batch statistics in training, but no moving average moves)
and ``weight_decay=0`` (spec 1.6: TFMatch's scope filter drops weight decay in this stage).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from tfmatch.geometry.depth_warp import warp_with_depth
from tfmatch.layers.keypoints import sample_descriptors, select_top_k
from tfmatch.layers.nms import max_pool_nms
from tfmatch.layers.random_subset import top_k_of_uniform_keys
from tfmatch.layers.sampling import bilinear_sample
from tfmatch.losses.contrastive import circle_loss, hardest_contrastive_loss
from tfmatch.methods.aslfeat.network import ASLFeatNet, BatchNorm, edge_mask, standardize, subpixel_offsets
from tfmatch.methods.base import Method

__all__ = ["ASLFeat"]

_LOSSES = {"hard_contrastive": hardest_contrastive_loss, "circle": circle_loss}
_NET_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
_BATCH_KEYS = ("image0", "image1", "depth0", "depth1", "K0", "K1", "R_0to1", "t_0to1")


class ASLFeat(Method):
    """ASLFeat (Luo et al., CVPR 2020) with TFMatch's training recipe.

    Args (network):
      deform_type: None (stage 1) or 'u' / 'a' / 'h' deformable conv6* (stage 2; released models: 'u').
      multi_level: multi-level peakiness detector (conv1, conv3, conv6) as released; False = conv6 only.
      weight_decay: L2 on conv kernels (5e-5 = TFMatch wd 1e-4 on 1/2 sum w^2); 0 in stage 2.
      descriptor_dim: 128.
      compute_dtype: 'float32' (TFMatch) or 'bfloat16': the network's convolutions in bfloat16 with float32
        variables (Keras 'mixed_bfloat16'); batch-norm statistics, the detector, the descriptors, the geometry and
        the loss stay float32. A speed option for GPUs (docs/benchmarks.md), not the paper's recipe.
    Args (training):
      loss: 'hard_contrastive' (released configs) or 'circle' (post-CVPR recommendation).
      num_corr: correspondences per pair (512). min_corr: a pair with fewer gives no loss (32).
      safe_radius: pixels; nearby candidates are not negatives (12 in the 480 grid).
      corr_weight: weight each correspondence by score0 * score1 (True).
      depth_tolerance: absolute depth check of the warp (0.05, SfM units).
      trainable_scopes: names of the blocks that train (empty = all; stage 2: conv6_0, conv6_1, conv6).
      update_bn_moving_stats: False in stage 2 (batch statistics, frozen moving averages).
      seed: of the correspondence sampling.
    Args (inference, ``extract``):
      max_keypoints: N, fixed; padded with ``valid`` False (HPatches: 5000).
      score_threshold: S > threshold (0.5 at inference). edge_threshold: Hessian edge ratio r (10; 0 = off).
      nms_size: NMS window (3). border: pixels ignored at each edge (5). subpixel: Newton refinement (True).
      cell_candidates: rank only the best pixel of each (nms_size // 2 + 1)^2 cell (a 4x smaller top-k at
        nms_size 3; the same keypoints, except that of two exactly equal neighbouring maxima one is kept).
      multi_scale: also run 1/sqrt(2)-downscaled copies (``num_scales`` levels in all) and keep the best N.

    Shape:
      call(batch): batch dict of ``docs/developing.md`` (GL3D dense pairs) -> dict ``points0, points1 [B,C,2]``,
        ``corr_valid [B,C]``, ``descriptors0, descriptors1 [B,C,D]``, ``scores0, scores1 [B,C]`` (C = num_corr).
      extract(images [B,H,W,1] 0..255) -> ``keypoints [B,N,2]``, ``scores [B,N]``, ``descriptors [B,N,D]``,
        ``valid [B,N]``.
    """

    loss_term_names = ("descriptor_loss",)
    endpoint = "extract"
    input_channels = 1

    def __init__(self, deform_type=None, multi_level=True, weight_decay=5e-5, descriptor_dim=128,
                 loss="hard_contrastive", num_corr=512, min_corr=32, safe_radius=12.0, corr_weight=True,
                 depth_tolerance=0.05, trainable_scopes=(), update_bn_moving_stats=True, seed=0,
                 max_keypoints=5000, score_threshold=0.5, edge_threshold=10.0, nms_size=3, border=5,
                 subpixel=True, multi_scale=False, num_scales=3, compute_dtype="float32", cell_candidates=True,
                 name="aslfeat", **kwargs):
        super().__init__(name=name, **kwargs)
        if compute_dtype not in _NET_POLICIES:
            raise ValueError(f"tfmatch/methods/aslfeat/model.py: compute_dtype must be one of "
                             f"{sorted(_NET_POLICIES)}, got {compute_dtype!r}")
        if loss not in _LOSSES:
            raise ValueError(f"tfmatch/methods/aslfeat/model.py: loss must be one of {sorted(_LOSSES)}, got {loss!r}")
        if max_keypoints <= 0:
            raise ValueError(f"tfmatch/methods/aslfeat/model.py: max_keypoints must be > 0, got {max_keypoints}")
        if num_corr <= 0:
            raise ValueError(f"tfmatch/methods/aslfeat/model.py: num_corr must be > 0, got {num_corr}")
        if nms_size < 1 or nms_size % 2 != 1:
            raise ValueError(f"tfmatch/methods/aslfeat/model.py: nms_size must be odd and >= 1, got {nms_size}")
        if num_scales < 1:
            raise ValueError(f"tfmatch/methods/aslfeat/model.py: num_scales must be >= 1, got {num_scales}")
        self.deform_type = deform_type
        self.multi_level = multi_level
        self.weight_decay = weight_decay
        self.descriptor_dim = descriptor_dim
        self.loss = loss
        self.num_corr = int(num_corr)
        self.min_corr = int(min_corr)
        self.safe_radius = float(safe_radius)
        self.corr_weight = corr_weight
        self.depth_tolerance = float(depth_tolerance)
        self.trainable_scopes = tuple(trainable_scopes)
        self.update_bn_moving_stats = update_bn_moving_stats
        self.seed = seed
        self.max_keypoints = int(max_keypoints)
        self.score_threshold = float(score_threshold)
        self.edge_threshold = float(edge_threshold)
        self.nms_size = int(nms_size)
        self.border = int(border)
        self.subpixel = subpixel
        self.multi_scale = multi_scale
        self.num_scales = int(num_scales)
        self.compute_dtype_name = compute_dtype
        self.cell_candidates = bool(cell_candidates)

        self.net = ASLFeatNet(deform_type=deform_type, multi_level=multi_level, weight_decay=weight_decay,
                              descriptor_dim=descriptor_dim, name="net", dtype=_NET_POLICIES[compute_dtype])
        names = [blk.name for blk in self.net.blocks]
        unknown = set(self.trainable_scopes) - set(names)
        if unknown:
            raise ValueError(f"tfmatch/methods/aslfeat/model.py: trainable_scopes {sorted(unknown)} are not blocks "
                             f"of the network {names}")
        if self.trainable_scopes:
            for blk in self.net.blocks:
                blk.trainable = blk.name in self.trainable_scopes
        for blk in self.net.blocks:
            if isinstance(getattr(blk, "bn", None), BatchNorm):
                blk.bn.update_moving_stats = bool(update_bn_moving_stats)
        self.seed_generator = keras.random.SeedGenerator(seed, name="corr_seed")

    # ----------------------------------------------------------------------------------------------------------
    # Training
    def call(self, batch, training=False):
        missing = [key for key in _BATCH_KEYS if key not in batch]
        if missing:
            raise ValueError(f"tfmatch/methods/aslfeat/model.py: the batch lacks {missing} (GL3D dense pairs, "
                             f"docs/developing.md)")
        image0, image1 = batch["image0"], batch["image1"]
        static = tuple(image0.shape)
        height, width = static[1], static[2]
        if height is None or width is None:
            raise ValueError(f"tfmatch/methods/aslfeat/model.py: training images need a static size, got {static}")
        # Two towers in one call of two groups: each normalises with its own batch statistics (spec 1.7).
        both = self.net(ops.concatenate([standardize(image0), standardize(image1)], axis=0), training=training,
                        groups=2)
        batch_size = ops.shape(image0)[0]
        out0, out1 = ({key: value[part] for key, value in both.items()}
                      for part in (slice(None, batch_size), slice(batch_size, None)))

        ys, xs = ops.meshgrid(ops.arange(height, dtype="float32"), ops.arange(width, dtype="float32"),
                              indexing="ij")
        grid = ops.stack([ops.reshape(xs, (-1,)), ops.reshape(ys, (-1,))], axis=-1)  # [H*W, 2] (x, y)
        grid = ops.broadcast_to(grid[None], (batch_size, height * width, 2))
        points1, valid = warp_with_depth(grid, batch["depth0"], batch["depth1"], batch["K0"], batch["K1"],
                                         batch["R_0to1"], batch["t_0to1"], depth_tolerance=self.depth_tolerance)
        # Uniform sample of up to num_corr valid correspondences per pair, without replacement.
        noise = keras.random.uniform(ops.shape(valid), seed=self.seed_generator)
        key = ops.where(valid, noise, -1.0)
        num_corr = min(self.num_corr, height * width)
        top, index = top_k_of_uniform_keys(key, num_corr)  # = ops.top_k(key, num_corr), without sorting every key
        corr_valid = top >= 0.0
        index = index[..., None]
        pos0 = ops.take_along_axis(grid, index, axis=1)
        pos1 = ops.take_along_axis(points1, index, axis=1)
        pos0 = ops.stop_gradient(ops.where(corr_valid[..., None], pos0, 0.0))
        pos1 = ops.stop_gradient(ops.where(corr_valid[..., None], pos1, 0.0))
        return {
            "points0": pos0,
            "points1": pos1,
            "corr_valid": corr_valid,
            "descriptors0": sample_descriptors(out0["descriptor_map"], pos0, 4, convention="corner"),
            "descriptors1": sample_descriptors(out1["descriptor_map"], pos1, 4, convention="corner"),
            "scores0": bilinear_sample(out0["score_map"][..., None], pos0)[..., 0],
            "scores1": bilinear_sample(out1["score_map"][..., None], pos1)[..., 0],
        }

    def loss_terms(self, batch, predictions, training=True):
        weights = predictions["scores0"] * predictions["scores1"] if self.corr_weight else None
        kwargs = {"safe_radius": self.safe_radius, "min_valid": self.min_corr}
        per_pair = _LOSSES[self.loss](predictions["descriptors0"], predictions["descriptors1"],
                                      predictions["points0"], predictions["points1"], predictions["corr_valid"],
                                      weights, **kwargs)
        return {"descriptor_loss": ops.mean(per_pair)}

    def visualization(self, batch, predictions):
        """Nearest-neighbour matches of the sampled correspondences; correct = the true partner was found."""
        d0 = ops.convert_to_numpy(predictions["descriptors0"])
        d1 = ops.convert_to_numpy(predictions["descriptors1"])
        valid = ops.convert_to_numpy(predictions["corr_valid"]).astype(bool)
        points0 = ops.convert_to_numpy(predictions["points0"])
        points1 = ops.convert_to_numpy(predictions["points1"])
        sim = np.einsum("bnd,bmd->bnm", d0, d1)
        sim = np.where(valid[:, None, :], sim, -np.inf)
        nearest = sim.argmax(axis=2)
        rows = np.arange(d0.shape[1])[None]
        return {
            "image0": ops.convert_to_numpy(batch["image0"]),
            "image1": ops.convert_to_numpy(batch["image1"]),
            "keypoints0": points0,
            "keypoints1": np.take_along_axis(points1, nearest[..., None], axis=1),
            "correct": (nearest == rows) & valid,
        }

    # ----------------------------------------------------------------------------------------------------------
    # Inference
    def detect(self, score_map, max_keypoints):
        """Keypoints from S: threshold, NMS, non-edge, border, top-k; optional sub-pixel refinement.

        Shape:
          score_map: [B, H, W] -> (keypoints [B, k, 2] (x, y), scores [B, k], valid [B, k])
        """
        keep = max_pool_nms(score_map, self.nms_size // 2) > 0
        if self.edge_threshold > 0:
            keep = ops.logical_and(keep, edge_mask(score_map, self.edge_threshold, dilation=3))
        masked = ops.where(keep, score_map, float("-inf"))
        keypoints, scores, valid = select_top_k(masked, max_keypoints, border=self.border,
                                                threshold=self.score_threshold,
                                                cell=self.nms_size // 2 + 1 if self.cell_candidates else 1)
        if self.subpixel:
            offsets = bilinear_sample(subpixel_offsets(score_map), keypoints)  # integer points: exact gather
            keypoints = ops.where(valid[..., None], keypoints + offsets, keypoints)
        return keypoints, scores, valid

    def _extract_single(self, gray):
        out = self.net(standardize(gray), training=False)
        keypoints, scores, valid = self.detect(out["score_map"], self.max_keypoints)
        descriptors = sample_descriptors(out["descriptor_map"], keypoints, 4, convention="corner")
        return keypoints, scores, descriptors, valid

    def extract(self, images):
        images = ops.convert_to_tensor(images)
        if len(images.shape) != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"tfmatch/methods/aslfeat/model.py: images must be [B, H, W, 1 or 3], "
                             f"got {tuple(images.shape)}")
        gray = ops.cast(images, "float32")
        if gray.shape[-1] == 3:
            gray = ops.sum(gray * ops.convert_to_tensor([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
        if not self.multi_scale or self.num_scales == 1:
            keypoints, scores, descriptors, valid = self._extract_single(gray)
        else:
            keypoints, scores, descriptors, valid = self._extract_multi_scale(gray)
        return {"keypoints": keypoints, "scores": scores, "descriptors": descriptors, "valid": valid}

    def _extract_multi_scale(self, gray):
        """ASLFeat multi-scale: factor 1/sqrt(2) per level, Gaussian blur sigma 0.8 sqrt(2) before each downscale,
        keypoints rescaled to the input, all levels merged by score (the number of levels is fixed here,
        ``num_scales``, so that shapes stay static; ASLFeat derives it from the image size)."""
        shape = ops.shape(gray)
        height = gray.shape[1] if gray.shape[1] is not None else shape[1]
        width = gray.shape[2] if gray.shape[2] is not None else shape[2]
        kernel = _gaussian_kernel(0.8 * math.sqrt(2.0))
        results = []
        level = gray
        for i in range(self.num_scales):
            if i > 0:
                factor = (1.0 / math.sqrt(2.0)) ** i
                blurred = _blur(level, kernel)
                if isinstance(height, int) and isinstance(width, int):  # static: keep python ints (JAX jit)
                    new_h, new_w = int(round(height * factor)), int(round(width * factor))
                else:
                    new_h = ops.cast(ops.round(ops.cast(height, "float32") * factor), "int32")
                    new_w = ops.cast(ops.round(ops.cast(width, "float32") * factor), "int32")
                level = _resize_image(blurred, new_h, new_w)
            keypoints, scores, descriptors, valid = self._extract_single(level)
            lvl_shape = ops.shape(level)
            sx = ops.cast(width, "float32") / ops.cast(lvl_shape[2], "float32")
            sy = ops.cast(height, "float32") / ops.cast(lvl_shape[1], "float32")
            keypoints = keypoints * ops.stack([sx, sy])
            results.append((keypoints, ops.where(valid, scores, float("-inf")), descriptors, valid))
        keypoints = ops.concatenate([r[0] for r in results], axis=1)
        scores = ops.concatenate([r[1] for r in results], axis=1)
        descriptors = ops.concatenate([r[2] for r in results], axis=1)
        valid = ops.concatenate([r[3] for r in results], axis=1)
        top, index = ops.top_k(scores, k=self.max_keypoints, sorted=True)
        keypoints = ops.take_along_axis(keypoints, index[..., None], axis=1)
        descriptors = ops.take_along_axis(descriptors, index[..., None], axis=1)
        valid = ops.take_along_axis(valid, index, axis=1)
        return keypoints, ops.where(valid, top, 0.0), descriptors, valid

    def export_metadata(self):
        meta = super().export_metadata()
        meta.update({"max_keypoints": self.max_keypoints, "descriptor_dim": self.descriptor_dim,
                     "deform_type": self.deform_type, "multi_scale": self.multi_scale,
                     "compute_dtype": self.compute_dtype_name})
        return meta

    def get_config(self):
        config = super().get_config()
        config.update({
            "deform_type": self.deform_type, "multi_level": self.multi_level, "weight_decay": self.weight_decay,
            "descriptor_dim": self.descriptor_dim, "loss": self.loss, "num_corr": self.num_corr,
            "min_corr": self.min_corr, "safe_radius": self.safe_radius, "corr_weight": self.corr_weight,
            "depth_tolerance": self.depth_tolerance, "trainable_scopes": list(self.trainable_scopes),
            "update_bn_moving_stats": self.update_bn_moving_stats, "seed": self.seed,
            "max_keypoints": self.max_keypoints, "score_threshold": self.score_threshold,
            "edge_threshold": self.edge_threshold, "nms_size": self.nms_size, "border": self.border,
            "subpixel": self.subpixel, "multi_scale": self.multi_scale, "num_scales": self.num_scales,
            "compute_dtype": self.compute_dtype_name, "cell_candidates": self.cell_candidates,
        })
        return config


def _gaussian_kernel(sigma):
    radius = int(math.ceil(3 * sigma))
    values = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    total = sum(values)
    return [v / total for v in values]


def _blur(images, taps):
    """Separable Gaussian blur with reflected borders. Shape: [B, H, W, 1] -> [B, H, W, 1]."""
    r = len(taps) // 2
    padded = ops.pad(images, [[0, 0], [r, r], [r, r], [0, 0]], mode="symmetric")
    kernel = ops.convert_to_tensor(taps, dtype=images.dtype)
    kx = ops.reshape(kernel, (1, len(taps), 1, 1))
    ky = ops.reshape(kernel, (len(taps), 1, 1, 1))
    out = ops.depthwise_conv(padded, kx, padding="valid")
    return ops.depthwise_conv(out, ky, padding="valid")


def _resize_image(images, height, width):
    """Bilinear resize with dynamic output size (legacy TF1 sampling). Shape: [B, H, W, 1] -> [B, h, w, 1]."""
    from tfmatch.methods.aslfeat.network import resize_bilinear_legacy

    return resize_bilinear_legacy(images[..., 0], height, width)[..., None]


keras.saving.register_keras_serializable(package="tfmatch.aslfeat")(ASLFeat)
