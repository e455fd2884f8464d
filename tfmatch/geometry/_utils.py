"""Small batched 3x3 linear algebra shared by the geometry modules (keras.ops only).

Closed forms instead of `ops.inv`: they compile under XLA on every backend and broadcast over any leading
dimensions, including an unknown batch size on the TensorFlow backend.
"""

from keras import ops

# Smallest |z| (homogeneous scale or depth) that is divided by; keeps invalid points finite instead of inf/NaN.
EPS = 1e-8


def check_matrix(m, name, module):
    """Raises ValueError unless `m` is [..., 3, 3]."""
    shape = tuple(m.shape)
    if len(shape) < 2 or tuple(shape[-2:]) != (3, 3):
        raise ValueError(f"{module}: {name} must be [B, 3, 3], got shape {shape}")


def check_points(points, name, module, dim=2):
    """Raises ValueError unless `points` is [B, N, dim]."""
    shape = tuple(points.shape)
    if len(shape) != 3 or (shape[-1] is not None and shape[-1] != dim):
        raise ValueError(f"{module}: {name} must be [B, N, {dim}], got shape {shape}")


def apply_matrix(m, vectors):
    """m [..., 3, 3] applied to each row of vectors [..., N, 3] -> [..., N, 3] (batch dims broadcast)."""
    return ops.matmul(vectors, ops.swapaxes(m, -1, -2))


def to_homogeneous(points):
    """[..., 2] -> [..., 3] with a trailing 1."""
    return ops.concatenate([points, ops.ones_like(points[..., :1])], axis=-1)


def safe_divisor(z):
    """z with values of magnitude < EPS replaced by +-EPS (sign kept, 0 -> +EPS)."""
    sign = ops.where(z < 0, -1.0, 1.0)
    return ops.where(ops.abs(z) < EPS, sign * EPS, z)


def from_homogeneous(points_h):
    """[..., 3] -> [..., 2], dividing by a safe last coordinate."""
    return points_h[..., :2] / safe_divisor(points_h[..., 2:3])


def invert_3x3(m):
    """Inverse of [..., 3, 3] matrices by the adjugate formula (no determinant check: callers pass invertible
    matrices such as intrinsics and homographies)."""
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, f = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    g, h, i = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    co00, co01, co02 = e * i - f * h, f * g - d * i, d * h - e * g
    det = a * co00 + b * co01 + c * co02
    rows = [
        [co00, c * h - b * i, b * f - c * e],
        [co01, a * i - c * g, c * d - a * f],
        [co02, b * g - a * h, a * e - b * d],
    ]
    adj = ops.stack([ops.stack(r, axis=-1) for r in rows], axis=-2)
    return adj / det[..., None, None]


def skew(v):
    """Cross-product matrix [v]_x of v [..., 3] -> [..., 3, 3], so that [v]_x u = v x u."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = ops.zeros_like(x)
    rows = [[zero, -z, y], [z, zero, -x], [-y, x, zero]]
    return ops.stack([ops.stack(r, axis=-1) for r in rows], axis=-2)
