"""NumPy-level API over tfupsample's C++ kernels. Does not import TensorFlow."""

from ._numpy_ext import bilinear_upsample as _bilinear_upsample
from ._numpy_ext import kernel_isa
from ._weights import check_factor


def bilinear_upsample(array, factor):
    """Bilinear upsample of an `[H, W, C]` or `[N, H, W, C]` float32/float64 array by `factor`.

    Same arithmetic as `tfupsample.bilinear_upsample` (the same C++ kernel): the transposed
    convolution with the bilinear kernel, SAME padding, so the borders fade towards zero. float64
    is computed in float64. Any strides are accepted; the GIL is released while it runs.
    """
    return _bilinear_upsample(array, check_factor(factor))


__all__ = ["bilinear_upsample", "kernel_isa"]
