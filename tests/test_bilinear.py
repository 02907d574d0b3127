"""bilinear_upsample against skimage, the dense conv2d_transpose and a NumPy loop."""

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
from tfupsample.testing import (assert_close, bilinear_filter, bilinear_grad_loop, bilinear_loop, dense_bilinear,
                                dense_filter, from_nchw, skimage_rescale, to_nchw)

DTYPES = ["float16", "bfloat16", "float32", "float64"]


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("shape", [(1, 3, 5, 1), (2, 4, 3, 13), (1, 6, 6, 3)])
def test_matches_skimage_and_loop(factor, shape, rng):
    x = rng.standard_normal(shape)
    y = tu.bilinear_upsample(x, factor).numpy()
    assert_close(y, skimage_rescale(x, factor))
    assert_close(y, bilinear_loop(x, factor))


@pytest.mark.parametrize("factor", [2, 3, 7, 32])
def test_matches_dense_conv2d_transpose(factor, rng):
    # The stock call with the dense filter written from the formula (not from our weights).
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    stock = dense_bilinear(x, factor).numpy()
    assert_close(tu.bilinear_upsample(x, factor, impl="dense"), stock, "float32")
    assert_close(tu.bilinear_upsample(x, factor), stock, "float32")
    # impl="dense" is that stock call with our dense filter, which is the formula's.
    np.testing.assert_allclose(tu.bilinear_upsample_weights(factor, 5, dense=True),
                               dense_filter(bilinear_filter(factor, 5)), rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor", [2, 3])
def test_every_dtype_both_layouts(dtype, factor, rng):
    x = rng.standard_normal((2, 4, 5, 11)).astype(np.float32)
    xt = tf.cast(x, dtype)
    expected = bilinear_loop(tf.cast(xt, tf.float64).numpy(), factor)
    y = tu.bilinear_upsample(xt, factor)
    assert y.dtype == tf.as_dtype(dtype)
    assert_close(y, expected, dtype)
    y_nchw = tu.bilinear_upsample(tf.transpose(xt, [0, 3, 1, 2]), factor, data_format="NCHW")
    assert_close(from_nchw(tf.cast(y_nchw, tf.float64)), expected, dtype)


def test_float64_is_computed_in_float64(rng):
    x = rng.standard_normal((1, 5, 4, 3)) * 1e3 + 1.0
    assert_close(tu.bilinear_upsample(x, 5), bilinear_loop(x, 5), "float64")


def test_factor_one_is_identity(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(tu.bilinear_upsample(x, 1).numpy(), x)


def test_empty_batch_gives_empty_output():
    y = tu.bilinear_upsample(np.zeros((0, 3, 4, 2), np.float32), 4)
    assert y.shape == (0, 12, 16, 2)
    y = tu.bilinear_upsample(np.zeros((0, 2, 3, 4), np.float32), 3, data_format="NCHW")
    assert y.shape == (0, 2, 9, 12)


def test_nan_spreads_only_where_the_kernel_touches(rng):
    factor = 4
    x = rng.standard_normal((1, 6, 7, 2))
    x[0, 2, 3, 1] = np.nan
    y = tu.bilinear_upsample(x, factor).numpy()
    # Where the loop reference (NaN propagated through every tap) is NaN, exactly there.
    ref = bilinear_loop(x, factor)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    assert np.isnan(y[..., 1]).sum() == (2 * factor) ** 2  # the k x k footprint of one pixel
    assert not np.isnan(y[..., 0]).any()


def test_static_shapes_propagate_with_unknown_batch():
    @tf.function(input_signature=[tf.TensorSpec([None, 4, 5, 3], tf.float32)])
    def up(x):
        y = tu.bilinear_upsample(x, 8)
        assert y.shape.as_list() == [None, 32, 40, 3]
        g = tf.gradients(tf.reduce_sum(y), x)[0]
        assert g.shape.as_list() == [None, 4, 5, 3]
        return y

    assert up(tf.zeros([2, 4, 5, 3])).shape == (2, 32, 40, 3)

    @tf.function(input_signature=[tf.TensorSpec([None, 3, None, 5], tf.float32)])
    def up_nchw(x):
        y = tu.bilinear_upsample(x, 2, data_format="NCHW")
        assert y.shape.as_list() == [None, 3, None, 10]
        return y

    assert up_nchw(tf.zeros([1, 3, 4, 5])).shape == (1, 3, 8, 10)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_gradient_numeric(factor, data_format, rng):
    x = rng.standard_normal((1, 3, 4, 2))
    if data_format == "NCHW":
        x = to_nchw(x)
    theoretical, numerical = tf.test.compute_gradient(
        lambda t: tu.bilinear_upsample(t, factor, data_format=data_format), [x])
    assert_close(theoretical[0], numerical[0], "float64", "jacobian")


@pytest.mark.parametrize("factor", [2, 5, 32])
def test_gradient_matches_dense_autodiff(factor, rng):
    x = tf.constant(rng.standard_normal((2, 3, 2, 4)))
    g = rng.standard_normal((2, 3 * factor, 2 * factor, 4))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(tu.bilinear_upsample(x, factor) * g)
        dense = tf.reduce_sum(dense_bilinear(x, factor) * g)
    assert_close(tape.gradient(ours, x), tape.gradient(dense, x), op="input_grad")


# Tall images cut into several row bands (the output rows two bands share are reduced once, into
# a buffer both bands read), channel counts off the kernel's 64-channel blocks, one above the
# 1024 at which channels split into blocks of 512 (on AMD CPUs, up to 2048, they stay whole in
# bands of one row instead), and pixels whose last vector is partial (21, 45,
# 63: the float x pass sums up to 4 vectors in one masked pass -- 16 lanes with AVX-512, 8 with AVX2).
BANDED = [(2, (1, 40, 5, 70)), (3, (2, 19, 4, 130)), (8, (1, 20, 3, 64)), (16, (1, 9, 2, 1100)),
          (32, (1, 5, 3, 8)), (4, (1, 9, 4, 3)), (4, (1, 7, 5, 21)), (8, (1, 5, 4, 45)), (3, (1, 6, 5, 63))]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("factor,shape", BANDED, ids=str)
def test_input_gradient_over_row_bands(dtype, factor, shape, rng):
    n, h, w, c = shape
    dy = tf.cast(rng.standard_normal((n, h * factor, w * factor, c)), dtype)
    dx = tu.api._ops.lib.tfupsample_bilinear_upsample_grad(dy, factor=factor)
    assert_close(dx, bilinear_grad_loop(tf.cast(dy, tf.float64).numpy(), factor), dtype, "input_grad")
    # Each input's sum runs over its outputs in the same order in either layout: the same bits.
    nchw = tu.api._ops.lib.tfupsample_bilinear_upsample_grad(tf.transpose(dy, [0, 3, 1, 2]), factor=factor,
                                                              data_format="NCHW")
    np.testing.assert_array_equal(from_nchw(nchw.numpy()), dx.numpy())


def test_second_order_gradient(rng):
    x = rng.standard_normal((1, 2, 3, 2))
    # The gradient op's own gradient (what a double backward through it needs).
    theoretical, numerical = tf.test.compute_gradient(
        lambda dy: tu.api._ops.lib.tfupsample_bilinear_upsample_grad(dy, factor=3), [rng.standard_normal((1, 6, 9, 2))])
    assert_close(theoretical[0], numerical[0], "float64", "jacobian")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("factor", [2, 3, 8])
def test_layouts_agree_bitwise(dtype, factor, rng):
    """NCHW runs a separable row pass, NHWC a per-pixel pass: same arithmetic, same bits."""
    x = rng.standard_normal((2, 5, 6, 7)).astype(dtype)
    nhwc = tu.bilinear_upsample(x, factor).numpy()
    nchw = tu.bilinear_upsample(to_nchw(x), factor, data_format="NCHW").numpy()
    np.testing.assert_array_equal(from_nchw(nchw), nhwc)


def test_repeated_calls_see_new_data(rng):
    """Kernels that cache per-row work must not reuse it across calls (buffers get reused)."""
    for i in range(5):
        x = rng.standard_normal((1, 1, 4, 5)) + i
        assert_close(tu.bilinear_upsample(x, 3, data_format="NCHW"), to_nchw(bilinear_loop(from_nchw(x), 3)))
        assert_close(tu.bilinear_upsample(from_nchw(x), 3), bilinear_loop(from_nchw(x), 3))


@pytest.mark.parametrize("factor", [3, 4, 5])
def test_gradient_nan_reaches_only_the_inputs_whose_kernel_covers_it(factor):
    """A NaN in the output gradient reaches exactly the input pixels whose kernel window covers
    that output (odd factors included: there the window centre is on one input's kernel only)."""
    h, w = 4, 5
    k = 2 * factor - factor % 2
    pad = (factor - factor % 2) // 2
    for oy, ox in [(0, 0), (factor - 1, 2 * factor - 1), (2 * factor + pad - 1, 3 * factor)]:
        dy = np.zeros((1, h * factor, w * factor, 2))
        dy[0, oy, ox, 1] = np.nan
        dx = tu.api._ops.lib.tfupsample_bilinear_upsample_grad(dy, factor=factor).numpy()
        expect = np.zeros((h, w), bool)
        for i in range(h):
            for j in range(w):
                expect[i, j] = 0 <= oy + pad - i * factor < k and 0 <= ox + pad - j * factor < k
        np.testing.assert_array_equal(np.isnan(dx[0, :, :, 1]), expect)
        assert not np.isnan(dx[..., 0]).any()
