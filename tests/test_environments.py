"""Fitting where users are: Keras objects registered by `import tfupsample`, legacy Keras
(tf_keras), export with stock ops only, multi-worker training. Each runs in a fresh process."""

import importlib.util
import os
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
from tfupsample.keras import BilinearUpsampling2D, DepthwiseConv2DTranspose, UpsampledSparseCategoricalCrossentropy
import tf_keras
assert issubclass(DepthwiseConv2DTranspose, tf_keras.layers.Layer)
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
w = tu.bilinear_upsample_weights(2, 3)
# Functional, with unknown spatial sizes: the layer equals the per-channel reference.
inp = tf.keras.Input((None, None, 3))
model = tf.keras.Model(inp, DepthwiseConv2DTranspose(4, strides=2)(inp))
np.testing.assert_allclose(model(x).numpy(), tu.depthwise_conv2d_transpose(x, w, [2, 8, 10, 3], 2).numpy(), rtol=1e-6)
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
np.testing.assert_allclose(ours.numpy(), stock.numpy(), rtol=2e-5)
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None,
                    reason="tf_keras not installed (.ci/run installs it)")
def test_layers_work_under_legacy_keras(tmp_path):
    out = _python(LEGACY, str(tmp_path), env={"TF_USE_LEGACY_KERAS": "1"})
    assert out.strip().endswith("ok")
