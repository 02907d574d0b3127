"""The fused loss is one function on both devices: the CPU op and the CUDA kernels (run on the
CPU) round scores the same way for half types, use the same exp (within its stated bound), and
propagate NaN the same way -- and the way the unfused definition does."""

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import tfupsample.testing as ref
import tfupsample as tu
import tfupsample.cuda as tc
from cuda_host import emulator
from tfupsample import _numpy_ext

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "float64": np.float64}
CODE = {"float16": 0, "bfloat16": 1, "float32": 2, "float64": 3}


def test_softmax_exp_is_within_two_ulp_of_exp():
    # Every argument the loss gives it lies in [-87, 0] (scores minus their maximum).
    x = np.concatenate([np.linspace(-87, 0, 2_000_001, dtype=np.float32),
                        -np.logspace(-30, 0, 10_001).astype(np.float32), [0.0, -0.0]]).astype(np.float32)
    ours = np.asarray(_numpy_ext.softmax_exp(x), np.float64)
    exact = np.exp(x.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    worst = float(np.max(np.abs(ours - exact) / ulp))
    assert worst <= 2.0, f"softmax exp is {worst:.2f} ulp from exp"
    assert np.isnan(_numpy_ext.softmax_exp(np.array([np.nan], np.float32))[0])
    assert _numpy_ext.softmax_exp(np.array([-200.0], np.float32))[0] < 1e-37  # clamped, not garbage


def test_softmax_log_is_within_one_ulp_of_log():
    # The loss gives it sums of exps in [1, classes]; it holds for every positive float.
    x = np.concatenate([np.linspace(1, 1100, 2_000_001, dtype=np.float32),
                        np.logspace(-45, 38.5, 100_001).astype(np.float32),
                        np.float32([1.0, 2.0, np.sqrt(2), np.nextafter(np.float32(np.sqrt(2)), 2), 1e-45,
                                    np.finfo(np.float32).tiny, np.finfo(np.float32).max])]).astype(np.float32)
    x = x[np.isfinite(x) & (x > 0)]
    ours = np.asarray(_numpy_ext.softmax_log(x), np.float64)
    exact = np.log(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    worst = float(np.max(np.abs(ours - exact) / ulp))
    assert worst <= 1.0, f"softmax log is {worst:.2f} ulp from log"
    special = _numpy_ext.softmax_log(np.float32([1.0, 0.0, -0.0, np.inf, -1.0, -np.inf, np.nan]))
    assert special[0] == 0.0  # a pixel whose one class dominates: loss 0
    assert special[1] == special[2] == -np.inf and special[3] == np.inf
    assert np.all(np.isnan(special[4:]))
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7FC12345], np.uint32).view(np.float32)
    assert np.array_equal(_numpy_ext.softmax_log(nans).view(np.uint32), nans.view(np.uint32))  # the NaN itself


def _cuda(emu, op, args, dtype, *arrays):
    emulator.Ext(emu).run(op, args, CODE[dtype], [a.ctypes.data for a in arrays], 0)


def _case(rng, dtype, factor=3, shape=(2, 3, 4, 6)):
    x = (rng.standard_normal(shape) * 3).astype(NP[dtype])
    n, h, w, c = shape
    labels = rng.integers(0, c, (n, h * factor, w * factor))
    labels[0, 0, :] = 255  # ignored
    g = rng.standard_normal(labels.shape).astype(NP[dtype])
    g[1, 2, :] = 0  # a zero upstream gradient on one row
    return x, labels, g


def _cpu(x, labels, g, factor, dtype, smoothing=0.0):
    """(loss, grad) of the CPU op, as float64."""
    xt = tf.constant(x.astype(np.float64), tf.as_dtype(dtype)) if dtype == "bfloat16" else tf.constant(x)
    with tf.device("/CPU:0"):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tu.upsample_sparse_softmax_cross_entropy(labels, xt, factor, ignore_label=255,
                                                            label_smoothing=smoothing)
        grad = tape.gradient(loss, xt, output_gradients=tf.constant(g.astype(np.float64), loss.dtype))
    return tf.cast(loss, tf.float64).numpy(), tf.cast(grad, tf.float64).numpy()


def _both(emu, x, labels, g, factor, dtype, smoothing=0.0):
    """(loss, grad) from the CPU op and from the CUDA kernels, as float64."""
    k = 2 * factor - factor % 2
    n, h, w, c = x.shape
    args = tc._args(n, h, w, c, h * factor, w * factor, (k, k), (factor, factor), ignore_label=255,
                    label_smoothing=smoothing)
    loss_cuda, grad_cuda = np.full(labels.shape, np.nan, x.dtype), np.full(x.shape, np.nan, x.dtype)
    stats = np.full(labels.shape + (2,), np.nan)
    _cuda(emu, "UpsampleSoftmaxCrossEntropy", args, dtype, x, labels, loss_cuda, stats)
    _cuda(emu, "UpsampleSoftmaxCrossEntropyGrad", args, dtype, x, labels, stats, g, grad_cuda)
    as64 = lambda v: np.asarray(v, np.float64)  # noqa: E731
    return _cpu(x, labels, g, factor, dtype, smoothing), (as64(loss_cuda), as64(grad_cuda))


def _definition(x, labels, g, factor, dtype, smoothing=0.0):
    """The loss and gradient from the float64 definition, of the scores as the op documents them:
    the upsample rounded to the storage type first for float16 / bfloat16."""
    up = ref.bilinear_loop(np.asarray(x, np.float64), factor)
    if dtype in ("float16", "bfloat16"):
        up = up.astype(NP[dtype]).astype(np.float64)
    # The op's label_smoothing attribute is a float32 (TensorFlow's float attributes are).
    loss, grad_up = ref.softmax_cross_entropy(up, labels, ignore=255, smoothing=float(np.float32(smoothing)))
    grad = ref.bilinear_grad_loop(grad_up * np.asarray(g, np.float64)[..., None], factor)
    return loss, grad


@pytest.mark.parametrize("classes", [6, 64, 70])  # the few-class path below 64, the other from 64
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("dtype", list(NP))
@pytest.mark.parametrize("factor", [2, 3, 8])
def test_cpu_loss_and_gradient_equal_the_definition(dtype, factor, smoothing, classes, rng):
    # The CPU op alone (no CUDA compiler needed): every dtype, the half types' gradient included;
    # with label smoothing, the target (1 - s) one-hot + s / C.
    x, labels, g = _case(rng, dtype, factor, (2, 3, 4, classes))
    loss, grad = _cpu(x, labels, g, factor, dtype, smoothing)
    exp_loss, exp_grad = _definition(x, labels, g, factor, dtype, smoothing)
    ref.assert_close(loss, exp_loss, dtype, "loss")
    ref.assert_close(grad, exp_grad, dtype, "loss_grad")
    assert np.all(loss[0, 0] == 0) and np.all(loss[1, 1] != 0)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("dtype", list(NP))
@pytest.mark.parametrize("factor", [2, 3, 8])
def test_cpu_and_cuda_compute_the_same_loss(emu, dtype, factor, smoothing, rng):
    x, labels, g = _case(rng, dtype, factor)
    (loss, grad), (loss_c, grad_c) = _both(emu, x, labels, g, factor, dtype, smoothing)
    # Same scores (rounded to the storage type for half types), same exp; only the order of the
    # sums over classes and over output pixels differs: within one rounding of the result.
    ref.assert_close(loss_c, loss, dtype, "loss")
    ref.assert_close(grad_c, grad, dtype, "loss_grad")
    exp_loss, exp_grad = _definition(x, labels, g, factor, dtype, smoothing)
    ref.assert_close(loss_c, exp_loss, dtype, "loss")
    ref.assert_close(grad_c, exp_grad, dtype, "loss_grad")


def _nan_case(rng, dtype, classes=6):
    x, labels, g = _case(rng, dtype, 2, (2, 3, 4, classes))
    x[1, 1, 1, 2] = np.nan
    g[1] = 0  # image 1 has a zero upstream gradient everywhere: 0 * NaN is still NaN
    # The definition: stock ops on the upsample, with an ignore mask as the fused op applies it
    # (ignored pixels contribute nothing).
    xt = tf.constant(x)
    keep = labels != 255
    with tf.GradientTape() as tape:
        tape.watch(xt)
        up = ref.dense_bilinear(xt, 2)
        per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(np.where(keep, labels, 0), up)
        up_keep = tf.boolean_mask(per_pixel, keep)
    d_keep = tape.gradient(up_keep, xt, output_gradients=tf.constant(g[keep]))
    return x, labels, g, np.where(keep, per_pixel.numpy(), 0), d_keep.numpy()


@pytest.mark.parametrize("classes", [6, 70])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_logits_propagate_as_the_definition(dtype, classes, rng):
    x, labels, g, expected_loss, expected_grad = _nan_case(rng, dtype, classes)
    loss, grad = _cpu(x, labels, g, 2, dtype)
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(expected_loss))
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(expected_grad))
    assert np.isnan(grad[1]).any() and not np.isnan(loss[0, 0]).any()  # ignored pixels stay 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_logits_propagate_alike_on_both_devices(emu, dtype, rng):
    x, labels, g, expected_loss, expected_grad = _nan_case(rng, dtype)
    (loss, grad), (loss_c, grad_c) = _both(emu, x, labels, g, 2, dtype)
    for name, a, b in (("loss CPU", loss, expected_loss), ("loss CUDA", loss_c, expected_loss),
                       ("grad CPU", grad, expected_grad), ("grad CUDA", grad_c, expected_grad)):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)


@pytest.mark.parametrize("interpolation", ["transposed_conv", "bilinear"])
@pytest.mark.parametrize("classes", [3, 70])  # 70: the gradient for 1, scaled
def test_second_gradient_is_a_clear_error(interpolation, classes, rng):
    x = tf.constant(rng.standard_normal((1, 2, 2, classes)), tf.float32)
    labels = rng.integers(0, classes, (1, 4, 4))
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = tf.reduce_sum(tu.upsample_sparse_softmax_cross_entropy(
                labels, x, 2 if interpolation == "transposed_conv" else None, interpolation=interpolation))
        grad = inner.gradient(loss, x)
    with pytest.raises(NotImplementedError, match="second derivative of upsample_sparse_softmax_cross_entropy"):
        outer.gradient(grad, x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_infinite_upstream_gradient_alike_on_both_devices(emu, dtype, rng):
    # Without label smoothing an infinite loss_grad gives the same infinities and NaNs on both
    # devices (the smoothing term is left out, not multiplied by 0).
    x, labels, g = _case(rng, dtype, 2)
    g[1, 0, 0] = np.inf
    (loss, grad), (loss_c, grad_c) = _both(emu, x, labels, g, 2, dtype)
    assert np.isinf(grad).any()
    np.testing.assert_array_equal(np.isnan(grad_c), np.isnan(grad))
    np.testing.assert_array_equal(np.isinf(grad_c), np.isinf(grad))
