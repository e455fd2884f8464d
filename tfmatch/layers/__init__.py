"""Shared building blocks (keras.ops only): gather-based bilinear sampling, max-pool NMS, top-k keypoint
selection and descriptor sampling."""

from tfmatch.layers.keypoints import sample_descriptors, select_top_k  # noqa: F401
from tfmatch.layers.nms import max_pool_nms  # noqa: F401
from tfmatch.layers.sampling import bilinear_sample, points_in_image  # noqa: F401
