"""Non-maximum suppression on dense score maps by max-pooling (static shapes, compiles under XLA)."""

from keras import ops

__all__ = ["max_pool_nms"]


def _window_max(x, size):
    """Maximum over the ``size x size`` window of each pixel of ``[B, H, W]``, as a row then a column maximum
    (``size`` reads per pixel each instead of ``size^2``: the 9 x 9 window of SuperPoint's NMS at full resolution was
    the longest kernel of its decode on GPU, docs/benchmarks.md)."""
    rows = ops.max_pool(x[..., None], pool_size=(1, size), strides=1, padding="same")
    return ops.max_pool(rows, pool_size=(size, 1), strides=1, padding="same")[..., 0]


def max_pool_nms(scores, radius, iterations=0):
    """Keeps the pixels that equal the maximum of their (2 radius + 1)^2 window; the others become 0.

    Equal values inside one window (plateaus) are all kept. Pixels outside the map do not take part.
    `iterations > 0` adds re-detection rounds (SuperGlue's `simple_nms` uses 2): pixels not covered by the
    window of a kept maximum may become maxima once the suppressed pixels around them are removed.

    Shape:
        scores: [B, H, W] float
        radius: int >= 0 (0 keeps everything); iterations: int >= 0
        returns: [B, H, W], dtype of `scores`
    """
    shape = tuple(scores.shape)
    if len(shape) != 3:
        raise ValueError(f"tfmatch/layers/nms.py: scores must be [B, H, W], got shape {shape}")
    if int(radius) != radius or radius < 0:
        raise ValueError(f"tfmatch/layers/nms.py: radius must be an int >= 0, got {radius}")
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"tfmatch/layers/nms.py: iterations must be an int >= 0, got {iterations}")
    scores = ops.convert_to_tensor(scores)
    if radius == 0:
        return scores
    size = 2 * int(radius) + 1
    zeros = ops.zeros_like(scores)
    keep = scores == _window_max(scores, size)
    for _ in range(int(iterations)):
        covered = _window_max(ops.cast(keep, scores.dtype), size) > 0
        rest = ops.where(covered, zeros, scores)
        keep = keep | ((rest == _window_max(rest, size)) & ~covered)
    return ops.where(keep, scores, zeros)
