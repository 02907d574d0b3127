"""Property tests against the NumPy loops, and a fuzz test of the raw ops."""

import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfupsample as tu
from tfupsample.testing import (assert_close, bilinear_grad_loop, bilinear_loop, from_nchw, to_nchw, transposed_conv_filter_grad_loop,
                       transposed_conv_input_grad_loop, transposed_conv_loop)

SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    n, h, w, c = (draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5)),
                  draw(st.integers(1, 6)))
    kh, kw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    if padding == "SAME":
        oh = draw(st.integers((h - 1) * sh + 1, h * sh))
        ow = draw(st.integers((w - 1) * sw + 1, w * sw))
    else:
        oh = draw(st.integers((h - 1) * sh + kh, h * sh + kh - 1))
        ow = draw(st.integers((w - 1) * sw + kw, w * sw + kw - 1))
    layout = draw(st.sampled_from(["NHWC", "NCHW"]))
    dtype = draw(st.sampled_from(["float32", "float64", "float16", "bfloat16"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return (n, h, w, c, kh, kw, sh, sw, padding, oh, ow, layout, dtype, seed)


@given(problems())
@settings(**SETTINGS)
def test_depthwise_forward_and_gradients(p):
    n, h, w, c, kh, kw, sh, sw, padding, oh, ow, layout, dtype, seed = p
    rng = np.random.default_rng(seed)
    # Values rounded to the dtype first, so the float64 reference sees what the op sees.
    rnd = lambda a: tf.cast(tf.cast(a, dtype), tf.float64).numpy()  # noqa: E731
    x, wt = rnd(rng.standard_normal((n, h, w, c))), rnd(rng.standard_normal((kh, kw, c, 1)))
    g = rnd(rng.standard_normal((n, oh, ow, c)))
    lay = (lambda a: to_nchw(a)) if layout == "NCHW" else (lambda a: a)  # noqa: E731
    back = (lambda a: from_nchw(a)) if layout == "NCHW" else (lambda a: np.asarray(a))  # noqa: E731
    shape = [n, oh, ow, c] if layout == "NHWC" else [n, c, oh, ow]
    xt, wv, gt = (tf.cast(lay(x), dtype), tf.cast(wt, dtype), tf.cast(lay(g), dtype))
    with tf.GradientTape() as tape:
        tape.watch([xt, wv])
        y = tu.depthwise_conv2d_transpose(xt, wv, shape, [sh, sw], padding, data_format=layout)
        acc = tf.float64 if dtype == "float64" else tf.float32  # the loss in the op's accumulator type
        loss = tf.reduce_sum(tf.cast(y, acc) * tf.cast(gt, acc))
    dx, dw = tape.gradient(loss, [xt, wv])
    f64 = lambda t: tf.cast(t, tf.float64).numpy()  # noqa: E731
    assert_close(back(f64(y)), transposed_conv_loop(x, wt[..., 0], (oh, ow), (sh, sw), padding), dtype)
    assert_close(back(f64(dx)), transposed_conv_input_grad_loop(g, wt[..., 0], (h, w), (sh, sw), padding),
                 dtype, "input_grad")
    assert_close(f64(dw)[..., 0], transposed_conv_filter_grad_loop(x, g, (kh, kw), (sh, sw), padding),
                 dtype, "filter_grad")


@given(st.integers(1, 9), st.integers(1, 2), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5),
       st.sampled_from(["NHWC", "NCHW"]), st.sampled_from(["float32", "float64"]), st.integers(0, 2**31 - 1))
@settings(**SETTINGS)
def test_bilinear_forward_and_gradient(factor, n, h, w, c, layout, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    g = rng.standard_normal((n, h * factor, w * factor, c)).astype(dtype)
    lay = (lambda a: to_nchw(a)) if layout == "NCHW" else (lambda a: a)  # noqa: E731
    back = (lambda a: from_nchw(a)) if layout == "NCHW" else (lambda a: np.asarray(a))  # noqa: E731
    xt = tf.constant(lay(x))
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tu.bilinear_upsample(xt, factor, data_format=layout)
        loss = tf.reduce_sum(y * lay(g))
    assert_close(back(y), bilinear_loop(x, factor), dtype)
    assert_close(back(tape.gradient(loss, xt)), bilinear_grad_loop(g.astype(np.float64), factor), dtype,
                 "input_grad")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_empty_batch_forward_and_gradients(layout, padding):
    # The draws above keep the batch at 1-2; the empty batch once, here: empty outputs and input
    # gradients, a zero filter gradient (an empty sum), a zero-size bilinear result.
    x = np.zeros((0, 3, 4, 5)) if layout == "NHWC" else np.zeros((0, 5, 3, 4))
    w = tf.constant(np.ones((3, 3, 5, 1)))
    oh, ow = (6, 8) if padding == "SAME" else (7, 9)
    shape = [0, oh, ow, 5] if layout == "NHWC" else [0, 5, oh, ow]
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch([xt, w])
        y = tu.depthwise_conv2d_transpose(xt, w, shape, 2, padding, data_format=layout)
        b = tu.bilinear_upsample(xt, 3, data_format=layout)
        loss = tf.reduce_sum(y) + tf.reduce_sum(b)
    dx, dw = tape.gradient(loss, [xt, w])
    assert y.shape == tuple(shape) and dx.shape == x.shape
    assert b.shape == ((0, 9, 12, 5) if layout == "NHWC" else (0, 5, 9, 12))
    np.testing.assert_array_equal(dw.numpy(), np.zeros((3, 3, 5, 1)))


FUZZ_SCRIPT = r"""
import numpy as np, tensorflow as tf
from tfupsample._ops import lib
rng = np.random.default_rng(int(__import__("sys").argv[1]))
def dim():
    return int(rng.choice([0, 1, 2, 3, 5, 7, -1, 2**31, 2**40]))
def shape(rank):
    return [abs(dim()) % 9 if rng.random() < 0.9 else dim() for _ in range(rank)]
def tensor(rank, dtype):
    s = [max(0, min(v, 8)) for v in shape(rank)]
    return tf.cast(rng.standard_normal(s), dtype)
ran = refused = 0
for _ in range(150):
    dtype = rng.choice(["float32", "float64", "float16", "bfloat16", "int32"])
    fmt = rng.choice(["NHWC", "NCHW", "NWHC"])
    pad = rng.choice(["SAME", "VALID", "FULL"])
    strides = [int(rng.integers(-2, 5)) for _ in range(int(rng.choice([1, 2, 2, 2, 4])))]
    which = rng.integers(0, 5)
    try:
        if which == 0:
            lib.tfupsample_bilinear_upsample(tensor(int(rng.integers(2, 6)), dtype), factor=dim(), data_format=fmt)
        elif which == 1:
            lib.tfupsample_bilinear_upsample_grad(tensor(4, dtype), factor=int(rng.integers(-1, 6)), data_format=fmt)
        elif which == 2:
            lib.tfupsample_depthwise_conv2d_transpose(tensor(int(rng.integers(3, 6)), dtype), tensor(4, dtype),
                                                shape(int(rng.choice([3, 4, 4, 5]))), strides=strides, padding=pad, data_format=fmt)
        elif which == 3:
            lib.tfupsample_depthwise_conv2d_transpose_backprop_input(tensor(4, dtype), tensor(4, dtype), shape(4),
                                                               strides=strides, padding=pad, data_format=fmt)
        else:
            lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(tensor(4, dtype), tensor(4, dtype), shape(4),
                                                                strides=strides, padding=pad, data_format=fmt)
        ran += 1
    except (tf.errors.OpError, ValueError, TypeError, OverflowError) as e:
        assert str(e).strip(), "an error without a message"
        refused += 1
print("ran", ran, "refused", refused)
"""


def test_fuzz_raw_ops_never_kill_the_process():
    """Random shapes and attributes straight into the raw ops: errors are fine, signals are not."""
    for seed in range(4):
        r = subprocess.run([sys.executable, "-c", FUZZ_SCRIPT, str(seed)], capture_output=True,
                           text=True, timeout=600, cwd=tempfile.gettempdir())
        assert r.returncode >= 0, f"seed {seed}: killed by signal {-r.returncode}\n{r.stderr[-3000:]}"
        assert r.returncode == 0, f"seed {seed}: {r.stderr[-3000:]}"
        _, ran, _, refused = r.stdout.split()
        # Every call came back, and the fuzz reached both outcomes (it is not all refusals).
        assert int(ran) + int(refused) == 150 and int(ran) > 0 and int(refused) > 0, r.stdout
