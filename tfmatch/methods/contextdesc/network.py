"""ContextDesc: GeoDesc local features augmented with visual and geometric context (spec tfmatch-family.md §3).

Top to bottom:

    patches [K,32,32,1] --GeoDesc tower--> conv5 [K,8,8,128] --MatchabilityPredictor--> m_logit [K]
                              |                                                   m = tanh(fc(m_logit))
                              `-> raw local feature L [K,128] (conv6, not normalised)
    regional map R [h,w,Dr] --VisualContext(R, L, xy)--> V [K,128]
    [m, xy'] [K,3] --GeometricContext--> G [K,128]
    descriptor = L2normalise(L + V + G)

``xy`` are keypoint centres in normalised image coordinates ([-1, 1], x right, y down); ``xy'`` is ``xy`` after a
random homography during training. The regional map comes from a ResNet-50 trunk (``build_regional_trunk``;
14x14x2048 for a 448x448 image), computed offline for training (``data_tools.extract_regional_features``) and
inside the model at inference, with the same function.
"""

from __future__ import annotations

import logging
import os
import warnings

import keras
from keras import ops

from tfmatch.methods.geodesc.network import l2_normalize

# ResNet-50 "caffe" preprocessing of keras.applications (BGR, ImageNet means); gray images are replicated to 3
# channels both when features are extracted for training and at inference, so the two always agree.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# The pre-ReLU sum of the last residual block: the original takes ``res5c`` before its final ReLU.
REGIONAL_LAYER = "conv5_block3_add"
REGIONAL_STRIDE = 32
# Where Keras keeps ImageNet weights it downloaded once; we only look there, we never download.
_KERAS_IMAGENET_NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def context_normalization(x, epsilon: float = 1e-5):
    """Context normalisation (Yi et al.): per sample and channel, standardise over the point axis; no affine.

    Shape:
        x: [B, K, C] -> [B, K, C]
    """
    mean = ops.mean(x, axis=1, keepdims=True)
    var = ops.var(x, axis=1, keepdims=True)
    return (x - mean) / ops.sqrt(var + epsilon)


def _bn(name):
    return keras.layers.BatchNormalization(center=False, scale=False, epsilon=1e-5, momentum=0.99, name=name)


def _regularizer(weight_decay):
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay > 0 else None


def grid_cell_centres(height, width):
    """Cell centres of an h x w regional map in normalised coordinates: x = linspace(-1, 1, w), y likewise.

    ``height`` and ``width`` may be symbolic (a SavedModel takes images of any size), which ``ops.linspace``
    does not accept on the TensorFlow backend; hence ``-1 + 2 i / (n - 1)`` (-1 for n = 1, as linspace).

    Shape:
        returns: [h*w, 2] float32 (x, y), row-major over (y, x)
    """
    def axis(n):
        i = ops.cast(ops.arange(n), "float32")
        return -1.0 + 2.0 * i / ops.maximum(ops.cast(n, "float32") - 1.0, 1.0)

    gy, gx = ops.meshgrid(axis(height), axis(width), indexing="ij")
    return ops.cast(ops.stack([ops.reshape(gx, (-1,)), ops.reshape(gy, (-1,))], axis=-1), "float32")


def interpolate_cells(cell_features, cell_xy, points_xy, mode: str = "mean3"):
    """Interpolates per-cell features at keypoints from their 3 nearest cells.

    ``mode="mean3"``: plain mean of the 3 nearest cells; this is what the original code computes (it meant
    inverse-distance weights, but clamps the negated distances, so all weights become 1/3) and what the released
    ContextDesc weights were trained with. ``mode="inverse_distance"``: weights 1/d normalised to sum 1.

    Shape:
        cell_features: [B, M, C]; cell_xy: [M, 2]; points_xy: [B, K, 2] (normalised coordinates)
        returns: [B, K, C]
    """
    if mode not in ("mean3", "inverse_distance"):
        raise ValueError(f"interpolation must be 'mean3' or 'inverse_distance', got {mode!r}")
    diff = points_xy[:, :, None, :] - cell_xy[None, None, :, :]
    dist = ops.sqrt(ops.maximum(ops.sum(ops.square(diff), axis=-1), 1e-12))  # [B, K, M]
    neg_dist, index = ops.top_k(-dist, k=3)  # [B, K, 3]
    if mode == "mean3":
        weights = ops.full(ops.shape(neg_dist), 1.0 / 3.0)
    else:
        inv = 1.0 / ops.maximum(-neg_dist, 1e-6)
        weights = inv / ops.sum(inv, axis=-1, keepdims=True)
    shape = ops.shape(cell_features)
    batch, cells = shape[0], shape[1]
    channels = cell_features.shape[-1]
    offsets = ops.reshape(ops.arange(batch, dtype="int32") * ops.cast(cells, "int32"), (-1, 1, 1))
    flat_index = ops.reshape(ops.cast(index, "int32") + offsets, (-1,))
    gathered = ops.take(ops.reshape(cell_features, (-1, channels)), flat_index, axis=0)
    gathered = ops.reshape(gathered, (batch, -1, 3, channels))
    return ops.sum(gathered * ops.cast(weights, gathered.dtype)[..., None], axis=2)


def normalized_keypoint_xy(keypoints, height, width):
    """Pixel (x, y) -> normalised coordinates ``(x - W/2) / (W/2)``, as contextdesc ``aug_model`` feeds them.

    Shape:
        keypoints: [B, K, >=2] pixels -> [B, K, 2]
    """
    half_w = ops.cast(width, "float32") / 2.0
    half_h = ops.cast(height, "float32") / 2.0
    x = (ops.cast(keypoints[..., 0], "float32") - half_w) / half_w
    y = (ops.cast(keypoints[..., 1], "float32") - half_h) / half_h
    return ops.stack([x, y], axis=-1)


def random_corner_homography(batch_size, max_shift, seed):
    """Homographies that move the corners (+-1, +-1) by U(-max_shift, max_shift) each (TFMatch
    ``get_rnd_homography``); solved exactly from the 4 corner correspondences.

    Shape:
        returns: [B, 3, 3] float32
    """
    src = ops.convert_to_tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], "float32")
    src = ops.broadcast_to(src[None], (batch_size, 4, 2))
    dst = src + keras.random.uniform((batch_size, 4, 2), -max_shift, max_shift, seed=seed)
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = ops.zeros_like(x), ops.ones_like(x)
    rows_u = ops.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], axis=-1)
    rows_v = ops.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], axis=-1)
    a = ops.concatenate([rows_u, rows_v], axis=1)  # [B, 8, 8]
    b = ops.concatenate([u, v], axis=1)[..., None]  # [B, 8, 1]
    h = ops.squeeze(ops.solve(a, b), -1)
    return ops.reshape(ops.concatenate([h, ops.ones((batch_size, 1), "float32")], axis=-1), (batch_size, 3, 3))


def apply_homography(homography, points):
    """Shape: homography [B,3,3], points [B,K,2] -> [B,K,2]."""
    ones = ops.ones_like(points[..., :1])
    p = ops.einsum("bij,bkj->bki", homography, ops.concatenate([points, ones], axis=-1))
    return p[..., :2] / p[..., 2:3]


@keras.saving.register_keras_serializable(package="tfmatch.contextdesc")
class MatchabilityPredictor(keras.layers.Layer):
    """Keypoint matchability from conv5 of the patch tower (TFMatch scope ``kpt_m``).

    conv_bn 8x8 valid 128 -> conv_bn 1x1 32 -> conv_bn 1x1 32 -> conv 1x1 1 (bias) = m_logit
    -> dense(1) -> tanh = m.

    Shape:
        conv5: [K, 8, 8, 128] -> ``(m_logit [K], m [K])``
    """

    def __init__(self, weight_decay: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.weight_decay = weight_decay
        reg = _regularizer(weight_decay)
        self.convs = [
            keras.layers.Conv2D(128, 8, padding="valid", use_bias=False, kernel_regularizer=reg, name="kpt_m_conv0"),
            keras.layers.Conv2D(32, 1, use_bias=False, kernel_regularizer=reg, name="kpt_m_conv1"),
            keras.layers.Conv2D(32, 1, use_bias=False, kernel_regularizer=reg, name="kpt_m_conv2"),
        ]
        self.bns = [_bn(f"kpt_m_bn{i}") for i in range(3)]
        self.logit = keras.layers.Conv2D(1, 1, kernel_regularizer=reg, bias_regularizer=reg, name="kpt_m")
        self.rescale = keras.layers.Dense(1, kernel_regularizer=reg, bias_regularizer=reg, name="fc_1")

    def call(self, conv5, training=False):
        x = conv5
        for conv, bn in zip(self.convs, self.bns):
            x = ops.relu(bn(conv(x), training=training))
        m_logit = ops.reshape(self.logit(x), (-1, 1))
        m = ops.tanh(self.rescale(m_logit))
        return ops.reshape(m_logit, (-1,)), ops.reshape(m, (-1,))

    def get_config(self):
        return {**super().get_config(), "weight_decay": self.weight_decay}


@keras.saving.register_keras_serializable(package="tfmatch.contextdesc")
class VisualContext(keras.layers.Layer):
    """Visual context from a regional feature map (TFMatch scope ``vis_context``).

    On the h*w cells: 1x1 conv 1024 (bias) -> CN -> BN -> ReLU -> 1x1 conv 512 (bias) -> CN -> BN -> ReLU;
    interpolate at the keypoints (``interpolate_cells``); concatenate with the raw local feature (640 channels);
    1x1 conv_bn 512 -> 256 -> out_dim, each BN + ReLU.

    Shape:
        regional: [B, h, w, Dr]; local: [B, K, D]; points_xy: [B, K, 2] normalised -> [B, K, out_dim]
    """

    def __init__(self, out_dim: int = 128, interpolation: str = "mean3", weight_decay: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        if interpolation not in ("mean3", "inverse_distance"):
            raise ValueError(f"interpolation must be 'mean3' or 'inverse_distance', got {interpolation!r}")
        self.out_dim = out_dim
        self.interpolation = interpolation
        self.weight_decay = weight_decay
        reg = _regularizer(weight_decay)
        self.conv1 = keras.layers.Dense(1024, kernel_regularizer=reg, bias_regularizer=reg, name="conv1")
        self.bn1 = _bn("conv1_bn")
        self.conv2 = keras.layers.Dense(512, kernel_regularizer=reg, bias_regularizer=reg, name="conv2")
        self.bn2 = _bn("conv2_bn")
        self.fuse = [keras.layers.Dense(c, use_bias=False, kernel_regularizer=reg, name=f"fuse_photo_context_{i}")
                     for i, c in enumerate((512, 256, out_dim))]
        self.fuse_bn = [_bn(f"fuse_photo_context_{i}_bn") for i in range(3)]

    def call(self, regional, local, points_xy, training=False):
        shape = ops.shape(regional)
        height, width = shape[1], shape[2]
        cells = ops.reshape(regional, (shape[0], -1, regional.shape[-1]))
        cells = ops.relu(self.bn1(context_normalization(self.conv1(cells)), training=training))
        cells = ops.relu(self.bn2(context_normalization(self.conv2(cells)), training=training))
        centres = grid_cell_centres(height, width)
        x = interpolate_cells(cells, centres, points_xy, self.interpolation)
        x = ops.concatenate([x, ops.cast(local, x.dtype)], axis=-1)
        for dense, bn in zip(self.fuse, self.fuse_bn):
            x = ops.relu(bn(dense(x), training=training))
        return x

    def get_config(self):
        return {**super().get_config(), "out_dim": self.out_dim, "interpolation": self.interpolation,
                "weight_decay": self.weight_decay}


@keras.saving.register_keras_serializable(package="tfmatch.contextdesc")
class GeometricContext(keras.layers.Layer):
    """Geometric context of the keypoint layout (TFMatch ``LightContextNormalization``, scope ``geo_context``).

    1x1 conv 3 -> 128 (``dim_control``); 4 residual units ``x += conv1x1(ReLU(BN(CN(x))))``; 1x1 conv 128
    (``context_trans``); biases on.

    Shape:
        inputs: [B, K, 3] = (m, x, y) -> [B, K, out_dim]
    """

    def __init__(self, out_dim: int = 128, num_units: int = 4, weight_decay: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.out_dim = out_dim
        self.num_units = num_units
        self.weight_decay = weight_decay
        reg = _regularizer(weight_decay)
        self.dim_control = keras.layers.Dense(128, kernel_regularizer=reg, bias_regularizer=reg, name="dim_control")
        self.unit_bn = [_bn(f"cn{i + 1}_bn") for i in range(num_units)]
        self.unit_conv = [keras.layers.Dense(128, kernel_regularizer=reg, bias_regularizer=reg, name=f"cn{i + 1}_conv1")
                          for i in range(num_units)]
        self.context_trans = keras.layers.Dense(out_dim, kernel_regularizer=reg, bias_regularizer=reg,
                                                name="context_trans")

    def call(self, inputs, training=False):
        x = self.dim_control(inputs)
        for bn, conv in zip(self.unit_bn, self.unit_conv):
            x = x + conv(ops.relu(bn(context_normalization(x), training=training)))
        return self.context_trans(x)

    def get_config(self):
        return {**super().get_config(), "out_dim": self.out_dim, "num_units": self.num_units,
                "weight_decay": self.weight_decay}


def find_local_imagenet_weights() -> str | None:
    """The ImageNet ResNet-50 (no top) weights if Keras already has them on disk; never downloads."""
    root = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    path = os.path.join(root, "models", _KERAS_IMAGENET_NOTOP)
    return path if os.path.isfile(path) else None


def build_regional_trunk(weights: str | None = None, name: str = "regional_trunk") -> keras.Model:
    """ResNet-50 up to the pre-ReLU output of its last block (stride 32, 2048 channels), for regional features.

    ``weights``: a Keras weights file of this trunk (``.weights.h5``), or of a full ``keras.applications.ResNet50``
    without top (``.h5``). Without one, local ImageNet weights are used if Keras has them on disk; otherwise the
    trunk is random and a loud warning says the regional features carry no meaning.

    Shape:
        model input: [B, H, W, 3] float32, caffe-preprocessed (``preprocess_regional``) -> [B, H/32, W/32, 2048]
    """
    source = weights or find_local_imagenet_weights()
    resnet = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    if source and not source.endswith(".weights.h5"):
        resnet.load_weights(source)  # full-ResNet50 file (the keras.applications layout)
    trunk = keras.Model(resnet.input, resnet.get_layer(REGIONAL_LAYER).output, name=name)
    if source and source.endswith(".weights.h5"):
        trunk.load_weights(source)
    if not source:
        message = ("tfmatch ContextDesc: no regional-feature weights given and no local ImageNet ResNet-50 weights "
                   "found: the ResNet-50 trunk is RANDOM, so regional features (visual context) are meaningless. "
                   "Pass the retrieval weights (see docs/methods/geodesc_contextdesc.md).")
        warnings.warn(message, stacklevel=2)
        logging.getLogger("tfmatch").warning(message)
    trunk.trainable = False
    return trunk


def preprocess_regional(images):
    """Gray or RGB images 0..255 -> the BGR, mean-subtracted input of the ResNet-50 trunk.

    Shape:
        images: [B, H, W, 1 or 3] -> [B, H, W, 3]
    """
    images = ops.cast(images, "float32")
    if images.shape[-1] == 1:
        images = ops.concatenate([images, images, images], axis=-1)
    bgr = ops.flip(images, axis=-1)
    return bgr - ops.convert_to_tensor(_CAFFE_MEAN_BGR, "float32")
