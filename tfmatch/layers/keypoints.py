"""Keypoint selection from dense score maps and descriptor sampling at keypoints.

Fixed N and a `valid` mask keep shapes static under distribution strategies and XLA (DESIGN.md contract).
"""

from keras import ops

from tfmatch.layers.sampling import bilinear_sample, check_points

__all__ = ["select_top_k", "sample_descriptors"]

_MODULE = "tfmatch/layers/keypoints.py"
_CONVENTIONS = ("corner", "centre")


def select_top_k(scores, k, border=0, threshold=None, cell=1):
    """The k highest-scoring pixels of each map, excluding a border, as integer keypoints.

    Run `max_pool_nms` first for non-maximum suppression, and pass `threshold=0` to drop the pixels it
    suppressed. Slots beyond the available pixels are padded with keypoint (0, 0), score 0, valid False.

    `cell > 1` (static H and W only; otherwise ignored) first keeps the best pixel of each `cell x cell` block
    and ranks only those, a `cell^2` times smaller top-k. After NMS with radius >= cell - 1 a block holds at most
    one maximum, so the result is the same, except where neighbouring maxima tie exactly (a plateau): then one
    pixel of the block is kept instead of all of them.

    Shape:
        scores: [B, H, W] float
        k: int > 0; border: int >= 0, pixels closer than `border` to an edge are never selected;
        threshold: None or float, a keypoint is valid only when its score > threshold; cell: int >= 1
        returns: keypoints [B, k, 2] float32 (x, y), integer = pixel centre; scores [B, k] float32, sorted
        in decreasing order; valid [B, k] bool
    """
    shape = tuple(scores.shape)
    if len(shape) != 3:
        raise ValueError(f"{_MODULE}: scores must be [B, H, W], got shape {shape}")
    if int(k) != k or k <= 0:
        raise ValueError(f"{_MODULE}: k must be an int > 0, got {k}")
    if int(border) != border or border < 0:
        raise ValueError(f"{_MODULE}: border must be an int >= 0, got {border}")
    if int(cell) != cell or cell < 1:
        raise ValueError(f"{_MODULE}: cell must be an int >= 1, got {cell}")
    k, border, cell = int(k), int(border), int(cell)
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    dyn = ops.shape(scores)
    height, width = dyn[1], dyn[2]
    ys = ops.arange(height, dtype="int32")[:, None]
    xs = ops.arange(width, dtype="int32")[None, :]
    h_i, w_i = ops.cast(height, "int32"), ops.cast(width, "int32")
    inner = (ys >= border) & (ys < h_i - border) & (xs >= border) & (xs < w_i - border)  # [H, W]
    masked = ops.where(inner[None], scores, float("-inf"))
    if cell > 1 and isinstance(shape[1], int) and isinstance(shape[2], int):
        return _top_k_of_cells(masked, k, cell, threshold)
    flat = ops.reshape(masked, (dyn[0], -1))
    # k slots of -inf appended so that top_k works when the map has fewer than k pixels.
    flat = ops.concatenate([flat, ops.full((dyn[0], k), float("-inf"), dtype="float32")], axis=1)
    top_scores, index = ops.top_k(flat, k=k, sorted=True)
    valid = top_scores > float("-inf")
    if threshold is not None:
        valid = valid & (top_scores > threshold)
    index = ops.where(valid, index, 0)
    x = ops.cast(index % w_i, "float32")
    y = ops.cast(index // w_i, "float32")
    keypoints = ops.where(valid[..., None], ops.stack([x, y], axis=-1), 0.0)
    return keypoints, ops.where(valid, top_scores, 0.0), valid


def _top_k_of_cells(masked, k, cell, threshold):
    """``select_top_k`` on the best pixel of each ``cell x cell`` block (static H, W). Shape: [B, H, W] -> as there."""
    batch = ops.shape(masked)[0]
    height, width = masked.shape[1], masked.shape[2]
    rows, cols = -(-height // cell), -(-width // cell)
    padded = ops.pad(masked, [[0, 0], [0, rows * cell - height], [0, cols * cell - width]],
                     constant_values=float("-inf"))
    blocks = ops.reshape(padded, (batch, rows, cell, cols, cell))
    blocks = ops.reshape(ops.transpose(blocks, (0, 1, 3, 2, 4)), (batch, rows * cols, cell * cell))
    best, where = ops.max(blocks, axis=-1), ops.argmax(blocks, axis=-1)
    best = ops.concatenate([best, ops.full((batch, k), float("-inf"), dtype="float32")], axis=1)
    top_scores, index = ops.top_k(best, k=k, sorted=True)
    valid = top_scores > float("-inf")
    if threshold is not None:
        valid = valid & (top_scores > threshold)
    index = ops.where(valid, index, 0)
    offset = ops.take_along_axis(ops.cast(where, "int32"), index, axis=1)
    x = ops.cast((index % cols) * cell + offset % cell, "float32")
    y = ops.cast((index // cols) * cell + offset // cell, "float32")
    keypoints = ops.where(valid[..., None], ops.stack([x, y], axis=-1), 0.0)
    return keypoints, ops.where(valid, top_scores, 0.0), valid


def sample_descriptors(dense, keypoints, stride, convention="corner"):
    """Bilinear descriptors at image keypoints from a map downsampled by `stride`, L2-normalised.

    Conventions (cell i of the map <-> image pixel):
        "corner": i * stride, ASLFeat / TFMatch (descriptor at p / stride);
        "centre": (i + 0.5) * stride - 0.5, SuperPoint (rpautrat PyTorch port, cell centre at 8 i + 3.5).

    Shape:
        dense: [B, h, w, D] float
        keypoints: [B, N, 2] (x, y) image pixels, integer = pixel centre
        stride: number > 0 (image pixels per map cell)
        returns: [B, N, D] float32, unit L2 norm (a zero descriptor stays 0)
    """
    if convention not in _CONVENTIONS:
        raise ValueError(f"{_MODULE}: convention must be one of {_CONVENTIONS}, got {convention!r}")
    if stride <= 0:
        raise ValueError(f"{_MODULE}: stride must be > 0, got {stride}")
    check_points(keypoints, "keypoints")
    points = ops.cast(ops.convert_to_tensor(keypoints), "float32")
    if convention == "corner":
        cells = points / float(stride)
    else:
        cells = (points + 0.5) / float(stride) - 0.5
    desc = ops.cast(bilinear_sample(dense, cells), "float32")
    norm = ops.sqrt(ops.sum(desc * desc, axis=-1, keepdims=True))
    return desc / ops.maximum(norm, 1e-12)
