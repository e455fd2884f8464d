"""Dense-correspondence descriptor losses of ASLFeat (TFMatch ``losses.py``): hardest-contrastive and circle.

Pure functions over one batch of correspondence sets: row ``c`` of ``descriptors0`` (at ``points0[c]`` in image 0)
corresponds to row ``c`` of ``descriptors1`` (at ``points1[c]`` in image 1) where ``valid[c]``; invalid rows are
padding and take no part in anything. For anchor ``c``, candidates ``b`` closer than ``safe_radius`` pixels to it
(in image 1 for the row direction, in image 0 for the column direction) are not negatives, nor is ``c`` itself.
Each loss returns the per-pair loss ``[B]``; a pair with fewer than ``min_valid`` correspondences gives 0 (TFMatch),
and the batch loss is the mean over pairs.
"""

from __future__ import annotations

from keras import ops

__all__ = ["descriptor_distance_matrix", "safe_radius_masks", "hardest_contrastive_loss", "circle_loss",
           "weighted_pair_mean"]

_MASK_SHIFT = 10.0  # TFMatch adds 10 to excluded distances (descriptor distances are <= 2)


def _check(descriptors0, descriptors1, points0, points1, valid):
    s0, s1 = tuple(descriptors0.shape), tuple(descriptors1.shape)
    if len(s0) != 3 or s0 != s1:
        raise ValueError(f"tfmatch/losses/contrastive.py: descriptors0/1 must both be [B, N, D], got {s0} and {s1}")
    for name, pts in (("points0", points0), ("points1", points1)):
        if tuple(pts.shape)[:2] != s0[:2] or tuple(pts.shape)[-1] != 2:
            raise ValueError(f"tfmatch/losses/contrastive.py: {name} must be [B, N, 2] with B, N of the "
                             f"descriptors {s0[:2]}, got {tuple(pts.shape)}")
    if tuple(valid.shape) != s0[:2]:
        raise ValueError(f"tfmatch/losses/contrastive.py: valid must be [B, N] = {s0[:2]}, got {tuple(valid.shape)}")


def descriptor_distance_matrix(descriptors0, descriptors1):
    """Euclidean distances of L2-normalised descriptors, ``sqrt(max(2 - 2 f0 . f1, 1e-6))`` (TFMatch).

    Shape:
        descriptors0: [B, N, D], descriptors1: [B, M, D] -> [B, N, M]
    """
    sim = ops.matmul(descriptors0, ops.swapaxes(descriptors1, 1, 2))
    return ops.sqrt(ops.maximum(2.0 - 2.0 * sim, 1e-6))


def _pairwise_point_distance(points):
    diff = points[:, :, None, :] - points[:, None, :, :]
    return ops.sqrt(ops.sum(diff * diff, axis=-1))


def safe_radius_masks(points0, points1, valid, safe_radius):
    """Which (anchor, candidate) pairs are NOT negatives, as float masks (1 = excluded).

    ``row[b, a, c]`` = 1 when ``c == a``, when ``|p1_c - p1_a| < safe_radius``, or when ``c`` or ``a`` is padding;
    ``col[b, c, a]`` likewise with image-0 points (indexed [candidate, anchor], the layout of a column-wise min).

    Shape:
        points0, points1: [B, N, 2]; valid: [B, N] bool -> (row [B, N, N], col [B, N, N]) float32
    """
    n = ops.shape(valid)[1]
    eye = ops.eye(n, dtype="float32")[None]
    v = ops.cast(valid, "float32")
    pad = 1.0 - v[:, :, None] * v[:, None, :]
    row = ops.cast(_pairwise_point_distance(ops.cast(points1, "float32")) < safe_radius, "float32")
    col = ops.cast(_pairwise_point_distance(ops.cast(points0, "float32")) < safe_radius, "float32")
    if safe_radius <= 0:
        row = ops.zeros_like(row)
        col = ops.zeros_like(col)
    row = ops.minimum(ops.maximum(row, eye) + pad, 1.0)
    col = ops.minimum(ops.maximum(col, eye) + pad, 1.0)
    return row, col


def weighted_pair_mean(per_corr, valid, weights=None, min_valid=32):
    """Per pair ``sum_c w_c M_c / (sum_c w_c + 1e-6)`` over valid rows (plain mean without weights); 0 for a pair
    with fewer than ``min_valid`` valid rows.

    Shape:
        per_corr: [B, N]; valid: [B, N] bool; weights: [B, N] or None -> [B]
    """
    v = ops.cast(valid, per_corr.dtype)
    if weights is None:
        pair = ops.sum(per_corr * v, axis=1) / ops.maximum(ops.sum(v, axis=1), 1.0)
    else:
        w = ops.cast(weights, per_corr.dtype) * v
        pair = ops.sum(per_corr * w, axis=1) / (ops.sum(w, axis=1) + 1e-6)
    enough = ops.sum(v, axis=1) >= min_valid
    return ops.where(enough, pair, ops.zeros_like(pair))


def hardest_contrastive_loss(descriptors0, descriptors1, points0, points1, valid, weights=None,
                             pos_margin=0.2, neg_margin=1.0, safe_radius=12.0, min_valid=32):
    """TFMatch ``HARD_CONTRASTIVE``: ``[D_cc - m_p]+ + 1/2 ([m_n - min_b D_cb]+ + [m_n - min_a D_ac]+)``.

    Negatives exclude the diagonal, the safe radius, padding, and (TFMatch's "unsafe mask") any pair whose
    descriptor distance is below 0.008.

    Shape:
        descriptors0, descriptors1: [B, N, D] L2-normalised; points0, points1: [B, N, 2] pixels;
        valid: [B, N] bool; weights: [B, N] (e.g. score0 * score1) or None
        returns: [B] per-pair loss
    """
    _check(descriptors0, descriptors1, points0, points1, valid)
    dist = descriptor_distance_matrix(descriptors0, descriptors1)
    pos = ops.diagonal(dist, axis1=1, axis2=2)
    row_mask, col_mask = safe_radius_masks(points0, points1, valid, safe_radius)
    row_mask = ops.cast(row_mask, dist.dtype)
    col_mask = ops.cast(ops.swapaxes(col_mask, 1, 2), dist.dtype)
    n = ops.shape(dist)[1]
    eye = ops.eye(n, dtype=dist.dtype)[None]
    without_diag = dist + _MASK_SHIFT * eye
    # Near-duplicate descriptors (other than the positive) are not usable negatives.
    unsafe = ops.cast(without_diag < 0.008, dist.dtype)
    without_diag = without_diag + _MASK_SHIFT * unsafe
    hardest_row = ops.min(without_diag + _MASK_SHIFT * row_mask, axis=2)
    hardest_col = ops.min(without_diag + _MASK_SHIFT * col_mask, axis=1)
    pos_loss = ops.relu(pos - pos_margin)
    per_corr = pos_loss + 0.5 * (ops.relu(neg_margin - hardest_row) + ops.relu(neg_margin - hardest_col))
    return weighted_pair_mean(per_corr, valid, weights, min_valid)


def circle_loss(descriptors0, descriptors1, points0, points1, valid, weights=None, scale=512.0, margin=0.1,
                safe_radius=12.0, min_valid=32):
    """TFMatch ``CIRCLE`` loss on cosine similarities (post-CVPR ASLFeat recommendation).

    Per anchor c and direction: ``softplus(-g a_p (S_cc - (1-m)) + logsumexp_b g a_n (S_cb - m)) / g`` with
    ``a_p = [1+m - S_cc]+`` and ``a_n = [S_cb + m]+`` (both without gradient), g = ``scale``; the two directions are
    averaged. As in TFMatch, an excluded candidate (diagonal, safe radius) is shifted by -128, which makes a_n = 0,
    so it adds a logit of exactly 0 (``+1`` in the sum) instead of vanishing; padding rows/columns do vanish.

    Shape:
        as ``hardest_contrastive_loss``; returns [B]
    """
    _check(descriptors0, descriptors1, points0, points1, valid)
    sim = ops.matmul(descriptors0, ops.swapaxes(descriptors1, 1, 2))
    pos = ops.diagonal(sim, axis1=1, axis2=2)
    n = ops.shape(sim)[1]
    eye = ops.eye(n, dtype=sim.dtype)[None]
    row_radius, col_radius = safe_radius_masks(points0, points1, valid, safe_radius)
    v = ops.cast(valid, sim.dtype)
    pad = 1.0 - v[:, :, None] * v[:, None, :]
    # Excluded-but-present candidates (diagonal, radius) get the -128 shift; padding is removed below.
    row_excl = ops.cast(row_radius, sim.dtype) * (1.0 - pad)
    col_excl = ops.swapaxes(ops.cast(col_radius, sim.dtype), 1, 2) * (1.0 - pad)
    row_excl = ops.maximum(row_excl, eye)
    col_excl = ops.maximum(col_excl, eye)
    pos_margin, neg_margin = 1.0 - margin, margin
    pos_optimal, neg_optimal = 1.0 + margin, -margin
    logit_pos = -scale * (pos - pos_margin) * ops.stop_gradient(ops.relu(pos_optimal - pos))

    def negative_lse(excluded, axis):
        neg = sim - 128.0 * excluded
        logits = scale * (neg - neg_margin) * ops.stop_gradient(ops.relu(neg - neg_optimal))
        logits = ops.where(pad > 0, ops.full_like(logits, -1e9), logits)
        return ops.logsumexp(logits, axis=axis)

    loss_row = ops.softplus(logit_pos + negative_lse(row_excl, 2)) / scale
    loss_col = ops.softplus(logit_pos + negative_lse(col_excl, 1)) / scale
    per_corr = 0.5 * (loss_row + loss_col)
    return weighted_pair_mean(per_corr, valid, weights, min_valid)
