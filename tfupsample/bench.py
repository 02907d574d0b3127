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
from tfupsample import _ops
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


def measure(fn, repeats=3, warmup=3):
    """(median seconds, peak RSS growth in bytes or None) of fn(), after `warmup` calls (the
    allocator needs a few to reach its steady state of reused, already-mapped buffers).

    A Peer run on fewer channels has its time scaled and no memory figure."""
    for _ in range(warmup):
        fn()  # its result is dropped at once
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
    scale = getattr(fn, "scale", 1.0)
    if scale != 1.0:
        return statistics.median(times) * scale, None
    return statistics.median(times), (max(peaks) if peaks else None)


class Peer:
    """A callable to time; `scale` multiplies its time when it runs on fewer channels than the
    problem (a per-channel op's cost is linear in the channel count), and `note` says so."""

    def __init__(self, fn, scale=1.0, note=None):
        self.fn, self.scale, self.note = fn, scale, note

    def __call__(self):
        return self.fn()


# Stock depthwise_conv2d_backprop_input loops over every kernel tap for every output element: at
# [1,16,22,100] x32 it took 42 s on the 2-vCPU dev machine. Above this many channels it is timed
# on this many and scaled.
SLOW_PEER_CHANNELS = 4


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
            "tfupsample": self._ours(lambda: tu.bilinear_upsample(x, f)),
            "np.full (write floor)": lambda: np.full(self.out_shape, 1.0, np.float32),
            "tf.image.resize": lambda: tf.image.resize(x, self.out_shape[1:3], "bilinear"),
            "depthwise_backprop_input": self._depthwise_backprop_input(),
        }
        if dense_filter_bytes(f, self.classes) <= dense_limit_bytes:
            dense = tf.constant(tu.bilinear_upsample_weights(f, self.classes, dense=True))
            peers["dense conv2d_transpose"] = lambda: tf.nn.conv2d_transpose(
                x, dense, self.out_shape, f, "SAME")
        return peers

    def _depthwise_backprop_input(self):
        c = min(self.classes, SLOW_PEER_CHANNELS)
        x, w = self.x[..., :c], self.filter[:, :, :c]
        shape = self.out_shape[:3] + [c]
        fn = lambda: tf.nn.depthwise_conv2d_backprop_input(  # noqa: E731
            shape, w, x, [1, self.factor, self.factor, 1], "SAME")
        if c == self.classes:
            return Peer(fn)
        return Peer(fn, self.classes / c, f"time scaled from {c} classes")

    @staticmethod
    def _ours(op, fallback=None):
        """Our op; where the compiled library did not load (`backend() == "pure-tf"`) the row is
        marked, and a gradient op is replaced by the stock-op lowering's autodiff gradient
        (`fallback`, which includes that forward)."""
        if _ops.lib is not None:
            return op
        note = "stock-op fallback (library not loaded)"
        if fallback is not None:
            note += ": forward + autodiff gradient"
        return Peer(fallback or op, 1.0, note)

    @staticmethod
    def _vjp(fn, x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, x, output_gradients=dy)

    # ---- input-gradient peers (given the output gradient dy)
    def input_grad(self):
        f, dy = self.factor, self.dy
        return {
            "tfupsample": self._ours(
                lambda: _ops.lib.tfupsample_bilinear_upsample_grad(dy, factor=f),
                lambda: self._vjp(lambda x: tu.bilinear_upsample(x, f), self.x, dy)),
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
            "tfupsample": self._ours(
                lambda: _ops.lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(
                    x, dy, sizes, strides=[f, f], padding="SAME"),
                lambda: self._vjp(lambda w: tu.depthwise_conv2d_transpose(
                    x, w, self.out_shape, f, "SAME"), self.filter, dy)),
            "depthwise_backprop_filter": lambda: tf.nn.depthwise_conv2d_backprop_filter(
                dy, sizes, x, [1, f, f, 1], "SAME"),
        }

    # ---- fused heads
    @property
    def labels(self):
        rng = np.random.default_rng(1)
        return tf.constant(rng.integers(0, self.classes, self.out_shape[:3]))

    def argmax(self):
        f, x = self.factor, self.x
        return {
            "tfupsample upsample_argmax": lambda: tu.upsample_argmax(x, f),
            "tf.image.resize + tf.argmax": lambda: tf.argmax(
                tf.image.resize(x, self.out_shape[1:3], "bilinear"), -1),
            "bilinear_upsample + tf.argmax": lambda: tf.argmax(tu.bilinear_upsample(x, f), -1),
        }

    def loss_and_grad(self):
        """Loss forward + gradient to the coarse logits, three ways."""
        f, x, labels = self.factor, self.x, self.labels

        def run(loss_fn):
            def step():
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(loss_fn())
                return tape.gradient(loss, x)
            return step

        c = min(self.classes, SLOW_PEER_CHANNELS)
        xs, ws = tf.Variable(self.x[..., :c]), tf.Variable(self.filter[:, :, :c])
        small_labels = tf.math.floormod(labels, c)

        def stock():
            with tf.GradientTape() as tape:  # the stock pipeline, filter trainable as in FCN
                up = tf.nn.depthwise_conv2d_backprop_input(self.out_shape[:3] + [c], ws, xs, [1, f, f, 1], "SAME")
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(small_labels, up))
            return tape.gradient(loss, [xs, ws])

        peers = {
            "tfupsample fused loss": run(lambda: tu.upsample_sparse_softmax_cross_entropy(labels, x, f)),
            "bilinear_upsample + stock loss": run(lambda: tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, tu.bilinear_upsample(x, f))),
        }
        peers["stock depthwise pipeline"] = Peer(stock, self.classes / c,
                                                 f"time scaled from {c} classes") if c < self.classes else Peer(stock)
        return peers
