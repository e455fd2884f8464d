"""The ASLFeat network, top to bottom: blocks, the backbone + multi-level peakiness detector, detection helpers.

Spec: ``specs/tfmatch-family.md`` section 4 (TFMatch ``cnn_wrapper/aslfeat.py``, ASLFeat ``models/cnn_wrapper``).

    image [B,H,W,1] (standardised per image)
      conv0  3x3/1  32  conv-BN-ReLU
      conv1  3x3/1  32  conv -> tap (pre-BN) -> BN-ReLU          detector level 1 (H x W, dilation 3, weight 1/6)
      conv2  3x3/2  64  conv-BN-ReLU
      conv3  3x3/1  64  conv -> tap (pre-BN) -> BN-ReLU          detector level 2 (H/2, dilation 2, weight 2/6)
      conv4  3x3/2 128  conv-BN-ReLU
      conv5  3x3/1 128  conv-BN-ReLU
      conv6_0 3x3/1 128 (deformable) conv-BN-ReLU
      conv6_1 3x3/1 128 (deformable) conv-BN-ReLU
      conv6  3x3/1 128  (deformable) conv                         dense descriptors F (H/4), detector level 3
                                                                    (dilation 1, weight 3/6)
    score map S [B,H,W] = sum of the levels' peakiness, each upsampled with TF1 legacy bilinear resize.

Variable paths (checkpoints match them without the model name): ``net/conv0/conv/kernel``,
``net/conv0/bn/moving_mean``, ``net/conv1_peakiness/instance_max``, and with DCN ``net/conv6/conv/offset/kernel``;
the main kernel of a deformable layer keeps the plain layer's path ``net/conv6/conv/kernel``.
"""

from __future__ import annotations

import keras
from keras import ops

from tfmatch.layers.deform_conv import DEFORM_TYPES, DeformConv2D
from tfmatch.layers.im2col import conv2d_as_matmul
from tfmatch.layers.peakiness import Peakiness

__all__ = ["ASLFeatNet", "BatchNorm", "shifted_moments", "ConvBlock", "standardize", "resize_bilinear_legacy", "edge_mask",
           "subpixel_offsets", "LEVELS"]

# (tap name, neighbourhood dilation, weight before normalisation to sum 1) of the multi-level detector.
LEVELS = (("conv1", 3, 1.0), ("conv3", 2, 2.0), ("conv6", 1, 3.0))


def standardize(images, epsilon=1e-5):
    """Per-image standardisation over H, W (and C): ``(x - mean) / sqrt(var + eps)``.

    Shape:
        images: [B, H, W, C] float -> [B, H, W, C] float32
    """
    images = ops.cast(images, "float32")
    mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
    var = ops.var(images, axis=(1, 2, 3), keepdims=True)
    return (images - mean) / ops.sqrt(var + epsilon)


def shifted_moments(parts):
    """Per-group, per-channel mean and (biased) variance of ``parts`` [g, n, H, W, C] over (n, H, W), in one pass.

    Sums of ``x - s`` and ``(x - s)^2`` about a shift ``s`` taken from the data (the mean of each group's first
    image row, without gradient): one read of the map, where ``ops.moments`` reads it twice (the mean, then the
    squares about it). ``E[(x - s)^2] - E[x - s]^2`` loses precision as ``(s - mean)^2 / variance`` grows; a row of
    the map itself keeps that ratio small also when the mean is far larger than the spread.

    Shape:
        parts: [g, n, H, W, C] float32 -> (mean, variance), each [g, 1, 1, 1, C]
    """
    shift = ops.stop_gradient(ops.mean(parts[:, :1, :1], axis=3, keepdims=True))
    centred = parts - shift
    mean_centred = ops.mean(centred, axis=(1, 2, 3), keepdims=True)
    variance = ops.maximum(ops.mean(ops.square(centred), axis=(1, 2, 3), keepdims=True) - ops.square(mean_centred),
                           0.0)
    return mean_centred + shift, variance


class BatchNorm(keras.layers.Layer):
    """Batch normalisation without affine parameters (TFMatch: center=False, scale=False, eps 1e-5, momentum 0.99).

    Unlike ``keras.layers.BatchNormalization``, the statistics mode depends only on ``training`` (batch statistics
    when training, moving statistics otherwise), never on ``trainable``; ``update_moving_stats=False`` keeps batch
    statistics in training but leaves the moving averages untouched (ASLFeat stage 2, spec 1.6 / 4.6).
    The moving variance is updated with the unbiased batch variance, as TF1's fused batch norm. Statistics and
    normalisation are computed in float32 also under a bfloat16 compute dtype; the output has the input's dtype.

    Shape:
      inputs: [B, H, W, C] -> [B, H, W, C]
    """

    def __init__(self, momentum=0.99, epsilon=1e-5, update_moving_stats=True, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.update_moving_stats = bool(update_moving_stats)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.moving_mean = self.add_weight(name="moving_mean", shape=(channels,), initializer="zeros",
                                           trainable=False, autocast=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=(channels,), initializer="ones",
                                               trainable=False, autocast=False)

    def call(self, inputs, training=False, groups=1):
        """``groups`` g > 1: the batch holds g equal parts that the original ran as g separate calls (ASLFeat's two
        towers): each part is normalised with its own statistics, and the moving averages take the parts' updates
        one after the other, as g calls would."""
        values = ops.cast(inputs, "float32")
        if not training:
            return ops.cast((values - self.moving_mean) / ops.sqrt(self.moving_variance + self.epsilon), inputs.dtype)
        shape = ops.shape(values)
        parts = ops.reshape(values, (groups, -1, shape[1], shape[2], shape[3]))  # [g, B/g, H, W, C]
        mean, variance = shifted_moments(parts)  # [g, 1, 1, 1, C]
        if self.update_moving_stats:
            count = ops.cast(ops.size(parts) // groups // shape[3], variance.dtype)  # values per channel and group
            unbiased = variance * count / ops.maximum(count - 1.0, 1.0)
            m = self.momentum
            moving_mean, moving_variance = self.moving_mean, self.moving_variance
            for g in range(groups):
                moving_mean = m * moving_mean + (1.0 - m) * ops.reshape(mean[g], (-1,))
                moving_variance = m * moving_variance + (1.0 - m) * ops.reshape(unbiased[g], (-1,))
            self.moving_mean.assign(moving_mean)
            self.moving_variance.assign(moving_variance)
        normalised = (parts - mean) / ops.sqrt(variance + self.epsilon)
        return ops.cast(ops.reshape(normalised, ops.shape(inputs)), inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "epsilon": self.epsilon,
                       "update_moving_stats": self.update_moving_stats})
        return config


class ConvBlock(keras.layers.Layer):
    """3x3 'SAME' convolution without bias (plain, or deformable), optionally followed by BN and ReLU.

    Args:
      filters, strides: of the convolution.
      batch_norm: conv -> BN -> ReLU; otherwise the raw convolution output (conv6).
      deform_type: None for a plain ``Conv2D``, or 'u' / 'a' / 'h' for ``DeformConv2D`` (stride 1 only).
      weight_decay: L2 factor on the conv kernel (TFMatch 1e-4 * 1/2 sum w^2 = L2(5e-5)); a deformable layer's
        main kernel gets none (TFMatch), its offset/amplitude convs get it.

    Shape:
      inputs: [B, H, W, C] -> (outputs [B, H/s, W/s, filters], pre_bn [B, H/s, W/s, filters])
    """

    def __init__(self, filters, strides=1, batch_norm=True, deform_type=None, weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.batch_norm = batch_norm
        self.deform_type = deform_type
        self.weight_decay = float(weight_decay)
        reg = keras.regularizers.L2(self.weight_decay) if self.weight_decay > 0 else None
        if deform_type is None:
            self.conv = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                                            kernel_regularizer=reg, name="conv", dtype=self.dtype_policy)
        else:
            if strides != 1:
                raise ValueError(f"tfmatch/methods/aslfeat/network.py: deformable {self.name} needs stride 1, "
                                 f"got {strides}")
            self.conv = DeformConv2D(filters, 3, deform_type=deform_type, kernel_regularizer=None,
                                     offset_regularizer=reg, name="conv", dtype=self.dtype_policy)
        if batch_norm:
            self.bn = BatchNorm(name="bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.batch_norm:
            self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, inputs, training=False, groups=1):
        if self.deform_type is None and self.strides == 1 and inputs.shape[-1] == 1:
            # The image layer as im2col + matmul: cuDNN's one-channel kernels convert the layout and run slowly.
            pre_bn = conv2d_as_matmul(ops.cast(inputs, self.compute_dtype), self.conv.kernel)
        else:
            pre_bn = self.conv(inputs)
        if not self.batch_norm:
            return pre_bn, pre_bn
        return ops.relu(self.bn(pre_bn, training=training, groups=groups)), pre_bn

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides, "batch_norm": self.batch_norm,
                       "deform_type": self.deform_type, "weight_decay": self.weight_decay})
        return config


def resize_bilinear_legacy(maps, height, width):
    """TF1 ``resize_bilinear`` (align_corners=False, half_pixel_centers=False): output pixel i reads input
    ``i * in / out``, far neighbours clamped.

    Shape:
        maps: [B, h, w] -> [B, height, width]
    """
    shape = ops.shape(maps)
    factors = [size_out // size_in if isinstance(size_in, int) and isinstance(size_out, int) and size_in > 0
               and size_out % size_in == 0 else None for size_in, size_out in ((shape[1], height), (shape[2], width))]
    if None not in factors:
        # Static integer factors (every level when H and W are multiples of 4): the same values from repeats and
        # shifted copies, without the gathers, which made up much of a training step on GPU (docs/benchmarks.md).
        return _upsample_by_integer_factor(_upsample_by_integer_factor(maps, factors[0], 1), factors[1], 2)

    def axis_weights(size_in, size_out):
        scale = ops.cast(size_in, "float32") / ops.cast(size_out, "float32")
        src = ops.cast(ops.arange(size_out), "float32") * scale
        lo = ops.floor(src)
        frac = src - lo
        lo_i = ops.cast(lo, "int32")
        hi_i = ops.minimum(lo_i + 1, ops.cast(size_in, "int32") - 1)
        return lo_i, hi_i, ops.cast(frac, maps.dtype)

    y0, y1, fy = axis_weights(shape[1], height)
    x0, x1, fx = axis_weights(shape[2], width)
    rows = ops.take(maps, y0, axis=1) * (1 - fy)[None, :, None] + ops.take(maps, y1, axis=1) * fy[None, :, None]
    return ops.take(rows, x0, axis=2) * (1 - fx)[None, None, :] + ops.take(rows, x1, axis=2) * fx[None, None, :]


def _upsample_by_integer_factor(maps, factor: int, axis: int):
    """``resize_bilinear_legacy`` along one axis by an integer factor f: output i = (1 - t) in[i // f] +
    t in[min(i // f + 1, n - 1)] with t = (i % f) / f. Shape: [..., n, ...] -> [..., n * f, ...] on ``axis``."""
    if factor == 1:
        return maps
    n = maps.shape[axis]

    def part(start, stop):  # a slice along ``axis`` (static, so no gather)
        index = [slice(None)] * len(maps.shape)
        index[axis] = slice(start, stop)
        return maps[tuple(index)]

    # Each input's right neighbour; the last one's is clamped to itself.
    shifted = ops.concatenate([part(1, n), part(n - 1, n)], axis=axis)
    lo, hi = ops.repeat(maps, factor, axis=axis), ops.repeat(shifted, factor, axis=axis)
    t = ops.tile(ops.cast(ops.arange(factor), maps.dtype) / factor, [n])
    t = ops.reshape(t, [-1] + [1] * (len(maps.shape) - 1 - axis))
    return lo + (hi - lo) * t


class ASLFeatNet(keras.layers.Layer):
    """Backbone, dense descriptor map and multi-level peakiness score map.

    Args:
      deform_type: None (stage 1) or 'u' / 'a' / 'h' for conv6_0, conv6_1, conv6 (stage 2; released models: 'u').
      multi_level: sum the peakiness of conv1, conv3 and conv6 (True, as released) or use conv6 alone.
      weight_decay: L2 factor on conv kernels (5e-5 = TFMatch's 1e-4 * 1/2 sum w^2; 0 in stage 2, spec 1.6).
      descriptor_dim: channels of conv6 (ASLFeat: 128).
      dtype: Keras dtype policy of every sublayer; 'mixed_bfloat16' runs the convolutions in bfloat16 (float32
        variables), while batch-norm statistics and the detector stay float32.

    Call args:
      groups: g > 1 runs g equal parts of the batch as the original's g separate calls (ASLFeat trains its two
        towers this way, in one call: half the kernels, each on twice the data): batch norm and the detector's
        running maximum use each part's own statistics, updated part after part.

    Shape:
      images: [B, H, W, 1] standardised -> dict
        ``descriptor_map``: [B, ceil(H/4), ceil(W/4), D] raw conv6 (not normalised; the compute dtype),
        ``score_map``: [B, H, W] detector score S (float32).
    """

    def __init__(self, deform_type=None, multi_level=True, weight_decay=5e-5, descriptor_dim=128, **kwargs):
        super().__init__(**kwargs)
        if deform_type not in (None,) + DEFORM_TYPES:
            raise ValueError(f"tfmatch/methods/aslfeat/network.py: deform_type must be None or one of "
                             f"{DEFORM_TYPES}, got {deform_type!r}")
        self.deform_type = deform_type
        self.multi_level = multi_level
        self.weight_decay = weight_decay
        self.descriptor_dim = descriptor_dim

        def block(filters, strides, name, batch_norm=True, deform=False):
            return ConvBlock(filters, strides, batch_norm=batch_norm, deform_type=deform_type if deform else None,
                             weight_decay=weight_decay, name=name, dtype=self.dtype_policy)

        self.blocks = [
            block(32, 1, "conv0"),
            block(32, 1, "conv1"),
            block(64, 2, "conv2"),
            block(64, 1, "conv3"),
            block(128, 2, "conv4"),
            block(128, 1, "conv5"),
            block(128, 1, "conv6_0", deform=True),
            block(128, 1, "conv6_1", deform=True),
            block(descriptor_dim, 1, "conv6", batch_norm=False, deform=True),
        ]
        levels = LEVELS if multi_level else (("conv6", 1, 1.0),)
        total = sum(w for _, _, w in levels)
        self.levels = [(name, weight / total) for name, _, weight in levels]
        self.peakiness = {name: Peakiness(dilation, name=f"{name}_peakiness", dtype=self.dtype_policy)
                          for name, dilation, _ in levels}

    def build(self, input_shape):
        shape = tuple(input_shape)
        for blk in self.blocks:
            blk.build(shape)
            shape = blk.conv.compute_output_shape(shape)
            if blk.name in self.peakiness:
                self.peakiness[blk.name].build(shape)

    def call(self, images, training=False, groups=1):
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        x = images
        taps = {}
        for blk in self.blocks:
            x, pre_bn = blk(x, training=training, groups=groups)
            taps[blk.name] = pre_bn  # conv1 / conv3 taps are pre-BN; conv6 has no BN
        score = None
        for name, weight in self.levels:
            level = self.peakiness[name](taps[name], training=training, groups=groups)
            level = weight * resize_bilinear_legacy(level, height, width)
            score = level if score is None else score + level
        return {"descriptor_map": x, "score_map": score}

    def get_config(self):
        config = super().get_config()
        config.update({"deform_type": self.deform_type, "multi_level": self.multi_level,
                       "weight_decay": self.weight_decay, "descriptor_dim": self.descriptor_dim})
        return config


# ------------------------------------------------------------------------------------------------------------------
# Detection helpers (inference): pure functions of the score map.

def _shift(maps, dy, dx, pad):
    """maps[i + dy, j + dx] from a zero-padded copy (padding ``pad`` >= |dy|, |dx|). Shape: [B,H,W] -> [B,H,W]."""
    padded = ops.pad(maps, [[0, 0], [pad, pad], [pad, pad]])
    shape = ops.shape(maps)
    return ops.slice(padded, (0, pad + dy, pad + dx), (shape[0], shape[1], shape[2]))


def _hessian(maps, d):
    """Finite-difference second derivatives with step ``d`` and zero padding (TFMatch filters)."""
    c = maps
    dii = _shift(c, -d, 0, d) - 2 * c + _shift(c, d, 0, d)
    djj = _shift(c, 0, -d, d) - 2 * c + _shift(c, 0, d, d)
    dij = 0.25 * (_shift(c, -d, -d, d) - _shift(c, -d, d, d) - _shift(c, d, -d, d) + _shift(c, d, d, d))
    return dii, dij, djj


def edge_mask(score_map, edge_threshold=10.0, dilation=3):
    """True where S is not on an edge: det(H) > 0 and tr(H)^2 / det(H) <= (r + 1)^2 / r, r = ``edge_threshold``;
    the Hessian uses finite differences with step ``dilation`` on a zero-padded map (TFMatch ``edge_mask``).

    Shape:
        score_map: [B, H, W] -> [B, H, W] bool
    """
    dii, dij, djj = _hessian(score_map, dilation)
    det = dii * djj - dij * dij
    tr = dii + djj
    limit = (edge_threshold + 1.0) ** 2 / edge_threshold
    safe_det = ops.where(det > 0, det, ops.ones_like(det))
    return ops.logical_and(det > 0, tr * tr / safe_det <= limit)


def subpixel_offsets(score_map):
    """Newton step ``-H^-1 grad`` of S from 3x3 finite differences (zero padded), clipped to +-0.5 (TFMatch
    ``kpt_refinement``); 0 where H is singular.

    Shape:
        score_map: [B, H, W] -> [B, H, W, 2] as (dx, dy)
    """
    dii, dij, djj = _hessian(score_map, 1)
    di = 0.5 * (_shift(score_map, 1, 0, 1) - _shift(score_map, -1, 0, 1))
    dj = 0.5 * (_shift(score_map, 0, 1, 1) - _shift(score_map, 0, -1, 1))
    det = dii * djj - dij * dij
    nonzero = ops.not_equal(det, 0)
    inv_det = ops.where(nonzero, 1.0 / ops.where(nonzero, det, ops.ones_like(det)), ops.zeros_like(det))
    step_i = -(djj * inv_det * di - dij * inv_det * dj)
    step_j = -(-dij * inv_det * di + dii * inv_det * dj)
    return ops.clip(ops.stack([step_j, step_i], axis=-1), -0.5, 0.5)


keras.saving.register_keras_serializable(package="tfmatch.aslfeat")(BatchNorm)
keras.saving.register_keras_serializable(package="tfmatch.aslfeat")(ConvBlock)
keras.saving.register_keras_serializable(package="tfmatch.aslfeat")(ASLFeatNet)
