"""depthwise_conv2d_transpose / conv2d_transpose against a NumPy loop, the dense
tf.nn.conv2d_transpose and numeric gradients."""

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
from tfupsample.testing import (assert_close, dense_transpose, from_nchw, to_nchw,
                       transposed_conv_loop)

# (N, H, W, C, kh, kw, sh, sw, padding, out_h, out_w); None = the default output size.
CASES = [
    (2, 4, 5, 3, 3, 4, 2, 3, "SAME", None, None),   # unequal strides
    (1, 3, 3, 2, 5, 2, 2, 1, "VALID", None, None),
    (2, 4, 3, 5, 1, 1, 3, 2, "SAME", None, None),   # kernel smaller than the stride: gaps
    (1, 5, 4, 9, 7, 6, 2, 2, "SAME", 9, 7),         # explicit, non-default output size
    (1, 3, 4, 1, 4, 4, 2, 2, "VALID", 9, 11),       # VALID with extra output rows / columns
    (3, 2, 2, 4, 8, 8, 4, 4, "SAME", None, None),   # bilinear-like k = 2s
    # channel counts across the filter gradient's register blocks (32, 8, 1 channels)
    (1, 5, 4, 45, 6, 6, 3, 3, "SAME", None, None),
    (2, 4, 3, 70, 5, 4, 3, 2, "SAME", None, None),
]


def _out_hw(case):
    n, h, w, c, kh, kw, sh, sw, pad, oh, ow = case
    if oh is None:
        oh = h * sh if pad == "SAME" else (h - 1) * sh + kh
        ow = w * sw if pad == "SAME" else (w - 1) * sw + kw
    return oh, ow


def _data(case, rng, dtype=np.float64):
    n, h, w, c, kh, kw = case[:6]
    return rng.standard_normal((n, h, w, c)).astype(dtype), rng.standard_normal((kh, kw, c, 1)).astype(dtype)


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_loop_both_layouts(case, rng):
    x, w = _data(case, rng)
    n, c, (sh, sw), pad = case[0], case[3], case[6:8], case[8]
    oh, ow = _out_hw(case)
    expected = transposed_conv_loop(x, w[..., 0], (oh, ow), (sh, sw), pad)
    assert_close(tu.depthwise_conv2d_transpose(x, w, [n, oh, ow, c], [sh, sw], pad), expected)
    y = tu.depthwise_conv2d_transpose(to_nchw(x), w, [n, c, oh, ow], [1, 1, sh, sw], pad, data_format="NCHW")
    assert_close(from_nchw(y), expected)


@pytest.mark.parametrize("case", CASES)
def test_forward_and_gradients_match_dense_conv2d_transpose(case, rng):
    x, w = _data(case, rng)
    n, c, (sh, sw), pad = case[0], case[3], case[6:8], case[8]
    oh, ow = _out_hw(case)
    out_shape = [n, oh, ow, c]
    assert_close(tu.conv2d_transpose(x, w, out_shape, [1, sh, sw, 1], pad),
                 dense_transpose(x, w[..., 0], out_shape, (sh, sw), pad))
    g = rng.standard_normal(out_shape)
    xt, wt = tf.constant(x), tf.constant(w)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([xt, wt])
        dense_w = tf.einsum("hwc,cd->hwcd", wt[..., 0], tf.eye(c, dtype=tf.float64))
        ref = tf.reduce_sum(tf.nn.conv2d_transpose(xt, dense_w, out_shape, [1, sh, sw, 1], pad) * g)
        ours = tf.reduce_sum(tu.depthwise_conv2d_transpose(xt, wt, out_shape, [sh, sw], pad) * g)
    for a, b, op in zip(tape.gradient(ours, [xt, wt]), tape.gradient(ref, [xt, wt]), ("input_grad", "filter_grad")):
        assert_close(a, b, op=op)


@pytest.mark.parametrize("case", CASES[:4])
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_gradients_numeric(case, data_format, rng):
    x, w = _data(case, rng)
    n, c, (sh, sw), pad = case[0], case[3], case[6:8], case[8]
    oh, ow = _out_hw(case)
    out_shape = [n, oh, ow, c] if data_format == "NHWC" else [n, c, oh, ow]
    if data_format == "NCHW":
        x = to_nchw(x)
    f = lambda xx, ww: tu.depthwise_conv2d_transpose(xx, ww, out_shape, [sh, sw], pad, data_format=data_format)  # noqa: E731
    theoretical, numerical = tf.test.compute_gradient(f, [x, w])
    for t, nm in zip(theoretical, numerical):
        assert_close(t, nm, "float64", "jacobian")


def test_second_order_gradients(rng):
    """The gradient ops have gradients too (double backward, e.g. gradient penalties)."""
    lib = tu.api._ops.lib
    x, w = rng.standard_normal((1, 3, 3, 2)), rng.standard_normal((3, 3, 2, 1))
    dy = rng.standard_normal((1, 6, 6, 2))
    kw = dict(strides=[2, 2], padding="SAME")
    for fn, args in [
        (lambda a, b: lib.tfupsample_depthwise_conv2d_transpose_backprop_input(a, b, [1, 3, 3, 2], **kw), [dy, w]),
        (lambda a, b: lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(a, b, [3, 3, 2, 1], **kw), [x, dy]),
    ]:
        theoretical, numerical = tf.test.compute_gradient(fn, args)
        for t, nm in zip(theoretical, numerical):
            assert_close(t, nm, "float64", "jacobian")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_every_dtype(dtype, data_format, rng):
    case = CASES[0]
    x, w = _data(case, rng, np.float32)
    n, c, (sh, sw), pad = case[0], case[3], case[6:8], case[8]
    oh, ow = _out_hw(case)
    xt, wt = tf.cast(x, dtype), tf.cast(w, dtype)
    x64, w64 = tf.cast(xt, tf.float64).numpy(), tf.cast(wt, tf.float64).numpy()
    expected = transposed_conv_loop(x64, w64[..., 0], (oh, ow), (sh, sw), pad)
    g = rng.standard_normal((n, oh, ow, c)).astype(np.float32)
    gt = tf.cast(g, dtype)
    if data_format == "NCHW":
        xt, gt, out_shape = tf.transpose(xt, [0, 3, 1, 2]), tf.transpose(gt, [0, 3, 1, 2]), [n, c, oh, ow]
    else:
        out_shape = [n, oh, ow, c]
    with tf.GradientTape() as tape:
        tape.watch([xt, wt])
        y = tu.depthwise_conv2d_transpose(xt, wt, out_shape, [sh, sw], pad, data_format=data_format)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.cast(gt, tf.float32))
    dx, dw = tape.gradient(loss, [xt, wt])
    assert y.dtype == dx.dtype == dw.dtype == tf.as_dtype(dtype)
    y64 = tf.cast(y, tf.float64).numpy()
    dx64 = tf.cast(dx, tf.float64).numpy()
    if data_format == "NCHW":
        y64, dx64 = from_nchw(y64), from_nchw(dx64)
    assert_close(y64, expected, dtype)
    # Reference gradients from the dense path in float64 on the same (rounded) values.
    g64 = tf.cast(tf.cast(g, dtype), tf.float64)
    xv, wv = tf.constant(x64), tf.constant(w64)
    with tf.GradientTape() as tape:
        tape.watch([xv, wv])
        dense_w = tf.einsum("hwc,cd->hwcd", wv[..., 0], tf.eye(c, dtype=tf.float64))
        ref = tf.reduce_sum(tf.nn.conv2d_transpose(xv, dense_w, [n, oh, ow, c], [1, sh, sw, 1], pad) * g64)
    rdx, rdw = tape.gradient(ref, [xv, wv])
    assert_close(dx64, rdx.numpy(), dtype, "input_grad")
    assert_close(dw, rdw.numpy(), dtype, "filter_grad")


def test_output_shape_as_tensor_and_int64(rng):
    x, w = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((4, 4, 4, 1))
    expected = transposed_conv_loop(x, w[..., 0], (4, 6), (2, 2), "SAME")
    for shape in ([1, 4, 6, 4], tf.constant([1, 4, 6, 4]), tf.constant([1, 4, 6, 4], tf.int64),
                  np.array([1, 4, 6, 4])):
        assert_close(tu.conv2d_transpose(x, w, shape, 2), expected)


def test_strides_forms_agree(rng):
    x, w = rng.standard_normal((1, 2, 3, 2)), rng.standard_normal((3, 3, 2, 1))
    ref = tu.depthwise_conv2d_transpose(x, w, [1, 4, 6, 2], 2).numpy()
    for s in ([2, 2], (2, 2), [1, 2, 2, 1]):
        np.testing.assert_array_equal(tu.depthwise_conv2d_transpose(x, w, [1, 4, 6, 2], s).numpy(), ref)


def test_dense_filter_goes_to_stock_unchanged(rng):
    x = rng.standard_normal((1, 3, 3, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 5, 2)).astype(np.float32)
    expected = tf.nn.conv2d_transpose(x, w, [1, 6, 6, 5], 2, "SAME").numpy()
    np.testing.assert_array_equal(tu.conv2d_transpose(x, w, [1, 6, 6, 5], 2, "SAME").numpy(), expected)
    # [kh, kw, C, 1] on a 1-channel input is the stock 1 -> C meaning, not depthwise.
    x1 = rng.standard_normal((1, 3, 3, 1)).astype(np.float32)
    w1 = rng.standard_normal((3, 3, 4, 1)).astype(np.float32)
    np.testing.assert_array_equal(tu.conv2d_transpose(x1, w1, [1, 6, 6, 4], 2).numpy(),
                                  tf.nn.conv2d_transpose(x1, w1, [1, 6, 6, 4], 2).numpy())


@pytest.mark.parametrize("dilations", [2, [2, 3]])
def test_dilations(dilations, rng):
    x, w = rng.standard_normal((1, 3, 4, 2)), rng.standard_normal((3, 2, 2, 1))
    dy, dx = (dilations, dilations) if isinstance(dilations, int) else dilations
    wd = np.zeros(((3 - 1) * dy + 1, (2 - 1) * dx + 1, 2))
    wd[::dy, ::dx] = w[..., 0]
    expected = transposed_conv_loop(x, wd, (6, 8), (2, 2), "SAME")
    assert_close(tu.conv2d_transpose(x, w, [1, 6, 8, 2], 2, "SAME", dilations=dilations), expected)


def test_empty_inputs():
    w = np.ones((3, 3, 2, 1), np.float32)
    assert tu.depthwise_conv2d_transpose(np.zeros((0, 2, 2, 2), np.float32), w, [0, 4, 4, 2], 2).shape == (0, 4, 4, 2)
    # No input pixels at all: VALID still has k - 1 output rows, all zero.
    y = tu.depthwise_conv2d_transpose(np.zeros((1, 0, 2, 2), np.float32), w, [1, 2, 5, 2], 2, "VALID")
    np.testing.assert_array_equal(y.numpy(), np.zeros((1, 2, 5, 2)))


def test_gradient_skips_what_nobody_asked_for(monkeypatch, rng):
    # Through the tape, asking for the filter gradient alone must not compute the input gradient
    # (it costs as much as the filter gradient), and the other way round.
    from tfupsample import _ops

    calls = []
    for name in ("tfupsample_depthwise_conv2d_transpose_backprop_input",
                 "tfupsample_depthwise_conv2d_transpose_backprop_filter"):
        fn = getattr(_ops.lib, name)
        monkeypatch.setattr(_ops.lib, name, lambda *a, _fn=fn, _name=name, **k: calls.append(_name) or _fn(*a, **k))
    # The tape records which inputs are watched when the op runs: only those get a gradient.
    x = tf.constant(rng.standard_normal((1, 3, 4, 2)), tf.float32)
    w = tf.constant(rng.standard_normal((4, 4, 2, 1)), tf.float32)
    for wanted, op in ((w, "filter"), (x, "input")):
        calls.clear()
        with tf.GradientTape() as tape:
            tape.watch(wanted)
            y = tu.depthwise_conv2d_transpose(x, w, [1, 6, 8, 2], 2)
        assert tape.gradient(y, wanted) is not None
        assert calls == [f"tfupsample_depthwise_conv2d_transpose_backprop_{op}"], calls
