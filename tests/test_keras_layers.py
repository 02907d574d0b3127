"""Keras layers against stock references: tf.nn.conv2d_transpose with the dense equivalent
filter, keras.layers.Conv2DTranspose's shape rules, reload in a fresh process."""

import importlib.util
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfupsample.testing import assert_close, bilinear_filter, bilinear_loop, dense_filter
from tfupsample.keras import BilinearInitializer, BilinearUpsampling2D, DepthwiseConv2DTranspose


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel,strides", [(3, 2), (1, 3), (5, 1), (4, (2, 3)), ((2, 5), (3, 2))])
def test_output_shape_follows_conv2d_transpose(padding, kernel, strides, rng):
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    ours = DepthwiseConv2DTranspose(kernel, strides, padding=padding)
    stock = keras.layers.Conv2DTranspose(3, kernel, strides, padding=padding)
    assert tuple(ours.compute_output_shape((None, 5, 6, 3))) == tuple(stock.compute_output_shape((None, 5, 6, 3)))
    assert tuple(ours(x).shape) == tuple(stock(x).shape)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_equals_dense_conv2d_transpose_with_bias(data_format, rng):
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    layer = DepthwiseConv2DTranspose((3, 4), (2, 3), padding="same", use_bias=True,
                                     kernel_initializer="glorot_uniform", bias_initializer="ones",
                                     data_format=data_format)
    xin = np.transpose(x, (0, 3, 1, 2)) if data_format == "channels_first" else x
    y = np.asarray(layer(xin))
    if data_format == "channels_first":
        y = np.transpose(y, (0, 2, 3, 1))
    w = layer.kernel.numpy()[..., 0]
    expected = tf.nn.conv2d_transpose(x, dense_filter(w), [2, 8, 15, 3], [1, 2, 3, 1], "SAME").numpy() + 1.0
    assert_close(y, expected, "float32")


def test_bilinear_initializer_makes_the_bilinear_upsample(rng):
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    for f in (2, 3, 4):
        k = 2 * f - f % 2
        layer = DepthwiseConv2DTranspose(k, f)  # kernel_initializer="bilinear" by default
        assert_close(layer(x), bilinear_loop(x, f), "float32")
        assert_close(BilinearUpsampling2D(f)(x), bilinear_loop(x, f), "float32")
    assert_close(BilinearInitializer()((4, 4, 2, 1)), bilinear_filter(2, 2)[..., None], "float32")


def test_refuses_groups_and_multipliers():
    with pytest.raises(ValueError, match="depth_multiplier=1 only"):
        DepthwiseConv2DTranspose(3, depth_multiplier=2)
    with pytest.raises(ValueError, match="groups argument is not supported"):
        DepthwiseConv2DTranspose(3, groups=4)
    with pytest.raises(ValueError, match="padding must be 'same' or 'valid'"):
        DepthwiseConv2DTranspose(3, padding="full")


def test_config_round_trip():
    layer = DepthwiseConv2DTranspose((3, 4), (2, 1), padding="valid", use_bias=True,
                                     kernel_regularizer="l2", activation="relu")
    clone = DepthwiseConv2DTranspose.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    up = BilinearUpsampling2D(4, data_format="channels_first")
    assert BilinearUpsampling2D.from_config(up.get_config()).get_config() == up.get_config()


def test_trains_the_kernel(rng):
    keras.utils.set_random_seed(7)  # the initial weights too: "the loss falls" is then repeatable
    inputs = keras.Input((4, 4, 2))
    layer = DepthwiseConv2DTranspose(4, 2)
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = layer.kernel.numpy().copy()
    x = rng.standard_normal((8, 4, 4, 2)).astype(np.float32)
    y = rng.standard_normal((8, 8, 8, 2)).astype(np.float32)
    history = model.fit(x, y, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(layer.kernel.numpy(), before)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_the_compute_dtype(policy, rng):
    layer = DepthwiseConv2DTranspose(4, 2, dtype=policy)
    up = BilinearUpsampling2D(2, dtype=policy)
    x = rng.standard_normal((1, 3, 3, 2)).astype(np.float32)
    compute = policy.split("_")[1]
    assert layer(x).dtype == compute and up(x).dtype == compute
    assert layer.kernel.dtype == "float32"


SAVE_LOAD = r"""
import sys, numpy as np, keras
import tfupsample.keras  # registers the layers
x = np.load(sys.argv[2])
model = keras.models.load_model(sys.argv[1])
np.save(sys.argv[3], np.asarray(model(x)))
"""


def test_save_and_load_in_a_fresh_process(tmp_path, rng):
    inputs = keras.Input((4, 5, 3))
    h = DepthwiseConv2DTranspose(4, 2, use_bias=True, kernel_initializer="glorot_uniform")(inputs)
    model = keras.Model(inputs, BilinearUpsampling2D(2)(h))
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    path, xpath, ypath = tmp_path / "m.keras", tmp_path / "x.npy", tmp_path / "y.npy"
    model.save(path)
    np.save(xpath, x)
    r = subprocess.run([sys.executable, "-c", SAVE_LOAD, str(path), str(xpath), str(ypath)],
                       capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr[-3000:]
    np.testing.assert_array_equal(np.load(ypath), np.asarray(model(x)))


EXPORT_LOAD = r"""
import sys, numpy as np
if sys.argv[3] == "load_ops":  # tfupsample first: nothing registered until load_ops()
    import tfupsample
    assert tfupsample.load_ops() == "op"
import tensorflow as tf
if sys.argv[3] == "import":
    import tfupsample  # registers the ops with TensorFlow
model = tf.saved_model.load(sys.argv[1])
np.save(sys.argv[2] + ".out.npy", model.serve(np.load(sys.argv[2])).numpy())
"""


def test_exported_savedmodel_reloads_after_import_tfupsample(tmp_path, rng):
    inputs = keras.Input((4, 5, 3))
    h = DepthwiseConv2DTranspose(4, 2, kernel_initializer="glorot_uniform")(inputs)
    model = keras.Model(inputs, BilinearUpsampling2D(2)(h))
    model.export(str(tmp_path / "sm"), verbose=False)
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = lambda mode: subprocess.run(  # noqa: E731
        [sys.executable, "-c", EXPORT_LOAD, str(tmp_path / "sm"), str(tmp_path / "x.npy"), mode],
        capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir())
    for mode in ("import", "load_ops"):
        r = run(mode)
        assert r.returncode == 0, r.stderr[-3000:]
        np.testing.assert_array_equal(np.load(tmp_path / "x.npy.out.npy"), np.asarray(model(x)))
    # Without the import, TensorFlow's own error names the missing op, whose name names us.
    r = run("no-import")
    assert r.returncode != 0 and "Op type not registered 'Tfupsample" in r.stderr


def test_other_backends_get_the_stock_drop_ins_and_a_clear_error(monkeypatch, rng):
    """Under a Keras backend other than TensorFlow the kernels (TensorFlow ops) cannot run: the
    resize drop-ins are the stock layers, the classes that exist only here refuse to be made."""
    import tfupsample.keras as tk
    from tfupsample import image

    monkeypatch.setattr(tk, "TF_BACKEND", False)
    monkeypatch.setattr(tk.keras.backend, "backend", lambda: "jax")

    def kernel(*args, **kwargs):
        raise AssertionError("tfupsample's resize ran")

    monkeypatch.setattr(image, "resize", kernel)
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    for ours, stock in ((tk.UpSampling2D(2, interpolation="bilinear"), tk.keras.layers.UpSampling2D(2, interpolation="bilinear")),
                        (tk.Resizing(8, 10), tk.keras.layers.Resizing(8, 10))):
        np.testing.assert_array_equal(np.asarray(ours(x)), np.asarray(stock(x)))
    for make in (lambda: tk.BilinearUpsampling2D(2), lambda: tk.DepthwiseConv2DTranspose(4, 2),
                 lambda: tk.UpsampledSparseCategoricalCrossentropy(2)):
        with pytest.raises(RuntimeError, match=r"needs Keras' TensorFlow backend; this Keras runs the 'jax' "
                                               r"backend \(set KERAS_BACKEND=tensorflow"):
            make()


JAX_BACKEND = r"""
import numpy as np, keras
import tfupsample.keras as tk
assert keras.backend.backend() == "jax"
x = np.random.default_rng(0).standard_normal((2, 4, 5, 3)).astype(np.float32)
for ours, stock in ((tk.UpSampling2D(2, interpolation="bilinear"), keras.layers.UpSampling2D(2, interpolation="bilinear")),
                    (tk.Resizing(8, 10), keras.layers.Resizing(8, 10))):
    a, b = (keras.Sequential([keras.Input((4, 5, 3)), layer]).predict(x, verbose=0) for layer in (ours, stock))
    np.testing.assert_array_equal(a, b)
try:
    tk.BilinearUpsampling2D(2)
    raise SystemExit("BilinearUpsampling2D was made under JAX")
except RuntimeError as e:
    assert "KERAS_BACKEND=tensorflow" in str(e)
layer = keras.layers.Conv2DTranspose(3, 4, 2, padding="same", kernel_initializer=tk.BilinearInitializer())
y = np.asarray(layer(x))
assert y.shape == (2, 8, 10, 3) and "jax" in type(layer.kernel.value).__module__
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax (Keras 3's JAX backend)")
def test_under_the_jax_backend_in_a_fresh_process():
    import tfupsample.keras as tk

    if tk.LEGACY:
        pytest.skip("Keras 3 only")
    r = subprocess.run([sys.executable, "-c", JAX_BACKEND], capture_output=True, text=True, timeout=300,
                       cwd=tempfile.gettempdir(), env={**os.environ, "KERAS_BACKEND": "jax"})
    assert r.returncode == 0, r.stderr[-3000:]
