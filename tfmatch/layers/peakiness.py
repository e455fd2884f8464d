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


def _peakiness_terms(features, padded, d):
    """(local term a, channel term b, softplus(a), softplus(b)) of ``peakiness_score``."""
    local = features - _nine_tap_mean(padded, d, ops.shape(features)[1], ops.shape(features)[2])
    channel = features - ops.mean(features, axis=-1, keepdims=True)
    return local, channel, ops.softplus(local), ops.softplus(channel)


def _terms_gradient(upstream, local, channel):
    """Gradients w.r.t. ``features`` (through the channel term and the local term) and w.r.t. the local term
    ``a = y - mean3x3(y)`` of ``max_c softplus(a) * softplus(b)``. The arg-max channel of each pixel takes the
    upstream gradient; ties share it equally, as the gradient of a max reduction does."""
    alpha, beta = ops.softplus(local), ops.softplus(channel)
    product = alpha * beta
    hit = ops.cast(ops.equal(product, ops.max(product, axis=-1, keepdims=True)), product.dtype)
    g_product = ops.expand_dims(upstream, -1) * hit / ops.sum(hit, axis=-1, keepdims=True)
    g_local = g_product * beta * ops.sigmoid(local)
    g_channel = g_product * alpha * ops.sigmoid(channel)
    return g_local + g_channel - ops.mean(g_channel, axis=-1, keepdims=True), g_local


@functools.lru_cache(maxsize=None)
def _score_of_padded(d):
    """``(features, reflect-padded features) -> score`` with a hand-written gradient.

    Autodiff of the score keeps the softplus terms and their derivatives as full-size float32 maps for the
    backward pass; at 480 x 480 that was about half of ASLFeat's non-convolution step time on an H100
    (docs/benchmarks.md, kernel profile). Here only the input is kept: the backward pass recomputes the terms
    and sends the gradient to the arg-max channel of alpha * beta at each pixel, in a few fused passes.
    The reflect padding stays outside: autodiff folds its gradient back onto the border. One function per
    dilation, built once.
    """

    @ops.custom_gradient
    def score(features, padded):
        _, _, alpha, beta = _peakiness_terms(features, padded, d)
        out = ops.max(alpha * beta, axis=-1)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            local, channel, _, _ = _peakiness_terms(features, padded, d)
            g_features, g_local = _terms_gradient(upstream, local, channel)
            # d local / d padded: minus the nine-tap mean's transpose, a nine-tap sum over a zero-padded map.
            height, width = ops.shape(padded)[1], ops.shape(padded)[2]
            g_padded = -_nine_tap_mean(ops.pad(g_local, [[0, 0], [2 * d, 2 * d], [2 * d, 2 * d], [0, 0]]),
                                       d, height, width)
            return g_features, g_padded

        return out, grad

    return score


@ops.custom_gradient
def _score_of_mean(features, neighbourhood_mean):
    """``(features, their dilated 3x3 mean) -> score`` with a hand-written gradient.

    Autodiff of the score keeps the softplus terms and their derivatives as full-size float32 maps for the
    backward pass; at 480 x 480 that was about half of ASLFeat's non-convolution step time on an H100
    (docs/benchmarks.md, kernel profile). Here only the two inputs are kept: the backward pass recomputes the terms
    and sends the gradient to the arg-max channel of alpha * beta at each pixel. The mean is linear and stays
    outside, under autodiff (its gradient is the transposed taps). On an H200 this took the bfloat16 step from 5.70
    (autodiff) to 4.82 ms; the first hand-written version, over the 2-D padded map, reached 5.53.
    """
    local = features - neighbourhood_mean
    channel = features - ops.mean(features, axis=-1, keepdims=True)
    out = ops.max(ops.softplus(local) * ops.softplus(channel), axis=-1)

    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        g_features, g_local = _terms_gradient(upstream, features - neighbourhood_mean,
                                              features - ops.mean(features, axis=-1, keepdims=True))
        return g_features, -g_local

    return out, grad


def peakiness_score(features, dilation):
    """``max_c softplus(y - avg_3x3,d(y)) * softplus(y - mean_c(y))`` for already normalised features ``y``.

    Shape:
        features: [B, h, w, C] -> [B, h, w]
    """
    return _score_of_mean(features, dilated_average_pool(features, dilation))


def peakiness_score_padded(features, dilation):
    """The same score with the session-5 hand-written gradient over the 2-D reflect-padded map (nine taps);
    kept for ``scripts/gpu/aslfeat_profile.py`` to compare the two on a GPU."""
    d = int(dilation)
    return _score_of_padded(d)(features, _reflect_pad(features, d))


def peakiness_score_autodiff(features, dilation):
    """The same score differentiated by autodiff (the reference for the hand-written gradient's tests)."""
    d = int(dilation)
    _, _, alpha, beta = _peakiness_terms(features, _reflect_pad(features, d), d)
    return ops.max(alpha * beta, axis=-1)


class Peakiness(keras.layers.Layer):
    """Peakiness score of one level with running instance-max normalisation.

    Args:
      dilation: neighbourhood dilation of the local average (ASLFeat: 3, 2, 1 for conv1, conv3, conv6).
      decay: EMA decay of the instance maximum (ASLFeat: 0.99).

    Shape:
      features: [B, h, w, C] -> [B, h, w]
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

    def call(self, features, training=False):
        features = ops.cast(features, "float32")  # the score in float32 also under a bfloat16 compute dtype
        if training:
            current = ops.max(ops.stop_gradient(features))
            # TF1 assign_moving_average: m <- m - (1 - decay) (m - x), applied before use.
            self.instance_max.assign(self.instance_max - (1.0 - self.decay) * (self.instance_max - current))
        return peakiness_score(features / self.instance_max, self.dilation)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update({"dilation": self.dilation, "decay": self.decay})
        return config


keras.saving.register_keras_serializable(package="tfmatch")(Peakiness)
