"""A 'SAME', stride-1 convolution as one matrix product over the k x k x C_in taps of each pixel (im2col)."""

from __future__ import annotations

from keras import ops

__all__ = ["conv2d_as_matmul"]


def conv2d_as_matmul(inputs, kernel, bias=None):
    """The same result as ``keras.layers.Conv2D(padding='same', strides=1)`` with this kernel (and bias).

    For a layer with few input channels (the image layer: C_in = 1) it is faster on GPU than cuDNN, whose kernels
    for one input channel first convert the image's layout and run an unaligned kernel, forward and for the weight
    gradient (docs/benchmarks.md: SuperPoint's and ASLFeat's first layers). The taps are k*k*C_in values per pixel,
    so keep it to small C_in.

    Shape:
      inputs: [B, H, W, C_in]; kernel: [k, k, C_in, F]; bias: [F] or None -> [B, H, W, F] in the inputs' dtype.
    """
    k = kernel.shape[0]
    height, width = ops.shape(inputs)[1], ops.shape(inputs)[2]
    padded = ops.pad(inputs, [[0, 0], [(k - 1) // 2, k // 2], [(k - 1) // 2, k // 2], [0, 0]])  # as 'same'
    # Tap order (dy, dx, c) is the row order of the [k, k, C_in, F] kernel reshaped to [k*k*C_in, F].
    taps = ops.concatenate([padded[:, dy:dy + height, dx:dx + width, :] for dy in range(k) for dx in range(k)],
                           axis=-1)
    out = ops.matmul(taps, ops.cast(ops.reshape(kernel, (-1, kernel.shape[-1])), taps.dtype))
    return out if bias is None else out + ops.cast(bias, taps.dtype)
