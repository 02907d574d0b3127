"""The bilinear kernel as NumPy arrays (no TensorFlow)."""

import numbers

import numpy as np


def check_factor(factor, name="factor"):
    """Return `factor` as an int, or raise TypeError / ValueError naming it."""
    if isinstance(factor, (bool, np.bool_)) or not isinstance(factor, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {factor!r} ({type(factor).__name__})")
    if factor < 1:
        raise ValueError(f"{name} must be a positive integer, got {factor}")
    return int(factor)


def bilinear_kernel_size(factor):
    """Kernel size 2f - f % 2 of the bilinear upsample by `factor`."""
    from ._numpy_ext import bilinear_kernel_size as size  # geometry.h's BilinearKernelSize

    return int(size(check_factor(factor)))


def bilinear_kernel_1d(factor, dtype=np.float64):
    """w(a) = 1 - |a - centre| / f for a in [0, k), centre f - 1 (k odd) or f - 0.5 (k even):
    geometry.h's BilinearWeight (the kernels' own weights), computed in float64 and cast."""
    return bilinear_window(bilinear_kernel_size(factor)).astype(dtype)


def bilinear_window(kernel_size):
    """The 1-D bilinear window of any length k (float64): the kernel of factor (k + 1) // 2 when
    k = 2f - f % 2, and the same formula for other lengths (geometry.h's BilinearWindowWeight)."""
    from ._numpy_ext import bilinear_window as window

    return window(int(kernel_size), "float64")


def bilinear_kernel_2d(kernel_h, kernel_w):
    """The 2-D bilinear kernel [kernel_h, kernel_w] (float64): the outer product of the windows."""
    return np.outer(bilinear_window(kernel_h), bilinear_window(kernel_w))


def bilinear_upsample_weights(factor, number_of_classes, *, dense=False, dtype="float32"):
    """The bilinear filter for `number_of_classes` channels.

    Returns `[k, k, C, 1]` (for `depthwise_conv2d_transpose` / `conv2d_transpose`), or with
    `dense=True` the dense `[k, k, C, C]` filter for `tf.nn.conv2d_transpose`, whose only
    non-zeros are on the channel diagonal (k * k * C * C elements: mind the size).
    """
    factor = check_factor(factor)
    if isinstance(number_of_classes, (bool, np.bool_)) or not isinstance(number_of_classes, numbers.Integral):
        raise TypeError(f"number_of_classes must be a positive integer, got {number_of_classes!r}")
    if number_of_classes < 1:
        raise ValueError(f"number_of_classes must be a positive integer, got {number_of_classes}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f" and dtype.name != "bfloat16":
        raise TypeError(f"dtype must be a floating type, got {dtype}")
    k = bilinear_kernel_size(factor)
    kernel = bilinear_kernel_2d(k, k)
    c = int(number_of_classes)
    if not dense:
        return np.repeat(kernel[:, :, None, None], c, axis=2).astype(dtype)
    k = kernel.shape[0]
    out = np.zeros((k, k, c, c), dtype=dtype)
    idx = np.arange(c)
    out[:, :, idx, idx] = kernel[:, :, None]
    return out
