"""Pinhole cameras: projection, back-projection with depth, rigid transforms, relative pose, essential matrix.

Conventions: poses are world -> camera, x_cam = R x_world + t. Pixels (x, y) relate to camera coordinates
through K exactly as given (`p ~ K X`); the data pipeline makes K agree with the pixel convention it uses.
"""

from keras import ops

from tfmatch.geometry._utils import (
    apply_matrix,
    check_matrix,
    check_points,
    invert_3x3,
    safe_divisor,
    skew,
    to_homogeneous,
)

__all__ = [
    "backproject",
    "project",
    "transform",
    "relative_pose",
    "essential_from_pose",
    "scale_intrinsics",
]

_MODULE = "tfmatch/geometry/camera.py"


def _f32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def backproject(points, depth, K):
    """Lifts pixels with their depth (the z coordinate, not the ray length) to camera coordinates.

    Shape:
        points: [B, N, 2] (x, y) pixels
        depth: [B, N]
        K: [B, 3, 3]
        returns: [B, N, 3] float32, X = depth * K^-1 (x, y, 1)
    """
    check_points(points, "points", _MODULE)
    check_matrix(K, "K", _MODULE)
    if len(depth.shape) != 2:
        raise ValueError(f"{_MODULE}: depth must be [B, N], got shape {tuple(depth.shape)}")
    rays = apply_matrix(invert_3x3(_f32(K)), to_homogeneous(_f32(points)))
    return rays * _f32(depth)[..., None]


def project(points3d, K):
    """Projects camera-frame points to pixels.

    Shape:
        points3d: [B, N, 3]
        K: [B, 3, 3]
        returns: (points [B, N, 2] float32, z [B, N] float32). Points with z <= 0 are behind the camera and
        get finite but meaningless pixels: test z > 0.
    """
    check_points(points3d, "points3d", _MODULE, dim=3)
    check_matrix(K, "K", _MODULE)
    points3d = _f32(points3d)
    z = points3d[..., 2]
    uvw = apply_matrix(_f32(K), points3d)
    return uvw[..., :2] / safe_divisor(uvw[..., 2:3]), z


def transform(points3d, R, t):
    """Rigid transform x' = R x + t.

    Shape: points3d [B, N, 3], R [B, 3, 3], t [B, 3] -> [B, N, 3] float32.
    """
    check_points(points3d, "points3d", _MODULE, dim=3)
    check_matrix(R, "R", _MODULE)
    return apply_matrix(_f32(R), _f32(points3d)) + _f32(t)[..., None, :]


def relative_pose(R0, t0, R1, t1):
    """Pose of camera 1 relative to camera 0, from two world -> camera poses: x1 = R x0 + t.

    Shape: R0, R1 [B, 3, 3], t0, t1 [B, 3] -> (R [B, 3, 3], t [B, 3]); R = R1 R0^T, t = t1 - R t0.
    """
    for name, m in (("R0", R0), ("R1", R1)):
        check_matrix(m, name, _MODULE)
    R0, t0, R1, t1 = _f32(R0), _f32(t0), _f32(R1), _f32(t1)
    R = ops.matmul(R1, ops.swapaxes(R0, -1, -2))
    t = t1 - ops.squeeze(ops.matmul(R, t0[..., None]), -1)
    return R, t


def essential_from_pose(R, t):
    """Essential matrix E = [t]_x R of the relative pose x1 = R x0 + t, so x1_n^T E x0_n = 0 for normalised
    image coordinates x_n = K^-1 (x, y, 1).

    Shape: R [B, 3, 3], t [B, 3] -> [B, 3, 3] float32.
    """
    check_matrix(R, "R", _MODULE)
    return ops.matmul(skew(_f32(t)), _f32(R))


def scale_intrinsics(K, sx, sy):
    """Intrinsics after resizing an image by (sx, sy) = (new / old width, new / old height): row 0 of K times
    sx, row 1 times sy. This is exact for resizes that map old pixel x to new pixel sx * x (TF1 legacy
    bilinear, `half_pixel_centers=False`, as TFMatch uses); a half-pixel-centred resize would also shift the
    principal point by 0.5 * (sx - 1).

    Shape: K [B, 3, 3]; sx, sy scalars or [B] -> [B, 3, 3] float32.
    """
    check_matrix(K, "K", _MODULE)
    K = _f32(K)
    sx = ops.reshape(_f32(sx), (-1, 1))
    sy = ops.reshape(_f32(sy), (-1, 1))
    return ops.stack([K[..., 0, :] * sx, K[..., 1, :] * sy, K[..., 2, :]], axis=-2)
