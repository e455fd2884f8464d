"""SuperPoint losses as pure functions (keras.ops): detector cell cross-entropy, dense and sparse descriptor hinge.

Spec: ``specs/superpoint-posfeat-pump-imp.md`` sections 1.3 and 1.5. Homographies here map image-0 pixels to
image-1 pixels (``p1 ~ H p0``), the convention of ``tfmatch.geometry.homography``; pixel coordinates are (x, y)
with integer values at pixel centres, so cell ``(i, j)`` has its centre at ``(8j + 3.5, 8i + 3.5)``.
"""

from __future__ import annotations

from keras import ops

from tfmatch.methods.superpoint.network import CELL, space_to_depth

DUSTBIN = CELL * CELL  # class index meaning "no keypoint in this cell"


def detector_labels(keypoint_map, noise=None):
    """Encodes a binary keypoint map as one class per cell (0..63 = position in the cell, 64 = dustbin).

    As rpautrat/SuperPoint: the keypoint channels get value 2, the dustbin 1, and the argmax picks a keypoint if the
    cell holds one. ``noise`` (U[0, 0.1), drawn by the model) breaks ties at random between several keypoints of a
    cell; without it the first one in raster order wins.

    Shape:
      keypoint_map: ``[B, H, W]`` (1 at keypoints, 0 elsewhere); noise: ``[B, H/8, W/8, 65]`` or None ->
      labels ``[B, H/8, W/8]`` int32.
    """
    cells = 2.0 * space_to_depth(ops.cast(keypoint_map, "float32"))
    cells = ops.concatenate([cells, ops.ones_like(cells[..., :1])], axis=-1)
    if noise is not None:
        cells = cells + ops.cast(noise, "float32")
    return ops.cast(ops.argmax(cells, axis=-1), "int32")


def cell_valid_mask(valid_mask):
    """A cell counts only if all of its 64 pixels are valid (inside the warped image).

    Shape:
      valid_mask: ``[B, H, W]`` -> ``[B, H/8, W/8]`` float32 in {0, 1}.
    """
    return ops.min(space_to_depth(ops.cast(valid_mask, "float32")), axis=-1)


def detector_loss(logits, labels, cell_weights):
    """Softmax cross-entropy over the 65 classes of each cell, averaged over the cells with non-zero weight (the
    reduction of TF1 ``sparse_softmax_cross_entropy``).

    Shape:
      logits: ``[B, Hc, Wc, 65]``; labels: ``[B, Hc, Wc]`` int; cell_weights: ``[B, Hc, Wc]`` -> scalar.
    """
    logits = ops.cast(logits, "float32")
    log_probs = ops.log_softmax(logits, axis=-1)
    onehot = ops.one_hot(labels, CELL * CELL + 1, dtype="float32")
    ce = -ops.sum(onehot * log_probs, axis=-1)
    weights = ops.cast(cell_weights, "float32")
    count = ops.sum(ops.cast(ops.not_equal(weights, 0.0), "float32"))
    return ops.sum(ce * weights) / ops.maximum(count, 1.0)


def cell_centres(height_cells: int, width_cells: int):
    """Pixel centres (x, y) of every cell in raster order. Shape: ``-> [Hc*Wc, 2]`` float32."""
    ys, xs = ops.meshgrid(ops.arange(height_cells, dtype="float32"), ops.arange(width_cells, dtype="float32"),
                          indexing="ij")
    centres = ops.stack([ops.reshape(xs, (-1,)), ops.reshape(ys, (-1,))], axis=-1)
    return centres * CELL + (CELL - 1) / 2.0


def apply_homography(homography, points):
    """``p' ~ H p`` for (x, y) points. Shape: homography ``[B, 3, 3]``, points ``[B, N, 2]`` -> ``[B, N, 2]``."""
    homography = ops.cast(homography, "float32")
    ones = ops.ones_like(points[..., :1])
    projected = ops.einsum("bij,bnj->bni", homography, ops.concatenate([points, ones], axis=-1))
    z = projected[..., 2:3]
    z = ops.where(ops.abs(z) < 1e-8, ops.where(z < 0, -1e-8, 1e-8), z)
    return projected[..., :2] / z


def descriptor_correspondence(homography, height_cells: int, width_cells: int, distance_threshold: float):
    """``s[b, n, m] = 1`` iff the centre of cell n of image 0, warped into image 1, lies within
    ``distance_threshold`` pixels of the centre of cell m of image 1.

    Shape:
      homography: ``[B, 3, 3]`` -> ``[B, Hc*Wc, Hc*Wc]`` float32.
    """
    centres = cell_centres(height_cells, width_cells)
    batch = ops.shape(homography)[0]
    warped = apply_homography(homography, ops.broadcast_to(centres[None], (batch,) + tuple(centres.shape)))
    distance = ops.sqrt(ops.sum(ops.square(warped[:, :, None, :] - centres[None, None, :, :]), axis=-1))
    return ops.cast(distance <= distance_threshold, "float32")


def dense_descriptor_loss(descriptors0, descriptors1, homography, valid_mask1, positive_margin: float = 1.0,
                          negative_margin: float = 0.2, lambda_d: float = 250.0, distance_threshold: float = 7.5):
    """The paper's hinge loss over all cell pairs:
    ``l = lambda_d * s * max(0, m_p - d0.d1) + (1 - s) * max(0, d0.d1 - m_n)``,
    masked by the validity of the image-1 cell and normalised by (valid image-1 cells) x (cells of image 0), which is
    the paper's ``(Hc Wc)^-2`` when every cell is valid (rpautrat's normalisation, without its extra ReLU and
    renormalisation of the dot products).

    Shape:
      descriptors0, descriptors1: ``[B, Hc, Wc, D]`` L2-normalised; homography: ``[B, 3, 3]`` (image 0 -> image 1
      pixels); valid_mask1: ``[B, H, W]`` -> scalar.
    """
    shape = ops.shape(descriptors0)
    hc, wc, d = descriptors0.shape[1], descriptors0.shape[2], descriptors0.shape[3]
    if hc is None or wc is None:
        raise ValueError(f"losses.py: dense_descriptor_loss needs static cell-grid sizes, got {descriptors0.shape}")
    b = shape[0]
    flat0 = ops.reshape(ops.cast(descriptors0, "float32"), (b, hc * wc, d))
    flat1 = ops.reshape(ops.cast(descriptors1, "float32"), (b, hc * wc, d))
    dot = ops.einsum("bnd,bmd->bnm", flat0, flat1)
    s = descriptor_correspondence(homography, hc, wc, distance_threshold)
    positive = lambda_d * s * ops.relu(positive_margin - dot)
    negative = (1.0 - s) * ops.relu(dot - negative_margin)
    mask1 = ops.reshape(cell_valid_mask(valid_mask1), (b, 1, hc * wc))
    total = ops.sum((positive + negative) * mask1)
    return total / ops.maximum(ops.sum(mask1) * float(hc * wc), 1.0)


def sparse_descriptor_loss(descriptors0, descriptors1, homography, valid_mask1, anchor_cells, negative_cells,
                           positive_margin: float = 1.0, negative_margin: float = 0.2, lambda_d: float = 1.0):
    """The sampled hinge loss of pytorch-superpoint (``sparse_loss``).

    Anchors are cells of image 0 (``anchor_cells``, flat indices drawn by the model); each cell centre is warped into
    image 1 and rounded to the nearest cell, which is its positive (dropped when outside the image or on an invalid
    cell). Each anchor gets ``M`` random negative cells of image 1 (``negative_cells``); those within one cell
    (Chebyshev) of the positive are dropped (pytorch-superpoint perturbs them instead). The loss is
    ``lambda_d * mean(max(0, m_p - d_a.d_p)) + sum(max(0, d_a.d_n - m_n)) / (#non-zero + 1)``.

    Shape:
      descriptors0, descriptors1: ``[B, Hc, Wc, D]``; homography: ``[B, 3, 3]``; valid_mask1: ``[B, H, W]``;
      anchor_cells: ``[B, K]`` int in ``[0, Hc*Wc)``; negative_cells: ``[B, K, M]`` int -> scalar.
    """
    hc, wc, d = descriptors0.shape[1], descriptors0.shape[2], descriptors0.shape[3]
    b = ops.shape(descriptors0)[0]
    flat0 = ops.reshape(ops.cast(descriptors0, "float32"), (b, hc * wc, d))
    flat1 = ops.reshape(ops.cast(descriptors1, "float32"), (b, hc * wc, d))
    anchor_cells = ops.cast(anchor_cells, "int32")
    negative_cells = ops.cast(negative_cells, "int32")
    k, m = negative_cells.shape[1], negative_cells.shape[2]

    centres = cell_centres(hc, wc)
    anchor_xy = ops.take(centres, anchor_cells, axis=0)  # [B, K, 2]
    warped = apply_homography(homography, anchor_xy)
    # Nearest cell of image 1 (inverse of centre = 8 c + 3.5).
    cell_xy = ops.round((warped - (CELL - 1) / 2.0) / CELL)
    cx, cy = cell_xy[..., 0], cell_xy[..., 1]
    inside = (cx >= 0) & (cx <= wc - 1) & (cy >= 0) & (cy <= hc - 1)
    cx_i = ops.cast(ops.clip(cx, 0, wc - 1), "int32")
    cy_i = ops.cast(ops.clip(cy, 0, hc - 1), "int32")
    positive_cells = cy_i * wc + cx_i  # [B, K]
    valid_cells1 = ops.reshape(cell_valid_mask(valid_mask1), (b, hc * wc))
    valid = ops.cast(inside, "float32") * ops.take_along_axis(valid_cells1, positive_cells, axis=1)

    anchor_desc = ops.take_along_axis(flat0, anchor_cells[..., None], axis=1)  # [B, K, D]
    positive_desc = ops.take_along_axis(flat1, positive_cells[..., None], axis=1)
    positive_dot = ops.sum(anchor_desc * positive_desc, axis=-1)
    positive_loss = ops.sum(ops.relu(positive_margin - positive_dot) * valid) / ops.maximum(ops.sum(valid), 1.0)

    negative_desc = ops.take_along_axis(flat1, ops.reshape(negative_cells, (b, k * m))[..., None], axis=1)
    negative_desc = ops.reshape(negative_desc, (b, k, m, d))
    negative_dot = ops.sum(anchor_desc[:, :, None, :] * negative_desc, axis=-1)  # [B, K, M]
    nx, ny = negative_cells % wc, negative_cells // wc
    far = (ops.abs(nx - cx_i[..., None]) > 1) | (ops.abs(ny - cy_i[..., None]) > 1)
    negative_weight = ops.cast(far, "float32") * valid[..., None]
    hinge = ops.relu(negative_dot - negative_margin) * negative_weight
    nonzero = ops.sum(ops.cast(hinge > 0, "float32"))
    negative_loss = ops.sum(hinge) / (nonzero + 1.0)
    return lambda_d * positive_loss + negative_loss
