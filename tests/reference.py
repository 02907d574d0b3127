"""Independent references, written from the definitions (not from tfupsample's code).

Only dense_transpose needs TensorFlow (imported there), so benchmarks/gpu_check.py can use the
rest on GPU machines that have none."""

import sys

import numpy as np

# Tolerances per dtype, relative to max(1, |reference|).
TOL = {"float16": 2e-3, "bfloat16": 2e-2, "float32": 1e-5, "float64": 1e-12}


def _pairs(in_hw, out_hw, k_hw, strides, padding):
    """Every (i, j, a, b, o, p): input pixel (i, j) reaches output (o, p) through tap (a, b).

    TF's convention for the padding of a transposed convolution: SAME pads
    max((n_in - 1) * s + k - n_out, 0) // 2 before, VALID pads nothing.
    """
    (h, wd), (oh, ow), (kh, kw), (sh, sw) = in_hw, out_hw, k_hw, strides
    ph = max((h - 1) * sh + kh - oh, 0) // 2 if padding == "SAME" else 0
    pw = max((wd - 1) * sw + kw - ow, 0) // 2 if padding == "SAME" else 0
    for i in range(h):
        for j in range(wd):
            for a in range(kh):
                for b in range(kw):
                    o, p = i * sh - ph + a, j * sw - pw + b
                    if 0 <= o < oh and 0 <= p < ow:
                        yield i, j, a, b, o, p


def transposed_conv_loop(x, w, out_hw, strides, padding):
    """Depthwise transposed convolution by scattering every input pixel through every tap.
    x [N, H, W, C] float64, w [kh, kw, C]."""
    out = np.zeros((x.shape[0], *out_hw, x.shape[3]), np.float64)
    for i, j, a, b, o, p in _pairs(x.shape[1:3], out_hw, w.shape[:2], strides, padding):
        out[:, o, p, :] += x[:, i, j, :] * w[a, b, :]
    return out


def bilinear_kernel(factor):
    """The FCN bilinear kernel, as the seed builds it (upsample_filt)."""
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - centre) / factor) * (1 - abs(og[1] - centre) / factor)


def bilinear_filter(factor, channels):
    """The bilinear kernel as a per-channel [k, k, channels] filter."""
    return np.repeat(bilinear_kernel(factor)[:, :, None], channels, axis=2)


def bilinear_loop(x, factor):
    w = bilinear_filter(factor, x.shape[-1])
    return transposed_conv_loop(x.astype(np.float64), w, (x.shape[1] * factor, x.shape[2] * factor),
                                (factor, factor), "SAME")


def dense_filter(w):
    """[kh, kw, C] -> the dense [kh, kw, C, C] filter of tf.nn.conv2d_transpose."""
    kh, kw, c = w.shape
    d = np.zeros((kh, kw, c, c), w.dtype)
    d[:, :, np.arange(c), np.arange(c)] = w
    return d


def dense_transpose(x, w, out_shape, strides, padding):
    """Stock tf.nn.conv2d_transpose with the dense filter (NHWC)."""
    import tensorflow as tf

    return tf.nn.conv2d_transpose(x, dense_filter(w), out_shape, [1, *strides, 1], padding).numpy()


def skimage_rescale(x, factor):
    from skimage.transform import rescale

    return np.stack([rescale(im.astype(np.float64), factor, order=1, mode="constant", cval=0,
                             clip=False, anti_aliasing=False, channel_axis=-1) for im in x])


def assert_close(actual, expected, dtype="float64"):
    tf = sys.modules.get("tensorflow")  # a TF tensor implies TF is imported
    if tf is not None and tf.is_tensor(actual):
        actual = tf.cast(actual, tf.float64)
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    err = float(np.max(np.abs(actual - expected), initial=0.0)) / scale
    assert err <= TOL[dtype], f"max relative error {err:.3g} > {TOL[dtype]} ({dtype})"


def to_nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def from_nchw(x):
    return np.transpose(np.asarray(x), (0, 2, 3, 1))


def to_layout(x, data_format):
    """An NHWC array in data_format's order (C-contiguous)."""
    return np.ascontiguousarray(to_nchw(x) if data_format == "NCHW" else x)


def from_layout(x, data_format):
    """An array in data_format's order back to NHWC."""
    return from_nchw(x) if data_format == "NCHW" else np.asarray(x)


def transposed_conv_input_grad_loop(dy, w, in_hw, strides, padding):
    """Adjoint of transposed_conv_loop with respect to x."""
    dx = np.zeros((dy.shape[0], *in_hw, dy.shape[3]))
    for i, j, a, b, o, p in _pairs(in_hw, dy.shape[1:3], w.shape[:2], strides, padding):
        dx[:, i, j, :] += dy[:, o, p, :] * w[a, b, :]
    return dx


def transposed_conv_filter_grad_loop(x, dy, k_hw, strides, padding):
    """Adjoint of transposed_conv_loop with respect to w."""
    dw = np.zeros((*k_hw, x.shape[3]))
    for i, j, a, b, o, p in _pairs(x.shape[1:3], dy.shape[1:3], k_hw, strides, padding):
        dw[a, b, :] += (dy[:, o, p, :] * x[:, i, j, :]).sum(axis=0)
    return dw


def softmax_cross_entropy(up, labels, ignore=None):
    """Per-pixel loss logsumexp(up) - up[label] and its gradient softmax(up) - onehot(label) to
    `up` ([..., classes], float64), both 0 at the ignore label."""
    m = up.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(up - m).sum(-1, keepdims=True)))[..., 0]
    skip = labels == ignore if ignore is not None else np.zeros(labels.shape, bool)
    safe = np.where(skip, 0, labels)
    loss = np.where(skip, 0, lse - np.take_along_axis(up, safe[..., None], -1)[..., 0])
    grad = np.exp(up - lse[..., None]) - np.eye(up.shape[-1])[safe]
    return loss, np.where(skip[..., None], 0, grad)
