"""Epipolar geometry: fundamental from essential, point-to-epipolar-line, Sampson and symmetric distances.

F relates pixels of view 0 and view 1 by x1^T F x0 = 0 (x homogeneous). Distances are in the units of the
points: pixels with F, normalised coordinates when an essential matrix and normalised points are passed.
"""

from keras import ops

from tfmatch.geometry._utils import (
    apply_matrix,
    check_matrix,
    check_points,
    invert_3x3,
    to_homogeneous,
)

__all__ = [
    "fundamental_from_essential",
    "epipolar_line_distances",
    "sampson_distance",
    "symmetric_epipolar_distance",
]

_MODULE = "tfmatch/geometry/epipolar.py"
# Guards the division by the squared norm of a degenerate (all-zero) epipolar line.
_EPS = 1e-12


def _prepare(points0, points1, F):
    check_points(points0, "points0", _MODULE)
    check_points(points1, "points1", _MODULE)
    check_matrix(F, "F", _MODULE)
    F = ops.cast(ops.convert_to_tensor(F), "float32")
    x0 = to_homogeneous(ops.cast(ops.convert_to_tensor(points0), "float32"))
    x1 = to_homogeneous(ops.cast(ops.convert_to_tensor(points1), "float32"))
    line1 = apply_matrix(F, x0)  # epipolar line of x0 in view 1, [B, N, 3]
    line0 = apply_matrix(ops.swapaxes(F, -1, -2), x1)  # epipolar line of x1 in view 0
    residual = ops.sum(x1 * line1, axis=-1)  # x1^T F x0
    norm1 = ops.sum(line1[..., :2] ** 2, axis=-1)
    norm0 = ops.sum(line0[..., :2] ** 2, axis=-1)
    return residual, norm0, norm1


def fundamental_from_essential(E, K0, K1):
    """F = K1^-T E K0^-1.

    Shape: E, K0, K1 [B, 3, 3] -> [B, 3, 3] float32.
    """
    for name, m in (("E", E), ("K0", K0), ("K1", K1)):
        check_matrix(m, name, _MODULE)
    E, K0, K1 = (ops.cast(ops.convert_to_tensor(m), "float32") for m in (E, K0, K1))
    return ops.matmul(ops.matmul(ops.swapaxes(invert_3x3(K1), -1, -2), E), invert_3x3(K0))


def epipolar_line_distances(points0, points1, F):
    """Point-to-line distances: d0 = dist(x0, F^T x1) in view 0 and d1 = dist(x1, F x0) in view 1.

    Shape: points0, points1 [B, N, 2], F [B, 3, 3] -> (d0 [B, N], d1 [B, N]) float32, unsigned.
    """
    residual, norm0, norm1 = _prepare(points0, points1, F)
    r = ops.abs(residual)
    return r / ops.sqrt(norm0 + _EPS), r / ops.sqrt(norm1 + _EPS)


def sampson_distance(points0, points1, F, squared=True):
    """Sampson error (Hartley & Zisserman eq. 11.9), the first-order geometric error of a correspondence:
    (x1^T F x0)^2 / ((F x0)_1^2 + (F x0)_2^2 + (F^T x1)_1^2 + (F^T x1)_2^2). It approximates the smallest
    total squared move of both points onto a consistent pair; `squared=False` returns its square root.

    Shape: points0, points1 [B, N, 2], F [B, 3, 3] -> [B, N] float32.
    """
    residual, norm0, norm1 = _prepare(points0, points1, F)
    value = residual**2 / (norm0 + norm1 + _EPS)
    return value if squared else ops.sqrt(value)


def symmetric_epipolar_distance(points0, points1, F, squared=True):
    """Symmetric epipolar distance (Hartley & Zisserman eq. 11.10): d0^2 + d1^2 with the point-to-line
    distances of `epipolar_line_distances`; `squared=False` returns sqrt(d0^2 + d1^2). With an essential
    matrix and normalised points this is SuperGlue's / IMP's `compute_epipolar_error`.

    Shape: points0, points1 [B, N, 2], F [B, 3, 3] -> [B, N] float32.
    """
    residual, norm0, norm1 = _prepare(points0, points1, F)
    value = residual**2 * (1.0 / (norm0 + _EPS) + 1.0 / (norm1 + _EPS))
    return value if squared else ops.sqrt(value)
