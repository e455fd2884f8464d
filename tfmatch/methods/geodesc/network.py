"""GeoDesc: the L2-Net-style patch tower of TFMatch, and the SIFT-keypoint patch sampler used at inference.

Top to bottom: the patch sampler (keypoints -> 32x32 patches, as ``geodesc/utils/opencvhelper.py`` crops them),
per-patch standardisation, the conv-BN-ReLU block, and the tower (spec ``tfmatch-family.md`` §2.1):

    conv0 3x3/1 32 -> conv1 3x3/1 32 -> conv2 3x3/2 64 -> conv3 3x3/1 64 -> conv4 3x3/2 128 -> conv5 3x3/1 128
    -> conv6 8x8 valid 128 (no bias, no BN, no ReLU) = raw descriptor -> L2 normalise

Every conv before conv6 is bias-free and followed by BatchNorm without scale and shift (eps 1e-5,
momentum 0.99) and ReLU. About 1.33 M parameters.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from tfmatch.layers.sampling import bilinear_sample

# Half-width of the sampled support in units of the OpenCV keypoint ``size`` (the SIFT descriptor window with
# its rotation margin): 3 (descriptor scale factor) * sigma * sqrt(2) * (4 + 1) / 2, with sigma = size / 2.
SIFT_SUPPORT_RADIUS = 3.0 * 0.5 * math.sqrt(2.0) * 5.0 * 0.5  # ~5.30 * size ~ 10.6 sigma

# OpenCV SIFT as GeoDesc/ContextDesc run it (geodesc utils/opencvhelper.py, spec §2.4); the evaluator reads this.
SIFT_SETTINGS = {
    "name": "sift",
    "max_keypoints": 8192,  # kept "by octave": whole octaves, largest first, until >= max_keypoints
    "selection": "by_octave",
    "n_octave_layers": 3,
    "contrast_threshold": 0.0067,
    "edge_threshold": 10.0,
    "sigma": 1.6,
    "upright": False,
}


def patch_grid(patch_size: int):
    """The sampling grid of the originals: ``g_i = i / P * 2 - 1`` for i = 0..P-1 (so [-1, 1 - 2/P]).

    Shape:
        returns: [P*P, 2] float32, (gx, gy), row-major over (y, x)
    """
    g = ops.arange(patch_size, dtype="float32") / float(patch_size) * 2.0 - 1.0
    gy, gx = ops.meshgrid(g, g, indexing="ij")
    return ops.stack([ops.reshape(gx, (-1,)), ops.reshape(gy, (-1,))], axis=-1)


def keypoint_patch_transform(keypoints, support_radius: float = SIFT_SUPPORT_RADIUS):
    """2x3 maps from the patch grid to image pixels for OpenCV keypoints: ``p = r R(angle) g + (x, y)``.

    ``r = support_radius * size`` and R rotates by the keypoint angle (degrees, image axes, y down), so that a
    patch of a rotated image, cut at the rotated keypoint, equals the patch of the original.

    Shape:
        keypoints: [B, N, 4] float32 = (x, y, size, angle in degrees) as cv2.KeyPoint
        returns: [B, N, 2, 3] float32
    """
    if len(keypoints.shape) != 3 or (keypoints.shape[-1] is not None and keypoints.shape[-1] != 4):
        raise ValueError("tfmatch/methods/geodesc/network.py: keypoints must be [B, N, 4] (x, y, size, angle),"
                         f" got shape {tuple(keypoints.shape)}")
    keypoints = ops.cast(keypoints, "float32")
    radius = support_radius * keypoints[..., 2]
    angle = keypoints[..., 3] * (math.pi / 180.0)
    c = ops.cos(angle) * radius
    s = ops.sin(angle) * radius
    row0 = ops.stack([c, -s, keypoints[..., 0]], axis=-1)
    row1 = ops.stack([s, c, keypoints[..., 1]], axis=-1)
    return ops.stack([row0, row1], axis=-2)


def crop_patches(images, transforms, patch_size: int = 32):
    """Cuts one patch per affine transform with the gather-based bilinear sampler (edges replicated).

    Shape:
        images: [B, H, W, C] float32
        transforms: [B, N, 2, 3] maps from the grid of ``patch_grid`` to (x, y) pixels (integer = pixel centre)
        returns: [B, N, P, P, C]
    """
    if len(images.shape) != 4:
        raise ValueError(f"tfmatch/methods/geodesc/network.py: images must be [B, H, W, C], got {tuple(images.shape)}")
    grid = patch_grid(patch_size)  # [P*P, 2]
    grid_h = ops.concatenate([grid, ops.ones((patch_size * patch_size, 1), "float32")], axis=-1)  # [P*P, 3]
    points = ops.einsum("bnij,pj->bnpi", ops.cast(transforms, "float32"), grid_h)  # [B, N, P*P, 2]
    shape = ops.shape(points)
    flat = ops.reshape(points, (shape[0], -1, 2))
    values = bilinear_sample(ops.cast(images, "float32"), flat)
    channels = images.shape[-1] if images.shape[-1] is not None else ops.shape(images)[-1]
    return ops.reshape(values, (shape[0], shape[1], patch_size, patch_size, channels))


def standardize_patches(patches, epsilon: float = 1e-5):
    """Per-patch standardisation over the patch pixels (TFMatch: mean/var over 32x32, eps 1e-5).

    Shape:
        patches: [..., P, P, C] -> same shape
    """
    mean = ops.mean(patches, axis=(-3, -2, -1), keepdims=True)
    var = ops.var(patches, axis=(-3, -2, -1), keepdims=True)
    return (patches - mean) / ops.sqrt(var + epsilon)


def l2_normalize(x, axis=-1, epsilon=1e-12):
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))


def conv_bn_relu(filters, kernel_size, strides, name, regularizer, padding="same"):
    """conv (no bias) -> BN (no scale/shift, eps 1e-5, momentum 0.99) -> ReLU, as TFMatch ``conv_bn``."""
    return [
        keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                            kernel_regularizer=regularizer, name=f"{name}_conv"),
        keras.layers.BatchNormalization(center=False, scale=False, epsilon=1e-5, momentum=0.99, name=f"{name}_bn"),
        keras.layers.ReLU(name=f"{name}_relu"),
    ]


@keras.saving.register_keras_serializable(package="tfmatch.geodesc")
class GeoDescTower(keras.layers.Layer):
    """The GeoDesc patch tower.

    Args:
      descriptor_dim: output channels of conv6 (paper: 128).
      width: multiplier of the conv0-conv5 channels (paper: 1.0 = 32, 32, 64, 64, 128, 128; CI-sized runs use less).
      weight_decay: TFMatch weight decay (1e-4 = 1e-4 * sum(w^2 / 2), i.e. Keras ``L2(5e-5)``) on every kernel.

    Shape:
        patches: [K, 32, 32, 1] float32, already standardised per patch
        returns: dict ``raw [K, D]`` (conv6, not normalised), ``descriptors [K, D]`` (L2-normalised),
        ``conv5 [K, 8, 8, 128 * width]`` (input of the ContextDesc matchability predictor)
    """

    def __init__(self, descriptor_dim: int = 128, weight_decay: float = 1e-4, width: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if descriptor_dim <= 0:
            raise ValueError(f"descriptor_dim must be > 0, got {descriptor_dim}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.descriptor_dim = descriptor_dim
        self.weight_decay = weight_decay
        self.width = width
        reg = keras.regularizers.L2(weight_decay / 2.0) if weight_decay > 0 else None
        self.blocks = []
        for i, (filters, strides) in enumerate([(32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]):
            self.blocks += conv_bn_relu(max(1, int(round(filters * width))), 3, strides, f"conv{i}", reg)
        # conv6: 8x8 valid over the 8x8 map = a fully connected layer to the raw descriptor, no bias.
        self.conv6 = keras.layers.Conv2D(descriptor_dim, 8, padding="valid", use_bias=False,
                                         kernel_regularizer=reg, name="conv6")

    def call(self, patches, training=False):
        x = patches
        for layer in self.blocks:
            x = layer(x, training=training) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
        conv5 = x
        raw = ops.reshape(self.conv6(conv5), (-1, self.descriptor_dim))
        return {"raw": raw, "descriptors": l2_normalize(raw), "conv5": conv5}

    def get_config(self):
        config = super().get_config()
        config.update(descriptor_dim=self.descriptor_dim, weight_decay=self.weight_decay, width=self.width)
        return config
