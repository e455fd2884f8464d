"""Structured descriptor losses over the similarity matrix of a batch of corresponding descriptors (TFMatch).

Every function here is pure (``keras.ops`` only): the learnable temperature of the "LOG" loss is a variable that
the model owns and passes in. Row ``a`` of ``descriptors0`` corresponds to row ``a`` of ``descriptors1`` for the
first ``num_inliers`` rows of each sample; the remaining rows are non-matching padding that still takes part in
every softmax denominator (as in TFMatch, where match sets are padded with random keypoints).
"""

from __future__ import annotations

from keras import ops

__all__ = [
    "cosine_similarity_matrix",
    "inlier_mask",
    "log_softmax_loss",
    "hard_triplet_loss",
    "matching_accuracy",
    "quadruple_ranking_loss",
    "linear_temperature_penalty",
]


def _check_pair(descriptors0, descriptors1):
    s0, s1 = tuple(descriptors0.shape), tuple(descriptors1.shape)
    if len(s0) != 3 or len(s1) != 3:
        raise ValueError(f"tfmatch/losses/structured.py: descriptors must be [B, N, D], got {s0} and {s1}")
    if s0[-1] is not None and s1[-1] is not None and s0[-1] != s1[-1]:
        raise ValueError(f"tfmatch/losses/structured.py: descriptor dims differ, got {s0} and {s1}")


def cosine_similarity_matrix(descriptors0, descriptors1):
    """Cosine similarities of L2-normalised descriptors, clipped to [-1, 1] (TFMatch ``cosine_dist``).

    Shape:
        descriptors0: [B, N, D], descriptors1: [B, M, D] (L2-normalised)
        returns: [B, N, M]
    """
    _check_pair(descriptors0, descriptors1)
    sim = ops.matmul(descriptors0, ops.transpose(descriptors1, (0, 2, 1)))
    return ops.clip(sim, -1.0, 1.0)


def inlier_mask(num_inliers, num_rows):
    """``[B, N]`` float mask that is 1 for the first ``num_inliers[b]`` rows of sample ``b``.

    Shape:
        num_inliers: [B] int; num_rows: python int N
        returns: [B, N] float32
    """
    rows = ops.arange(num_rows, dtype="int32")[None, :]
    return ops.cast(rows < ops.cast(ops.reshape(num_inliers, (-1, 1)), "int32"), "float32")


def _masked_mean_per_sample(values, mask):
    """values, mask [B, N] -> mean over samples of the masked per-sample mean (samples without rows count 0)."""
    per_sample = ops.sum(values * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)
    return ops.mean(per_sample)


def log_softmax_loss(descriptors0, descriptors1, num_inliers, temperature=1.0):
    """TFMatch "LOG" loss (scale-aware N-pair / softmax loss); with ``temperature=1`` it is the "L2NET" loss.

    For inlier row ``a``: ``row_a = -log softmax_b(t * S[a, :])[a]``, ``col_a = -log softmax_b(t * S[:, a])[a]``,
    where ``S`` is the clipped cosine-similarity matrix. The sample loss is the mean of ``(row_a + col_a) / 2``
    over the inlier rows; the batch loss is the mean over samples.

    Shape:
        descriptors0, descriptors1: [B, N, D] L2-normalised, row a of one matches row a of the other
        num_inliers: [B] int, the first num_inliers rows are true matches
        temperature: scalar (the learnable ``scale_temperature`` of the model, init 1)
        returns: scalar float32
    """
    sim = cosine_similarity_matrix(descriptors0, descriptors1)
    logits = ops.cast(temperature, sim.dtype) * sim
    n = sim.shape[1] if sim.shape[1] is not None else ops.shape(sim)[1]
    eye = ops.eye(n, dtype=sim.dtype)[None]
    diag = ops.sum(logits * eye, axis=2)  # [B, N] = t * S_aa
    row = ops.logsumexp(logits, axis=2) - diag
    col = ops.logsumexp(logits, axis=1) - diag
    mask = inlier_mask(num_inliers, n)
    return _masked_mean_per_sample((row + col) / 2.0, mask)


def hard_triplet_loss(descriptors0, descriptors1, num_inliers, margin=1.0):
    """TFMatch "HARD_TRIPLET": ``[margin + d_aa - min_b!=a d_ab]_+`` with d = sqrt(max(2 - 2 cos, 1e-6)), averaged
    with the column version. Negatives closer than 0.008 (near duplicates) are ignored, as in TFMatch.

    Shape:
        descriptors0, descriptors1: [B, N, D] L2-normalised; num_inliers: [B] int
        returns: scalar float32
    """
    sim = cosine_similarity_matrix(descriptors0, descriptors1)
    dist = ops.sqrt(ops.maximum(2.0 - 2.0 * sim, 1e-6))
    n = sim.shape[1] if sim.shape[1] is not None else ops.shape(sim)[1]
    eye = ops.eye(n, dtype=dist.dtype)[None]
    pos = ops.sum(dist * eye, axis=2)
    neg = dist + 10.0 * eye
    neg = neg + 10.0 * ops.cast(neg < 0.008, neg.dtype)
    row = ops.relu(margin + pos - ops.min(neg, axis=2))
    col = ops.relu(margin + pos - ops.min(neg, axis=1))
    return _masked_mean_per_sample((row + col) / 2.0, inlier_mask(num_inliers, n))


def matching_accuracy(descriptors0, descriptors1, num_inliers):
    """Fraction of inlier rows and columns whose own match is the most similar (a display metric).

    Shape:
        descriptors0, descriptors1: [B, N, D]; num_inliers: [B] int
        returns: scalar float32 in [0, 1]
    """
    sim = cosine_similarity_matrix(descriptors0, descriptors1)
    n = sim.shape[1] if sim.shape[1] is not None else ops.shape(sim)[1]
    eye = ops.eye(n, dtype=sim.dtype)[None]
    diag = ops.sum(sim * eye, axis=2)
    off = sim - 3.0 * eye
    row_ok = ops.cast(ops.max(off, axis=2) < diag, "float32")
    col_ok = ops.cast(ops.max(off, axis=1) < diag, "float32")
    return _masked_mean_per_sample((row_ok + col_ok) / 2.0, inlier_mask(num_inliers, n))


def quadruple_ranking_loss(matchability0, matchability1, num_inliers):
    """ContextDesc matchability ranking ("quad") loss on true matches (TFMatch ``make_quadruple_loss``).

    For inlier pairs i != j: ``R_ij = (m0_j - m0_i) (m1_j - m1_i)``; the loss is
    ``sum_{i != j} [1 - R_ij]_+ / (n (n - 1))`` per sample, ``n = num_inliers``, averaged over samples.

    Shape:
        matchability0, matchability1: [B, N] (logits ``m_logit`` of both views)
        num_inliers: [B] int
        returns: scalar float32
    """
    m0 = ops.cast(matchability0, "float32")
    m1 = ops.cast(matchability1, "float32")
    n = m0.shape[1] if m0.shape[1] is not None else ops.shape(m0)[1]
    r = (m0[:, None, :] - m0[:, :, None]) * (m1[:, None, :] - m1[:, :, None])  # [B, i, j]
    mask = inlier_mask(num_inliers, n)
    pair_mask = mask[:, :, None] * mask[:, None, :] * (1.0 - ops.eye(n, dtype="float32")[None])
    count = ops.sum(pair_mask, axis=(1, 2))
    per_sample = ops.sum(ops.relu(1.0 - r) * pair_mask, axis=(1, 2)) / ops.maximum(count, 1.0)
    return ops.mean(per_sample)


def linear_temperature_penalty(temperature, weight=1e-4):
    """TFMatch adds the LOG temperature itself (not its square) to the regularisation sum: ``weight * t``."""
    return weight * ops.sum(temperature)
