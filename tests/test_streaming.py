"""Outputs larger than the cores' caches are written with non-temporal stores (straight from
registers, or a few KB into the cache and then streamed out). TFUPSAMPLE_STREAM_BYTES=0 streams
every output, so small odd shapes (rows not a multiple of 16 bytes, chunk tails) check the
streamed paths against stock TF: the resize bit for bit, the bilinear upsample against the dense
transposed convolution."""

import os
import subprocess
import sys
import tempfile

SCRIPT = r"""
import sys
import numpy as np, tensorflow as tf
import tfupsample as tu, tfupsample.testing as ref
from tfupsample import _numpy_ext
sys.path.insert(0, sys.argv[2])
from test_streaming import outputs
streamed = _numpy_ext.stream_threshold_bytes() == 0
rng = np.random.default_rng(5)
for shape, size in (((2, 7, 9, 5), (23, 31)), ((1, 3, 4, 1000), (13, 9)), ((3, 5, 6, 3), (2, 3))):
    x = tf.constant(rng.standard_normal(shape), tf.float32)
    for fmt in ("NHWC", "NCHW"):
        xin = ref.to_layout(x, fmt)
        ours = ref.from_layout(tu.image.resize(xin, size, data_format=fmt), fmt)
        np.testing.assert_array_equal(np.asarray(ours), tf.image.resize(x, size).numpy())
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        xd = tf.cast(x, dtype)
        for f in (2, 3):
            ref.assert_close(tu.bilinear_upsample(xd, f), ref.dense_bilinear(xd, f), dtype, "forward")
for stream in (True, False):  # the benchmark's floors: an unaligned start and a tail
    buf = np.zeros(40999, np.float32)
    _numpy_ext.fill(buf[1:], 2.5, stream)
    assert buf[0] == 0 and (buf[1:] == 2.5).all()
np.savez(sys.argv[1], streamed=streamed, **outputs())
print("ok")
"""


def outputs():
    """Outputs whose streamed and unstreamed bits must agree (the forwards and the argmaxes'
    labels and scores): pixel widths below, at and across a 64-byte line (19, 16, 150, 1000
    channels), row widths that end mid-line, infinities (the one-tap edge pixels must not add a
    second term)."""
    import numpy as np
    import tensorflow as tf
    import tfupsample as tu

    rng = np.random.default_rng(11)
    out = {}
    for c, f, h, w in ((19, 3, 3, 5), (16, 2, 2, 3), (150, 4, 2, 3), (1000, 2, 2, 2), (7, 5, 2, 3)):
        x = rng.standard_normal((2, h, w, c)).astype(np.float32)
        x[0, 0, 0, :3] = [np.inf, -np.inf, np.nan]
        x[1, -1, -1, -2:] = [np.inf, 3e38]
        out[f"up_{c}_{f}"] = tu.bilinear_upsample(tf.constant(x), f).numpy()
        out[f"resize_{c}"] = tu.image.resize(tf.constant(x), [h * f + 1, w * f - 1]).numpy()
        for interpolation, size in (("transposed_conv", None), ("bilinear", [h * f + 1, w * f - 1])):
            labels, scores = tu.upsample_argmax(tf.constant(x), None if size else f, size=size,
                                                interpolation=interpolation, return_scores=True)
            out[f"argmax_{interpolation}_{c}"], out[f"scores_{interpolation}_{c}"] = labels.numpy(), scores.numpy()
    return out


def _run(env_value, path=""):
    env = dict(os.environ, TFUPSAMPLE_STREAM_BYTES=env_value, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-c", SCRIPT, path, os.path.dirname(__file__)], capture_output=True,
                          text=True, env=env, cwd=tempfile.gettempdir(), timeout=600)


def test_streamed_outputs_equal_stock_tf_and_the_unstreamed_bits(tmp_path):
    import numpy as np
    from tfupsample import testing as ref

    out = _run("0", str(tmp_path / "streamed.npz"))
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
    streamed = dict(np.load(tmp_path / "streamed.npz"))
    assert bool(streamed.pop("streamed"))
    plain = outputs()  # small: not streamed in this process
    assert set(plain) == set(streamed)
    for key, value in plain.items():
        ref.assert_same_bits(streamed[key], value, key)


def test_threshold_is_the_cache_or_the_override():
    from tfupsample import _numpy_ext

    env = os.environ.get("TFUPSAMPLE_STREAM_BYTES")
    assert _numpy_ext.stream_threshold_bytes() == (int(env) if env else _numpy_ext.stream_threshold_bytes())
    assert env or _numpy_ext.stream_threshold_bytes() >= 1 << 20  # the cores' L2s, at least 1 MiB
    # A value that is not a non-negative integer is ignored (the cache size is used).
    code = "from tfupsample import _numpy_ext; print(_numpy_ext.stream_threshold_bytes())"
    for bad in ("-5", "lots", ""):
        env_bad = dict(os.environ, TFUPSAMPLE_STREAM_BYTES=bad)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_bad,
                             cwd=tempfile.gettempdir(), timeout=120)
        assert out.returncode == 0 and int(out.stdout) >= 1 << 20, (bad, out.stderr[-2000:])


def test_stream_fill_op_writes_its_shape_with_the_value():
    # The benchmark's write floor: an op that streams a constant into its output.
    import numpy as np
    import pytest
    import tensorflow as tf

    from tfupsample._ops import lib

    for shape in ([3, 4, 5], [40999], [2, 0, 3], []):
        y = lib.tfupsample_stream_fill(tf.constant(shape, tf.int64), value=2.5)
        assert y.shape == tuple(shape) and y.dtype == tf.float32
        np.testing.assert_array_equal(y.numpy(), np.full(shape, 2.5, np.float32))
    for bad, match in (([[1, 2]], "shape must be a 1-D tensor"), ([-1, 3], "non-negative")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            lib.tfupsample_stream_fill(tf.constant(bad, tf.int64))
