"""Under XLA the public functions run the kernels as custom calls (tests/test_xla.py), or the
stock-op lowering where those cannot run (TFUPSAMPLE_XLA_KERNELS=0 stands for that here); when the
compiled library cannot load they run on stock ops: the same results either way, gradients by
autodiff on the lowering."""

import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
from tfupsample.testing import (assert_close, bilinear_grad_loop, bilinear_loop, from_nchw, to_nchw,
                                transposed_conv_filter_grad_loop, transposed_conv_input_grad_loop, transposed_conv_loop)

CASES = [((2, 3), (3, 4), "SAME", None), ((2, 1), (5, 2), "VALID", None), ((3, 2), (1, 1), "SAME", None),
         ((2, 2), (7, 6), "SAME", (5, 7))]


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("factor", [1, 2, 3, 8])
def test_bilinear_under_xla(factor, data_format, rng, xla_path):
    x = rng.standard_normal((2, 4, 5, 3))
    xin = to_nchw(x) if data_format == "NCHW" else x
    g = rng.standard_normal((2, 4 * factor, 5 * factor, 3))
    gin = to_nchw(g) if data_format == "NCHW" else g

    def step(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = tu.bilinear_upsample(t, factor, data_format=data_format)
            loss = tf.reduce_sum(y * gin)
        return y, tape.gradient(loss, t)

    y_xla, dx_xla = tf.function(step, jit_compile=True)(tf.constant(xin))
    y_op, dx_op = step(tf.constant(xin))
    expected = bilinear_loop(x, factor)
    assert_close(from_nchw(y_xla) if data_format == "NCHW" else y_xla, expected)
    assert_close(dx_xla, dx_op, op="input_grad")
    dx = from_nchw(dx_xla) if data_format == "NCHW" else dx_xla
    assert_close(dx, bilinear_grad_loop(g, factor), op="input_grad")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_depthwise_under_xla(case, data_format, rng, xla_path):
    (sy, sx), (kh, kw), pad, out_hw = case
    x = rng.standard_normal((2, 3, 4, 5))
    w = rng.standard_normal((kh, kw, 5, 1))
    oh, ow = out_hw or ((3 * sy, 4 * sx) if pad == "SAME" else (2 * sy + kh, 3 * sx + kw))
    shape = [2, oh, ow, 5] if data_format == "NHWC" else [2, 5, oh, ow]
    xin = to_nchw(x) if data_format == "NCHW" else x
    g = rng.standard_normal(shape)

    def step(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            y = tu.depthwise_conv2d_transpose(a, b, shape, [sy, sx], pad, data_format=data_format)
            loss = tf.reduce_sum(y * g)
        return (y, *tape.gradient(loss, [a, b]))

    xla = tf.function(step, jit_compile=True)(tf.constant(xin), tf.constant(w))
    op = step(tf.constant(xin), tf.constant(w))
    expected = transposed_conv_loop(x, w[..., 0], (oh, ow), (sy, sx), pad)
    assert_close(from_nchw(xla[0]) if data_format == "NCHW" else xla[0], expected)
    for a, b, what in zip(xla[1:], op[1:], ("input_grad", "filter_grad")):
        assert_close(a, b, op=what)
    g64 = from_nchw(g) if data_format == "NCHW" else g
    dx = from_nchw(xla[1]) if data_format == "NCHW" else xla[1]
    assert_close(dx, transposed_conv_input_grad_loop(g64, w[..., 0], (3, 4), (sy, sx), pad), op="input_grad")
    assert_close(xla[2][..., 0], transposed_conv_filter_grad_loop(x, g64, (kh, kw), (sy, sx), pad), op="filter_grad")


def test_backend_reports_the_compiled_ops():
    assert tu.backend() == "op"


def test_impl_op_under_xla_runs_the_kernel_or_says_why_not(monkeypatch):
    x = tf.ones([1, 2, 3, 2])
    eager = tu.bilinear_upsample(x, 2, impl="op").numpy()
    np.testing.assert_array_equal(eager, tu.bilinear_upsample(x, 2).numpy())
    if tu.xla_kernels():
        np.testing.assert_array_equal(
            tf.function(lambda v: tu.bilinear_upsample(v, 2, impl="op"), jit_compile=True)(x).numpy(), eager)
    monkeypatch.setenv("TFUPSAMPLE_XLA_KERNELS", "0")
    with pytest.raises(RuntimeError, match="impl='op' cannot run under XLA .* TFUPSAMPLE_XLA_KERNELS=0"):
        tf.function(lambda v: tu.bilinear_upsample(v, 2, impl="op"), jit_compile=True)(x)
    # impl="auto" lowers to stock ops there.
    assert tf.function(lambda v: tu.bilinear_upsample(v, 2), jit_compile=True)(x).shape == (1, 4, 6, 2)


FALLBACK_SCRIPT = r"""
import warnings, numpy as np, tensorflow as tf
def refuse(path):
    raise tf.errors.NotFoundError(None, None, "undefined symbol: _ZN10tensorflow8OpKernel11TraceString (forced)")
tf.load_op_library = refuse
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import tfupsample as tu
    tu.bilinear_upsample(np.ones((1, 2, 2, 1), np.float32), 2)  # first use loads the ops
msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and "tfupsample" in str(w.message)]
assert len(msgs) == 1, msgs
assert "forced" in msgs[0] and "Falling back" in msgs[0], msgs[0]
# It names the TensorFlow built against and the one running, and the fix (which keeps TF as is).
assert f"this process has TensorFlow {tf.__version__}" in msgs[0] and "built against TensorFlow" in msgs[0], msgs[0]
assert "pip install --force-reinstall --no-deps" in msgs[0], msgs[0]
assert tu.backend() == "pure-tf"
rng = np.random.default_rng(0)
x = tf.constant(rng.standard_normal((1, 3, 4, 2)))
w = tf.constant(rng.standard_normal((4, 4, 2, 1)))
with tf.GradientTape() as tape:
    tape.watch([x, w])
    y1 = tu.bilinear_upsample(x, 2)
    y2 = tu.conv2d_transpose(x, w, [1, 6, 8, 2], 2)
    loss = tf.reduce_sum(y1) + tf.reduce_sum(y2 * y2)
dx, dw = tape.gradient(loss, [x, w])
# Sizes known only at run time: the stock-op path checks them when the graph runs.
f = tf.function(lambda x, s: tu.depthwise_conv2d_transpose(x, tf.ones([4, 4, 2, 1], tf.float64), s, 2),
                input_signature=[tf.TensorSpec([None, None, None, 2], tf.float64), tf.TensorSpec([4], tf.int32)])
assert f(x, tf.constant([1, 6, 8, 2])).shape == (1, 6, 8, 2)
try:
    f(x, tf.constant([1, 9, 8, 2]))
    raise SystemExit("a bad run-time output_shape was accepted")
except tf.errors.InvalidArgumentError as e:
    assert "output_shape is inconsistent" in str(e), str(e)
# impl="op" insists on the kernel, and says why it cannot run.
try:
    tu.bilinear_upsample(x, 2, impl="op")
    raise SystemExit("impl='op' ran without the compiled library")
except RuntimeError as e:
    assert "impl='op'" in str(e) and "forced" in str(e), str(e)
# The benchmarks time the stock-op path and say so.
from tfupsample.tools import bench, bench_cli
rows = bench_cli.run([3], [2], (2, 3), 1, 64, progress=open("/dev/null", "w"))
ours = [r for r in rows if r["impl"] == "tfupsample"]
assert ours and all("stock-op fallback" in r.get("note", "") for r in ours), rows
p = bench.Problem(1, 2, 3, 3, 2)
for peers in (p.input_grad(), p.filter_grad()):
    assert "stock-op fallback" in peers["tfupsample"].note
    bench.measure(peers["tfupsample"], 1, 1)
np.savez(__import__("sys").argv[1], x=x.numpy(), w=w.numpy(), y1=y1.numpy(), y2=y2.numpy(), dx=dx.numpy(), dw=dw.numpy())
"""


def test_load_failure_falls_back_to_stock_ops(tmp_path):
    path = str(tmp_path / "out.npz")
    r = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT, path], capture_output=True, text=True,
                       timeout=300, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr[-3000:]
    d = np.load(path)
    assert_close(d["y1"], bilinear_loop(d["x"], 2))
    assert_close(d["y2"], transposed_conv_loop(d["x"], d["w"][..., 0], (6, 8), (2, 2), "SAME"))
    # Gradients against our compiled ops in this process.
    x, w = tf.constant(d["x"]), tf.constant(d["w"])
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        y2 = tu.conv2d_transpose(x, w, [1, 6, 8, 2], 2)
        loss = tf.reduce_sum(tu.bilinear_upsample(x, 2)) + tf.reduce_sum(y2 * y2)
    dx, dw = tape.gradient(loss, [x, w])
    assert_close(d["dx"], dx, op="input_grad")
    assert_close(d["dw"], dw, op="filter_grad")
    # And against the float64 definitions: d/dx of sum(up(x)) + sum(y2^2), and d/dw of sum(y2^2).
    y2 = transposed_conv_loop(d["x"], d["w"][..., 0], (6, 8), (2, 2), "SAME")
    expected_dx = (bilinear_grad_loop(np.ones((1, 6, 8, 2)), 2)
                   + transposed_conv_input_grad_loop(2 * y2, d["w"][..., 0], (3, 4), (2, 2), "SAME"))
    assert_close(d["dx"], expected_dx, op="input_grad")
    assert_close(d["dw"][..., 0], transposed_conv_filter_grad_loop(d["x"], 2 * y2, (4, 4), (2, 2), "SAME"),
                 op="filter_grad")


def test_inconsistent_output_shape_is_refused_under_xla():
    f = tf.function(lambda x: tu.depthwise_conv2d_transpose(x, np.ones((4, 4, 3, 1)), [1, 9, 10, 3], 2),
                    jit_compile=True)
    with pytest.raises(ValueError, match="output size 9 is inconsistent"):
        f(tf.zeros([1, 4, 5, 3], tf.float64))


def test_xla_kernels_are_built_where_tensorflow_allows():
    # TF 2.21's wheel has what the XLA custom calls need; TF 2.16's has no typed FFI: the build
    # leaves them out there and says so (a silent probe failure would skip tests/test_xla.py).
    version = tuple(int(p) for p in tf.__version__.split(".")[:2])
    if tu.backend() != "op" or tf.config.list_logical_devices("GPU"):
        pytest.skip("needs the compiled library and no GPU")
    if version >= (2, 21):
        assert tu.xla_kernels(), tu.xla_kernels_missing()
    elif version <= (2, 16):
        assert not tu.xla_kernels()
        assert "built without its XLA kernels (no XLA FFI headers" in tu.xla_kernels_missing()


GPU_WITHOUT_CUDA_SCRIPT = r"""
import warnings, tensorflow as tf
real = tf.config.list_physical_devices
tf.config.list_physical_devices = lambda kind=None: (
    [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")] if kind == "GPU" else real(kind))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import tfupsample as tu  # (TF is imported: this loads the ops)
    tu.load_ops()
from tfupsample import _build_info
msgs = [str(w.message) for w in caught if "tfupsample" in str(w.message)]
if _build_info.CUDA_KERNELS:
    assert not [m for m in msgs if "without its CUDA kernels" in m], msgs
else:
    assert len(msgs) == 1 and "a GPU is visible but tfupsample was built without its CUDA kernels" in msgs[0], msgs
print("ok")
"""


def test_a_gpu_without_cuda_kernels_is_warned_about_once():
    r = subprocess.run([sys.executable, "-c", GPU_WITHOUT_CUDA_SCRIPT], capture_output=True, text=True,
                       timeout=300, cwd=tempfile.gettempdir())
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
