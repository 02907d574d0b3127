"""Fitting where users are: Keras objects registered by `import tfupsample`, legacy Keras
(tf_keras), export with stock ops only, multi-worker training. Each runs in a fresh process."""

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, *args, env=None, timeout=300):
    full = dict(os.environ, **(env or {}))
    full.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                       text=True, timeout=timeout, cwd=tempfile.gettempdir(), env=full)
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r.stdout


SAVE = """
import sys, numpy as np, keras
import tfupsample.keras as tk
inp = keras.Input((4, 5, 3))
out = tk.DepthwiseConv2DTranspose(4, strides=2, use_bias=True)(tk.BilinearUpsampling2D(2)(inp))
model = keras.Model(inp, out)
model.compile("sgd", tk.UpsampledSparseCategoricalCrossentropy(1, ignore_class=255))
model.save(sys.argv[1])
x = np.random.default_rng(0).standard_normal((1, 4, 5, 3)).astype("float32")
np.save(sys.argv[2], model(x).numpy())
"""

LOAD = """
import sys, numpy as np
{imports}
model = keras.models.load_model(sys.argv[1])
x = np.random.default_rng(0).standard_normal((1, 4, 5, 3)).astype("float32")
np.testing.assert_array_equal(model(x).numpy(), np.load(sys.argv[2]))
assert "tfupsample.keras" in sys.modules
print("ok")
"""


@pytest.mark.parametrize("imports", ["import tfupsample\nimport keras", "import keras\nimport tfupsample"])
def test_keras_files_load_after_import_tfupsample_in_either_order(imports, tmp_path):
    path, ref = str(tmp_path / "m.keras"), str(tmp_path / "y.npy")
    _python(SAVE, path, ref)
    assert _python(LOAD.format(imports=imports), path, ref).strip().endswith("ok")


def test_numpy_and_cuda_uses_import_neither_keras_nor_tensorflow():
    _python("""
        import sys, numpy as np
        import tfupsample, tfupsample.numpy, tfupsample.cuda
        tfupsample.numpy.bilinear_upsample(np.ones((2, 2, 1), np.float32), 2)
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
    """)


LEGACY = """
import os, sys, numpy as np
import tensorflow as tf
import tfupsample as tu
from tfupsample.testing import assert_close
from tfupsample.keras import BilinearUpsampling2D, DepthwiseConv2DTranspose, UpsampledSparseCategoricalCrossentropy
import tf_keras
assert issubclass(DepthwiseConv2DTranspose, tf_keras.layers.Layer)
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
w = tu.bilinear_upsample_weights(2, 3)
# Functional, with unknown spatial sizes: the layer equals the per-channel reference.
inp = tf.keras.Input((None, None, 3))
model = tf.keras.Model(inp, DepthwiseConv2DTranspose(4, strides=2)(inp))
assert_close(model(x), tu.depthwise_conv2d_transpose(x, w, [2, 8, 10, 3], 2), "float32")
# Sequential, trained, saved and loaded.
seq = tf.keras.Sequential([tf.keras.Input((4, 5, 3)), BilinearUpsampling2D(2),
                           DepthwiseConv2DTranspose(4, strides=2, use_bias=True)])
seq.compile("sgd", "mse")
seq.fit(x, np.ones((2, 16, 20, 3), np.float32), verbose=0)
path = os.path.join(sys.argv[1], "m.keras")
seq.save(path)
np.testing.assert_array_equal(tf.keras.models.load_model(path)(x).numpy(), seq(x).numpy())
# The loss, as tf_keras' own SparseCategoricalCrossentropy(ignore_class=...) of the upsample.
logits = tf.constant(rng.standard_normal((2, 4, 5, 6)), tf.float32)
labels = rng.integers(0, 6, (2, 8, 10))
labels[:, :4] = 255
ours = UpsampledSparseCategoricalCrossentropy(2, ignore_class=255)(labels, logits)
stock = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)(
    labels, tu.bilinear_upsample(logits, 2, impl="dense"))
assert_close(ours, stock, "float32", "loss")
# The drop-ins for tf_keras' own bilinear layers: the same outputs and dtypes.
from tfupsample.keras import Resizing, UpSampling2D
for policy in ("float32", "mixed_float16"):
    for a, b in ((UpSampling2D((2, 3), interpolation="bilinear", dtype=policy),
                  tf_keras.layers.UpSampling2D((2, 3), interpolation="bilinear", dtype=policy)),
                 (Resizing(7, 9, dtype=policy), tf_keras.layers.Resizing(7, 9, dtype=policy))):
        ya, yb = a(x), b(x)
        assert ya.dtype == yb.dtype and ya.shape == yb.shape, (policy, ya.dtype, yb.dtype)
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None,
                    reason="tf_keras not installed (.ci/run installs it)")
def test_layers_work_under_legacy_keras(tmp_path):
    out = _python(LEGACY, str(tmp_path), env={"TF_USE_LEGACY_KERAS": "1"})
    assert out.strip().endswith("ok")


EXPORT = """
import sys, numpy as np, tensorflow as tf, keras
import tfupsample as tu
from tfupsample.keras import BilinearUpsampling2D, DepthwiseConv2DTranspose, Resizing, UpSampling2D
out_dir = sys.argv[1]
from tfupsample import testing as ref
inp = keras.Input((4, 5, 3))  # batch unknown
conv, dw = keras.layers.Conv2D(6, 1), DepthwiseConv2DTranspose(4, strides=2, use_bias=True)
model = keras.Model(inp, dw(BilinearUpsampling2D(2)(conv(inp))))
dw.bias.assign(np.linspace(-1, 1, 6).astype(np.float32))
# tf.image.resize's users: the Keras drop-ins, and the argmax in resize semantics at another size.
rconv = keras.layers.Conv2D(6, 1)
rmodel = keras.Model(inp, Resizing(13, 11)(UpSampling2D((2, 3), interpolation="bilinear")(rconv(inp))))


class Head(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4, 5, 6], tf.float32)])
    def __call__(self, logits):
        return tu.upsample_argmax(logits, 4, output_type=tf.int32)


class ResizeHead(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4, 5, 6], tf.float32)])
    def __call__(self, logits):
        return tu.upsample_argmax(logits, size=[13, 11], interpolation="bilinear", output_type=tf.int32)


x = np.random.default_rng(0).standard_normal((2, 4, 5, 3)).astype(np.float32)
logits = np.random.default_rng(1).standard_normal((2, 4, 5, 6)).astype(np.float32)
with tu.stock_ops():
    model.export(out_dir + "/model", verbose=False)
    tf.saved_model.save(Head(), out_dir + "/head")
    rmodel.export(out_dir + "/rmodel", verbose=False)
    tf.saved_model.save(ResizeHead(), out_dir + "/rhead")
for name in ("model", "head", "rmodel", "rhead"):
    assert b"Tfupsample" not in open(f"{out_dir}/{name}/saved_model.pb", "rb").read(), name
np.save(out_dir + "/x.npy", x)
np.save(out_dir + "/y.npy", model(x).numpy())  # the compiled kernels, for comparison
np.save(out_dir + "/ry.npy", rmodel(x).numpy())
np.save(out_dir + "/logits.npy", logits)
np.save(out_dir + "/labels.npy", tu.upsample_argmax(logits, 4).numpy())
np.save(out_dir + "/rlabels.npy", tu.upsample_argmax(logits, size=[13, 11], interpolation="bilinear").numpy())
# The float64 definitions (tfupsample.testing's loops with the model's weights), for the served
# and converted models too.
h = np.einsum("nhwc,cd->nhwd", x.astype(np.float64), conv.kernel.numpy()[0, 0]) + conv.bias.numpy()
y_ref = ref.transposed_conv_loop(ref.bilinear_loop(h, 2), dw.kernel.numpy()[..., 0], (16, 20), (2, 2), "SAME")
np.save(out_dir + "/y_ref.npy", y_ref + dw.bias.numpy())
labels_ref, clear, _ = ref.argmax_reference(logits, 4, "float32")  # clear: no near-tie to swap
np.save(out_dir + "/labels_ref.npy", labels_ref)
np.save(out_dir + "/clear.npy", clear)
rh = np.einsum("nhwc,cd->nhwd", x.astype(np.float64), rconv.kernel.numpy()[0, 0]) + rconv.bias.numpy()
np.save(out_dir + "/ry_ref.npy", ref.resize_bilinear_loop(ref.resize_bilinear_loop(rh, (8, 15), "half_pixel"),
                                                          (13, 11), "half_pixel"))
rlabels_ref, rclear, _ = ref.argmax_reference(logits, None, "float32", size=(13, 11))
np.save(out_dir + "/rlabels_ref.npy", rlabels_ref)
np.save(out_dir + "/rclear.npy", rclear)
"""

SERVE = """
import sys, numpy as np, tensorflow as tf
out_dir = sys.argv[1]
tol = {"model": float(sys.argv[2]), "rmodel": float(sys.argv[3])}  # tfupsample.testing's bounds, from the caller
x, logits = np.load(out_dir + "/x.npy"), np.load(out_dir + "/logits.npy")
got = {n: np.load(f"{out_dir}/{n}.npy") for n in ("y", "ry", "labels", "rlabels", "y_ref", "ry_ref", "labels_ref",
                                                  "rlabels_ref", "clear", "rclear")}
# What each exported model must give: the compiled kernels' result, the float64 definition and,
# for the label maps, the pixels where no near-tie can swap the winner.
expected = {"model": ("y", "y_ref", None), "rmodel": ("ry", "ry_ref", None),
            "head": ("labels", "labels_ref", "clear"), "rhead": ("rlabels", "rlabels_ref", "rclear")}
def check(name, out, exact=False):
    compiled, definition, clear = (got[k] if k else None for k in expected[name])
    if clear is None:
        if exact:  # stock TF's ResizeBilinear serves the resize: the compiled kernels' bits
            np.testing.assert_array_equal(out, compiled)
        for e in (compiled, definition):
            assert np.abs(out - e).max() <= tol[name] * max(1, np.abs(e).max()), (name, np.abs(out - e).max())
    else:
        assert clear.mean() > 0.9, (name, clear.mean())
        assert (out != compiled).mean() < 1e-3, (name, (out != compiled).mean())  # ties may break by rounding
        assert (out[clear] == definition[clear]).all(), name
# A process without tfupsample: the SavedModels load and run on stock ops.
for name in ("model", "rmodel"):
    loaded = tf.saved_model.load(f"{out_dir}/{name}")  # (held: its functions use its variables)
    check(name, loaded.serve(x).numpy(), exact=name == "rmodel")
for name in ("head", "rhead"):
    loaded = tf.saved_model.load(f"{out_dir}/{name}")
    check(name, loaded(logits).numpy())
# And they convert to TFLite; the interpreter runs them at a batch size chosen now.
for name, inp in (("model", x), ("head", logits), ("rmodel", x), ("rhead", logits)):
    conv = tf.lite.TFLiteConverter.from_saved_model(f"{out_dir}/{name}")
    it = tf.lite.Interpreter(model_content=conv.convert())
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], list(inp.shape))
    it.allocate_tensors()
    it.set_tensor(d["index"], inp)
    it.invoke()
    check(name, it.get_tensor(it.get_output_details()[0]["index"]))
assert not any(m.startswith("tfupsample") for m in sys.modules), "tfupsample was imported"
print("ok")
"""


def test_export_with_stock_ops_serves_and_converts_without_tfupsample(tmp_path):
    _python(EXPORT, str(tmp_path))
    from tfupsample.testing import tolerance

    assert _python(SERVE, str(tmp_path), str(tolerance("forward", "float32")),
                   str(tolerance("resize", "float32"))).strip().endswith("ok")


def test_stock_op_lowering_under_xla_with_unknown_batch_and_sizes(rng):
    import numpy as np
    import tensorflow as tf

    import tfupsample.testing as ref
    import tfupsample as tu

    conv = tf.keras.layers.Conv2D(3, 1)
    w = tf.constant(rng.standard_normal((5, 3, 3, 1)), tf.float32)

    def net(x):
        h = conv(x)
        n, hh, ww = tf.shape(h)[0], tf.shape(h)[1], tf.shape(h)[2]
        up = tu.bilinear_upsample(h, 2)
        d = tu.depthwise_conv2d_transpose(h, w, [n, 2 * hh, 3 * ww, 3], [2, 3], "SAME")
        return up, d, tu.upsample_argmax(h, 2)

    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    expected = [v.numpy() for v in net(tf.constant(x))]
    for spec in ([None, 4, 5, 3], [None, None, None, 3]):
        xla = tf.function(net, jit_compile=True, input_signature=[tf.TensorSpec(spec, tf.float32)])
        got = xla(tf.constant(x))
        ref.assert_close(got[0].numpy(), expected[0], "float32")
        ref.assert_close(got[1].numpy(), expected[1], "float32")
        assert (got[2].numpy() != expected[2]).mean() < 1e-3
        # And against the float64 definitions, from the same 1x1 convolution's output.
        h = conv(tf.constant(x)).numpy().astype(np.float64)
        ref.assert_close(got[0].numpy(), ref.bilinear_loop(h, 2), "float32")
        ref.assert_close(got[1].numpy(), ref.transposed_conv_loop(h, w.numpy()[..., 0].astype(np.float64), (8, 15),
                                                                  (2, 3), "SAME"), "float32")
        ref.assert_argmax_matches_loop(got[2].numpy(), None, h, 2, "float32")


def _free_ports(count):
    import socket

    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_training_matches_one_process(tmp_path):
    # Two worker processes on localhost, MultiWorkerMirroredStrategy and a custom training loop
    # (examples/multi_worker.py): both end with the same weights, those of one process training
    # on the same global batches.
    import numpy as np

    script = os.path.join(ROOT, "examples", "multi_worker.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The workers must know each other's ports before they start, so the ports are picked free
    # here and may be taken by another process before a worker binds them: then try new ones.
    for attempt in range(3):
        workers = ",".join(f"localhost:{p}" for p in _free_ports(2))
        procs = [subprocess.Popen([sys.executable, script, "--workers", workers, "--index", str(i),
                                   "--out", str(tmp_path / f"w{i}.npy")], cwd=tempfile.gettempdir(),
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(2)]
        try:
            outs = [p.communicate(timeout=240)[0] for p in procs]
        finally:
            for p in procs:
                p.kill()
        taken = any(re.search(r"address already in use|failed to bind|could not start grpc server", out, re.I)
                    for p, out in zip(procs, outs) if p.returncode != 0)
        if not taken:
            break
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    subprocess.run([sys.executable, script, "--out", str(tmp_path / "one.npy")], check=True,
                   cwd=tempfile.gettempdir(), env=env, capture_output=True, timeout=240)
    w0, w1, one = (np.load(tmp_path / f"{n}.npy") for n in ("w0", "w1", "one"))
    np.testing.assert_array_equal(w0, w1)
    from tfupsample.testing import assert_close

    assert_close(w0, one, "float32", "filter_grad")
