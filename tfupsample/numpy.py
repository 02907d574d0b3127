"""NumPy-level API over tfupsample's C++ kernels. Does not import TensorFlow."""

import numbers

from ._numpy_ext import bilinear_upsample as _bilinear_upsample
from ._numpy_ext import kernel_isa, kernel_x_pass
from ._numpy_ext import resize_bilinear as _resize_bilinear
from ._weights import check_factor


def bilinear_upsample(array, factor):
    """Bilinear upsample of an `[H, W, C]` or `[N, H, W, C]` float32/float64 array by `factor`.

    Same arithmetic as `tfupsample.bilinear_upsample` (the same C++ kernel): the transposed
    convolution with the bilinear kernel, SAME padding, so the borders fade towards zero. float64
    is computed in float64. Any strides are accepted; the GIL is released while it runs.
    """
    return _bilinear_upsample(array, check_factor(factor))


def _size(size):
    try:
        values = list(size)
    except TypeError:
        values = None
    if values is None or len(values) != 2 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        raise TypeError(f"size must be [new_height, new_width] (two integers), got {size!r}")
    h, w = (int(v) for v in values)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive (output dimensions must be positive), got [{h}, {w}]")
    return h, w


def resize(array, size):
    """`tf.image.resize(array, size)` (bilinear, half-pixel centres) of an `[H, W, C]` or
    `[N, H, W, C]` float32/float64 array: float32, the same kernel and bits as
    `tfupsample.image.resize`."""
    return _resize_bilinear(array, *_size(size), False, True)


def resize_bilinear(array, size, align_corners=False, half_pixel_centers=False):
    """`tf.compat.v1.image.resize_bilinear` of an `[H, W, C]` or `[N, H, W, C]` float32/float64
    array (its conventions: align_corners, half_pixel_centers, the two in this order, third and
    fourth: there is no `name`); float32 output."""
    return _resize_bilinear(array, *_size(size), bool(align_corners), bool(half_pixel_centers))


__all__ = ["bilinear_upsample", "resize", "resize_bilinear", "kernel_isa", "kernel_x_pass"]
