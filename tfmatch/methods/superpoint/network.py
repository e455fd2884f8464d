"""The SuperPoint / MagicPoint network, top to bottom: VGG-style encoder, detector head, descriptor head, decode.

Spec: ``specs/superpoint-posfeat-pump-imp.md`` section 1.1. The encoder is four blocks of two 3x3 convolutions
(max-pool 2x2 after the first three), so the heads work on an H/8 x W/8 grid of 8x8 "cells":

- detector head: conv3x3 -> 256, conv1x1 -> 65 logits per cell (64 pixel positions + 1 "dustbin" = no keypoint);
- descriptor head: conv3x3 -> 256, conv1x1 -> 256, L2-normalised over channels (coarse descriptors).

Normalisation variants (``batch_norm``):
  ``None``            the Magic Leap released network (no BatchNorm; ReLU after every conv but the two 1x1).
  ``"conv_relu_bn"``  rpautrat/SuperPoint (TF): conv -> ReLU -> BN, BN also after the two 1x1 convs.
  ``"conv_bn_relu"``  pytorch-superpoint: conv -> BN -> ReLU, BN also after the two 1x1 convs.

Layer names follow the Magic Leap state dict (``conv1a`` ... ``convDb``), so imported weights map one to one.
"""

from __future__ import annotations

import keras
from keras import ops

from tfmatch.layers.im2col import conv2d_as_matmul

CELL = 8  # the encoder's stride; one detector cell covers CELL x CELL pixels
BATCH_NORM_VARIANTS = (None, "conv_relu_bn", "conv_bn_relu")
_POOL_AFTER = (1, 3, 5)  # encoder conv indices followed by a 2x2 max-pool


@keras.saving.register_keras_serializable(package="tfmatch.superpoint")
class ConvUnit(keras.layers.Layer):
    """One convolution with its optional BatchNorm and ReLU, in the order of the chosen variant.

    Args:
      as_matmul: compute the convolution as one matrix product over the ``k*k*C_in`` taps of each pixel (im2col).
        The same weights and result; for the 1-channel input layer it is faster on GPU, where cuDNN's kernels for
        one input channel first convert the image's layout and run an unaligned kernel (docs/benchmarks.md).

    Shape:
      inputs: ``[B, H, W, C_in]`` -> ``[B, H, W, filters]``.
    """

    def __init__(self, filters: int, kernel_size: int, relu: bool = True, batch_norm: str | None = None,
                 as_matmul: bool = False, **kwargs):
        super().__init__(**kwargs)
        if batch_norm not in BATCH_NORM_VARIANTS:
            raise ValueError(f"network.py: batch_norm must be one of {BATCH_NORM_VARIANTS}, got {batch_norm!r}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.relu = relu
        self.batch_norm = batch_norm
        self.as_matmul = bool(as_matmul)
        self.conv = keras.layers.Conv2D(filters, kernel_size, padding="same", name="conv")
        # rpautrat's TF1 BN used momentum 0.99, eps 1e-3 (spec 1.9); the PyTorch port kept eps 1e-3.
        self.bn = keras.layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name="bn") if batch_norm else None

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.bn is not None:
            self.bn.build(tuple(input_shape[:-1]) + (self.filters,))

    def call(self, x, training=False):
        x = conv2d_as_matmul(x, self.conv.kernel, self.conv.bias) if self.as_matmul else self.conv(x)
        if self.batch_norm == "conv_bn_relu":
            x = self.bn(x, training=training)
        if self.relu:
            x = ops.relu(x)
        if self.batch_norm == "conv_relu_bn":
            x = self.bn(x, training=training)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, relu=self.relu, batch_norm=self.batch_norm,
                      as_matmul=self.as_matmul)
        return config


@keras.saving.register_keras_serializable(package="tfmatch.superpoint")
class SuperPointNet(keras.layers.Layer):
    """Shared encoder plus detector head and (optionally) descriptor head.

    Args:
      encoder_channels: widths of the four encoder blocks; the paper uses (64, 64, 128, 128).
      head_channels: width of the 3x3 conv of each head; the paper uses 256.
      descriptor_dim: descriptor length; the paper uses 256.
      descriptor_head: False for MagicPoint (detector only).
      batch_norm: None (Magic Leap), "conv_relu_bn" (rpautrat) or "conv_bn_relu" (pytorch-superpoint).
      dustbin_bias: initial bias of the dustbin logit (0 in the originals). Most cells hold no corner, so a prior
        of about log(#empty / #corner cells * 64) ~ 5 skips the first phase of training where the network only
        learns that; it changes the initialisation, not the architecture.

    Shape:
      images: ``[B, H, W, 1]`` float32 in 0..1, H and W multiples of 8 ->
      ``logits [B, H/8, W/8, 65]`` and, with the descriptor head, ``descriptors [B, H/8, W/8, D]``
      (L2-normalised over D).
    """

    def __init__(self, encoder_channels=(64, 64, 128, 128), head_channels: int = 256, descriptor_dim: int = 256,
                 descriptor_head: bool = True, batch_norm: str | None = None, dustbin_bias: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        encoder_channels = tuple(int(c) for c in encoder_channels)
        if len(encoder_channels) != 4 or min(encoder_channels) <= 0:
            raise ValueError(f"network.py: encoder_channels must be 4 positive widths, got {encoder_channels}")
        self.encoder_channels = encoder_channels
        self.head_channels = int(head_channels)
        self.descriptor_dim = int(descriptor_dim)
        self.descriptor_head = bool(descriptor_head)
        self.batch_norm = batch_norm
        self.dustbin_bias = float(dustbin_bias)

        def unit(name, filters, kernel_size=3, relu=True, as_matmul=False):
            return ConvUnit(filters, kernel_size, relu=relu, batch_norm=batch_norm, as_matmul=as_matmul, name=name)

        c1, c2, c3, c4 = encoder_channels
        # Max-pool 2x2 follows conv1b, conv2b and conv3b (index in _POOL_AFTER). The 1-channel input layer runs as
        # im2col + matmul: 1.18 instead of 1.44 ms at batch 32 x 480 x 640 on an H200, the same result (ConvUnit).
        self.encoder = [
            unit("conv1a", c1, as_matmul=True), unit("conv1b", c1),
            unit("conv2a", c2), unit("conv2b", c2),
            unit("conv3a", c3), unit("conv3b", c3),
            unit("conv4a", c4), unit("conv4b", c4),
        ]
        self.pool = keras.layers.MaxPooling2D(2, 2, name="pool")
        self.conv_pa = unit("convPa", self.head_channels)
        self.conv_pb = unit("convPb", CELL * CELL + 1, kernel_size=1, relu=False)  # 64 positions + dustbin
        if self.descriptor_head:
            self.conv_da = unit("convDa", self.head_channels)
            self.conv_db = unit("convDb", self.descriptor_dim, kernel_size=1, relu=False)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.encoder:
            layer.build(shape)
            shape = (shape[0], None, None, layer.filters)
        self.conv_pa.build(shape)
        self.conv_pb.build(shape[:3] + (self.head_channels,))
        if self.dustbin_bias:
            # With BN after the 1x1 conv the conv bias is normalised away; BN's beta is the effective bias.
            bias = self.conv_pb.bn.beta if self.batch_norm else self.conv_pb.conv.bias
            bias.assign(ops.convert_to_tensor([0.0] * (CELL * CELL) + [self.dustbin_bias]))
        if self.descriptor_head:
            self.conv_da.build(shape)
            self.conv_db.build(shape[:3] + (self.head_channels,))

    def call(self, images, training=False):
        x = images
        for index, layer in enumerate(self.encoder):
            x = layer(x, training=training)
            if index in _POOL_AFTER:
                x = self.pool(x)
        outputs = {"logits": self.conv_pb(self.conv_pa(x, training=training), training=training)}
        if self.descriptor_head:
            raw = self.conv_db(self.conv_da(x, training=training), training=training)
            outputs["descriptors"] = l2_normalize(raw, axis=-1)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(encoder_channels=list(self.encoder_channels), head_channels=self.head_channels,
                      descriptor_dim=self.descriptor_dim, descriptor_head=self.descriptor_head,
                      batch_norm=self.batch_norm, dustbin_bias=self.dustbin_bias)
        return config


# ---------------------------------------------------------------------------------------------------------------
# Decode: cell logits -> full-resolution heatmap (and the inverse label encode lives in losses.py).
def l2_normalize(x, axis=-1, epsilon=1e-12):
    """Unit L2 norm along ``axis`` (zero vectors stay zero)."""
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))


def depth_to_space(cells, block: int = CELL):
    """DCR depth-to-space: channel ``c = block*r + s`` of cell ``(i, j)`` goes to pixel ``(block*i + r, block*j + s)``
    (the layout of ``tf.nn.depth_to_space`` and of PyTorch's permute/reshape, so ported weights need no shuffle).

    Shape:
      cells: ``[B, Hc, Wc, block*block]`` -> ``[B, Hc*block, Wc*block]``.
    """
    shape = ops.shape(cells)
    b, hc, wc = shape[0], shape[1], shape[2]
    x = ops.reshape(cells, (b, hc, wc, block, block))
    x = ops.transpose(x, (0, 1, 3, 2, 4))
    return ops.reshape(x, (b, hc * block, wc * block))


def space_to_depth(image, block: int = CELL):
    """Inverse of :func:`depth_to_space`.

    Shape:
      image: ``[B, H, W]`` -> ``[B, H/block, W/block, block*block]``.
    """
    shape = ops.shape(image)
    b, h, w = shape[0], shape[1], shape[2]
    x = ops.reshape(image, (b, h // block, block, w // block, block))
    x = ops.transpose(x, (0, 1, 3, 2, 4))
    return ops.reshape(x, (b, h // block, w // block, block * block))


def logits_to_heatmap(logits):
    """Softmax over the 65 cell classes, drop the dustbin, depth-to-space to full resolution.

    Shape:
      logits: ``[B, Hc, Wc, 65]`` -> heatmap ``[B, 8*Hc, 8*Wc]`` with values in 0..1.
    """
    if logits.shape[-1] is not None and logits.shape[-1] != CELL * CELL + 1:
        raise ValueError(f"network.py: logits must have {CELL * CELL + 1} channels, got shape {logits.shape}")
    probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
    return depth_to_space(probs[..., : CELL * CELL])
