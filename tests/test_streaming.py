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
import numpy as np, tensorflow as tf
import tfupsample as tu, tfupsample.testing as ref
from tfupsample import _numpy_ext
assert _numpy_ext.stream_threshold_bytes() == 0
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
    buf[7] = -1e6
    assert _numpy_ext.read(buf[1:]) == 2.5 * 40997 - 1e6 and _numpy_ext.read(buf[:0]) == 0
print("ok")
"""


def _run(env_value):
    env = dict(os.environ, TFUPSAMPLE_STREAM_BYTES=env_value, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir(), timeout=600)


def test_streamed_outputs_equal_stock_tf():
    out = _run("0")
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


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
