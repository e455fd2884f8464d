"""Homographies: warping points and images, and the corner error of an estimate.

Convention: `H` maps pixels of the source image to pixels of the target image, `p_target ~ H p_source`,
points (x, y) with integer = pixel centre. `warp_image` produces the target view: output pixel p samples the
input at H^-1 p (gather-based bilinear, zero outside the input), so `warp_points(H, p)` lands on the same
content in the warped image. (SuperPoint's TF code passes the inverse, output -> input; invert it first.)
"""

from keras import ops

from tfmatch.geometry._utils import (
    apply_matrix,
    check_matrix,
    check_points,
    from_homogeneous,
    invert_3x3,
    to_homogeneous,
)
from tfmatch.layers.sampling import bilinear_sample

__all__ = ["warp_points", "warp_image", "corners_error", "invert_homography", "pixel_grid"]

_MODULE = "tfmatch/geometry/homography.py"


def invert_homography(H):
    """Shape: H [B, 3, 3] -> [B, 3, 3], normalised so that the [2, 2] entry is 1 where it is not 0."""
    check_matrix(H, "H", _MODULE)
    inv = invert_3x3(ops.convert_to_tensor(H, "float32"))
    scale = inv[..., 2:3, 2:3]
    return inv / ops.where(ops.abs(scale) > 1e-12, scale, 1.0)


def warp_points(H, points):
    """Maps points by the homography H.

    Shape:
        H: [B, 3, 3] (or [3, 3], broadcast)
        points: [B, N, 2] (x, y) pixels
        returns: [B, N, 2] float32
    """
    check_matrix(H, "H", _MODULE)
    check_points(points, "points", _MODULE)
    H = ops.convert_to_tensor(H, "float32")
    points = ops.cast(ops.convert_to_tensor(points), "float32")
    return from_homogeneous(apply_matrix(H, to_homogeneous(points)))


def pixel_grid(height, width):
    """All pixel centres of a height x width image, row-major.

    Shape: returns [height * width, 2] float32, (x, y).
    """
    xs, ys = ops.meshgrid(ops.arange(width, dtype="float32"), ops.arange(height, dtype="float32"),
                          indexing="xy")
    return ops.stack([ops.reshape(xs, (-1,)), ops.reshape(ys, (-1,))], axis=-1)


def warp_image(images, H, out_size):
    """Warps images by H: output pixel p takes the bilinear sample of the input at H^-1 p; 0 outside.

    Shape:
        images: [B, H_in, W_in, C] float
        H: [B, 3, 3], source (input) pixels -> target (output) pixels
        out_size: (h, w) of the output, Python ints
        returns: [B, h, w, C], dtype of `images`
    """
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(f"{_MODULE}: images must be [B, H, W, C], got shape {shape}")
    check_matrix(H, "H", _MODULE)
    if len(out_size) != 2:
        raise ValueError(f"{_MODULE}: out_size must be (height, width), got {out_size}")
    out_h, out_w = int(out_size[0]), int(out_size[1])
    images = ops.convert_to_tensor(images)
    grid = to_homogeneous(pixel_grid(out_h, out_w))[None]  # [1, h*w, 3], broadcast over the batch
    src = from_homogeneous(apply_matrix(invert_homography(H), grid))  # [B, h*w, 2]
    # A one-pixel zero frame turns the sampler's clamping into zero fill (bilinear up to the image edge).
    padded = ops.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    values = bilinear_sample(padded, src + 1.0)
    channels = shape[3] if shape[3] is not None else ops.shape(images)[3]
    return ops.reshape(values, (-1, out_h, out_w, channels))


def corners_error(H_est, H_true, height, width):
    """Mean distance between the image corners mapped by H_est and by H_true (HPatches homography accuracy).

    Corners are (0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1).

    Shape:
        H_est, H_true: [B, 3, 3]
        returns: [B] float32, pixels
    """
    check_matrix(H_est, "H_est", _MODULE)
    check_matrix(H_true, "H_true", _MODULE)
    w1, h1 = float(width) - 1.0, float(height) - 1.0
    corners = ops.convert_to_tensor([[[0.0, 0.0], [w1, 0.0], [0.0, h1], [w1, h1]]], "float32")
    diff = warp_points(H_est, corners) - warp_points(H_true, corners)
    return ops.mean(ops.sqrt(ops.sum(diff * diff, axis=-1)), axis=-1)
