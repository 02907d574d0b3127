"""IEEE behaviour equal to the definition: with +inf, -inf and NaN among the inputs, every kernel
(forward, input gradient, filter gradient; the CPU op and the CUDA kernels run on the CPU) gives
NaN, +inf and -inf exactly where the NumPy float64 definition does."""

import numpy as np
import pytest
import tensorflow as tf

import tfupsample.testing as ref
import tfupsample as tu
from tfupsample._ops import lib
from cuda_host import emulator

LAYOUTS = ["NHWC", "NCHW"]
DTYPES = ["float32", "float64"]
CUDA_DTYPES = {"float32": 2, "float64": 3}

# (input shape NHWC, kernel, strides, padding, output hw)
DEPTHWISE = [((2, 4, 5, 3), (4, 4), (2, 2), "SAME", (8, 10)),
             ((1, 3, 4, 2), (3, 2), (2, 3), "VALID", (7, 11)),
             ((1, 4, 3, 2), (2, 2), (3, 3), "VALID", (12, 9))]  # kernel < stride: gaps


def _specials(shape, rng):
    """Normal values with +inf, -inf and NaN at scattered places (two of them share a channel,
    so some outputs see +inf and -inf together: NaN)."""
    x = rng.standard_normal(shape)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=4, replace=False)
    flat[idx] = [np.inf, -np.inf, np.nan, np.inf]
    x[(0,) * (len(shape) - 1) + (0,)] = np.inf
    x[(0,) * (len(shape) - 2) + (1, 0)] = -np.inf
    return x


def _bilinear_dy(shape, factor, rng):
    """Output gradient with specials, one of them (+inf) on an output at tap 0 of its input's
    kernel along x, and one (-inf) at the centre tap: the ends of a block of f outputs."""
    dy = _specials(shape, rng)
    pad = (2 * factor - factor % 2 - factor) // 2
    dy[0, 1, factor - pad, 1] = np.inf
    dy[0, 2, 2 * factor - pad - 1, 0] = -np.inf
    return dy


def _lay_shape(nhwc, layout):
    n, h, w, c = nhwc
    return [n, c, h, w] if layout == "NCHW" else [n, h, w, c]


def _assert_same_specials(actual, expected):
    actual = np.asarray(actual, np.float64)
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        mismatch = test(actual) != test(expected)
        assert not mismatch.any(), (f"{name} differs from the definition at "
                                    f"{np.argwhere(mismatch)[:5].tolist()} ({mismatch.sum()} places)")
    finite = np.isfinite(expected)
    ref.assert_close(np.where(finite, actual, 0), np.where(finite, expected, 0), "float32")


# ---- the TF op on the CPU

@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bilinear_op(factor, layout, dtype, rng):
    n, h, w, c = 1, 3, 4, 2
    x = _specials((n, h, w, c), rng)
    dy = _bilinear_dy((n, h * factor, w * factor, c), factor, rng)
    with tf.device("/CPU:0"):
        y = tu.bilinear_upsample(tf.constant(ref.to_layout(x, layout), dtype), factor, data_format=layout)
        dx = lib.tfupsample_bilinear_upsample_grad(tf.constant(ref.to_layout(dy, layout), dtype),
                                                   factor=factor, data_format=layout)
    _assert_same_specials(ref.from_layout(y.numpy(), layout), ref.bilinear_loop(x, factor))
    _assert_same_specials(ref.from_layout(dx.numpy(), layout),
                          ref.bilinear_grad_loop(dy, factor))


@pytest.mark.parametrize("case", DEPTHWISE, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_op(case, layout, dtype, rng):
    shape, k, s, padding, out_hw = case
    n, h, w, c = shape
    x, dy = _specials(shape, rng), _specials((n, *out_hw, c), rng)
    filt = rng.standard_normal((*k, c))
    filt[0, 0, 0] = np.inf
    a = dict(strides=list(s), padding=padding, data_format=layout)
    lay = lambda v: tf.constant(ref.to_layout(v, layout), dtype)  # noqa: E731
    wt = tf.constant(filt[..., None], dtype)
    with tf.device("/CPU:0"):
        y = lib.tfupsample_depthwise_conv2d_transpose(lay(x), wt, _lay_shape((n, *out_hw, c), layout), **a)
        dx = lib.tfupsample_depthwise_conv2d_transpose_backprop_input(lay(dy), wt, _lay_shape(shape, layout), **a)
    _assert_same_specials(ref.from_layout(y.numpy(), layout), ref.transposed_conv_loop(x, filt, out_hw, s, padding))
    _assert_same_specials(ref.from_layout(dx.numpy(), layout),
                          ref.transposed_conv_input_grad_loop(dy, filt, (h, w), s, padding))
    # The filter gradient with a finite dy (every dw element sums over many x): inf/NaN in x only.
    dy_finite = rng.standard_normal((n, *out_hw, c))
    with tf.device("/CPU:0"):
        dw = lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(lay(x), lay(dy_finite), [*k, c, 1], **a)
    _assert_same_specials(dw.numpy()[..., 0], ref.transposed_conv_filter_grad_loop(x, dy_finite, k, s, padding))


# ---- the CUDA kernels, run on the CPU

def _emu_run(emu, op, args, dtype, *arrays):
    emulator.Ext(emu).run(op, args, CUDA_DTYPES[dtype], [a.ctypes.data for a in arrays], 0)


def _args(shape, out_hw, k, s, padding, layout):
    import tfupsample.cuda as tc

    return tc._args(*shape, *out_hw, k, s, padding, layout)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bilinear_cuda_kernels(emu, factor, layout, dtype, rng):
    n, h, w, c = 1, 3, 4, 2
    x, dy = _specials((n, h, w, c), rng), _bilinear_dy((n, h * factor, w * factor, c), factor, rng)
    k = 2 * factor - factor % 2
    args = _args((n, h, w, c), (h * factor, w * factor), (k, k), (factor, factor), "SAME", layout)
    xin, dyin = (np.ascontiguousarray(ref.to_layout(v, layout), dtype) for v in (x, dy))
    y, dx = np.zeros(dyin.shape, dtype), np.zeros(xin.shape, dtype)
    _emu_run(emu, "BilinearForward", args, dtype, xin, y)
    _emu_run(emu, "BilinearBackpropInput", args, dtype, dyin, dx)
    _assert_same_specials(ref.from_layout(y, layout), ref.bilinear_loop(x, factor))
    _assert_same_specials(ref.from_layout(dx, layout),
                          ref.bilinear_grad_loop(dy, factor))


@pytest.mark.parametrize("case", DEPTHWISE, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_cuda_kernels(emu, case, layout, dtype, rng):
    shape, k, s, padding, out_hw = case
    n, h, w, c = shape
    x, dy, dy_finite = _specials(shape, rng), _specials((n, *out_hw, c), rng), rng.standard_normal((n, *out_hw, c))
    filt = rng.standard_normal((*k, c))
    filt[0, 0, 0] = np.inf
    args = _args(shape, out_hw, k, s, padding, layout)
    lay = lambda v: np.ascontiguousarray(ref.to_layout(v, layout), dtype)  # noqa: E731
    xin, dyin, dyf, wt = lay(x), lay(dy), lay(dy_finite), np.ascontiguousarray(filt, dtype)
    y, dx, dw = np.zeros(dyin.shape, dtype), np.zeros(xin.shape, dtype), np.zeros(filt.shape, dtype)
    _emu_run(emu, "DepthwiseForward", args, dtype, xin, wt, y)
    _emu_run(emu, "DepthwiseBackpropInput", args, dtype, dyin, wt, dx)
    _emu_run(emu, "DepthwiseBackpropFilter", args, dtype, xin, dyf, dw)
    _assert_same_specials(ref.from_layout(y, layout), ref.transposed_conv_loop(x, filt, out_hw, s, padding))
    _assert_same_specials(ref.from_layout(dx, layout),
                          ref.transposed_conv_input_grad_loop(dy, filt, (h, w), s, padding))
    _assert_same_specials(dw, ref.transposed_conv_filter_grad_loop(x, dy_finite, k, s, padding))
