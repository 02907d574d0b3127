"""Peers and measurement for `tfupsample bench` and the benchmarks/ suites.

Time is the median of repeated calls; memory is the growth of the process's peak RSS during one
call (Linux: /proc/self/clear_refs resets the peak), so it counts every byte an implementation
touches, TensorFlow's temporaries included.
"""

import gc
import statistics
import time

import numpy as np
import tensorflow as tf

import tfupsample as tu
from tfupsample._ops import lib
from tfupsample._weights import bilinear_kernel_size


def _status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(fn, repeats=3):
    """(median seconds, peak RSS growth in bytes or None) of fn(), after one warm-up call."""
    fn()  # warm-up; its result is dropped at once
    times, peaks = [], []
    for _ in range(repeats):
        gc.collect()
        can_peak = _reset_peak()
        base = _status_kb("VmRSS")
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if can_peak and base is not None:
            peaks.append((_status_kb("VmHWM") - base) * 1024)
        del out
    return statistics.median(times), (max(peaks) if peaks else None)


def dense_filter_bytes(factor, classes, itemsize=4):
    k = bilinear_kernel_size(factor)
    return k * k * classes * classes * itemsize


class Problem:
    """An x`factor` upsample of [n, h, w, classes] float32 logits, NHWC."""

    def __init__(self, n, h, w, classes, factor, seed=0):
        rng = np.random.default_rng(seed)
        self.factor, self.classes = factor, classes
        self.x = tf.constant(rng.standard_normal((n, h, w, classes), dtype=np.float32))
        self.out_shape = [n, h * factor, w * factor, classes]
        self.k = bilinear_kernel_size(factor)
        self.filter = tf.constant(tu.bilinear_upsample_weights(factor, classes))
        self._dy = None

    @property
    def dy(self):
        if self._dy is None:
            self._dy = tf.random.stateless_normal(self.out_shape, seed=[1, 2])
        return self._dy

    @property
    def output_bytes(self):
        return int(np.prod(self.out_shape)) * 4

    # ---- forward peers
    def forward(self, dense_limit_bytes=1 << 30):
        f, x = self.factor, self.x
        peers = {
            "tfupsample": lambda: tu.bilinear_upsample(x, f),
            "np.full (write floor)": lambda: np.full(self.out_shape, 1.0, np.float32),
            "tf.image.resize": lambda: tf.image.resize(x, self.out_shape[1:3], "bilinear"),
            "depthwise_backprop_input": lambda: tf.nn.depthwise_conv2d_backprop_input(
                self.out_shape, self.filter, x, [1, f, f, 1], "SAME"),
        }
        if dense_filter_bytes(f, self.classes) <= dense_limit_bytes:
            dense = tf.constant(tu.bilinear_upsample_weights(f, self.classes, dense=True))
            peers["dense conv2d_transpose"] = lambda: tf.nn.conv2d_transpose(
                x, dense, self.out_shape, f, "SAME")
        return peers

    # ---- input-gradient peers (given the output gradient dy)
    def input_grad(self):
        f, dy = self.factor, self.dy
        return {
            "tfupsample": lambda: lib.tfup_bilinear_upsample_grad(dy, factor=f),
            "read dy once (floor)": lambda: tf.reduce_sum(dy),
            "tf.image.resize grad": lambda: tf.raw_ops.ResizeBilinearGrad(
                grads=dy, original_image=self.x, align_corners=False, half_pixel_centers=True),
            # The adjoint of depthwise_conv2d_backprop_input with respect to its input.
            "stock depthwise input grad": lambda: tf.nn.depthwise_conv2d(
                dy, self.filter, [1, f, f, 1], "SAME"),
        }

    # ---- filter-gradient peers
    def filter_grad(self):
        f, dy, x = self.factor, self.dy, self.x
        sizes = [self.k, self.k, self.classes, 1]
        return {
            "tfupsample": lambda: lib.tfup_depthwise_conv2d_transpose_backprop_filter(
                x, dy, sizes, strides=[f, f], padding="SAME"),
            "depthwise_backprop_filter": lambda: tf.nn.depthwise_conv2d_backprop_filter(
                dy, sizes, x, [1, f, f, 1], "SAME"),
        }
