"""The loss ops' gradient for a loss gradient of 1 at every pixel, computed with the loss (the ops'
with_grad, which a training step under a GradientTape runs), against the float64 definition and
the two-op path (the forward, then the gradient op from its stats), and the gradient's choice
between the two."""

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
from tfupsample import _ops
from tfupsample._ops import lib
from tfupsample.testing import (assert_close, assert_same_bits, resize_bilinear_grad_loop, resize_bilinear_loop,
                                softmax_cross_entropy, upsample_softmax_cross_entropy)

# Where a GPU is visible the loss asks for no gradient for 1 (the op would run two sweeps there).
cpu_only = pytest.mark.skipif(_ops.gpu_visible(), reason="with_grad is asked for only where no GPU is visible")

RULES = {"plain": {}, "ignore": dict(ignore_label=255, use_ignore_label=True), "smoothing": dict(label_smoothing=0.2)}
MODES = {"half_pixel": dict(half_pixel_centers=True), "align_corners": dict(align_corners=True), "asymmetric": {}}


def _labels(rng, shape, classes, rule):
    labels = rng.integers(0, classes, shape)
    if rule.get("use_ignore_label"):
        labels[0, :2] = 255
    return tf.constant(labels)


def _ignore(rule):
    return 255 if rule.get("use_ignore_label") else None


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("shape,factor", [
    ((2, 3, 4, 7), 3),       # few classes: the forward, then the gradient op's kernel
    ((2, 4, 3, 70), 2),      # many: one sweep (AVX2; AVX-512 from 65 classes)
    ((1, 3, 2, 1000), 8),    # FCN-like
    ((1, 40, 3, 1000), 2),   # bands that reduce their shared rows each on their own (over the buffer's budget)
], ids=str)
def test_transposed_conv_loss_with_its_gradient(shape, factor, rule, rng):
    x = tf.constant(rng.standard_normal(shape) * 3, tf.float32)
    labels = _labels(rng, (shape[0], shape[1] * factor, shape[2] * factor), shape[3], RULES[rule])
    loss, stats, empty = lib.tfupsample_upsample_sparse_softmax_cross_entropy(labels, x, factor=factor, **RULES[rule])
    assert empty.shape == (0,)
    loss_1, stats_1, grad_1 = lib.tfupsample_upsample_sparse_softmax_cross_entropy(
        labels, x, factor=factor, with_grad=True, **RULES[rule])
    assert_same_bits(loss_1, loss, "loss")
    assert_same_bits(stats_1, stats, "stats")
    ones = tf.ones_like(loss)
    two_ops = lib.tfupsample_upsample_sparse_softmax_cross_entropy_grad(labels, x, stats, ones, factor=factor,
                                                                         **RULES[rule])
    assert_same_bits(grad_1, two_ops, "the gradient op's bits for loss_grad 1")
    exp_loss, expected = upsample_softmax_cross_entropy(x.numpy(), labels.numpy(), factor, ones.numpy(),
                                                        ignore=_ignore(RULES[rule]),
                                                        smoothing=RULES[rule].get("label_smoothing", 0.0))
    assert_close(loss_1, exp_loss, "float32", "loss")
    assert_close(grad_1, expected, "float32", "loss_grad")


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape,size", [
    ((2, 4, 5, 6), (13, 9)),     # few classes
    ((2, 5, 4, 150), (21, 17)),  # many: one sweep
    ((1, 9, 7, 100), (4, 3)),    # downsampling
    ((1, 70, 3, 100), (141, 7)), # several bands, whose shared output rows both reduce
], ids=str)
def test_resize_loss_with_its_gradient(shape, size, mode, rule, rng):
    x = tf.constant(rng.standard_normal(shape) * 3, tf.float32)
    labels = _labels(rng, (shape[0], *size), shape[3], RULES[rule])
    kw = dict(**RULES[rule], **MODES[mode])
    loss, stats, _ = lib.tfupsample_resize_sparse_softmax_cross_entropy(labels, x, **kw)
    loss_1, stats_1, grad_1 = lib.tfupsample_resize_sparse_softmax_cross_entropy(labels, x, with_grad=True, **kw)
    assert_same_bits(loss_1, loss, "loss")
    assert_same_bits(stats_1, stats, "stats")
    two_ops = lib.tfupsample_resize_sparse_softmax_cross_entropy_grad(labels, x, stats, tf.ones_like(loss), **kw)
    assert_same_bits(grad_1, two_ops, "the gradient op's bits for loss_grad 1")
    up = resize_bilinear_loop(x.numpy().astype(np.float64), size, mode)
    exp_loss, grad_up = softmax_cross_entropy(up, labels.numpy(), ignore=_ignore(RULES[rule]),
                                              smoothing=RULES[rule].get("label_smoothing", 0.0))
    assert_close(loss_1, exp_loss, "float32", "resize")
    assert_close(grad_1, resize_bilinear_grad_loop(grad_up, shape[1:3], mode), "float32", "resize_grad")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_other_dtypes_run_the_forward_then_the_gradient(dtype, rng):
    x = tf.constant(rng.standard_normal((2, 3, 4, 70)), dtype)
    labels = tf.constant(rng.integers(0, 70, (2, 6, 8)))
    loss, stats, grad = lib.tfupsample_upsample_sparse_softmax_cross_entropy(labels, x, factor=2, with_grad=True)
    assert grad.dtype == x.dtype and grad.shape == x.shape
    assert_same_bits(grad, lib.tfupsample_upsample_sparse_softmax_cross_entropy_grad(
        labels, x, stats, tf.ones_like(loss), factor=2), dtype)
    loss, stats, grad = lib.tfupsample_resize_sparse_softmax_cross_entropy(labels, x, with_grad=True)
    assert_same_bits(grad, lib.tfupsample_resize_sparse_softmax_cross_entropy_grad(
        labels, x, stats, tf.ones_like(loss)), dtype)


@pytest.fixture
def grad_op_calls(monkeypatch):
    """How many times the registered gradient ran a gradient op (the two-op path), per semantics."""
    calls = {"transposed_conv": 0, "bilinear": 0}
    for name, key in [("tfupsample_upsample_sparse_softmax_cross_entropy_grad", "transposed_conv"),
                      ("tfupsample_resize_sparse_softmax_cross_entropy_grad", "bilinear")]:
        op = getattr(lib, name)

        def counted(*args, _op=op, _key=key, **kwargs):
            calls[_key] += 1
            return _op(*args, **kwargs)
        monkeypatch.setattr(lib, name, counted)
    return calls


@cpu_only
@pytest.mark.parametrize("interpolation", ["transposed_conv", "bilinear"])
@pytest.mark.parametrize("upstream", ["mean", "masked_mean", "weighted", "nan", "nan_where_ignored"])
def test_the_gradient_scales_the_gradient_for_one_where_it_can(interpolation, upstream, grad_op_calls,
                                                                          rng):
    # One value at every pixel not ignored (a mean; Keras' masked mean gives the ignored pixels
    # 0; anything, even NaN, at the ignored ones): the op's gradient for 1, scaled. Weights, or a
    # NaN at a pixel that counts: the gradient op.
    x = tf.Variable(rng.standard_normal((2, 3, 4, 70)) * 3, dtype=tf.float32)
    labels = rng.integers(0, 70, (2, 6, 8))
    labels[1, 2:4] = 255
    keep = (labels != 255).astype(np.float32)
    weights = {"mean": np.full(labels.shape, 1 / labels.size), "masked_mean": keep / keep.sum(),
               "weighted": rng.random(labels.shape), "nan": np.full(labels.shape, 0.5),
               "nan_where_ignored": np.full(labels.shape, 0.5)}[upstream].astype(np.float32)
    if upstream == "nan":
        weights[0, 0, 0] = np.nan
    if upstream == "nan_where_ignored":
        weights[1, 2, 0] = np.nan
    factor = 2 if interpolation == "transposed_conv" else None
    with tf.GradientTape() as tape:
        losses = tu.upsample_sparse_softmax_cross_entropy(labels, x, factor, ignore_label=255,
                                                          interpolation=interpolation)
        loss = tf.reduce_sum(losses * weights)
    grad = tape.gradient(loss, x)
    assert grad_op_calls[interpolation] == (1 if upstream in ("weighted", "nan") else 0)
    x64 = x.numpy().astype(np.float64)
    weights = np.where(labels == 255, 0, weights)  # the definition's: an ignored pixel counts for nothing
    if interpolation == "transposed_conv":
        _, expected = upsample_softmax_cross_entropy(x64, labels, 2, weights, ignore=255)
        op = "loss_grad"
    else:
        _, grad_up = softmax_cross_entropy(resize_bilinear_loop(x64, (6, 8)), labels, ignore=255)
        expected, op = resize_bilinear_grad_loop(grad_up * weights[..., None].astype(np.float64), (3, 4)), "resize_grad"
    if upstream == "nan":
        assert np.isnan(grad.numpy()).any()
    else:
        assert_close(grad, expected, "float32", op)


def _with_grad(fn, *args):
    """The with_grad attributes of the loss ops in fn's graph."""
    graph = tf.function(fn).get_concrete_function(*args).graph
    return [op.get_attr("with_grad") for op in graph.get_operations() if op.type.endswith("SparseSoftmaxCrossEntropy")]


@cpu_only
def test_the_loss_computes_its_gradient_only_where_a_tape_records(rng):
    x = tf.constant(rng.standard_normal((1, 3, 4, 70)), tf.float32)
    labels = tf.constant(rng.integers(0, 70, (1, 6, 8)))

    def taped(v, dtype=tf.float32):
        v = tf.cast(v, dtype)
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_mean(tu.upsample_sparse_softmax_cross_entropy(labels, v, 2))
        return tape.gradient(loss, v)

    assert _with_grad(taped, x) == [True]  # a train step: the tape inside the function
    assert _with_grad(lambda v: tu.upsample_sparse_softmax_cross_entropy(labels, v, 2), x) == [False]  # no tape
    assert _with_grad(lambda v: taped(v, tf.float64), x) == [False]  # float32 only
    assert _with_grad(taped, x[..., :64]) == [False]  # 64 classes: no one sweep in the AVX-512 build

    def weighted(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            losses = tu.upsample_sparse_softmax_cross_entropy(labels, v, 2, uniform_reduction=False)
            loss = tf.reduce_sum(losses * tf.reshape(tf.range(48.0), [1, 6, 8]))
        return tape.gradient(loss, v)
    assert _with_grad(weighted, x) == [False]  # the caller's word
    # Model Garden's loss: with weights or hard-pixel mining the upstream gradient is not one value.
    for kwargs, expected in [({}, True), (dict(class_weights=[1.0] * 70), False),
                             (dict(top_k_percent_pixels=0.5), False)]:
        def step(v):
            with tf.GradientTape() as tape:
                tape.watch(v)
                loss = tu.segmentation_loss(labels, v, interpolation="bilinear", **kwargs)
            return tape.gradient(loss, v)
        assert _with_grad(step, x) == [expected], kwargs
    # A tape outside the function records the call as a whole: the function's own gradient.
    fn = tf.function(lambda v: tf.reduce_mean(tu.upsample_sparse_softmax_cross_entropy(labels, v, 2)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = fn(x)
    _, expected = upsample_softmax_cross_entropy(x.numpy(), labels.numpy(), 2, np.full(labels.shape, 1 / 48))
    assert_close(tape.gradient(loss, x), expected, "float32", "loss_grad")


@cpu_only
@pytest.mark.parametrize("interpolation", ["transposed_conv", "bilinear"])
def test_a_derivative_of_the_scaled_gradient_is_a_clear_error(interpolation, grad_op_calls, rng):
    # The gradient's derivative with respect to the upstream gradient (double-VJP, forward mode):
    # not implemented, whichever path the registered gradient took.
    x = tf.constant(rng.standard_normal((1, 3, 4, 70)), tf.float32)
    labels = rng.integers(0, 70, (1, 6, 8))
    upstream = tf.Variable(tf.ones((1, 6, 8)))
    factor = 2 if interpolation == "transposed_conv" else None
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(x)
            losses = tu.upsample_sparse_softmax_cross_entropy(labels, x, factor, interpolation=interpolation)
        grad = inner.gradient(losses, x, output_gradients=upstream)
    assert grad_op_calls[interpolation] == 0  # the scaled path
    with pytest.raises(NotImplementedError, match="second derivative of upsample_sparse_softmax_cross_entropy"):
        outer.gradient(grad, upstream)


@pytest.mark.parametrize("taped", [True, False])
def test_the_registered_gradient_of_a_raw_op_with_its_gradient_for_one(taped, grad_op_calls, rng):
    # The raw op with with_grad, differentiated through its registered gradient (a tape that
    # records the op itself, or a graph's tf.gradients): the gradient for 1, scaled, for a mean;
    # the gradient op for weights. Both against the float64 definition.
    x = tf.constant(rng.standard_normal((2, 3, 4, 70)), tf.float32)
    labels = tf.constant(rng.integers(0, 70, (2, 6, 8)))
    weights = tf.constant(rng.random((2, 6, 8)), tf.float32)

    def grad_of(v, w):
        def loss_of(v):
            return tf.reduce_sum(lib.tfupsample_upsample_sparse_softmax_cross_entropy(labels, v, factor=2,
                                                                                      with_grad=True)[0] * w)
        if not taped:
            return tf.gradients(loss_of(v), v)[0]
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = loss_of(v)
        return tape.gradient(loss, v)

    run = (lambda v, w: grad_of(v, w)) if taped else tf.function(grad_of)
    for w, calls in ((tf.fill([2, 6, 8], 0.25), 0), (weights, 1)):
        grad = run(x, w)
        if taped:
            assert grad_op_calls["transposed_conv"] == calls
        _, expected = upsample_softmax_cross_entropy(x.numpy(), labels.numpy(), 2, w.numpy())
        assert_close(grad, expected, "float32", "loss_grad")


@cpu_only
def test_nchw_logits_take_the_one_sweep(rng):
    x = tf.constant(rng.standard_normal((1, 70, 3, 4)), tf.float32)  # NCHW
    labels = tf.constant(rng.integers(0, 70, (1, 6, 8)))

    def step(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_mean(tu.upsample_sparse_softmax_cross_entropy(labels, v, 2, data_format="NCHW"))
        return tape.gradient(loss, v)
    assert _with_grad(step, x) == [True]
    _, expected = upsample_softmax_cross_entropy(np.transpose(x.numpy(), (0, 2, 3, 1)), labels.numpy(), 2,
                                                 np.full(labels.shape, 1 / 48))
    assert_close(step(x), np.transpose(expected, (0, 3, 1, 2)), "float32", "loss_grad")


@cpu_only
def test_keras_loss_with_weights_skips_the_gradient_for_one(rng):
    weighted = tu.keras.UpsampledSparseCategoricalCrossentropy(2, class_weights=[1.0] * 70)
    plain = tu.keras.UpsampledSparseCategoricalCrossentropy(2)
    x = tf.constant(rng.standard_normal((1, 3, 4, 70)), tf.float32)
    labels = tf.constant(rng.integers(0, 70, (1, 6, 8)))
    sample_weight = tf.constant(rng.random((1, 6, 8)), tf.float32)

    def step(fn, *weight):
        def run(v):
            with tf.GradientTape() as tape:
                tape.watch(v)
                value = fn(labels, v, *weight)
            return tape.gradient(value, v)
        return run
    assert _with_grad(step(weighted), x) == [False]
    assert _with_grad(step(plain, sample_weight), x) == [False]  # Keras' sample_weight
    assert _with_grad(step(plain), x) == [True]
    # And the values: the sample-weighted loss's gradient as Keras' own on the upsampled logits.
    _, expected = upsample_softmax_cross_entropy(x.numpy(), labels.numpy(), 2, sample_weight.numpy() / 48)
    assert_close(step(plain, sample_weight)(x), expected, "float32", "loss_grad")
    assert _ops.lib is not None
