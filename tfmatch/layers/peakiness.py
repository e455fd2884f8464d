"""ASLFeat's peakiness detector score of one feature level, and its pure building blocks.

``Peakiness`` owns the level's running instance maximum (a non-trainable EMA, init 1.0, decay 0.99, updated in
``call(training=True)`` before use; frozen otherwise), as TFMatch ``aslfeat.py:peakiness_score``.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

__all__ = ["Peakiness", "peakiness_score", "peakiness_score_autodiff", "dilated_average_pool"]


def _reflect_pad(features, d):
    return ops.pad(features, [[0, 0], [d, d], [d, d], [0, 0]], mode="reflect")


def _nine_tap_mean(padded, d, height, width):
    """Mean of the nine ``height x width`` windows of ``padded`` at offsets (0, d, 2d)^2."""
    total = None
    for dy in (0, d, 2 * d):
        for dx in (0, d, 2 * d):
            part = padded[:, dy:dy + height, dx:dx + width, :]
            total = part if total is None else total + part
    return total / 9.0


def _three_tap_sum(x, d, axis):
    """``x[i - d] + x[i] + x[i + d]`` along ``axis`` (1 or 2), REFLECT at the edges (index -k reads k)."""
    n = ops.shape(x)[axis]

    def take(start, stop):
        return x[:, start:stop] if axis == 1 else x[:, :, start:stop]

    def flip(part):
        return ops.flip(part, axis=axis)

    before = ops.concatenate([flip(take(1, d + 1)), take(0, n - d)], axis=axis)  # x[i - d]
    after = ops.concatenate([take(d, n), flip(take(n - d - 1, n - 1))], axis=axis)  # x[i + d]
    return before + x + after


def dilated_average_pool(features, dilation):
    """3x3 average (centre included) with dilation ``d`` over a REFLECT-padded (pad d) map: same size out.

    Three taps along the rows, then three along the columns (reflection acts on each axis alone, so this equals
    the nine taps of the padded map). Slices and adds rather than a depthwise convolution: XLA fuses them with the
    softplus terms of ``peakiness_score`` (the depthwise convolution was a separate, slow kernel at full resolution
    on GPU, and its gradient another; docs/benchmarks.md).

    Shape:
        features: [B, h, w, C] -> [B, h, w, C]
    """
    d = int(dilation)
    return _three_tap_sum(_three_tap_sum(features, d, 1), d, 2) / 9.0


def _three_tap_sum_transpose(g, d, axis):
    """The transpose (adjoint) of ``_three_tap_sum``: each ``g[i]`` goes back to the three entries that made
    output i, the reflected reads included (index -k was read as k, index n - 1 + k as n - 1 - k)."""
    n = ops.shape(g)[axis]

    def take(start, stop):
        return g[:, start:stop] if axis == 1 else g[:, :, start:stop]

    def flip(part):
        return ops.flip(part, axis=axis)

    def zeros(size):  # zeros of ``size`` along ``axis``, the other dimensions as g's (dynamic shapes too)
        return ops.zeros_like(take(0, size))

    def joined(*parts):
        return ops.concatenate(parts, axis=axis)

    # Output i read x[i - d]: x[j] gets g[j + d]; outputs i < d read x[d - i]: x[j], 1 <= j <= d, gets g[d - j].
    from_before = joined(take(d, n), zeros(d)) + joined(zeros(1), flip(take(0, d)), zeros(n - 1 - d))
    # Output i read x[i + d]: x[j] gets g[j - d]; outputs i > n-1-d read x[2(n-1) - i - d], which is
    # x[j] for n-1-d <= j <= n-2 and g[2(n-1) - d - j].
    from_after = joined(zeros(d), take(0, n - d)) + joined(zeros(n - 1 - d), flip(take(n - d, n)), zeros(1))
    return g + from_before + from_after


def _dilated_average_pool_transpose(g, dilation):
    """Adjoint of ``dilated_average_pool`` (a linear map): columns, then rows, transposed."""
    d = int(dilation)
    return _three_tap_sum_transpose(_three_tap_sum_transpose(g, d, 2), d, 1) / 9.0


def _peakiness_terms(features, padded, d):
    """(local term a, channel term b, softplus(a), softplus(b)) of the nine-tap reference."""
    local = features - _nine_tap_mean(padded, d, ops.shape(features)[1], ops.shape(features)[2])
    channel = features - ops.mean(features, axis=-1, keepdims=True)
    return local, channel, ops.softplus(local), ops.softplus(channel)


def _winner_gradients(upstream, local, channel, winner):
    """Gradients of ``max_c softplus(a) * softplus(b)`` at the arg-max channel ``winner`` of each pixel, as [B, h, w]
    maps: (d/da, d/db) of the winning product times ``upstream``. The gradient of a channel maximum reaches one
    channel per pixel; carrying it as (index, value) maps instead of full-size maps keeps the backward pass's
    intermediates at 1/C of the level's size (docs/benchmarks.md, session 8)."""
    one_hot = ops.one_hot(winner, ops.shape(local)[-1], dtype=local.dtype)  # C may be unknown (a traced graph)
    g_local = upstream * ops.sum(one_hot * ops.softplus(channel) * ops.sigmoid(local), axis=-1)
    g_channel = upstream * ops.sum(one_hot * ops.softplus(local) * ops.sigmoid(channel), axis=-1)
    return one_hot, g_local, g_channel


def _local_and_channel_terms(features, scale, d):
    """``x = features / scale`` in float32, its local term ``x - avg_3x3,d(x)`` and channel term ``x - mean_c(x)``."""
    x = ops.cast(features, "float32") / scale
    return x, x - dilated_average_pool(x, d), x - ops.mean(x, axis=-1, keepdims=True)


@functools.lru_cache(maxsize=None)
def _score_function(d):
    """``(features, scale) -> score of features / scale`` with a hand-written gradient, one per dilation.

    Autodiff of the score keeps the scaled map, its neighbourhood mean, the softplus terms and their derivatives as
    full-size float32 maps for the backward pass; at 480 x 480 these passes were most of ASLFeat's detector time on
    GPU (docs/benchmarks.md, kernel profiles). Here the forward pass also keeps the arg-max channel of each pixel
    (an index map), and the backward pass:

    - recomputes the terms inside two reductions over the channels, which give the derivatives of the winning
      product as [B, h, w] maps (``_winner_gradients``);
    - builds the gradient of the level from those small maps alone: the winning channel's local and channel terms,
      the channel mean's share of the latter, and the neighbourhood mean's share of the former through the mean's
      transpose, written out (``_dilated_average_pool_transpose``) and fed by the one-hot maps.

    The gradient's intermediates are [B, h, w] maps, not full-size float32 ones (XLA may still keep one float32
    map of the forward pass for the reductions). Where channels tie for the maximum, the one the backend's arg-max
    picks takes the whole gradient: a subgradient of the max, as autodiff's equal shares are.
    """

    @ops.custom_gradient
    def score(features, scale):
        _, local, channel = _local_and_channel_terms(features, scale, d)
        product = ops.softplus(local) * ops.softplus(channel)
        out, winner = ops.max(product, axis=-1), ops.argmax(product, axis=-1)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            x, local, channel = _local_and_channel_terms(features, scale, d)
            one_hot, g_local, g_channel = _winner_gradients(upstream, local, channel, winner)
            g_local_map = one_hot * ops.expand_dims(g_local, -1)  # elementwise from small maps: XLA fuses it in
            g_channel_map = one_hot * ops.expand_dims(g_channel, -1)
            channels = ops.cast(ops.shape(local)[-1], g_channel.dtype)
            g_x = (g_local_map + g_channel_map - ops.expand_dims(g_channel, -1) / channels
                   - _dilated_average_pool_transpose(g_local_map, d))
            # d(x)/d(scale) = -x / scale: per sample ([B, 1, 1, 1] scale), or summed (scalar scale). Training never
            # asks for it (the running maximum is not trained), so XLA drops it there.
            g_scale = -ops.sum(g_x * x, axis=tuple(range(1, len(x.shape))), keepdims=True) / scale
            if len(scale.shape) == 0:
                g_scale = ops.sum(g_scale)
            return ops.cast(g_x / scale, features.dtype), g_scale

        return out, grad

    return score


def peakiness_score(features, dilation, scale=1.0):
    """``max_c softplus(x - avg_3x3,d(x)) * softplus(x - mean_c(x))`` of ``x = features / scale`` (float32).

    Args:
      features: [B, h, w, C], any float dtype (bfloat16 stays bfloat16 in memory; the score is computed in float32).
      dilation: of the 3x3 neighbourhood (REFLECT padding).
      scale: a scalar or [B, 1, 1, 1] normaliser (the level's running instance maximum).

    Shape:
        features: [B, h, w, C] -> [B, h, w] float32
    """
    scale = ops.cast(ops.convert_to_tensor(scale), "float32")
    return _score_function(int(dilation))(features, scale)


def peakiness_score_autodiff(features, dilation):
    """The same score differentiated by autodiff, from the nine taps of the 2-D reflect-padded map (the reference
    for the hand-written gradient's tests)."""
    d = int(dilation)
    _, _, alpha, beta = _peakiness_terms(features, _reflect_pad(features, d), d)
    return ops.max(alpha * beta, axis=-1)


class Peakiness(keras.layers.Layer):
    """Peakiness score of one level with running instance-max normalisation.

    Args:
      dilation: neighbourhood dilation of the local average (ASLFeat: 3, 2, 1 for conv1, conv3, conv6).
      decay: EMA decay of the instance maximum (ASLFeat: 0.99).

    Shape:
      features: [B, h, w, C] (any float dtype) -> [B, h, w] float32
    """

    def __init__(self, dilation=1, decay=0.99, **kwargs):
        super().__init__(**kwargs)
        if int(dilation) < 1:
            raise ValueError(f"tfmatch/layers/peakiness.py: dilation must be >= 1, got {dilation}")
        self.dilation = int(dilation)
        self.decay = float(decay)

    def build(self, input_shape):
        self.instance_max = self.add_weight(name="instance_max", shape=(), initializer="ones", trainable=False,
                                            autocast=False)

    def call(self, features, training=False, groups=1):
        """``groups`` g > 1: the batch holds g equal parts that the original ran as g separate calls (ASLFeat's two
        towers), each normalised by the running maximum after its own update, in order."""
        if not training:
            return peakiness_score(features, self.dilation, self.instance_max)
        # TF1 assign_moving_average: m <- m - (1 - decay) (m - x), applied before use.
        maxima = ops.cast(ops.max(ops.reshape(ops.stop_gradient(features), (groups, -1)), axis=1), "float32")
        scale, scales = ops.convert_to_tensor(self.instance_max), []
        for g in range(groups):
            scale = scale - (1.0 - self.decay) * (scale - maxima[g])
            scales.append(scale)
        self.instance_max.assign(scale)
        if groups > 1:  # one scale per sample: [B, 1, 1, 1]
            scale = ops.reshape(ops.repeat(ops.stack(scales), ops.shape(features)[0] // groups), (-1, 1, 1, 1))
        return peakiness_score(features, self.dilation, scale)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update({"dilation": self.dilation, "decay": self.decay})
        return config


keras.saving.register_keras_serializable(package="tfmatch")(Peakiness)
