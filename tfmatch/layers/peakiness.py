"""ASLFeat's peakiness detector score of one feature level, and its pure building blocks.

``Peakiness`` owns the level's running instance maximum (a non-trainable EMA, init 1.0, decay 0.99, updated in
``call(training=True)`` before use; frozen otherwise), as TFMatch ``aslfeat.py:peakiness_score``.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["Peakiness", "peakiness_score", "dilated_average_pool"]


def dilated_average_pool(features, dilation):
    """3x3 average (centre included) with dilation ``d`` over a REFLECT-padded (pad d) map: same size out.

    The sum of nine shifted slices of the padded map rather than a depthwise convolution: XLA fuses the slices
    with the softplus terms of ``peakiness_score`` into one pass (the depthwise convolution was a separate,
    slow kernel at full resolution on GPU, and its gradient another; docs/benchmarks.md).

    Shape:
        features: [B, h, w, C] -> [B, h, w, C]
    """
    d = int(dilation)
    padded = ops.pad(features, [[0, 0], [d, d], [d, d], [0, 0]], mode="reflect")
    height, width = ops.shape(features)[1], ops.shape(features)[2]
    total = None
    for dy in (0, d, 2 * d):
        for dx in (0, d, 2 * d):
            part = padded[:, dy:dy + height, dx:dx + width, :]
            total = part if total is None else total + part
    return total / 9.0


def peakiness_score(features, dilation):
    """``max_c softplus(y - avg_3x3,d(y)) * softplus(y - mean_c(y))`` for already normalised features ``y``.

    Shape:
        features: [B, h, w, C] -> [B, h, w]
    """
    alpha = ops.softplus(features - dilated_average_pool(features, dilation))
    beta = ops.softplus(features - ops.mean(features, axis=-1, keepdims=True))
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
