"""The same operations written with stock TensorFlow ops only.

Used under XLA (`jit_compile=True`, where custom ops cannot run), inside `stock_ops()` (export)
and when the compiled library cannot be loaded. Gradients come from autodiff. Slower and hungrier
than the kernels, but exact up to float rounding, and it never builds the dense [k, k, C, C]
filter. Every size that is known when the graph is traced stays a Python int (only the batch is
-1 in reshapes), so the graph keeps static shapes: XLA needs them constant, and the TFLite
converter needs the channel count of every convolution.
"""

import numpy as np
import tensorflow as tf

from ._weights import bilinear_kernel_1d


def _dim(x, axis):
    """The size of `axis`: a Python int when static, else a scalar tensor."""
    d = x.shape[axis]
    return int(d) if d is not None else tf.shape(x)[axis]


def _max0(v):
    return max(v, 0) if isinstance(v, int) else tf.maximum(v, 0)


def _axis_pad(n_in, n_out, k, s, padding):
    """Padding before, as in geometry.h: SAME max((n_in - 1) * s + k - n_out, 0) // 2, VALID 0."""
    if padding == "VALID":
        return 0
    return _max0((n_in - 1) * s + k - n_out) // 2


def _slice(x, axis, start, length):
    """x[..., start:start + length, ...] along axis (static where start and length are)."""
    index = [slice(None)] * 4
    index[axis] = slice(start, start + length)
    return x[tuple(index)]


def _interpolation_matrix(n_in, factor, dtype):
    """[n_in * f, n_in] matrix of the 1-D bilinear transposed convolution (SAME): a constant
    when n_in is known at trace time."""
    w1 = bilinear_kernel_1d(factor)  # geometry.h's weights
    k = len(w1)
    pad = (k - factor) // 2  # SAME: ((n_in - 1) * f + k - n_in * f) // 2
    if isinstance(n_in, int):
        tap = np.arange(n_in * factor)[:, None] + pad - np.arange(n_in)[None, :] * factor
        inside = (tap >= 0) & (tap < k)
        return tf.constant(np.where(inside, w1[np.where(inside, tap, 0)], 0.0), dtype)
    tap = tf.range(n_in * factor)[:, None] + pad - tf.range(n_in)[None, :] * factor
    inside = (tap >= 0) & (tap < k)
    w = tf.gather(tf.constant(w1, tf.float64), tf.where(inside, tap, tf.zeros_like(tap)))
    return tf.cast(tf.where(inside, w, tf.zeros_like(w)), dtype)


def bilinear_upsample(x, factor, data_format):
    """Separable: two small interpolation matrices, applied along rows then columns as batched
    matrix products (reshapes with -1 only for the batch, so shapes stay static)."""
    if data_format == "NCHW":
        c, h, w = _dim(x, 1), _dim(x, 2), _dim(x, 3)
        ay = _interpolation_matrix(h, factor, x.dtype)
        ax = _interpolation_matrix(w, factor, x.dtype)
        rows = tf.matmul(ay, tf.reshape(x, [-1, h, w]))                 # [N*C, H*f, W]
        y = tf.matmul(rows, ax, transpose_b=True)                       # [N*C, H*f, W*f]
        return tf.reshape(y, [-1, c, h * factor, w * factor])
    h, w, c = _dim(x, 1), _dim(x, 2), _dim(x, 3)
    ay = _interpolation_matrix(h, factor, x.dtype)
    ax = _interpolation_matrix(w, factor, x.dtype)
    rows = tf.matmul(ay, tf.reshape(x, [-1, h, w * c]))                 # [N, H*f, W*C]
    y = tf.matmul(ax, tf.reshape(rows, [-1, w, c]))                     # [N*H*f, W*f, C]
    return tf.reshape(y, [-1, h * factor, w * factor, c])


def _spread(x, axis, s):
    """Insert s - 1 zeros between the elements of `axis` (1 or 2 of an NHWC tensor)."""
    if s == 1:
        return x
    n = _dim(x, axis)
    paddings = [[0, 0]] * 5
    paddings[axis + 1] = [0, s - 1]
    y = tf.pad(tf.expand_dims(x, axis + 1), paddings)
    shape = [-1] + [_dim(x, a) for a in (1, 2, 3)]
    shape[axis] = n * s
    y = tf.reshape(y, shape)
    return _slice(y, axis, 0, _max0((n - 1) * s + 1))


def _frame(x, axis, n_in, n_out, k, s, padding):
    """Pad / crop the spread input so that a VALID correlation with the flipped kernel gives
    exactly the transposed convolution's n_out outputs on `axis`."""
    pad = _axis_pad(n_in, n_out, k, s, padding)
    before = k - 1 - pad
    length = _max0((n_in - 1) * s + 1)
    after = n_out + k - 1 - length - before
    paddings = [[0, 0]] * 4
    paddings[axis] = [_max0(before), _max0(after)]
    x = tf.pad(x, paddings)
    return _slice(x, axis, _max0(-before), n_out + k - 1)


def depthwise_conv2d_transpose(x, w, output_shape, strides, padding, data_format):
    """Zero-insertion by the strides, then a stride-1 depthwise correlation with the flipped
    kernel: out[o] = sum_a w[a] * spread(x)[o + pad - a]."""
    if data_format == "NCHW":
        shape = tf.gather(output_shape, [0, 2, 3, 1])
        y = depthwise_conv2d_transpose(tf.transpose(x, [0, 2, 3, 1]), w, shape, strides, padding, "NHWC")
        return tf.transpose(y, [0, 3, 1, 2])
    sy, sx = strides
    static = tf.get_static_value(output_shape, partial=True)  # None where only known at run time
    if static is None:
        static = [None] * 4
    out = tf.cast(output_shape, tf.int32)
    oh = int(static[1]) if static[1] is not None else out[1]
    ow = int(static[2]) if static[2] is not None else out[2]
    h, wd = _dim(x, 1), _dim(x, 2)
    ky, kx = _dim(w, 0), _dim(w, 1)
    xz = _spread(_spread(x, 1, sy), 2, sx)
    xz = _frame(xz, 1, h, oh, ky, sy, padding)
    xz = _frame(xz, 2, wd, ow, kx, sx, padding)
    y = tf.nn.depthwise_conv2d(xz, tf.reverse(w, [0, 1]), [1, 1, 1, 1], "VALID")
    return tf.ensure_shape(y, [None if v is None else int(v) for v in static])
