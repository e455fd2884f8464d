"""Geometry on batched tensors (keras.ops only): homographies, pinhole cameras, depth warping, epipolar
distances. Points are [B, N, 2] (x, y) pixels, integer = pixel centre."""

from tfmatch.geometry.camera import (  # noqa: F401
    backproject,
    essential_from_pose,
    project,
    relative_pose,
    scale_intrinsics,
    transform,
)
from tfmatch.geometry.depth_warp import interpolate_depth, warp_with_depth  # noqa: F401
from tfmatch.geometry.epipolar import (  # noqa: F401
    epipolar_line_distances,
    fundamental_from_essential,
    sampson_distance,
    symmetric_epipolar_distance,
)
from tfmatch.geometry.homography import (  # noqa: F401
    corners_error,
    invert_homography,
    pixel_grid,
    warp_image,
    warp_points,
)
