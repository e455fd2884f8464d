"""Gather-based bilinear sampling of feature maps at sub-pixel points.

Sampling uses `ops.take_along_axis` on the flattened map instead of `keras.ops.image.map_coordinates`
(which breaks on the TensorFlow backend when the batch size is unknown) or `ImageProjectiveTransformV3`
(no XLA kernel). Convention everywhere: `points` are (x, y) in pixels of the map, integer = pixel centre.
"""

from keras import ops

__all__ = ["bilinear_sample", "points_in_image", "check_points"]


def check_points(points, name="points"):
    """Raises ValueError unless `points` has rank 3 and a last dimension of 2."""
    shape = tuple(points.shape)
    if len(shape) != 3 or (shape[-1] is not None and shape[-1] != 2):
        raise ValueError(f"tfmatch/layers/sampling.py: {name} must be [B, N, 2] (x, y), got shape {shape}")


def _gather_pixels(flat, index):
    """flat [B, H*W, C], index [B, N] int32 -> [B, N, C]."""
    return ops.take_along_axis(flat, ops.expand_dims(index, -1), axis=1)


def bilinear_sample(feature_map, points):
    """Bilinearly interpolates `feature_map` at `points`; coordinates are clamped to the map.

    Shape:
        feature_map: [B, H, W, C] float
        points: [B, N, 2] float, (x, y) pixels, integer = pixel centre
        returns: [B, N, C], dtype of `feature_map`
    """
    fshape = tuple(feature_map.shape)
    if len(fshape) != 4:
        raise ValueError(f"tfmatch/layers/sampling.py: feature_map must be [B, H, W, C], got shape {fshape}")
    check_points(points)
    feature_map = ops.convert_to_tensor(feature_map)
    dtype = feature_map.dtype
    dyn = ops.shape(feature_map)
    height, width, channels = dyn[1], dyn[2], dyn[3]
    # Static C keeps the output shape known under tf.function / XLA.
    if fshape[3] is not None:
        channels = fshape[3]
    # Coordinates in float32 even under mixed precision: float16 cannot address pixels of large maps.
    points = ops.cast(points, "float32")
    w_f = ops.cast(width, "float32")
    h_f = ops.cast(height, "float32")
    x = ops.clip(points[..., 0], 0.0, w_f - 1.0)
    y = ops.clip(points[..., 1], 0.0, h_f - 1.0)
    x0 = ops.floor(x)
    y0 = ops.floor(y)
    wx = x - x0
    wy = y - y0
    x0i = ops.cast(x0, "int32")
    y0i = ops.cast(y0, "int32")
    # At the last row/column the far neighbour has weight 0; clamp its index to stay inside the map.
    x1i = ops.minimum(x0i + 1, ops.cast(width, "int32") - 1)
    y1i = ops.minimum(y0i + 1, ops.cast(height, "int32") - 1)
    width_i = ops.cast(width, "int32")
    flat = ops.reshape(feature_map, (dyn[0], -1, channels))
    v00 = _gather_pixels(flat, y0i * width_i + x0i)
    v01 = _gather_pixels(flat, y0i * width_i + x1i)
    v10 = _gather_pixels(flat, y1i * width_i + x0i)
    v11 = _gather_pixels(flat, y1i * width_i + x1i)
    wx = ops.cast(ops.expand_dims(wx, -1), dtype)
    wy = ops.cast(ops.expand_dims(wy, -1), dtype)
    top = v00 * (1 - wx) + v01 * wx
    bottom = v10 * (1 - wx) + v11 * wx
    return top * (1 - wy) + bottom * wy


def points_in_image(points, height, width, border=0):
    """True where a point lies inside the image, at least `border` pixels from each edge.

    Shape:
        points: [B, N, 2] (x, y) pixels, integer = pixel centre
        returns: [B, N] bool; x in [border, width - 1 - border] and y in [border, height - 1 - border]
    """
    check_points(points)
    points = ops.cast(points, "float32")
    x = points[..., 0]
    y = points[..., 1]
    border = ops.cast(border, "float32")
    max_x = ops.cast(width, "float32") - 1.0 - border
    max_y = ops.cast(height, "float32") - 1.0 - border
    inside_x = ops.logical_and(x >= border, x <= max_x)
    inside_y = ops.logical_and(y >= border, y <= max_y)
    return ops.logical_and(inside_x, inside_y)
