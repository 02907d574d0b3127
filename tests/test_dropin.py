"""Drop-in fidelity: output_shape in every form tf.nn.conv2d_transpose takes, the channel rule of
conv2d_transpose whatever is known at trace time, one output-size rule everywhere, and the kernels
agreeing across paths and devices (bit for bit where the summation order is the same)."""

import tempfile

import numpy as np
import pytest
import tensorflow as tf

import tfupsample.testing as ref
import tfupsample as tu
import tfupsample.cuda as tc
from cuda_host import emulator
from tfupsample import _numpy_ext
from tfupsample._ops import lib

C = 3


# ---- output_shape forms ---------------------------------------------------------------------

def _shape_forms(x, out):
    """The output_shape forms stock TF accepts, for the input x (its batch maybe unknown)."""
    n = tf.shape(x)[0]
    return {
        "list": list(out), "tuple": tuple(out), "numpy": np.array(out), "int64 numpy": np.array(out, np.int64),
        "int32 tensor": tf.constant(out, tf.int32), "int64 tensor": tf.constant(out, tf.int64),
        "TensorShape": tf.TensorShape(out),
        "mixed list": [n, out[1], tf.constant(out[2]), out[3]],
        "mixed tuple int64": (tf.cast(n, tf.int64), out[1], out[2], tf.constant(out[3], tf.int64)),
        "all tensors": [tf.shape(x)[i] * (1 if i in (0, (1 if out[1] == C else 3)) else 2) for i in range(4)],
    }


@pytest.mark.parametrize("fn", ["depthwise_conv2d_transpose", "conv2d_transpose"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("traced", [False, True])
def test_output_shape_forms(fn, layout, traced, rng):
    x = rng.standard_normal((2, 3, 4, C)).astype(np.float32)
    w = rng.standard_normal((4, 4, C, 1)).astype(np.float32)
    expected = ref.transposed_conv_loop(x.astype(np.float64), w[..., 0].astype(np.float64), (6, 8), (2, 2), "SAME")
    out = [2, C, 6, 8] if layout == "NCHW" else [2, 6, 8, C]
    xin = ref.to_layout(x, layout)
    spec = [None, C, None, None] if layout == "NCHW" else [None, None, None, C]
    for name in _shape_forms(tf.constant(xin), out):
        def call(v, name=name):
            return getattr(tu, fn)(v, w, _shape_forms(v, out)[name], 2, "SAME", data_format=layout)
        if traced:
            call = tf.function(call, input_signature=[tf.TensorSpec(spec, tf.float32)])
        y = call(tf.constant(xin))
        ref.assert_close(ref.from_layout(y.numpy(), layout), expected, "float32")


def test_output_shape_bad_elements_are_named():
    x, w = tf.zeros([1, 2, 2, C]), tf.zeros([4, 4, C, 1])
    with pytest.raises(TypeError, match=r"output_shape\[2\] must be a Python int or a scalar int32/int64 tensor"):
        tu.depthwise_conv2d_transpose(x, w, [1, 4, tf.constant(4.0), C], 2)
    with pytest.raises(TypeError, match=r"output_shape\[1\] must be a Python int or a scalar"):
        tu.depthwise_conv2d_transpose(x, w, [1, 4.5, tf.constant(4), C], 2)
    with pytest.raises(ValueError, match="output_shape must be fully defined"):
        tu.depthwise_conv2d_transpose(x, w, tf.TensorShape([1, None, 4, C]), 2)


# ---- conv2d_transpose: the channel rule ------------------------------------------------------

@pytest.mark.parametrize("channels", [1, C])
@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_conv2d_transpose_means_what_stock_means(channels, known, layout, rng):
    # A [k, k, C, 1] filter: per channel on a C-channel input (stock refuses that call); on a
    # 1-channel input it is stock's 1 -> C convolution. Decided at run time when unknown.
    x = rng.standard_normal((2, 3, 4, channels)).astype(np.float32)
    w = rng.standard_normal((4, 4, C, 1)).astype(np.float32)
    out = [2, C, 6, 8] if layout == "NCHW" else [2, 6, 8, C]
    spec = [None] * 4 if not known else list(ref.to_layout(x, layout).shape)

    @tf.function(input_signature=[tf.TensorSpec(spec, tf.float32)])
    def ours(v):
        return tu.conv2d_transpose(v, w, out, 2, "SAME", data_format=layout)

    y = ref.from_layout(ours(tf.constant(ref.to_layout(x, layout))).numpy(), layout)
    if channels == C:
        expected = ref.transposed_conv_loop(x.astype(np.float64), w[..., 0], (6, 8), (2, 2), "SAME")
    else:
        expected = tf.nn.conv2d_transpose(x, w, [2, 6, 8, C], 2, "SAME").numpy()  # stock's meaning
        with pytest.raises((tf.errors.OpError, ValueError)):  # stock refuses C inputs
            tf.nn.conv2d_transpose(np.zeros((2, 3, 4, C), np.float32), w, [2, 6, 8, C], 2, "SAME")
    ref.assert_close(y, expected, "float32")


# ---- one output-size rule --------------------------------------------------------------------

GRID = [(n, k, s, p) for n in (1, 2, 3, 5) for k in (1, 2, 3, 4, 6) for s in (1, 2, 3, 4)
        for p in ("same", "valid")]


def test_output_sizes_agree_with_keras_conv2d_transpose():
    import keras

    from tfupsample.keras import DepthwiseConv2DTranspose

    for n, k, s, p in GRID:
        stock = keras.layers.Conv2DTranspose(2, k, strides=s, padding=p).compute_output_shape((1, n, n + 1, 2))
        layer = DepthwiseConv2DTranspose(k, strides=s, padding=p)
        ours = layer.compute_output_shape((1, n, n + 1, 2))
        ran = layer(np.zeros((1, n, n + 1, 2), np.float32)).shape
        P = p.upper()
        rule = (_numpy_ext.default_output_size(n, k, s, P), _numpy_ext.default_output_size(n + 1, k, s, P))
        assert tuple(stock[1:3]) == tuple(ours[1:3]) == tuple(ran[1:3]) == rule, (n, k, s, p)
        lo, hi = _numpy_ext.legal_output_sizes(n, k, s, P)
        assert lo <= rule[0] <= hi


def test_cuda_output_size_rule_is_the_cpu_rule(emu):
    ext = emulator.Ext(emu)
    for n, k, s, p in GRID:
        P = p.upper()
        assert ext.default_output_size(n, k, s, P) == _numpy_ext.default_output_size(n, k, s, P), (n, k, s, p)


def test_tfupsample_cuda_sizes_its_default_output_with_the_rule(emu, monkeypatch):
    monkeypatch.setattr(tc, "_ext", lambda: emulator.Ext(emu))
    x = emulator.HostArray(np.ones((1, 2, 2, 1), np.float32))
    w = emulator.HostArray(np.ones((2, 2, 1, 1), np.float32))
    out = emulator.HostArray(np.zeros((1, 6, 6, 1), np.float32))
    tc.depthwise_conv2d_transpose(x, w, None, 3, "VALID", out=out)  # Keras: 2 * 3 + max(2 - 3, 0)
    with pytest.raises(ValueError, match=r"out must have shape \[1, 6, 6, 1\]"):
        tc.depthwise_conv2d_transpose(x, w, None, 3, "VALID", out=emulator.HostArray(np.zeros((1, 5, 5, 1), np.float32)))


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_legal_output_sizes_are_what_stock_tf_accepts(n, rng):
    # The sizes the kernels accept are the ones tf.nn.conv2d_transpose accepts, with its answer.
    # (Left out: VALID with one input and an output shorter than the kernel, which oneDNN's stock
    # kernel accepts although no convolution maps it back to one input; we refuse it.)
    for _, k, s, p in [g for g in GRID if g[0] == 1]:
        P = p.upper()
        lo, hi = _numpy_ext.legal_output_sizes(n, k, s, P)
        x = rng.standard_normal((1, n, 2, 1)).astype(np.float32)
        w = rng.standard_normal((k, 1, 1, 1)).astype(np.float32)
        for o in range(0, hi + 3):
            if P == "VALID" and n == 1 and 0 < o < k:
                continue
            try:
                expected = tf.nn.conv2d_transpose(x, w, [1, o, 2, 1], [s, 1], P).numpy()
            except (tf.errors.OpError, ValueError):
                expected = None
            ours_ok = n == 0 or o == 0 or lo <= o <= hi
            assert (expected is not None) == ours_ok, (n, k, s, p, o, lo, hi)
            if expected is not None:
                y = tu.conv2d_transpose(x, w, [1, o, 2, 1], [s, 1], P).numpy()
                ref.assert_close(y, expected, "float32", what=str((n, k, s, p, o)))


# ---- one weight, across paths and devices ----------------------------------------------------

def test_one_bilinear_weight_everywhere():
    import keras

    from tfupsample.keras import BilinearInitializer

    for f in range(1, 65):
        k = 2 * f - f % 2
        w64, w32 = _numpy_ext.bilinear_window(k, "float64"), _numpy_ext.bilinear_window(k, "float32")
        exact = 1 - np.abs(np.arange(k) - (k - 1) / 2) / f  # the definition, float64
        np.testing.assert_allclose(w64, exact, rtol=0, atol=2e-16)
        # float32: the exact fraction correctly rounded, i.e. the float64 value rounded once.
        np.testing.assert_array_equal(w32, w64.astype(np.float32))
        np.testing.assert_array_equal(tu.bilinear_upsample_weights(f, 1)[:, :, 0, 0],
                                      np.outer(w64, w64).astype(np.float32))
    # Any window length (the Keras initializer takes any kernel size): the same formula.
    for k in range(1, 12):
        f = (k + 1) / 2
        np.testing.assert_allclose(_numpy_ext.bilinear_window(k), 1 - np.abs(np.arange(k) - (k - 1) / 2) / np.floor(f),
                                   rtol=0, atol=2e-16)
    init = BilinearInitializer()((8, 5, 2, 1), "float64")  # factors 4 and 3
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(init)[:, :, 1, 0],
                                  np.outer(_numpy_ext.bilinear_window(8), _numpy_ext.bilinear_window(5)))


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 8, 32])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bilinear_op_and_depthwise_op_with_bilinear_weights_agree_within_bound(factor, dtype, rng):
    # Not bit for bit: the bilinear op sums its four taps separably (rows of two column sums,
    # one-axis weights), the depthwise op sums four products with the 2-D weights. The bound:
    # a few roundings of values of the inputs' size.
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    y = tu.bilinear_upsample(x, factor).numpy()
    d = tu.depthwise_conv2d_transpose(x, tu.bilinear_upsample_weights(factor, 5, dtype=dtype),
                                      [2, 3 * factor, 4 * factor, 5], factor).numpy()
    eps = np.finfo(dtype).eps
    assert np.max(np.abs(y - d)) <= 4 * eps * np.max(np.abs(x)), np.max(np.abs(y - d))


def _is_bilinear(shape, k, s, padding, out_hw):
    h, w = shape[1:3]
    return (k[0] == 2 * s[0] - s[0] % 2 and k == (k[0], k[0]) and s[0] == s[1] and padding == "SAME"
            and out_hw == (h * s[0], w * s[1]))


def _cpu(dtype, layout, shape, k, s, padding, out_hw, rng):
    """The CPU ops' results for one case, with the inputs: ({name: result}, x, dy, w)."""
    n, h, w, c = shape
    lay = lambda v: np.ascontiguousarray(ref.to_layout(v, layout), dtype)  # noqa: E731
    x, dy = lay(rng.standard_normal(shape)), lay(rng.standard_normal((n, *out_hw, c)))
    wt = rng.standard_normal((*k, c)).astype(dtype)
    a = dict(strides=list(s), padding=padding, data_format=layout)
    with tf.device("/CPU:0"):
        cpu = {
            "depthwise forward": lib.tfupsample_depthwise_conv2d_transpose(x, wt[..., None], list(dy.shape), **a),
            "depthwise input grad": lib.tfupsample_depthwise_conv2d_transpose_backprop_input(dy, wt[..., None], list(x.shape), **a),
            "depthwise filter grad": lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(x, dy, [*k, c, 1], **a)[..., 0],
        }
    if _is_bilinear(shape, k, s, padding, out_hw):
        f = s[0]
        with tf.device("/CPU:0"):
            cpu["bilinear forward"] = tu.bilinear_upsample(x, f, data_format=layout)
            cpu["bilinear input grad"] = lib.tfupsample_bilinear_upsample_grad(dy, factor=f, data_format=layout)
    return {key: np.asarray(v) for key, v in cpu.items()}, x, dy, wt


def _cpu_and_cuda(emu, dtype, layout, shape, k, s, padding, out_hw, rng):
    cpu, x, dy, wt = _cpu(dtype, layout, shape, k, s, padding, out_hw, rng)
    code = {"float32": 2, "float64": 3}[dtype]
    args = tc._args(*shape, *out_hw, k, s, padding, layout)

    def run(op, *arrays):
        out = np.full(arrays[-1].shape, np.nan, dtype)
        emulator.Ext(emu).run(op, args, code, [a.ctypes.data for a in arrays[:-1]] + [out.ctypes.data], 0)
        return out

    cuda = {
        "depthwise forward": run("DepthwiseForward", x, wt, dy),
        "depthwise input grad": run("DepthwiseBackpropInput", dy, wt, x),
        "depthwise filter grad": run("DepthwiseBackpropFilter", x, dy, wt),
    }
    if _is_bilinear(shape, k, s, padding, out_hw):
        cuda["bilinear forward"] = run("BilinearForward", x, dy)
        cuda["bilinear input grad"] = run("BilinearBackpropInput", dy, x)
    return cpu, cuda


CROSS = [((2, 3, 4, 5), (4, 4), (2, 2), "SAME", (6, 8)), ((1, 3, 4, 3), (5, 5), (3, 3), "SAME", (9, 12)),
         ((2, 3, 2, 300), (6, 6), (3, 3), "SAME", (9, 6)), ((1, 4, 3, 2), (5, 3), (2, 3), "VALID", (11, 9)),
         ((1, 3, 3, 2), (7, 7), (2, 2), "SAME", (5, 6)), ((1, 2, 5, 4), (8, 8), (4, 4), "SAME", (8, 20)),
         # tall enough for row bands whose shared output rows the CPU reduces once, into a buffer
         ((1, 6, 3, 70), (16, 16), (8, 8), "SAME", (48, 24)),
         # the GPU bilinear forward's other launch shapes: NHWC rows 4-wide, channel lanes (600
         # channels: 150 vectors of 4 in float32, 300 of 2 in float64), NCHW rows of two pieces
         ((1, 3, 2, 64), (4, 4), (2, 2), "SAME", (6, 4)), ((1, 2, 2, 600), (4, 4), (2, 2), "SAME", (4, 4)),
         ((1, 2, 40, 3), (16, 16), (8, 8), "SAME", (16, 320))]


@pytest.mark.parametrize("case", CROSS, ids=str)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cpu_kernels_on_the_cross_cases_equal_the_definitions(case, layout, dtype, rng):
    # The CPU side of the comparison below, against the float64 loops (no CUDA compiler needed).
    shape, k, s, padding, out_hw = case
    cpu, x, dy, wt = _cpu(dtype, layout, shape, k, s, padding, out_hw, rng)
    x64, dy64 = (ref.from_layout(v, layout).astype(np.float64) for v in (x, dy))
    w64 = wt.astype(np.float64)
    expected = {
        "depthwise forward": ref.transposed_conv_loop(x64, w64, out_hw, s, padding),
        "depthwise input grad": ref.transposed_conv_input_grad_loop(dy64, w64, shape[1:3], s, padding),
        "depthwise filter grad": ref.transposed_conv_filter_grad_loop(x64, dy64, k, s, padding),
    }
    if _is_bilinear(shape, k, s, padding, out_hw):
        expected["bilinear forward"] = ref.bilinear_loop(x64, s[0])
        expected["bilinear input grad"] = ref.bilinear_grad_loop(dy64, s[0])
    assert set(cpu) == set(expected)
    for key, value in cpu.items():
        got = value if key == "depthwise filter grad" else ref.from_layout(value, layout)
        op = {"forward": "forward", "input grad": "input_grad", "filter grad": "filter_grad"}[key.split(" ", 1)[1]]
        ref.assert_close(got, expected[key], dtype, op, key)


@pytest.mark.parametrize("case", CROSS, ids=str)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_kernels_equal_cpu_kernels(emu, case, layout, dtype, rng):
    shape, k, s, padding, out_hw = case
    cpu, cuda = _cpu_and_cuda(emu, dtype, layout, shape, k, s, padding, out_hw, rng)
    for key in cpu:
        if key == "depthwise filter grad":
            # The one kernel whose order differs: the GPU sums fixed chunks of rows, then the
            # chunks in order; the CPU one running sum. Bound: the usual sum-of-n error.
            terms = shape[0] * shape[1] * shape[2]
            scale = np.max(np.abs(cpu[key]))
            assert np.max(np.abs(cpu[key] - cuda[key])) <= terms * np.finfo(dtype).eps * max(scale, 1), key
        else:  # same taps in the same order: the same bits
            np.testing.assert_array_equal(cuda[key], cpu[key], err_msg=key)


def test_run_time_size_check_is_the_kernels_rule():
    # The stock-op path checks sizes known only when the graph runs with TF ops
    # (api._dynamic_geometry_check): the same verdicts as the kernel's own check, over a grid.
    from tfupsample.api import _dynamic_geometry_check

    for n in (0, 1, 2, 3):
        for _, k, s, p in [g for g in GRID if g[0] == 1]:
            P = p.upper()
            for o in range(0, n * s + k + 2):
                kernel = _numpy_ext.check_depthwise_geometry([1, n, 1, 1], [o, 1], [k, 1], [s, 1], P)
                try:
                    _dynamic_geometry_check(tf.zeros([1, n, 1, 1]), tf.zeros([k, 1, 1, 1]),
                                            tf.constant([1, o, 1, 1]), (s, 1), P, "NHWC")
                    ok = True
                except tf.errors.InvalidArgumentError:
                    ok = False
                assert ok == (kernel == ""), (n, k, s, p, o, kernel)
