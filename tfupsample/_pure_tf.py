"""The same operations written with stock TensorFlow ops only.

Used under XLA (`jit_compile=True`, where custom ops cannot run) and when the compiled library
cannot be loaded. Gradients come from autodiff. Slower and hungrier than the kernels, but exact
up to float rounding, and it never builds the dense [k, k, C, C] filter.
"""

import tensorflow as tf

from ._weights import bilinear_kernel_1d


def _axis_pad(n_in, n_out, k, s, padding):
    """Padding before, as in geometry.h: SAME max((n_in - 1) * s + k - n_out, 0) // 2, VALID 0."""
    if padding == "VALID":
        return tf.zeros([], tf.int32)
    return tf.maximum((n_in - 1) * s + k - n_out, 0) // 2


def _interpolation_matrix(n_in, factor, dtype):
    """[n_in * f, n_in] matrix of the 1-D bilinear transposed convolution (SAME)."""
    w1 = tf.constant(bilinear_kernel_1d(factor), tf.float64)  # geometry.h's weights
    k = w1.shape[0]
    pad = (k - factor) // 2  # SAME: ((n_in - 1) * f + k - n_in * f) // 2
    o = tf.range(n_in * factor)[:, None]
    i = tf.range(n_in)[None, :]
    tap = o + pad - i * factor
    inside = (tap >= 0) & (tap < k)
    w = tf.gather(w1, tf.where(inside, tap, tf.zeros_like(tap)))
    return tf.cast(tf.where(inside, w, tf.zeros_like(w)), dtype)


def bilinear_upsample(x, factor, data_format):
    """Separable: two small interpolation matrices, applied along rows then columns."""
    s = tf.shape(x)
    h, w = (s[1], s[2]) if data_format == "NHWC" else (s[2], s[3])
    ay = _interpolation_matrix(h, factor, x.dtype)
    ax = _interpolation_matrix(w, factor, x.dtype)
    if data_format == "NHWC":
        return tf.einsum("pw,nowc->nopc", ax, tf.einsum("oh,nhwc->nowc", ay, x))
    return tf.einsum("pw,ncow->ncop", ax, tf.einsum("oh,nchw->ncow", ay, x))


def _spread(x, axis, s):
    """Insert s - 1 zeros between the elements of `axis` (1 or 2 of an NHWC tensor)."""
    if s == 1:
        return x
    shape = tf.shape(x)
    y = tf.expand_dims(x, axis + 1)
    paddings = [[0, 0]] * 5
    paddings[axis + 1] = [0, s - 1]
    y = tf.pad(y, paddings)
    new_shape = tf.tensor_scatter_nd_update(shape, [[axis]], [shape[axis] * s])
    y = tf.reshape(y, new_shape)
    length = tf.maximum((shape[axis] - 1) * s + 1, 0)
    return tf.gather(y, tf.range(length), axis=axis)


def _frame(x, axis, n_in, n_out, k, s, padding):
    """Pad / crop the spread input so that a VALID correlation with the flipped kernel gives
    exactly the transposed convolution's n_out outputs on `axis`."""
    pad = _axis_pad(n_in, n_out, k, s, padding)
    before = k - 1 - pad
    length = tf.maximum((n_in - 1) * s + 1, 0)
    after = n_out + k - 1 - length - before
    paddings = [[0, 0]] * 4
    paddings[axis] = [tf.maximum(before, 0), tf.maximum(after, 0)]
    x = tf.pad(x, paddings)
    start = tf.maximum(-before, 0)
    return tf.gather(x, tf.range(start, start + n_out + k - 1), axis=axis)


def depthwise_conv2d_transpose(x, w, output_shape, strides, padding, data_format):
    """Zero-insertion by the strides, then a stride-1 depthwise correlation with the flipped
    kernel: out[o] = sum_a w[a] * spread(x)[o + pad - a]."""
    if data_format == "NCHW":
        shape = tf.gather(output_shape, [0, 2, 3, 1])
        y = depthwise_conv2d_transpose(tf.transpose(x, [0, 2, 3, 1]), w, shape, strides, padding, "NHWC")
        return tf.transpose(y, [0, 3, 1, 2])
    sy, sx = strides
    s = tf.shape(x)
    out = tf.cast(output_shape, tf.int32)
    ky, kx = tf.shape(w)[0], tf.shape(w)[1]
    xz = _spread(_spread(x, 1, sy), 2, sx)
    xz = _frame(xz, 1, s[1], out[1], ky, sy, padding)
    xz = _frame(xz, 2, s[2], out[2], kx, sx, padding)
    y = tf.nn.depthwise_conv2d(xz, tf.reverse(w, [0, 1]), [1, 1, 1, 1], "VALID")
    static = tf.get_static_value(output_shape)
    if static is not None:
        y = tf.ensure_shape(y, [int(v) for v in static])
    return y
