"""The fused heads in tf.image.resize's semantics (interpolation="bilinear", "align_corners",
"asymmetric"): the argmax against tf.argmax of stock tf.image.resize / resize_bilinear (bit for bit)
and the float64 definition; the loss and its gradient against the stock unfused path and the
float64 definition; the CUDA kernels through the CPU emulation; the Keras loss."""

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
import tfupsample.testing as ref

DTYPES = ["float16", "bfloat16", "float32", "float64"]
MODES = {"bilinear": ((False, True), "half_pixel"), "align_corners": ((True, False), "align_corners"),
         "asymmetric": ((False, False), "asymmetric")}
SIZES = [((3, 4), (12, 16)), ((9, 9), (65, 65)), ((5, 7), (33, 20)), ((12, 10), (5, 7)), ((1, 3), (4, 5))]


def _stock_resize(x, size, interpolation):
    (align, half), _ = MODES[interpolation]
    return tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=align, half_pixel_centers=half)


@pytest.mark.parametrize("interpolation", list(MODES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ref.ARGMAX_CASES)
def test_argmax_is_tf_argmax_of_the_resize_bit_for_bit(kind, dtype, interpolation, rng):
    for (h, w), size in SIZES[:4]:  # up to integer and fractional sizes, and down
        x = tf.cast(ref.argmax_logits(kind, (2, max(h, 3), max(w, 3), 40), rng, dtype), dtype)
        labels, scores = tu.upsample_argmax(x, size=size, interpolation=interpolation, return_scores=True)
        up = _stock_resize(x, size, interpolation)
        np.testing.assert_array_equal(labels.numpy(), tf.argmax(up, -1).numpy())
        assert scores.dtype == tf.float32
        at_label = np.take_along_axis(up.numpy(), labels.numpy()[..., None], -1)[..., 0]
        np.testing.assert_array_equal(scores.numpy(), at_label)


@pytest.mark.parametrize("interpolation", list(MODES))
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_argmax_equals_the_definition(sizes, interpolation, rng):
    (h, w), size = sizes
    x = ref.segmentation_logits(rng, (2, h, w, 21)).astype(np.float32)
    labels = tu.upsample_argmax(x, size=size, interpolation=interpolation)
    expected, clear, _ = ref.argmax_reference(x, None, "float32", size=size, mode=MODES[interpolation][1])
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(labels.numpy()[clear], expected[clear])


def test_argmax_factor_is_the_default_size_and_options(rng):
    x = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)
    a = tu.upsample_argmax(x, 4, interpolation="bilinear", output_type=tf.int32)
    assert a.dtype == tf.int32 and a.shape == (1, 16, 20)
    np.testing.assert_array_equal(a.numpy(), tf.argmax(tf.image.resize(x, [16, 20]), -1).numpy())
    nchw = tu.upsample_argmax(x.transpose(0, 3, 1, 2), size=[16, 20], interpolation="bilinear", data_format="NCHW")
    np.testing.assert_array_equal(nchw.numpy(), a.numpy())
    with pytest.raises(ValueError, match="interpolation must be"):
        tu.upsample_argmax(x, 2, interpolation="bicubic")
    with pytest.raises(TypeError, match="factor must be a positive integer"):
        tu.upsample_argmax(x, interpolation="bilinear")  # neither size nor factor
    with pytest.raises(ValueError, match="size is for interpolation='bilinear'"):
        tu.upsample_argmax(x, 4, size=[16, 20])  # the FCN upsample's size is the factor's
    with pytest.raises(TypeError, match="factor must be a positive integer"):
        tu.upsample_argmax(x, 0.5, size=[16, 20], interpolation="bilinear")
    b = tu.upsample_argmax(x, 3, size=[16, 20], interpolation="bilinear", output_type=tf.int32)
    np.testing.assert_array_equal(b.numpy(), a.numpy())  # size decides
    with pytest.raises(tf.errors.InvalidArgumentError, match="output dimensions must be positive"):
        tu._ops.lib.tfupsample_resize_argmax(x, [0, 3])


def _case(rng, dtype, hw=(5, 6), size=(23, 17), classes=7):
    x = tf.cast(rng.standard_normal((2, *hw, classes)) * 3, dtype)
    labels = rng.integers(0, classes, (2, *size))
    labels[0, :2] = 255
    g = rng.standard_normal(labels.shape).astype(np.float32)
    return x, labels, g


@pytest.mark.parametrize("interpolation", list(MODES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw,size", [((5, 6), (23, 17)), ((4, 4), (32, 32)), ((9, 9), (65, 65)), ((10, 8), (6, 5))],
                         ids=str)
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("classes", [7, 70])  # either side of the kernels' few-class path (< 64)
def test_loss_and_gradient_equal_stock_and_the_definition(hw, size, dtype, interpolation, smoothing, classes, rng):
    x, labels, g = _case(rng, dtype, hw, size, classes)
    labels = labels.astype(np.int32 if smoothing else np.int64)  # both label widths, on both class paths
    keep = labels != 255
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        loss = tu.upsample_sparse_softmax_cross_entropy(labels, x, ignore_label=255, label_smoothing=smoothing,
                                                        interpolation=interpolation)
        # Stock: the cross-entropy of the smoothed one-hot, as Keras and Model Garden build it.
        target = tf.one_hot(np.where(keep, labels, 0), x.shape[-1]) * (1 - smoothing) + smoothing / x.shape[-1]
        stock = tf.nn.softmax_cross_entropy_with_logits(target, _stock_resize(x, size, interpolation))
        stock = tf.where(keep, stock, 0.0)
        lo, ls = tf.reduce_sum(loss * g), tf.reduce_sum(stock * g)
    assert loss.dtype == tf.float32 and loss.shape == labels.shape
    assert (loss.numpy()[~keep] == 0).all()
    ref.assert_close(loss, stock, "float32", "loss")
    grad = tape.gradient(lo, x)
    assert grad.dtype == x.dtype
    stock_grad = tape.gradient(ls, x)
    if dtype in ("float32", "float64"):  # ResizeBilinearGrad accumulates the half types in the half type
        ref.assert_close(grad, stock_grad, dtype, "resize_grad")
    # The float64 definition: the loss of the exactly resized logits, the adjoint of the resize.
    mode = MODES[interpolation][1]
    x64 = tf.cast(tf.cast(x, tf.float32), tf.float64).numpy()  # the resize reads float32 values
    exp_loss, grad_up = ref.softmax_cross_entropy(ref.resize_bilinear_loop(x64, size, mode), labels, ignore=255,
                                                  smoothing=smoothing)
    ref.assert_close(loss, exp_loss, "float32", "resize")
    ref.assert_close(grad, ref.resize_bilinear_grad_loop(grad_up * g[..., None], hw, mode), dtype, "resize_grad")


def test_loss_takes_any_label_size_and_checks_labels(rng):
    x = tf.constant(rng.standard_normal((2, 4, 5, 3)), tf.float32)
    for size in ((4, 5), (7, 3), (129, 1)):
        labels = rng.integers(0, 3, (2, *size))
        ours = tu.upsample_sparse_softmax_cross_entropy(labels, x, interpolation="bilinear")
        stock = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.image.resize(x, size))
        ref.assert_close(ours, stock, "float32", "loss")
    lib = tu._ops.lib
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be in \[0, 3\).*got 3"):
        tu.upsample_sparse_softmax_cross_entropy(np.full((2, 6, 6), 3), x, interpolation="bilinear")
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be 3-D .* with the logits' batch"):
        lib.tfupsample_resize_sparse_softmax_cross_entropy(np.zeros((3, 6, 6), np.int64), x, half_pixel_centers=True)
    grad = lib.tfupsample_resize_sparse_softmax_cross_entropy_grad
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"stats must have shape \[2,6,6,2\]"):
        grad(np.zeros((2, 6, 6), np.int64), x, np.zeros((2, 6, 6)), np.zeros((2, 6, 6), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"loss_grad must have shape \[2,6,6\]"):
        grad(np.zeros((2, 6, 6), np.int64), x, np.zeros((2, 6, 6, 2)), np.zeros((2, 6, 5), np.float32))


def test_heads_under_xla(rng, xla_path):
    x, labels, g = _case(rng, "float32")
    labels = labels.astype(np.int32)  # int32 labels through the handler (int64 in the FCN heads' test)

    def step(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            loss = tf.reduce_sum(tu.upsample_sparse_softmax_cross_entropy(labels, t, ignore_label=255,
                                                                          interpolation="bilinear") * g)
        return tu.upsample_argmax(t, size=(23, 17), interpolation="bilinear"), loss, tape.gradient(loss, t)

    a, b = tf.function(step, jit_compile=True)(x), step(x)
    if xla_path == "kernels":  # the same kernels: the same bits (the loss is XLA's sum of them)
        for u, v in zip((a[0], a[2]), (b[0], b[2])):
            np.testing.assert_array_equal(u.numpy(), v.numpy())
    assert (a[0].numpy() != b[0].numpy()).mean() < 1e-2  # XLA's own resize (the lowering) rounds differently
    ref.assert_close(a[1], b[1], "float32", "loss")
    ref.assert_close(a[2], b[2], "float32", "resize_grad")


@pytest.mark.parametrize("interpolation", list(MODES))
@pytest.mark.parametrize("weights", [None, "per_image", "per_pixel"])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none"])
def test_keras_loss_with_sample_weight_is_keras_on_the_resize(reduction, weights, interpolation, rng):
    import keras

    from tfupsample.keras import UpsampledSparseCategoricalCrossentropy

    logits = tf.constant(rng.standard_normal((3, 4, 5, 6)) * 2, tf.float32)
    y = rng.integers(0, 6, (3, 13, 11))
    y[:, :5] = 255  # part of every image
    y[2] = 255  # and one image entirely
    sw = {None: None, "per_image": rng.uniform(0.5, 2, (3, 1, 1)), "per_pixel": rng.uniform(0, 2, (3, 13, 11))}[weights]
    ours = UpsampledSparseCategoricalCrossentropy(ignore_class=255, interpolation=interpolation, reduction=reduction)
    stock = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255, reduction=reduction)
    up = _stock_resize(logits, [13, 11], interpolation)
    ref.assert_close(ours(y, logits, sample_weight=sw), stock(y, up, sample_weight=sw), "float32", "loss")


def test_keras_loss_with_resize_semantics(rng):
    import keras

    from tfupsample.keras import UpsampledSparseCategoricalCrossentropy

    logits = tf.constant(rng.standard_normal((3, 6, 5, 4)) * 2, tf.float32)
    y = rng.integers(0, 4, (3, 37, 29))
    y[0, :9] = 255
    ours = UpsampledSparseCategoricalCrossentropy(ignore_class=255, interpolation="bilinear")
    stock = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    ref.assert_close(ours(y, logits), stock(y, tf.image.resize(logits, [37, 29])), "float32", "loss")
    clone = UpsampledSparseCategoricalCrossentropy.from_config(ours.get_config())
    assert (clone.interpolation, clone.factor, clone.ignore_class) == ("bilinear", None, 255)
    with pytest.raises(TypeError, match="factor must be a positive integer"):
        UpsampledSparseCategoricalCrossentropy()


@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_heads_through_the_emulation(emu, dtype, rng):
    import ml_dtypes

    import tfupsample.cuda as tc
    from cuda_host import emulator

    np_t = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "float64": np.float64}[dtype]
    code = {"float16": 0, "bfloat16": 1, "float32": 2, "float64": 3}[dtype]
    ext = emulator.Ext(emu)
    # The labels int64, then int32 (read as such by the kernels: narrow_labels), then int64; the
    # loss gradient a map, then one value for every pixel (uniform_loss_grad, as XLA may pass it).
    for (interpolation, (_, mode)), smoothing, label_type, uniform in zip(
            MODES.items(), (0.0, 0.3, 1.0), (np.int64, np.int32, np.int64), (False, True, False)):
        x = (ref.argmax_logits("near_ties", (2, 4, 5, 21), rng, dtype)).astype(np_t)
        size = (13, 11)
        args = tc._args(2, 4, 5, 21, *size, (1, 1), (1, 1), ignore_label=255, resize=mode, label_smoothing=smoothing)
        loss_args = tc._args(2, 4, 5, 21, *size, (1, 1), (1, 1), ignore_label=255, resize=mode,
                             label_smoothing=smoothing, narrow_labels=label_type == np.int32,
                             uniform_loss_grad=uniform)
        labels = np.full((2, *size), -7, np.int64)
        scores = np.full((2, *size), np.nan, np.float32)
        ext.run("ResizeArgmax", args, code, [x.ctypes.data, labels.ctypes.data, scores.ctypes.data], 0)
        xt = tf.constant(x.astype(np.float64), dtype)
        cpu_labels, cpu_scores = tu.upsample_argmax(xt, size=size, interpolation=interpolation, return_scores=True)
        np.testing.assert_array_equal(labels, cpu_labels.numpy())
        np.testing.assert_array_equal(scores, cpu_scores.numpy())

        target = rng.integers(0, 21, (2, *size)).astype(label_type)
        target[1, 0] = 255
        g = rng.standard_normal(target.shape).astype(np.float32)
        if uniform:
            g[...] = g[0, 0, 0]
        g_passed = g.reshape(-1)[:1].copy() if uniform else g
        loss = np.full(target.shape, np.nan, np.float32)
        stats = np.full(target.shape + (2,), np.nan)
        ext.run("ResizeSoftmaxCrossEntropy", loss_args, code,
                [x.ctypes.data, target.ctypes.data, loss.ctypes.data, stats.ctypes.data], 0)
        grad = np.full(x.shape, np.nan, np_t)
        ext.run("ResizeSoftmaxCrossEntropyGrad", loss_args, code,
                [x.ctypes.data, target.ctypes.data, stats.ctypes.data, g_passed.ctypes.data, grad.ctypes.data], 0)
        loss_1, stats_1, grad_1 = np.full_like(loss, np.nan), np.full_like(stats, np.nan), np.full_like(grad, np.nan)
        ext.run("ResizeSoftmaxCrossEntropyWithGrad", loss_args, code,  # with the gradient for 1 at every pixel
                [x.ctypes.data, target.ctypes.data, loss_1.ctypes.data, stats_1.ctypes.data, grad_1.ctypes.data], 0)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            cpu_loss = tu.upsample_sparse_softmax_cross_entropy(target, xt, ignore_label=255, label_smoothing=smoothing,
                                                                interpolation=interpolation)
        cpu_grad = tape.gradient(cpu_loss, xt, output_gradients=tf.constant(g))
        ref.assert_close(loss, cpu_loss, "float32", "loss")
        assert (loss[1, 0] == 0).all()
        up = ref.resize_bilinear_loop(np.asarray(x, np.float32).astype(np.float64), size, mode)
        exp_loss, grad_up = ref.softmax_cross_entropy(up, target, ignore=255, smoothing=smoothing)
        ref.assert_close(loss, exp_loss, "float32", "resize")
        ref.assert_close(grad.astype(np.float64), ref.resize_bilinear_grad_loop(grad_up * g[..., None], (4, 5), mode),
                         dtype, "resize_grad")
        # The resize's heads compute in float32 whatever the type (as tf.image.resize), so float64
        # results carry float32 roundings: resize_grad's bound.
        ref.assert_close(grad.astype(np.float64), tf.cast(cpu_grad, tf.float64), dtype, "resize_grad")
        ref.assert_same_bits(loss_1, loss, "WithGrad's loss")
        ref.assert_close(grad_1.astype(np.float64), ref.resize_bilinear_grad_loop(grad_up, (4, 5), mode), dtype,
                         "resize_grad")


@pytest.mark.parametrize("interpolation", ["bilinear", "align_corners"])
def test_classifier_moves_before_the_upsample(interpolation, rng):
    # DeepLab-style heads upsample features, then apply a 1x1 classifier; the resize's weights sum
    # to 1 at every pixel, so the classifier can go first and the fused loss take its coarse
    # logits: the same loss up to rounding, without the full-resolution features or logits.
    features = tf.constant(rng.standard_normal((2, 9, 9, 16)), tf.float32)
    kernel = tf.constant(rng.standard_normal((16, 5)) * 0.5, tf.float32)
    bias = tf.constant(rng.standard_normal(5), tf.float32)
    labels = rng.integers(0, 5, (2, 33, 33))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([features, kernel, bias])
        up = _stock_resize(features, (33, 33), interpolation)
        stock = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, up @ kernel + bias))
        coarse = features @ kernel + bias
        fused = tf.reduce_mean(tu.upsample_sparse_softmax_cross_entropy(labels, coarse, interpolation=interpolation))
    ref.assert_close(fused, stock, "float32", "resize")
    for a, b in zip(tape.gradient(fused, [features, kernel, bias]), tape.gradient(stock, [features, kernel, bias])):
        ref.assert_close(a, b, "float32", "resize_grad")


def test_argmax_where_the_resize_overflows_is_still_tf_argmax(rng):
    # Finite logits whose differences overflow (|x| ~ 3e38): the lerps give inf or NaN, which the
    # pruning bounds do not cover, so no pruning there; many classes take the vectorised path,
    # whose maximum can be NaN: the scan decides then (it never loops past the classes).
    x = rng.standard_normal((1, 3, 4, 40)).astype(np.float32)
    x[0, :, ::2, :20] = 3e38
    x[0, :, 1::2, :20] = -3e38
    for interpolation in MODES:
        labels, scores = tu.upsample_argmax(x, size=(9, 11), interpolation=interpolation, return_scores=True)
        up = _stock_resize(x, (9, 11), interpolation).numpy()
        assert not np.isfinite(up).all()
        np.testing.assert_array_equal(labels.numpy(), tf.argmax(up, -1).numpy())


def test_cuda_binding_refuses_an_op_with_the_wrong_geometry(emu):
    import tfupsample.cuda as tc
    from cuda_host import emulator

    ext = emulator.Ext(emu)
    x, y = np.zeros((1, 2, 2, 1), np.float32), np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="ResizeBilinear needs a resize geometry"):
        ext.run("ResizeBilinear", tc._args(1, 2, 2, 1, 4, 4, (4, 4), (2, 2)), 2, [x.ctypes.data, y.ctypes.data], 0)
    with pytest.raises(ValueError, match="BilinearForward takes no resize geometry"):
        ext.run("BilinearForward", tc._args(1, 2, 2, 1, 4, 4, (1, 1), (1, 1), resize="half_pixel"), 2,
                [x.ctypes.data, y.ctypes.data], 0)
    # The gradient's intermediate [n, h, out_w, c] must be indexable too (checked before any launch).
    with pytest.raises(ValueError, match="the gradient's rows would have more elements"):
        ext.run("ResizeBilinearBackpropInput", tc._args(2**40, 2**20, 1, 1, 1, 2**20, (1, 1), (1, 1),
                                                        resize="half_pixel"), 2, [0, 0], 0)


def test_cuda_resize_loss_gradient_keeps_an_infinite_upstream_gradient(emu, rng):
    # Without label smoothing an infinite loss_grad gives the CPU kernel's infinities and NaNs
    # (the smoothing term is left out, not multiplied by 0).
    import tfupsample.cuda as tc
    from cuda_host import emulator

    x = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)
    size = (9, 11)
    target = rng.integers(0, 6, (1, *size))
    g = rng.standard_normal(target.shape).astype(np.float32)
    g[0, 2, 3] = np.inf
    args = tc._args(1, 4, 5, 6, *size, (1, 1), (1, 1), resize="half_pixel")
    ext = emulator.Ext(emu)
    loss, stats = np.zeros(target.shape, np.float32), np.zeros(target.shape + (2,))
    ext.run("ResizeSoftmaxCrossEntropy", args, 2, [x.ctypes.data, target.ctypes.data, loss.ctypes.data,
                                                   stats.ctypes.data], 0)
    grad = np.zeros(x.shape, np.float32)
    ext.run("ResizeSoftmaxCrossEntropyGrad", args, 2,
            [x.ctypes.data, target.ctypes.data, stats.ctypes.data, g.ctypes.data, grad.ctypes.data], 0)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        cpu_loss = tu.upsample_sparse_softmax_cross_entropy(target, xt, interpolation="bilinear")
    cpu_grad = tape.gradient(cpu_loss, xt, output_gradients=tf.constant(g)).numpy()
    assert np.isinf(cpu_grad).any()
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(cpu_grad))
    np.testing.assert_array_equal(np.isinf(grad), np.isinf(cpu_grad))


def test_loss_with_no_classes_and_every_pixel_ignored():
    # Zero classes: a legal shape for the FCN loss when every label is the ignore label (zero
    # loss, an empty gradient); the resize refuses it as ResizeBilinear does.
    x = tf.zeros([1, 1, 1, 0])
    labels = np.full((1, 2, 2), 255)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tu.upsample_sparse_softmax_cross_entropy(labels, x, 2, ignore_label=255)
    assert loss.shape == (1, 2, 2) and (loss.numpy() == 0).all()
    assert tape.gradient(loss, x).shape == (1, 1, 1, 0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image must have at least one channel"):
        tu.upsample_sparse_softmax_cross_entropy(labels, x, ignore_label=255, interpolation="bilinear")
