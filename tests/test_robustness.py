"""Determinism, threads, tf.distribute, tensors past 2^31 elements."""

import os
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
from tfupsample.testing import assert_close, bilinear_loop, transposed_conv_loop

RUN_SCRIPT = r"""
import sys, numpy as np, tensorflow as tf
threads = int(sys.argv[2])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
if sys.argv[3] == "1":
    tf.config.experimental.enable_op_determinism()
import tfupsample as tu
from tfupsample._ops import lib
rng = np.random.default_rng(3)
out = {}
for layout in ("NHWC", "NCHW"):
    x = tf.constant(rng.standard_normal((2, 12, 10, 40)).astype(np.float32))
    w = tf.constant(rng.standard_normal((6, 5, 40, 1)).astype(np.float32))
    if layout == "NCHW":
        x = tf.transpose(x, [0, 3, 1, 2])
    shape = [2, 36, 20, 40] if layout == "NHWC" else [2, 40, 36, 20]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, w])
        up = tu.bilinear_upsample(x, 4, data_format=layout)
        dw = tu.depthwise_conv2d_transpose(x, w, shape, [3, 2], data_format=layout)
        loss = tf.reduce_sum(up * up) + tf.reduce_sum(tf.sin(dw))
    gx, gw = tape.gradient(loss, [x, w])
    out.update({f"{layout}_up": up.numpy(), f"{layout}_dw": dw.numpy(), f"{layout}_gx": gx.numpy(),
                f"{layout}_gw": gw.numpy()})
np.savez(sys.argv[1], **out)
"""


def _run(tmp_path, name, threads, determinism):
    path = str(tmp_path / f"{name}.npz")
    r = subprocess.run([sys.executable, "-c", RUN_SCRIPT, path, str(threads), determinism],
                       capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(np.load(path))


def test_bitwise_identical_across_runs_and_thread_counts(tmp_path):
    """Forward and gradients: same bits with 1 or 2 intra-op threads, run after run, and with
    tf.config.experimental.enable_op_determinism() (which every kernel honours: none of them has
    a non-deterministic path)."""
    a = _run(tmp_path, "a", 2, "0")
    b = _run(tmp_path, "b", 2, "0")
    c = _run(tmp_path, "c", 1, "0")
    d = _run(tmp_path, "d", 2, "1")
    for key in a:
        for other in (b, c, d):
            np.testing.assert_array_equal(a[key], other[key], err_msg=key)


def test_threads_calling_at_once_get_their_own_results(rng):
    inputs = [rng.standard_normal((1, 5 + i, 4, 3)) for i in range(8)]
    filters = [rng.standard_normal((3, 3, 3, 1)) for _ in range(8)]
    results, errors = [None] * 8, []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            for _ in range(5):
                up = tu.bilinear_upsample(inputs[i], 2 + i % 3).numpy()
                dw = tu.depthwise_conv2d_transpose(inputs[i], filters[i], [1, 2 * (5 + i), 8, 3], 2).numpy()
            results[i] = (up, dw)
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, (up, dw) in enumerate(results):
        assert_close(up, bilinear_loop(inputs[i], 2 + i % 3))
        assert_close(dw, transposed_conv_loop(inputs[i], filters[i][..., 0], (2 * (5 + i), 8), (2, 2), "SAME"))


DISTRIBUTE_SCRIPT = r"""
import sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tfupsample as tu
from tfupsample.testing import assert_close
rng = np.random.default_rng(5)
X = rng.standard_normal((8, 4, 4, 3)).astype(np.float32)
Y = rng.standard_normal((8, 8, 8, 3)).astype(np.float32)
W0 = tu.bilinear_upsample_weights(2, 3)

def train(strategy):
    with strategy.scope():
        w = tf.Variable(W0)
        opt = tf.keras.optimizers.SGD(0.05)
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((X, Y)).batch(8))

    @tf.function
    def step(x, y):
        def replica(x, y):
            with tf.GradientTape() as tape:
                pred = tu.depthwise_conv2d_transpose(x, w, tf.stack([tf.shape(x)[0], 8, 8, 3]), 2)
                loss = tf.reduce_sum((pred - y) ** 2) / 8.0
            opt.apply_gradients([(tape.gradient(loss, w), w)])
        strategy.run(replica, (x, y))

    for _ in range(3):
        for x, y in ds:
            step(x, y)
    return w.numpy()

two = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
one = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
assert not np.allclose(one, W0), "training did not move the weights"
assert_close(two, one, "float32", "filter_grad")
print("ok")
"""


def test_mirrored_strategy_matches_one_device():
    r = subprocess.run([sys.executable, "-c", DISTRIBUTE_SCRIPT], capture_output=True, text=True,
                       timeout=300, cwd=tempfile.gettempdir())
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


@pytest.mark.slow
def test_output_past_2_pow_31_elements(rng):
    """float16 [1, 46, 46, 1024] x32: 2.22e9 output elements (> 2^31). Values at positions on both
    sides of 2^31, and the very last, against the definition."""
    x16 = tf.cast(rng.standard_normal((1, 46, 46, 1024)), tf.float16)
    y = tu.bilinear_upsample(x16, 32)
    assert y.shape == (1, 1472, 1472, 1024)
    n_out = 1472 * 1472 * 1024
    assert n_out > 2**31
    flat = tf.reshape(y, [-1])
    x64 = tf.cast(x16, tf.float64).numpy()
    picks = [0, 2**31 - 1, 2**31, 2**31 + 12345, n_out - 1] + list(rng.integers(2**31, n_out, 20))
    values = tf.cast(tf.gather(flat, picks), tf.float64).numpy()
    for idx, got in zip(picks, values):
        oy, rem = divmod(int(idx), 1472 * 1024)
        ox, c = divmod(rem, 1024)
        # The two rows and columns the pixel reads, and their weights, from the definition.
        win = x64[:, max(0, oy // 32 - 1): oy // 32 + 2, max(0, ox // 32 - 1): ox // 32 + 2, c:c + 1]
        ref = bilinear_loop(win, 32)  # the window holds every input the pixel reads
        ry = oy - 32 * max(0, oy // 32 - 1)
        rx = ox - 32 * max(0, ox // 32 - 1)
        expected = ref[0, ry, rx, 0]
        assert abs(got - expected) <= 2e-3 * max(1.0, abs(expected)), (idx, got, expected)
    del y, flat


def test_output_too_large_to_index_is_an_error_before_any_allocation():
    # Whatever the host's overcommit policy: sizes past int64 are refused by the checks, in the
    # wrapper and in the kernel (test_errors covers the raw op).
    with pytest.raises(ValueError, match="too large"):
        tu.bilinear_upsample(np.ones((1, 1, 1, 4), np.float32), 2**31)
