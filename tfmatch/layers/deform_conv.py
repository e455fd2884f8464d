"""Modulated deformable convolution (DCN v2) with ASLFeat's three offset parameterisations.

``keras.ops`` only, gather-based bilinear sampling (no TF Addons, no ``map_coordinates``). The layer keeps its main
kernel as a variable named ``kernel`` with the shape of the plain ``Conv2D`` kernel it replaces, so a checkpoint of
the plain network restores it by variable path (ASLFeat stage 1 -> stage 2).

Sampling follows TFMatch ``cnn_wrapper/network.py:deform_conv``: the input is zero-padded for 'SAME', each output
location reads the ``k x k`` window of the padded map (row-major taps) moved by its offsets, coordinates are clipped
to the padded map, values are read bilinearly from the 4 integer neighbours, multiplied by the modulation
(amplitude) and contracted with the kernel. Offset and amplitude convolutions are zero-initialised, so a fresh
layer samples the regular grid with amplitude sigmoid(0) = 0.5.

Variants (``deform_type``):
  'u': unconstrained; an offset conv predicts ``2 k^2`` channels, (dy, dx) interleaved per tap.
  'a': similarity-constrained (ASLFeat's "affine" variant with its shear branch disabled): per location an
       orientation (2 ch, bias [1, 0], L2-normalised to cos, sin) and a scale s = exp(tanh(.)); tap (x, y) moves to
       [x y] . s [[cos, sin], [-sin, cos]].
  'h': homography-constrained: 8 ch = (dx, dy) of the 4 window corners (-1,-1), (1,-1), (-1,1), (1,1), each
       tanh(.) * 0.95, plus a scale as in 'a'; a translation-free homography (6 unknowns) is fitted to the 4 corner
       moves by least squares, its 2x2 part multiplied by the scale, and the taps are warped by it (divide by w,
       clip to [-10, 10]); a singular fit falls back to the identity. TFMatch's solver (``homo_utils.py``) is not
       in the published sources, so the corner order and the solver here are this project's own.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["DeformConv2D", "deformable_sample", "DEFORM_TYPES"]

DEFORM_TYPES = ("u", "a", "h")


def deformable_sample(padded, offsets, kernel_size):
    """Reads the ``k x k`` windows of a padded map at regular positions plus offsets, bilinearly.

    Output location (i, j) tap t = (ti, tj) (row-major) reads ``padded`` at row ``i + ti + dy``, column
    ``j + tj + dx``, clipped to the padded map; the 4 integer neighbours are clipped too.

    Shape:
        padded: [B, Hp, Wp, C] (already padded; output size h = Hp - k + 1, w = Wp - k + 1)
        offsets: [B, h, w, k*k, 2] (dy, dx), float
        returns: [B, h, w, k*k, C], dtype of ``padded``
    """
    dtype = _coordinate_dtype(padded.dtype)
    offsets = ops.cast(offsets, dtype)
    shape = ops.shape(padded)
    batch, hp, wp = shape[0], shape[1], shape[2]
    channels = padded.shape[-1]
    h = hp - kernel_size + 1
    w = wp - kernel_size + 1
    taps = kernel_size * kernel_size
    # Regular window positions: [h, w, k*k] rows and columns (row-major taps).
    ti = ops.repeat(ops.arange(kernel_size), kernel_size)
    tj = ops.tile(ops.arange(kernel_size), [kernel_size])
    rows = ops.cast(ops.arange(h)[:, None, None] + ti[None, None, :], dtype)
    cols = ops.cast(ops.arange(w)[None, :, None] + tj[None, None, :], dtype)
    y = rows[None] + offsets[..., 0]
    x = cols[None] + offsets[..., 1]
    hp_f = ops.cast(hp, dtype)
    wp_f = ops.cast(wp, dtype)
    y = ops.clip(y, ops.cast(0, dtype), hp_f - 1)
    x = ops.clip(x, ops.cast(0, dtype), wp_f - 1)
    y0 = ops.floor(y)
    x0 = ops.floor(x)
    wy = y - y0
    wx = x - x0
    y0i = ops.cast(y0, "int32")
    x0i = ops.cast(x0, "int32")
    hp_i = ops.cast(hp, "int32")
    wp_i = ops.cast(wp, "int32")
    y1i = ops.minimum(y0i + 1, hp_i - 1)
    x1i = ops.minimum(x0i + 1, wp_i - 1)
    flat = ops.reshape(padded, (batch, -1, channels))

    def gather(yi, xi):
        index = ops.reshape(yi * wp_i + xi, (batch, -1, 1))
        return ops.take_along_axis(flat, index, axis=1)  # [B, h*w*k*k, C]

    wy = ops.cast(ops.reshape(wy, (batch, -1, 1)), padded.dtype)
    wx = ops.cast(ops.reshape(wx, (batch, -1, 1)), padded.dtype)
    top = gather(y0i, x0i) * (1 - wx) + gather(y0i, x1i) * wx
    bottom = gather(y1i, x0i) * (1 - wx) + gather(y1i, x1i) * wx
    values = top * (1 - wy) + bottom * wy
    return ops.reshape(values, (batch, h, w, taps, channels))


def _coordinate_dtype(dtype):
    """float32 or float64 for positions: bfloat16 / float16 cannot address pixels (bfloat16's spacing is 1 above
    128), so a map in a 16-bit compute dtype still gets float32 positions and offsets."""
    dtype = keras.backend.standardize_dtype(dtype)
    return dtype if dtype in ("float32", "float64") else "float32"


def _regular_taps(kernel_size, dtype):
    """(x, y) of the k*k taps relative to the window centre, row-major: [k*k] each."""
    r = ops.cast(ops.arange(kernel_size) - kernel_size // 2, dtype)
    ty = ops.repeat(r, kernel_size)
    tx = ops.tile(r, [kernel_size])
    return tx, ty


def _solve_translation_free_homography(corner_moves, scale):
    """Least-squares homography [[a, b, 0], [c, d, 0], [g, h, 1]] mapping the corners (+-1, +-1) to corners + moves.

    Shape:
        corner_moves: [B, h, w, 8] = (dx, dy) for corners (-1,-1), (1,-1), (-1,1), (1,1)
        scale: [B, h, w, 1], multiplies the 2x2 part
        returns: [B, h, w, 3, 3]
    """
    dtype = corner_moves.dtype
    src = ops.convert_to_tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], dtype=dtype)
    shape = ops.shape(corner_moves)
    moves = ops.reshape(corner_moves, (shape[0], shape[1], shape[2], 4, 2))
    u = src[:, 0] + moves[..., 0]  # [B, h, w, 4]
    v = src[:, 1] + moves[..., 1]
    x = ops.broadcast_to(src[:, 0], ops.shape(u))
    y = ops.broadcast_to(src[:, 1], ops.shape(u))
    zero = ops.zeros_like(u)
    # Unknowns (a, b, c, d, g, h): u (g x + h y + 1) = a x + b y ; v (g x + h y + 1) = c x + d y.
    rows_u = ops.stack([x, y, zero, zero, -x * u, -y * u], axis=-1)
    rows_v = ops.stack([zero, zero, x, y, -x * v, -y * v], axis=-1)
    a_mat = ops.concatenate([rows_u, rows_v], axis=-2)  # [B, h, w, 8, 6]
    b_vec = ops.concatenate([u, v], axis=-1)[..., None]  # [B, h, w, 8, 1]
    a_t = ops.swapaxes(a_mat, -1, -2)
    normal = ops.matmul(a_t, a_mat)
    rhs = ops.matmul(a_t, b_vec)
    params = ops.squeeze(ops.solve(normal, rhs), -1)  # [B, h, w, 6]
    identity = ops.convert_to_tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], dtype=dtype)
    finite = ops.all(ops.isfinite(params), axis=-1, keepdims=True)
    params = ops.where(finite, params, identity)
    s = scale
    a, b, c, d, g, hh = [params[..., i:i + 1] for i in range(6)]
    zeros = ops.zeros_like(a)
    ones = ops.ones_like(a)
    rows = [ops.concatenate([a * s, b * s, zeros], -1), ops.concatenate([c * s, d * s, zeros], -1),
            ops.concatenate([g, hh, ones], -1)]
    return ops.stack(rows, axis=-2)


class DeformConv2D(keras.layers.Layer):
    """Modulated deformable ``k x k`` convolution, stride 1, 'SAME' zero padding, no bias (ASLFeat conv6*).

    Args:
      filters: output channels.
      kernel_size: odd window size (ASLFeat: 3).
      deform_type: 'u' (unconstrained, the released models), 'a' (similarity) or 'h' (homography).
      modulated: multiply each tap by a sigmoid amplitude (DCN v2; ASLFeat: True).
      kernel_initializer: of the main kernel (TF1 default glorot-uniform).
      kernel_regularizer: of the main kernel (ASLFeat: none).
      offset_regularizer: of the offset/orientation/scale/amplitude convs (ASLFeat: L2 like every conv).

    Shape:
      inputs: [B, H, W, C_in] -> [B, H, W, filters]

    Variables: ``kernel`` [k, k, C_in, filters] (same path and shape as ``Conv2D``'s), and the sublayers
    ``offset`` ('u', 'h'), ``orientation`` + ``scale`` ('a', 'h' has ``scale`` too), ``amplitude`` (modulated).
    """

    def __init__(self, filters, kernel_size=3, deform_type="u", modulated=True,
                 kernel_initializer="glorot_uniform", kernel_regularizer=None, offset_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if deform_type not in DEFORM_TYPES:
            raise ValueError(f"tfmatch/layers/deform_conv.py: deform_type must be one of {DEFORM_TYPES}, "
                             f"got {deform_type!r}")
        if kernel_size % 2 != 1 or kernel_size < 1:
            raise ValueError(f"tfmatch/layers/deform_conv.py: kernel_size must be odd, got {kernel_size}")
        if deform_type == "h" and kernel_size != 3:
            raise ValueError(f"tfmatch/layers/deform_conv.py: deform_type 'h' needs kernel_size 3, got {kernel_size}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.deform_type = deform_type
        self.modulated = modulated
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.offset_regularizer = keras.regularizers.get(offset_regularizer)
        taps = kernel_size * kernel_size

        def side_conv(channels, name, bias_initializer="zeros"):
            # 'valid' on the padded map; zero kernels so that a fresh layer is the regular grid.
            return keras.layers.Conv2D(channels, kernel_size, padding="valid", kernel_initializer="zeros",
                                       bias_initializer=bias_initializer, kernel_regularizer=self.offset_regularizer,
                                       bias_regularizer=self.offset_regularizer, name=name, dtype=self.dtype_policy)

        if deform_type == "u":
            self.offset = side_conv(2 * taps, "offset")
        elif deform_type == "a":
            self.orientation = side_conv(2, "orientation", keras.initializers.Constant([1.0, 0.0]))
            self.scale = side_conv(1, "scale")
        else:
            self.offset = side_conv(8, "offset")
            self.scale = side_conv(1, "scale")
        if modulated:
            self.amplitude = side_conv(taps, "amplitude")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("tfmatch/layers/deform_conv.py: the channel dimension of the input must be known")
        k = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(k, k, channels, self.filters),
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)
        pad = k // 2
        padded_shape = (input_shape[0], None if input_shape[1] is None else input_shape[1] + 2 * pad,
                        None if input_shape[2] is None else input_shape[2] + 2 * pad, channels)
        for name in ("offset", "orientation", "scale", "amplitude"):
            if hasattr(self, name):
                getattr(self, name).build(padded_shape)

    def compute_offsets(self, padded):
        """Offsets (dy, dx) per tap from the padded input.

        Shape:
          padded: [B, H+2p, W+2p, C] -> [B, H, W, k*k, 2]
        """
        k = self.kernel_size
        taps = k * k
        # The side convolutions run in the compute dtype; the geometry after them in float32 at least.
        dtype = _coordinate_dtype(padded.dtype)
        if self.deform_type == "u":
            raw = ops.cast(self.offset(padded), dtype)
            shape = ops.shape(raw)
            return ops.reshape(raw, (shape[0], shape[1], shape[2], taps, 2))
        tx, ty = _regular_taps(k, dtype)
        scale = ops.exp(ops.tanh(ops.cast(self.scale(padded), dtype)))  # [B, H, W, 1] in [1/e, e]
        if self.deform_type == "a":
            ori = ops.cast(self.orientation(padded), dtype)
            ori = ori / ops.maximum(ops.sqrt(ops.sum(ori * ori, axis=-1, keepdims=True)), 1e-12)
            cos, sin = ori[..., 0:1] * scale, ori[..., 1:2] * scale
            # Row vector [x y] times [[cos, sin], [-sin, cos]].
            new_x = tx * cos - ty * sin
            new_y = tx * sin + ty * cos
        else:
            moves = ops.tanh(ops.cast(self.offset(padded), dtype)) * 0.95
            hom = _solve_translation_free_homography(moves, scale)  # [B, H, W, 3, 3]
            hx = hom[..., 0, 0:1] * tx + hom[..., 0, 1:2] * ty + hom[..., 0, 2:3]
            hy = hom[..., 1, 0:1] * tx + hom[..., 1, 1:2] * ty + hom[..., 1, 2:3]
            hw = hom[..., 2, 0:1] * tx + hom[..., 2, 1:2] * ty + hom[..., 2, 2:3]
            safe = ops.where(ops.equal(hw, 0), ops.ones_like(hw), hw)
            new_x = ops.clip(ops.where(ops.equal(hw, 0), ops.zeros_like(hx), hx / safe), -10.0, 10.0)
            new_y = ops.clip(ops.where(ops.equal(hw, 0), ops.zeros_like(hy), hy / safe), -10.0, 10.0)
        return ops.stack([new_y - ty, new_x - tx], axis=-1)

    def call(self, inputs):
        k = self.kernel_size
        pad = k // 2
        padded = ops.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        offsets = self.compute_offsets(padded)
        return self.convolve(padded, offsets, self.amplitude(padded) if self.modulated else None)

    def convolve(self, padded, offsets, amplitude_logits=None):
        """The deformable convolution for given offsets and amplitude logits (used by ``call`` and by tests).

        Shape:
          padded: [B, H+2p, W+2p, C]; offsets: [B, H, W, k*k, 2] (dy, dx); amplitude_logits: [B, H, W, k*k] or None
          returns: [B, H, W, filters]
        """
        k = self.kernel_size
        values = deformable_sample(padded, offsets, k)  # [B, H, W, k*k, C]
        if amplitude_logits is not None:
            values = values * ops.cast(ops.sigmoid(amplitude_logits), values.dtype)[..., None]
        shape = ops.shape(values)
        channels = padded.shape[-1]
        values = ops.reshape(values, (shape[0], shape[1], shape[2], k * k * channels))
        kernel = ops.reshape(ops.cast(self.kernel, values.dtype), (k * k * channels, self.filters))
        return ops.matmul(values, kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "deform_type": self.deform_type,
            "modulated": self.modulated,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "offset_regularizer": keras.regularizers.serialize(self.offset_regularizer),
        })
        return config


keras.saving.register_keras_serializable(package="tfmatch")(DeformConv2D)
