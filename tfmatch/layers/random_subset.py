"""The k largest of uniform random keys (a random subset of valid entries) without sorting every key."""

from __future__ import annotations

import math

from keras import ops

__all__ = ["top_k_of_uniform_keys"]


def top_k_of_uniform_keys(keys, k: int):
    """A uniform random subset of up to k valid entries per row, as ``ops.top_k(keys, k, sorted=False)`` picks it
    when the valid keys are uniform in [0, 1) and the others negative, without ranking every key.

    ``ops.top_k`` of 230,400 keys per pair is a sort of them all (0.1 ms of ASLFeat's 4 ms bfloat16 training step
    on an H200, docs/benchmarks.md). Here the candidates are the valid keys at or above a threshold that lets about
    ``k + 16 sqrt(k) + 64`` of the n valid keys through (all of them when n is smaller): they hold the k largest
    whenever there are at least min(k, n). They are compacted into ``k + 32 sqrt(k) + 256`` slots (a running count,
    then a scatter to positions that never collide) and only those are ranked. The result equals ``ops.top_k``'s
    entries (as a set) unless a row has fewer than min(k, n) candidates or more than the slots, a deviation of more
    than 10 standard deviations of the candidate count for every k (14 at k = 512). Even then the result is a random
    subset of valid entries (all candidates, or the k largest of the first ones). No fallback to the full top-k: a
    branch on the device made the host wait for its predicate at every step (docs/benchmarks.md). Entries beyond
    the valid ones (rows with fewer than k) have negative keys, as with ``ops.top_k``, and index 0.

    Shape:
      keys: [B, N] float -> (top [B, k], index [B, k] int32)
    """
    n_total = keys.shape[1]
    expected = k + 16.0 * math.sqrt(k) + 64.0
    capacity = int(k + 32.0 * math.sqrt(k) + 256.0)
    if capacity >= n_total:  # small inputs: nothing to gain
        return tuple(ops.top_k(keys, k=k, sorted=False))
    batch = ops.shape(keys)[0]
    valid = keys >= 0
    num_valid = ops.sum(ops.cast(valid, "float32"), axis=1)
    keep = ops.minimum(1.0, expected / ops.maximum(num_valid, 1.0))
    candidate = ops.logical_and(valid, keys >= (1.0 - keep)[:, None])
    running = ops.cumsum(ops.cast(candidate, "int32"), axis=1)
    positions = ops.arange(n_total, dtype="int32")[None, :]
    # Candidate j of a row goes to slot j; every other entry (and any candidate past capacity) to a slot of its own
    # after the capacity, so no two writes meet.
    slot = ops.where(ops.logical_and(candidate, running <= capacity), running - 1, capacity + positions)
    width = capacity + n_total
    flat = ops.reshape(slot + ops.arange(batch, dtype="int32")[:, None] * width, (-1, 1))
    size = batch * width
    compact_keys = ops.scatter_update(ops.full((size,), -1.0, dtype=keys.dtype), flat, ops.reshape(keys, (-1,)))
    compact_index = ops.scatter_update(ops.zeros((size,), dtype="int32"), flat,
                                       ops.reshape(ops.broadcast_to(positions, ops.shape(keys)), (-1,)))
    compact_keys = ops.reshape(compact_keys, (batch, width))[:, :capacity]
    compact_index = ops.reshape(compact_index, (batch, width))[:, :capacity]
    top, picked = ops.top_k(compact_keys, k=k, sorted=False)
    return top, ops.take_along_axis(compact_index, picked, axis=1)
