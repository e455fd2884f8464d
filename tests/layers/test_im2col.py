"""conv2d_as_matmul equals keras' 'same' stride-1 Conv2D with the same weights."""

import keras
import numpy as np
import pytest

from tfmatch.layers.im2col import conv2d_as_matmul


@pytest.mark.parametrize("channels,kernel_size,use_bias", [(1, 3, False), (2, 3, True), (1, 5, True), (3, 1, False), (1, 2, True), (2, 4, False)])
def test_conv2d_as_matmul_equals_conv2d(channels, kernel_size, use_bias):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 9, 7, channels)).astype(np.float32)
    conv = keras.layers.Conv2D(6, kernel_size, padding="same", use_bias=use_bias)
    conv.build(images.shape)
    if use_bias:
        conv.bias.assign(rng.normal(size=(6,)).astype(np.float32))
    out = conv2d_as_matmul(images, conv.kernel, conv.bias if use_bias else None)
    assert tuple(out.shape) == (2, 9, 7, 6)
    np.testing.assert_allclose(np.asarray(out), np.asarray(conv(images)), rtol=1e-5, atol=1e-5)
