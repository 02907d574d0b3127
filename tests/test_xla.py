"""Under XLA (jit_compile=True) every op is a custom call into the same CPU kernel: the optimized
HLO holds the call and nothing of the stock-op lowering, the outputs are the eager op's bits, the
gradients flow, both load orders work, and Keras trains with jit_compile=True."""

import re
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
import tfupsample.testing as ref

pytestmark = pytest.mark.skipif(not tu.xla_kernels(), reason="no XLA kernels here: "
                                + (tu.xla_kernels_missing() if tu.backend() == "op" else "no library"))

lib = tu._ops.lib

# What the optimized HLO of a jit-compiled raw op may hold besides our call: its plumbing.
PLUMBING = {"parameter", "custom-call", "get-tuple-element", "tuple", "constant", "bitcast", "copy"}


def _hlo(f, *args):
    return f.experimental_get_compiler_ir(*args)(stage="optimized_hlo")


def _opcodes(hlo):
    codes = set()
    for line in hlo.splitlines():
        if " = " in line and not line.lstrip().startswith(("HloModule", "ENTRY")):
            m = re.search(r"=\s.*?\s([a-z][a-z0-9\-]*)\(", line)
            if m:
                codes.add(m.group(1))
    return codes


def _labels(rng, shape, classes, ignore=None):
    y = rng.integers(0, classes, shape)
    if ignore is not None:
        y[..., ::3] = ignore
    return tf.constant(y, tf.int64)


def _op_cases(rng, dtype=tf.float32):
    """(kernel, raw-op call, its tensor arguments) for every op, small shapes."""
    t = lambda *s: tf.constant(rng.standard_normal(s), dtype)  # noqa: E731
    f32 = lambda *s: tf.constant(rng.standard_normal(s), tf.float32)  # noqa: E731
    x, w = t(2, 4, 5, 3), t(3, 4, 3, 1)
    logits = t(2, 4, 5, 6)
    y2 = _labels(rng, (2, 8, 10), 6, ignore=255)
    yr = _labels(rng, (2, 7, 9), 6, ignore=255)
    rule = dict(ignore_label=255, use_ignore_label=True, label_smoothing=0.1)
    loss2, stats2, _ = lib.tfupsample_upsample_sparse_softmax_cross_entropy(y2, logits, factor=2, **rule)
    lossr, statsr, _ = lib.tfupsample_resize_sparse_softmax_cross_entropy(yr, logits, align_corners=True, **rule)
    return [
        ("BilinearForward", lambda a: lib.tfupsample_bilinear_upsample(a, factor=3), [x]),
        ("BilinearForward", lambda a: lib.tfupsample_bilinear_upsample(a, factor=2, data_format="NCHW"),
         [t(2, 3, 4, 5)]),
        ("BilinearBackpropInput", lambda a: lib.tfupsample_bilinear_upsample_grad(a, factor=3), [t(2, 12, 15, 3)]),
        ("ResizeBilinear", lambda a: lib.tfupsample_resize_bilinear(a, [13, 9], half_pixel_centers=True), [x]),
        ("ResizeBilinear", lambda a: lib.tfupsample_resize_bilinear(a, [7, 9], align_corners=True,
                                                                     data_format="NCHW"), [t(2, 3, 4, 5)]),
        ("ResizeBilinearBackpropInput",
         lambda a: lib.tfupsample_resize_bilinear_grad(a, [4, 5], T=dtype, half_pixel_centers=True), [f32(2, 13, 9, 3)]),
        ("DepthwiseForward",
         lambda a, b: lib.tfupsample_depthwise_conv2d_transpose(a, b, [2, 8, 15, 3], strides=[2, 3], padding="SAME"),
         [x, w]),
        ("DepthwiseBackpropInput",
         lambda a, b: lib.tfupsample_depthwise_conv2d_transpose_backprop_input(
             a, b, [2, 4, 5, 3], strides=[2, 3], padding="SAME"), [t(2, 8, 15, 3), w]),
        ("DepthwiseBackpropFilter",
         lambda a, b: lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(
             a, b, [3, 4, 3, 1], strides=[2, 3], padding="VALID"), [x, t(2, 9, 16, 3)]),
        ("UpsampleArgmax", lambda a: lib.tfupsample_upsample_argmax(a, factor=2), [logits]),
        ("UpsampleArgmax", lambda a: lib.tfupsample_upsample_argmax(a, factor=3, with_scores=False), [logits]),
        ("UpsampleSoftmaxCrossEntropyWithGrad",
         lambda a, b: lib.tfupsample_upsample_sparse_softmax_cross_entropy(a, b, factor=2, **rule), [y2, logits]),
        ("UpsampleSoftmaxCrossEntropyWithGrad",
         lambda a, b: lib.tfupsample_upsample_sparse_softmax_cross_entropy(a, b, factor=3, with_grad=True, **rule),
         [_labels(rng, (2, 12, 15), 6, ignore=255), logits]),
        ("UpsampleSoftmaxCrossEntropyGrad",
         lambda a, b, c, d: lib.tfupsample_upsample_sparse_softmax_cross_entropy_grad(a, b, c, d, factor=2, **rule),
         [y2, logits, stats2, tf.constant(rng.standard_normal(loss2.shape), dtype)]),
        ("ResizeArgmax", lambda a: lib.tfupsample_resize_argmax(a, [7, 9], half_pixel_centers=True), [logits]),
        ("ResizeSoftmaxCrossEntropyWithGrad",
         lambda a, b: lib.tfupsample_resize_sparse_softmax_cross_entropy(a, b, align_corners=True, **rule),
         [yr, logits]),
        ("ResizeSoftmaxCrossEntropyWithGrad",
         lambda a, b: lib.tfupsample_resize_sparse_softmax_cross_entropy(a, b, half_pixel_centers=True,
                                                                         with_grad=True, **rule), [yr, logits]),
        ("ResizeSoftmaxCrossEntropyGrad",
         lambda a, b, c, d: lib.tfupsample_resize_sparse_softmax_cross_entropy_grad(a, b, c, d, align_corners=True,
                                                                                   **rule),
         [yr, logits, statsr, f32(*lossr.shape)]),
    ]


def _outputs(result):
    return [r.numpy() for r in (result if isinstance(result, (list, tuple)) else [result])]


@pytest.mark.parametrize("index", range(18))
def test_every_op_is_our_custom_call_with_the_eager_bits(index, rng):
    kernel, fn, args = _op_cases(rng)[index]
    jit = tf.function(fn, jit_compile=True)
    hlo = _hlo(jit, *args)
    assert f'custom_call_target="tfupsample_{kernel}"' in hlo, hlo
    assert "API_VERSION_TYPED_FFI" in hlo, hlo
    assert _opcodes(hlo) <= PLUMBING, (_opcodes(hlo) - PLUMBING, hlo)
    for a, b in zip(_outputs(jit(*args)), _outputs(fn(*args))):
        assert a.shape == b.shape and a.dtype == b.dtype
        ref.assert_same_bits(a, b, kernel)


def test_every_kernel_has_a_case():
    kernels = {k for k, _, _ in _op_cases(np.random.default_rng(0))}
    assert len(_op_cases(np.random.default_rng(0))) == 18
    # The loss ops run their WithGrad kernels (logits_grad null without with_grad); the plain
    # forwards are the bindings' (test_cuda_host, test_numpy_binding).
    assert kernels == {"BilinearForward", "BilinearBackpropInput", "ResizeBilinear", "ResizeBilinearBackpropInput",
                       "DepthwiseForward", "DepthwiseBackpropInput", "DepthwiseBackpropFilter", "UpsampleArgmax",
                       "UpsampleSoftmaxCrossEntropyWithGrad", "UpsampleSoftmaxCrossEntropyGrad", "ResizeArgmax",
                       "ResizeSoftmaxCrossEntropyWithGrad", "ResizeSoftmaxCrossEntropyGrad"}


@pytest.mark.parametrize("which", ["bilinear", "resize_grad", "argmax", "loss_grad", "loss_with_grad",
                                   "resize_loss_with_grad"])
def test_work_split_over_xla_s_threads_gives_the_same_bits(which, rng):
    # Large enough that the handlers split the work into chunks on XLA's pool.
    x = tf.constant(rng.standard_normal((2, 16, 22, 32)), tf.float32)
    if which == "bilinear":
        fn, args = (lambda a: lib.tfupsample_bilinear_upsample(a, factor=8)), [x]
    elif which == "resize_grad":
        dy = tf.constant(rng.standard_normal((2, 128, 176, 32)), tf.float32)
        fn, args = (lambda a: lib.tfupsample_resize_bilinear_grad(a, [16, 22], T=tf.float32, half_pixel_centers=True)), [dy]
    elif which == "argmax":
        fn, args = (lambda a: lib.tfupsample_upsample_argmax(a, factor=8)), [x]
    elif which == "loss_with_grad":  # many classes: the one-sweep kernel
        many = tf.constant(rng.standard_normal((2, 8, 11, 100)), tf.float32)
        fn, args = (lambda a, b: lib.tfupsample_upsample_sparse_softmax_cross_entropy(
            a, b, factor=8, with_grad=True)), [_labels(rng, (2, 64, 88), 100), many]
    elif which == "resize_loss_with_grad":
        many = tf.constant(rng.standard_normal((2, 8, 11, 100)), tf.float32)
        fn, args = (lambda a, b: lib.tfupsample_resize_sparse_softmax_cross_entropy(
            a, b, half_pixel_centers=True, with_grad=True)), [_labels(rng, (2, 61, 90), 100), many]
    else:
        labels = _labels(rng, (2, 128, 176), 32)
        _, stats, _ = lib.tfupsample_upsample_sparse_softmax_cross_entropy(labels, x, factor=8)
        g = tf.constant(rng.standard_normal((2, 128, 176)), tf.float32)
        fn, args = (lambda a, b, c, d: lib.tfupsample_upsample_sparse_softmax_cross_entropy_grad(a, b, c, d, factor=8)), [
            labels, x, stats, g]
    for a, b in zip(_outputs(tf.function(fn, jit_compile=True)(*args)), _outputs(fn(*args))):
        ref.assert_same_bits(a, b, which)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float64])
@pytest.mark.parametrize("index", [0, 3, 6, 12, 13])
def test_other_dtypes_under_xla(index, dtype, rng):
    kernel, fn, args = _op_cases(rng, dtype)[index]
    jit = tf.function(fn, jit_compile=True)
    assert f'custom_call_target="tfupsample_{kernel}"' in _hlo(jit, *args)
    for a, b in zip(_outputs(jit(*args)), _outputs(fn(*args))):
        ref.assert_same_bits(a, b, f"{kernel} {dtype.name}")


def test_gradients_through_the_tape_under_jit(rng):
    x = tf.constant(rng.standard_normal((2, 5, 7, 4)), tf.float32)
    w = tf.constant(rng.standard_normal((4, 4, 4, 1)), tf.float32)
    labels = _labels(rng, (2, 20, 28), 4, ignore=255)
    rlabels = _labels(rng, (2, 11, 13), 4)
    g = tf.constant(rng.standard_normal((2, 10, 14, 4)), tf.float32)

    def step(v, k):
        with tf.GradientTape() as tape:
            tape.watch([v, k])
            up = tu.depthwise_conv2d_transpose(tu.bilinear_upsample(v, 2), k, [2, 20, 28, 4], 2)
            loss = (tf.reduce_sum(tu.image.resize(v, [10, 14]) * g) +
                    tf.reduce_sum(tu.upsample_sparse_softmax_cross_entropy(labels, up[:, ::2, ::2], 2,
                                                                           ignore_label=255)) +
                    tf.reduce_sum(tu.upsample_sparse_softmax_cross_entropy(rlabels, v, interpolation="bilinear")))
        return (loss, *tape.gradient(loss, [v, k]))

    jit = tf.function(step, jit_compile=True)
    hlo = _hlo(jit, x, w)
    for kernel in ("BilinearForward", "BilinearBackpropInput", "DepthwiseForward", "DepthwiseBackpropInput",
                   "DepthwiseBackpropFilter", "ResizeBilinear", "ResizeBilinearBackpropInput",
                   "UpsampleSoftmaxCrossEntropyWithGrad", "ResizeSoftmaxCrossEntropyWithGrad"):
        assert f'custom_call_target="tfupsample_{kernel}"' in hlo, kernel
    a, b = jit(x, w), step(x, w)
    ref.assert_close(a[0], b[0], "float32", "loss")
    ref.assert_close(a[1], b[1], "float32", "loss_grad")
    ref.assert_close(a[2], b[2], "float32", "filter_grad")
    # And against tf.test.compute_gradient of a jit-compiled function, in float64.
    # (The resize computes in float32 whatever its input, as TF's: it is checked against the eager
    # op above.)
    v = tf.constant(rng.standard_normal((1, 3, 4, 2)))
    k = tf.constant(rng.standard_normal((3, 3, 2, 1)))
    g64 = tf.constant(rng.standard_normal((1, 6, 8, 2)))

    @tf.function(jit_compile=True)
    def f64(t):
        up = tu.bilinear_upsample(t, 2)
        return tf.reduce_sum(up * g64) + tf.reduce_sum(tu.depthwise_conv2d_transpose(t, k, [1, 6, 8, 2], 2) * up)

    theory, numeric = tf.test.compute_gradient(f64, [v])
    ref.assert_close(theory[0], numeric[0], "float64", "jacobian")


def test_errors_under_xla_are_the_ops_errors(rng):
    # Shapes unknown when traced, so that the XLA kernel's checks (the op's) meet them when it compiles.
    spec = lambda: tf.TensorSpec([None] * 4, tf.float32)  # noqa: E731
    f = tf.function(lambda a: lib.tfupsample_bilinear_upsample_grad(a, factor=2), jit_compile=True,
                    input_signature=[spec()])
    with pytest.raises(tf.errors.InvalidArgumentError, match="output_grad height and width must be multiples"):
        f(tf.zeros([1, 3, 4, 1]))
    f = tf.function(lambda a, b: lib.tfupsample_depthwise_conv2d_transpose(a, b, [1, 6, 8, 3], strides=[2, 2],
                                                                           padding="SAME"),
                    jit_compile=True, input_signature=[spec(), spec()])
    with pytest.raises(tf.errors.InvalidArgumentError, match="filter has 2 channels but input has 3"):
        f(tf.zeros([1, 3, 4, 3]), tf.zeros([4, 4, 2, 1]))
    f = tf.function(lambda a: lib.tfupsample_resize_bilinear(a, [0, 4]), jit_compile=True, input_signature=[spec()])
    with pytest.raises(tf.errors.InvalidArgumentError, match="output dimensions must be positive"):
        f(tf.zeros([1, 3, 4, 3]))
    # Label values are checked when the program runs, as the op checks them.
    logits = tf.zeros([1, 2, 2, 3])
    for label_type in (tf.int64, tf.int32):  # int32 labels are read as int32 by the handler too
        bad = tf.constant(np.full((1, 4, 4), 7), label_type)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be in \[0, 3\), got 7 at flat index 0"):
            tf.function(lambda a, b: lib.tfupsample_upsample_sparse_softmax_cross_entropy(a, b, factor=2),
                        jit_compile=True)(bad, logits)


ORDER_SCRIPT = r"""
import sys, numpy as np, tensorflow as tf
first = sys.argv[1]
x = tf.constant(np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5))
stock = lambda: tf.function(lambda v: tf.image.resize(v, [6, 8]) * 2, jit_compile=True)(x)
if first == "xla":
    stock()  # XLA's op kernels are made now, before tfupsample's ops exist
import tfupsample as tu
for fn, kernel in ((lambda v: tu.bilinear_upsample(v, 2), "BilinearForward"),
                   (lambda v: tu.upsample_argmax(v, size=(7, 9), interpolation="bilinear"), "ResizeArgmax")):
    f = tf.function(fn, jit_compile=True)
    hlo = f.experimental_get_compiler_ir(x)(stage="optimized_hlo")
    assert f'custom_call_target="tfupsample_{kernel}"' in hlo, hlo
    np.testing.assert_array_equal(f(x).numpy(), fn(x).numpy())
stock()
print("ok")
"""


@pytest.mark.parametrize("first", ["xla", "tfupsample"])
def test_both_load_orders(first):
    r = subprocess.run([sys.executable, "-c", ORDER_SCRIPT, first], capture_output=True, text=True, timeout=300,
                       cwd=tempfile.gettempdir())
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_keras_fit_with_jit_compile_takes_the_same_step(rng):
    import keras

    from tfupsample.keras import BilinearUpsampling2D, DepthwiseConv2DTranspose, UpsampledSparseCategoricalCrossentropy

    def model():
        keras.utils.set_random_seed(3)
        inputs = keras.Input((4, 5, 3))
        h = keras.layers.Conv2D(6, 1)(inputs)
        h = DepthwiseConv2DTranspose(4, strides=2)(h)
        h = BilinearUpsampling2D(2)(h)
        return keras.Model(inputs, keras.layers.Conv2D(5, 1)(h))

    x = rng.standard_normal((4, 4, 5, 3)).astype(np.float32)
    y = rng.integers(0, 5, (4, 32, 40))
    y[:, :4] = 255
    deltas = []
    for jit in (True, False):
        m = model()
        before = [v.numpy() for v in m.trainable_variables]
        m.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit,
                  loss=UpsampledSparseCategoricalCrossentropy(2, ignore_class=255))
        m.fit(x, y, epochs=1, batch_size=4, verbose=0)
        deltas.append([b - v.numpy() for b, v in zip(before, m.trainable_variables)])
    for a, b in zip(*deltas):
        assert np.abs(a).max() > 0
        ref.assert_close(a, b, "float32", "loss_grad")


def test_lowering_warns_once_for_the_heads(monkeypatch, rng):
    from tfupsample import api

    monkeypatch.setattr(api, "_lowering_warned", set())
    monkeypatch.setenv("TFUPSAMPLE_XLA_KERNELS", "0")
    assert not tu.xla_kernels() and "TFUPSAMPLE_XLA_KERNELS=0" in tu.xla_kernels_missing()
    x = tf.constant(rng.standard_normal((1, 3, 4, 5)), tf.float32)
    labels = _labels(rng, (1, 6, 8), 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            f = tf.function(lambda v: (tu.upsample_sparse_softmax_cross_entropy(labels, v, 2),
                                       tu.bilinear_upsample(v, 2)), jit_compile=True)
            hlo = _hlo(f, x)
            f(x)
    msgs = [str(w.message) for w in caught if "tfupsample" in str(w.message)]
    assert len(msgs) == 1 and "memory saving is lost" in msgs[0] and "TFUPSAMPLE_XLA_KERNELS=0" in msgs[0], msgs
    assert "tfupsample_" not in hlo
    monkeypatch.delenv("TFUPSAMPLE_XLA_KERNELS")
    assert tu.xla_kernels()


def test_handlers_that_did_not_register_mean_the_lowering(monkeypatch):
    # xla_kernels() asks the library whether XLA took its handlers; a library that cannot answer
    # (here: another of ours, without the entry point) means no custom calls, the lowering.
    import os

    from tfupsample import _ops, api

    other = os.path.join(os.path.dirname(_ops.path), next(
        f for f in os.listdir(os.path.dirname(_ops.path)) if f.startswith("_numpy_ext") and f.endswith(".so")))
    api._xla_library_missing.cache_clear()
    monkeypatch.setattr(_ops, "path", other)
    monkeypatch.setattr(_ops, "_library_strings", {})
    try:
        assert not tu.xla_kernels() and "XLA did not take the custom-call handlers" in tu.xla_kernels_missing()
    finally:
        monkeypatch.undo()
        api._xla_library_missing.cache_clear()
    assert tu.xla_kernels()


@pytest.mark.parametrize("interpolation", ["transposed_conv", "bilinear"])
@pytest.mark.parametrize("classes", [6, 70])  # the kernels' few-class rows, and the pixel loops
@pytest.mark.parametrize("taped", [True, False])
def test_a_uniform_loss_gradient_is_passed_as_one_value(interpolation, classes, taped, rng):
    # Keras' mean of the per-pixel losses: the loss map's gradient is one compile-time value.
    # Under a tape (taped) past 64 classes the loss op computes its gradient for 1 in the
    # same sweep, which the gradient scales where the upstream gradient is one value at
    # every pixel not ignored. Without a tape (tf.gradients), or at fewer classes, the gradient op
    # takes that value alone (the rule's last flag), not a map of it XLA would build. A constant
    # map of different values, or one computed from the data, still goes whole to the gradient op.
    x = tf.constant(rng.standard_normal((2, 4, 5, classes)), tf.float32)
    labels = _labels(rng, (2, 8, 10), classes, ignore=255)
    fcn = interpolation == "transposed_conv"
    kernel = "UpsampleSoftmaxCrossEntropyGrad" if fcn else "ResizeSoftmaxCrossEntropyGrad"
    varied = tf.constant(rng.standard_normal((2, 8, 10)), tf.float32)

    def weighted(v, w):
        def loss_of(v):
            losses = tu.upsample_sparse_softmax_cross_entropy(labels, v, 2 if fcn else None, ignore_label=255,
                                                              interpolation=interpolation)
            return tf.reduce_mean(losses if w is None else losses * w)
        if not taped:
            loss = loss_of(v)
            return loss, tf.gradients(loss, v)[0]
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = loss_of(v)
        return loss, tape.gradient(loss, v)

    def step(v):
        return weighted(v, None)

    def uniform_flag(f, *args):
        line = next(s for s in _hlo(f, *args).splitlines() if f'custom_call_target="tfupsample_{kernel}"' in s)
        return int(re.search(r"rule = array<i64: ([^>]*)>", line).group(1).split(",")[4])

    jit, graph = tf.function(step, jit_compile=True), tf.function(step)  # tf.gradients needs a graph
    if taped and classes > 64 and not tu._ops.gpu_visible():  # the gradient for 1 computed with the loss (the labels decide which is used)
        line = next(s for s in _hlo(jit, x).splitlines() if f'custom_call_target="tfupsample_{kernel[:-4]}WithGrad"' in s)
        assert f"f32[2,4,5,{classes}]" in line.split("custom-call(")[0], line
    else:
        assert uniform_flag(jit, x) == 1
    a, b = jit(x), graph(x)
    ref.assert_close(a[0], b[0], "float32", "loss")
    ref.assert_close(a[1], b[1], "float32", "loss_grad" if fcn else "resize_grad")
    # The float64 definition, with the mean's gradient 1 / pixels at every pixel.
    y, x64, g = labels.numpy(), x.numpy().astype(np.float64), np.full(labels.shape, 1 / labels.numpy().size)
    if fcn:
        _, expected = ref.upsample_softmax_cross_entropy(x64, y, 2, g, ignore=255)
    else:
        _, grad_up = ref.softmax_cross_entropy(ref.resize_bilinear_loop(x64, (8, 10)), y, ignore=255)
        expected = ref.resize_bilinear_grad_loop(grad_up * g[..., None], (4, 5))
    ref.assert_close(a[1], expected, "float32", "loss_grad" if fcn else "resize_grad")
    # A constant map of different values, and a map from the function's argument: passed whole.
    jit_varied = tf.function(lambda v: weighted(v, varied), jit_compile=True)
    assert uniform_flag(jit_varied, x) == 0
    ref.assert_close(jit_varied(x)[1], tf.function(weighted)(x, varied)[1], "float32",
                     "loss_grad" if fcn else "resize_grad")
    jit_weighted = tf.function(weighted, jit_compile=True)
    assert uniform_flag(jit_weighted, x, varied) == 0
    ref.assert_close(jit_weighted(x, varied)[1], tf.function(weighted)(x, varied)[1], "float32",
                     "loss_grad" if fcn else "resize_grad")
