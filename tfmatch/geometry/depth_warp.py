"""Correspondences from depth maps and relative pose, with the TFMatch / D2-Net visibility check.

A point of view 0 gets its depth by bilinear interpolation of depth0; it is lifted with K0, moved by (R, t)
and projected with K1; depth1 is interpolated at the projection. The correspondence is valid when
- the 4 integer neighbours (floor/ceil of x and y) lie inside the map and have depth > 0, in both views;
- the projected point is in front of camera 1;
- |z_projected - z_interpolated_in_view_1| < depth_tolerance (absolute, in the depth maps' units), which
  rejects points occluded in view 1 and inconsistent depths.
"""

from keras import ops

from tfmatch.geometry._utils import check_matrix, check_points
from tfmatch.geometry.camera import backproject, project, transform

__all__ = ["interpolate_depth", "warp_with_depth"]

_MODULE = "tfmatch/geometry/depth_warp.py"


def _check_depth(depth, name):
    if len(depth.shape) != 3:
        raise ValueError(f"{_MODULE}: {name} must be [B, H, W], got shape {tuple(depth.shape)}")


def interpolate_depth(depth, points):
    """Bilinear depth at sub-pixel points, valid only where all 4 neighbours are inside and > 0.

    Integer coordinates use the pixel itself (floor == ceil), so the last row and column are usable.

    Shape:
        depth: [B, H, W] float, 0 = unknown
        points: [B, N, 2] (x, y) pixels
        returns: (z [B, N] float32, 0 where invalid; valid [B, N] bool)
    """
    _check_depth(depth, "depth")
    check_points(points, "points", _MODULE)
    depth = ops.cast(ops.convert_to_tensor(depth), "float32")
    points = ops.cast(ops.convert_to_tensor(points), "float32")
    dyn = ops.shape(depth)
    height, width = dyn[1], dyn[2]
    x, y = points[..., 0], points[..., 1]
    x_lo, y_lo = ops.floor(x), ops.floor(y)
    x_hi, y_hi = ops.ceil(x), ops.ceil(y)
    w_f, h_f = ops.cast(width, "float32"), ops.cast(height, "float32")
    inside = (x_lo >= 0) & (y_lo >= 0) & (x_hi <= w_f - 1) & (y_hi <= h_f - 1)
    flat = ops.reshape(depth, (dyn[0], -1))
    width_i = ops.cast(width, "int32")

    def gather(xs, ys):
        # Clamped indices keep the gather in bounds; `inside` already marks those points invalid.
        xi = ops.clip(ops.cast(xs, "int32"), 0, width_i - 1)
        yi = ops.clip(ops.cast(ys, "int32"), 0, ops.cast(height, "int32") - 1)
        return ops.take_along_axis(flat, yi * width_i + xi, axis=1)

    d00, d01 = gather(x_lo, y_lo), gather(x_hi, y_lo)
    d10, d11 = gather(x_lo, y_hi), gather(x_hi, y_hi)
    positive = (d00 > 0) & (d01 > 0) & (d10 > 0) & (d11 > 0)
    valid = inside & positive
    wx, wy = x - x_lo, y - y_lo
    z = (1 - wy) * ((1 - wx) * d00 + wx * d01) + wy * ((1 - wx) * d10 + wx * d11)
    return ops.where(valid, z, 0.0), valid


def warp_with_depth(points0, depth0, depth1, K0, K1, R, t, depth_tolerance=0.05):
    """Warps points of view 0 into view 1 using depth0, and checks them against depth1.

    Shape:
        points0: [B, N, 2] (x, y) pixels of view 0
        depth0, depth1: [B, H, W] float, 0 = unknown (both views share the grid of K0 / K1)
        K0, K1: [B, 3, 3]
        R: [B, 3, 3], t: [B, 3], relative pose x1 = R x0 + t
        returns: (points1 [B, N, 2] float32, finite everywhere; valid [B, N] bool)
    """
    check_points(points0, "points0", _MODULE)
    _check_depth(depth0, "depth0")
    _check_depth(depth1, "depth1")
    for name, m in (("K0", K0), ("K1", K1), ("R", R)):
        check_matrix(m, name, _MODULE)
    if depth_tolerance <= 0:
        raise ValueError(f"{_MODULE}: depth_tolerance must be > 0, got {depth_tolerance}")
    z0, valid0 = interpolate_depth(depth0, points0)
    # Invalid points get depth 1 so their (discarded) projections stay finite.
    z0 = ops.where(valid0, z0, 1.0)
    xyz1 = transform(backproject(points0, z0, K0), R, t)
    points1, z_proj = project(xyz1, K1)
    z1, valid1 = interpolate_depth(depth1, points1)
    consistent = ops.abs(z_proj - z1) < depth_tolerance
    valid = valid0 & valid1 & (z_proj > 0) & consistent
    return points1, valid
