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
from tfupsample import _ops, testing
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


def measure_once(fn):
    """(seconds, peak RSS growth in bytes or None) of one call of fn(), its result touched."""
    gc.collect()
    can_peak = _reset_peak()
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    _touch(out)
    seconds = time.perf_counter() - t0
    peak = (_status_kb("VmHWM") - base) * 1024 if can_peak and base is not None else None
    del out
    return seconds, peak


def summarize(fn, calls):
    """(median seconds, largest peak growth or None) of measure_once results; a Peer run on
    fewer channels has its time scaled and no memory figure."""
    seconds = statistics.median(t for t, _ in calls)
    peaks = [p for _, p in calls if p is not None]
    scale = getattr(fn, "scale", 1.0)
    if scale != 1.0:
        return seconds * scale, None
    return seconds, (max(peaks) if peaks else None)


def measure(fn, repeats=3, warmup=3):
    """(median seconds, peak RSS growth in bytes or None) of fn(), after `warmup` calls (the
    allocator needs a few to reach its steady state of reused, already-mapped buffers)."""
    for _ in range(warmup):
        fn()  # its result is dropped at once
    return summarize(fn, [measure_once(fn) for _ in range(repeats)])


class Peer:
    """A callable to time; `scale` multiplies its time when it runs on fewer channels than the
    problem (a per-channel op's cost is linear in the channel count), and `note` says so."""

    def __init__(self, fn, scale=1.0, note=None):
        self.fn, self.scale, self.note = fn, scale, note

    def __call__(self):
        return self.fn()


# Stock depthwise_conv2d_backprop_input without oneDNN loops over every kernel tap for every
# output element (minutes at 1000 classes x32); with oneDNN it takes a fraction of a second. A
# slow peer is probed on this many channels first, and scaled only if a real call would take
# over a minute.
SLOW_PEER_CHANNELS = 4
MINUTE = 60.0


def dense_filter_bytes(factor, classes, itemsize=4):
    k = bilinear_kernel_size(factor)
    return k * k * classes * classes * itemsize


class Problem:
    """An x`factor` upsample of [n, h, w, classes] float32 logits, NHWC."""

    def __init__(self, n, h, w, classes, factor, seed=0, logits="random"):
        rng = np.random.default_rng(seed)
        self.factor, self.classes = factor, classes
        if logits == "segmentation":
            self.x = segmentation_logits(n, h, w, classes, seed)
        else:
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
            "write floor": write_floor(self.out_shape),
            "tf.image.resize": lambda: tf.image.resize(x, self.out_shape[1:3], "bilinear"),
            "depthwise_backprop_input": self._depthwise_backprop_input(),
        }
        if dense_filter_bytes(f, self.classes) <= dense_limit_bytes:
            dense = tf.constant(tu.bilinear_upsample_weights(f, self.classes, dense=True))
            peers["dense conv2d_transpose"] = lambda: tf.nn.conv2d_transpose(
                x, dense, self.out_shape, f, "SAME")
        return peers

    def _depthwise_backprop_input(self):
        return scaled_peer(lambda c: lambda: tf.nn.depthwise_conv2d_backprop_input(
            self.out_shape[:3] + [c], self.filter[:, :, :c], self.x[..., :c],
            [1, self.factor, self.factor, 1], "SAME"), self.classes)

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
            "read dy once (floor)": read_floor(dy),
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

        def stock_on(c):
            xs, ws = tf.Variable(self.x[..., :c]), tf.Variable(self.filter[:, :, :c])
            small_labels = tf.math.floormod(labels, c)

            def stock():
                with tf.GradientTape() as tape:  # the stock pipeline, filter trainable as in FCN
                    up = tf.nn.depthwise_conv2d_backprop_input(self.out_shape[:3] + [c], ws, xs, [1, f, f, 1], "SAME")
                    loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(small_labels, up))
                return tape.gradient(loss, [xs, ws])
            return stock

        peers = {
            "tfupsample fused loss": run(lambda: tu.upsample_sparse_softmax_cross_entropy(labels, x, f)),
            "bilinear_upsample + stock loss": run(lambda: tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, tu.bilinear_upsample(x, f))),
            "stock depthwise pipeline": scaled_peer(stock_on, self.classes),
        }
        return peers


# ------------------------------------------------------------------------------------------------
# The machine, floors, and the targets: every figure a ratio measured in one run.

def cpu_info():
    """(model name, set of ISA flags) of this CPU, from /proc/cpuinfo where there is one."""
    import platform

    flags = set()
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def environment():
    """What the figures depend on: CPU, ISA, cores, TensorFlow build, oneDNN, threads."""
    import os

    from tfupsample import numpy as tnp

    model, flags = cpu_info()
    try:
        from tensorflow.python.util import _pywrap_util_port

        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        onednn = None
    dist = "unknown"
    try:
        import importlib.metadata as md

        for name in ("tensorflow-cpu", "tensorflow", "tensorflow-intel"):
            try:
                dist = f"{name} {md.version(name)}"
                break
            except md.PackageNotFoundError:
                continue
    except ImportError:
        pass
    return {
        "cpu": model, "isa": sorted(flags & {"avx2", "avx512f", "avx512bw", "f16c", "fma"}),
        "cores": os.cpu_count(), "tensorflow": dist, "onednn": onednn,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default (all cores)",
        "kernel_isa": tnp.kernel_isa(), "kernel_x_pass": tnp.kernel_x_pass(), "backend": tu.backend(),
        "transparent_hugepages": transparent_hugepages(),
        "last_level_cache_mb": round(last_level_cache_bytes() / 2**20) or "unknown",
    }


def _touch(result):
    """Wait for a result. An op on the CPU in TF's synchronous eager execution (the default) has
    finished when its call returns: nothing to read. Reading an element would itself be an op
    call, ~2 ms from an emptied cache on the 2-core VM, charged to calls with tensor results and
    not to a floor's scalar (the read floor). Elsewhere, one element of each tensor is read (never
    a whole large tensor: `.numpy()` copies it)."""
    done = tf.executing_eagerly() and tf.config.experimental.get_synchronous_execution()
    for r in result if isinstance(result, (tuple, list)) else (result,):
        if done and isinstance(r, tf.Tensor) and r.device.endswith("CPU:0"):
            continue
        if isinstance(r, tf.Tensor) and r.shape.rank:
            r[(0,) * r.shape.rank].numpy()
        elif isinstance(r, tf.Tensor):
            r.numpy()


def last_level_cache_bytes():
    """The CPU's last-level cache in bytes (sysfs), or 0 where it cannot be read."""
    import glob

    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=0)


def transparent_hugepages():
    """The kernel's THP mode ("always", "madvise", "never"), or "unknown"."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
    except OSError:
        return "unknown"
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else "unknown"


_EVICT = {}


def cache_evictor():
    """A callable that reads a buffer of twice the last-level cache (at most 2 GiB), so that the
    timed call after it finds none of its tensors in the cache: with a last-level cache of
    hundreds of MB, whichever call ran just before would otherwise leave a peer or a floor part of
    its input cached and read it faster than memory. None where the cache size is unknown."""
    size = min(2 * last_level_cache_bytes(), 2 << 30)
    if size == 0:
        return None
    if size not in _EVICT:
        _EVICT[size] = tf.ones([size // 4], tf.float32)
    buf = _EVICT[size]
    return lambda: tf.reduce_sum(buf).numpy()


def timed_calls(fns, repeats=7, warmup=2, evict=True):
    """Each call's seconds (a list per fn) of fns, called in turn, round after round, so that a
    slow spell of the machine hits all of them alike; each result touched. `repeats` is one count
    for all, or a list of one per fn (one with fewer sits some rounds out, spread evenly, so that
    its calls still span the whole run). With `evict`, the cache is emptied (cache_evictor,
    untimed) before each timed call, so every peer and floor starts from memory alike."""
    counts = list(repeats) if isinstance(repeats, (list, tuple)) else [repeats] * len(fns)
    flush = cache_evictor() if evict else None
    for _ in range(warmup):
        for fn in fns:
            _touch(fn())
    times = [[] for _ in fns]
    rounds = max(counts, default=0)
    for k in range(rounds):
        for i, fn in enumerate(fns):
            if (k + 1) * counts[i] // rounds > k * counts[i] // rounds:  # counts[i] of the rounds, evenly
                if flush is not None:
                    flush()
                t0 = time.perf_counter()
                _touch(fn())
                times[i].append(time.perf_counter() - t0)
    return times


def timed_together(fns, repeats=7, warmup=2, evict=True):
    """Median seconds of each of fns: timed_calls' medians."""
    return [statistics.median(t) for t in timed_calls(fns, repeats, warmup, evict)]


def timed_ms(fns, repeats=7):
    """fns timed together (timed_calls): (each one's median in ms, a Peer's scaled by its `scale`;
    each call's seconds, unscaled, for calls_note)."""
    calls = timed_calls(fns, repeats)
    return [statistics.median(t) * 1e3 * getattr(fn, "scale", 1.0) for fn, t in zip(fns, calls)], calls


def calls_note(ours, floor, note=None):
    """A floor row's note with the range of the single calls behind its two medians (lists of
    seconds), in ms: on a shared VM the memory runs in fast and slow spells, some shorter than a
    run, so a ratio far from its usual value shows here whether a floor's calls fell in a fast
    spell that ours missed, or ours ran slow throughout."""
    spread = lambda t: f"{min(t) * 1e3:.1f}-{max(t) * 1e3:.1f}"  # noqa: E731
    calls = f"calls: ours {spread(ours)} ms, floor {spread(floor)} ms"
    return f"{note}; {calls}" if note else calls


def timed(fn, repeats=7, warmup=2):
    """Median seconds of fn() over `repeats` calls after `warmup`, each result touched."""
    return timed_together([fn], repeats, warmup)[0]


def write_floor(shape, dtype=tf.float32):
    """Writing the output's bytes once on every core, the fastest way this machine has for its
    size, as an op: plain stores (`tf.fill`) or non-temporal ones (our `TfupsampleStreamFill`
    op, which only streams a constant into its output, as the kernels stream their large
    outputs), whichever is faster in a short untimed trial. Both are TF ops writing memory from
    TF's allocator, so the floor pays what every op pays besides its writes -- dispatch from an
    emptied cache (~1.1 ms for a 1-element op on the 2-core VM) and allocation -- as the kernels
    do. (A fill of a NumPy buffer from Python skips that dispatch; a single-threaded NumPy refill
    is no floor on a multi-core machine.) The floor's `kind` says which won ("plain stores" or
    "streaming stores"); the target rows print it (_floor_note)."""
    plain = lambda: tf.fill(shape, tf.constant(1, dtype))  # noqa: E731
    plain.kind = "plain stores"
    if tf.as_dtype(dtype) != tf.float32 or _ops.lib is None:  # (the library did not load: plain)
        return plain
    dims = tf.constant(shape, tf.int64)
    stream = lambda: _ops.lib.tfupsample_stream_fill(dims, value=1.0)  # noqa: E731
    stream.kind = "streaming stores"
    times = timed_together([plain, stream], repeats=3, warmup=1)
    return plain if times[0] <= times[1] else stream


def _floor_note(floor, note=None):
    """A target row's note, with the write floor's kind where it has one."""
    kind = getattr(floor, "kind", None)
    parts = [p for p in (note, kind and f"floor: {kind}") if p]
    return "; ".join(parts) or None


def read_floor(t):
    """Reading a tensor once: tf.reduce_sum."""
    return lambda: tf.reduce_sum(t)


def segmentation_logits(n, h, w, classes, seed=0, lead=8.0):
    """Segmentation-like logits (tfupsample.testing's): a smooth label field (a few blobs),
    one-hot x `lead` plus unit noise, so one class leads by a margin almost everywhere."""
    x = testing.segmentation_logits(np.random.default_rng(seed), (n, h, w, classes), lead, blobs=6)
    return tf.constant(x.astype(np.float32))


def scaled_peer(make, classes):
    """A per-channel stock peer as a Peer: make(c) is the call on c channels. Timed for real
    unless a probe on a few channels says the real call would take over a minute (stock
    depthwise ops without oneDNN can); then run on the few channels and scaled, and said."""
    c = min(classes, SLOW_PEER_CHANNELS)
    estimate = timed(make(c), repeats=1, warmup=1) * classes / c
    if c == classes or estimate <= MINUTE:
        return Peer(make(classes))
    return Peer(make(c), classes / c, f"time scaled from {c} classes (a real call: ~{estimate:.0f} s)")


class Target:
    """One target: `ours` against `ref` (a floor or a peer) as ours / ref (`at_most`: the ratio
    must not exceed `limit`) or ref / ours (`faster`: ours must be at least `limit` x faster)."""

    def __init__(self, name, ours_ms, ref_name, ref_ms, kind, limit, note=None, unit="ms"):
        self.name, self.ours_ms, self.ref_name, self.ref_ms = name, ours_ms, ref_name, ref_ms
        self.kind, self.limit, self.note, self.unit = kind, limit, note, unit
        self.ratio = ours_ms / ref_ms if kind == "at_most" else ref_ms / ours_ms
        self.met = self.ratio <= limit if kind == "at_most" else self.ratio >= limit

    def line(self):
        if self.kind == "at_most":
            ratio = f"ours/{self.ref_name} {self.ratio:.2f}x, target <= {self.limit:g}x"
        else:
            better = ("less" if self.ratio >= 1 else "more") if self.unit != "ms" else (
                "faster" if self.ratio >= 1 else "slower")
            ratio = f"{self.ref_name}/ours {self.ratio:.2f}x (ours {better}), target >= {self.limit:g}x"
        note = f" [{self.note}]" if self.note else ""
        u = self.unit
        return (f"{'MET   ' if self.met else 'MISSED'} {self.name}: ours {self.ours_ms:.1f} {u}, "
                f"{self.ref_name} {self.ref_ms:.1f} {u}, {ratio}{note}")

    def as_dict(self):
        return {k: getattr(self, k) for k in ("name", "ours_ms", "ref_name", "ref_ms", "kind",
                                              "limit", "ratio", "met", "note", "unit")}


# The resize targets' shapes: ADE20K-like logits to 512 x 512, Cityscapes-like to 1024 x 2048
# (both half-pixel, tf.image.resize), DeepLab's 65 -> 513 with align_corners.
RESIZE_SHAPES = (("ADE20K-like [8,64,64,150] -> 512x512", (8, 64, 64, 150), (512, 512), False),
                 ("Cityscapes-like [2,128,256,19] -> 1024x2048", (2, 128, 256, 19), (1024, 2048), False),
                 ("DeepLab [8,65,65,21] -> 513x513 align_corners", (8, 65, 65, 21), (513, 513), True))


# Ours and a floor take this many times the rounds of the stock peers: their calls take
# milliseconds, and on a shared VM single calls of either swing by 1.5x, so that a median of 7
# moved a floor ratio by up to 0.3 between runs; the extra rounds cost seconds, where one more
# round of a stock peer can cost a second.
FLOOR_ROUNDS = 3


def resize_targets(repeats=7, shapes=RESIZE_SHAPES):
    """The resize targets (tfupsample.image against tf.image.resize / ResizeBilinearGrad and the
    machine's write and read floors), timed together per shape; a list of Target."""
    out = []
    for name, shape, size, align in shapes:
        rng = np.random.default_rng(0)
        x = tf.constant(rng.standard_normal(shape, np.float32))
        conv = dict(align_corners=align, half_pixel_centers=not align)
        n, _, _, c = shape
        out_shape = [n, *size, c]
        rounds = [FLOOR_ROUNDS * repeats, repeats, FLOOR_ROUNDS * repeats]  # ours, stock, floor
        wf = write_floor(out_shape)
        (ours, stock, floor), calls = timed_ms([
            lambda: tu.image.resize_bilinear(x, size, **conv),
            lambda: tf.raw_ops.ResizeBilinear(images=x, size=size, **conv),
            wf], rounds)
        mb = int(np.prod(out_shape)) * 4 / 1e6
        out += [Target(f"resize forward, {name}, vs tf.image.resize", ours, "tf.image.resize", stock, "faster", 1.5),
                Target(f"resize forward, {name}, vs the write floor ({mb:.0f} MB)", ours, "write floor", floor,
                       "at_most", 1.3, calls_note(calls[0], calls[2], _floor_note(wf)))]
        dy = tf.constant(rng.standard_normal(out_shape, np.float32))
        del rng
        hw = tf.constant(shape[1:3], tf.int32)  # made once, as the peer's original_image is
        (ours, stock, floor), calls = timed_ms([
            lambda: tu._ops.lib.tfupsample_resize_bilinear_grad(dy, hw, T=tf.float32, **conv),
            lambda: tf.raw_ops.ResizeBilinearGrad(grads=dy, original_image=x, **conv),
            read_floor(dy)], rounds)
        out += [Target(f"resize input gradient, {name}, vs ResizeBilinearGrad", ours, "ResizeBilinearGrad", stock,
                       "faster", 2.0),
                Target(f"resize input gradient, {name}, vs the read floor", ours, "read floor", floor, "at_most", 1.3,
                       calls_note(calls[0], calls[2]))]
    return out


def _loss_step(x, loss_fn):
    """A training step's loss part as a user runs it: the loss and its gradient to x."""
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_fn()
        return tape.gradient(loss, x)
    return step


# The heads' shapes: (name, logits shape, factor, whether the FCN-semantics heads are timed too).
HEAD_CASES = (("ADE20K-like [8,64,64,150] -> 512x512", (8, 64, 64, 150), 8, False),
              ("VOC-like [8,128,128,21] x4", (8, 128, 128, 21), 4, True),
              ("Cityscapes-like [2,128,256,19] x8", (2, 128, 256, 19), 8, True))


def head_targets(repeats=3, cases=HEAD_CASES):
    """The fused heads in tf.image.resize's semantics at the ADE20K-like shape, and both semantics'
    heads at few classes (VOC-like x4, Cityscapes-like x8), against the unfused paths."""
    ms = lambda s: s * 1e3  # noqa: E731
    out = []
    rng = np.random.default_rng(0)
    for name, (n, h, w, c), f, few in cases:
        size = (h * f, w * f)
        x = segmentation_logits(n, h, w, c)
        labels = tf.constant(rng.integers(0, c, (n, *size)))
        resize_ms = [ms(t) for t in timed_together([
            _loss_step(x, lambda: tu.upsample_sparse_softmax_cross_entropy(labels, x, interpolation="bilinear")),
            _loss_step(x, lambda: tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.image.resize(x, size))),
            lambda: tu.upsample_argmax(x, size=size, interpolation="bilinear"),
            lambda: tf.argmax(tf.image.resize(x, size), -1)], repeats)]
        out += [Target(f"fused loss + gradient, resize semantics, {name}", resize_ms[0],
                       "tf.image.resize + stock loss + gradient", resize_ms[1], "faster", 4.0),
                Target(f"upsample_argmax, resize semantics, segmentation logits, {name}", resize_ms[2],
                       "tf.image.resize + tf.argmax", resize_ms[3], "faster", 5.0)]
        if few:
            fcn_ms = [ms(t) for t in timed_together([
                _loss_step(x, lambda: tu.upsample_sparse_softmax_cross_entropy(labels, x, f)),
                _loss_step(x, lambda: tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tu.bilinear_upsample(x, f))),
                lambda: tu.upsample_argmax(x, f), lambda: tf.argmax(tu.bilinear_upsample(x, f), -1)], repeats)]
            out += [Target(f"fused loss + gradient, FCN semantics, {name}", fcn_ms[0],
                           "bilinear_upsample + stock loss + gradient", fcn_ms[1], "faster", 3.0),
                    Target(f"upsample_argmax, FCN semantics, segmentation logits, {name}", fcn_ms[2],
                           "bilinear_upsample + tf.argmax", fcn_ms[3], "faster", 5.0)]
    return out


# One training step's loss and gradient in resize semantics, the first in a fresh process (every
# buffer it needs is then new memory): prints the peak RSS growth in bytes. argv: fused|unfused,
# then n h w classes and the output's height and width.
_HEAD_STEP = r"""
import sys, numpy as np, tensorflow as tf, tfupsample as tu
from tfupsample.tools import bench
n, h, w, c, oh, ow = (int(v) for v in sys.argv[2:8])
x = bench.segmentation_logits(n, h, w, c)
labels = tf.constant(np.random.default_rng(0).integers(0, c, (n, oh, ow)))
step = bench._loss_step(x, (lambda: tu.upsample_sparse_softmax_cross_entropy(labels, x, interpolation="bilinear"))
                        if sys.argv[1] == "fused" else (lambda: tf.nn.sparse_softmax_cross_entropy_with_logits(
                            labels, tf.image.resize(x, [oh, ow]))))
bench._reset_peak()
base = bench._status_kb("VmRSS")
bench._touch(step())
print((bench._status_kb("VmHWM") - base) * 1024)
"""


def _fresh_process(script, mode, *args, env=None):
    """The last line script (a measurement) prints, run in a fresh Python process with argv mode,
    *args, outside any checkout (whose tfupsample/ would be the unbuilt one)."""
    import subprocess
    import sys
    import tempfile

    r = subprocess.run([sys.executable, "-c", script, mode, *map(str, args)], capture_output=True, text=True,
                       timeout=600, cwd=tempfile.gettempdir(), env=env)
    if r.returncode != 0:
        raise RuntimeError(f"the {mode} step failed: {r.stderr[-2000:]}")
    return r.stdout.strip().splitlines()[-1]


def head_memory_targets(shape=(8, 64, 64, 150), size=(512, 512)):
    """Peak RSS growth of one training step's fused loss and gradient in resize semantics (at the
    ADE20K-like shape), the first step of a fresh process, against the full-resolution logits'
    bytes (target: at most 10% of them); the unfused step's growth beside it."""
    n, h, w, c = shape
    full = n * size[0] * size[1] * c * 4
    growth = {kind: int(_fresh_process(_HEAD_STEP, kind, *shape, *size)) / 2**20 for kind in ("fused", "unfused")}
    name = f"[{','.join(map(str, shape))}] -> {size[0]}x{size[1]}"
    return [Target(f"fused loss + gradient, resize semantics, {name}: peak memory growth of the step",
                   growth["fused"], "full-resolution logits", full / 2**20, "at_most", 0.1,
                   f"unfused step: {growth['unfused']:.0f} MB", unit="MB")]


def _jit(fn):
    return tf.function(fn, jit_compile=True)


def xla_speed_targets(n=1, h=16, w=22, classes=1000, factor=32, filter_classes=100, repeats=5):
    """Every op under XLA (its custom call, in a jit-compiled tf.function) against the same op in
    a tf.function without XLA, timed together, at [n, h, w, classes] x factor (the filter gradient at filter_classes, as its
    target; the resize ops to the same output size)."""
    lib, f = _ops.lib, factor
    rng = np.random.default_rng(0)
    x = segmentation_logits(n, h, w, classes)
    size = [h * f, w * f]
    out = [n, *size, classes]
    dy = tf.random.stateless_normal(out, seed=[1, 2])
    filt = tf.constant(tu.bilinear_upsample_weights(f, classes))
    fx = tf.constant(rng.standard_normal((n, h, w, filter_classes), np.float32))
    fdy = tf.random.stateless_normal([n, *size, filter_classes], seed=[3, 4])
    labels = tf.constant(rng.integers(0, classes, (n, *size)))
    loss, stats, _ = lib.tfupsample_upsample_sparse_softmax_cross_entropy(labels, x, factor=f)
    rloss, rstats, _ = lib.tfupsample_resize_sparse_softmax_cross_entropy(labels, x, half_pixel_centers=True)
    ones, rones = tf.ones_like(loss), tf.ones_like(rloss)
    hp = dict(half_pixel_centers=True)
    k = bilinear_kernel_size(f)
    ops = [
        ("bilinear upsample", lambda a: lib.tfupsample_bilinear_upsample(a, factor=f), (x,)),
        ("bilinear input gradient", lambda a: lib.tfupsample_bilinear_upsample_grad(a, factor=f), (dy,)),
        ("depthwise transposed convolution", lambda a, b: lib.tfupsample_depthwise_conv2d_transpose(
            a, b, out, strides=[f, f], padding="SAME"), (x, filt)),
        ("depthwise input gradient", lambda a, b: lib.tfupsample_depthwise_conv2d_transpose_backprop_input(
            a, b, [n, h, w, classes], strides=[f, f], padding="SAME"), (dy, filt)),
        (f"depthwise filter gradient ({filter_classes} classes)",
         lambda a, b: lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(
             a, b, [k, k, filter_classes, 1], strides=[f, f], padding="SAME"), (fx, fdy)),
        ("resize", lambda a: lib.tfupsample_resize_bilinear(a, size, **hp), (x,)),
        ("resize input gradient", lambda a: lib.tfupsample_resize_bilinear_grad(a, [h, w], T=tf.float32, **hp), (dy,)),
        ("upsample_argmax", lambda a: lib.tfupsample_upsample_argmax(a, factor=f), (x,)),
        ("fused loss", lambda a, b: lib.tfupsample_upsample_sparse_softmax_cross_entropy(a, b, factor=f),
         (labels, x)),
        ("fused loss gradient", lambda a, b, c, d: lib.tfupsample_upsample_sparse_softmax_cross_entropy_grad(
            a, b, c, d, factor=f), (labels, x, stats, ones)),
        ("upsample_argmax, resize semantics", lambda a: lib.tfupsample_resize_argmax(a, size, **hp), (x,)),
        ("fused loss, resize semantics", lambda a, b: lib.tfupsample_resize_sparse_softmax_cross_entropy(
            a, b, **hp), (labels, x)),
        ("fused loss gradient, resize semantics",
         lambda a, b, c, d: lib.tfupsample_resize_sparse_softmax_cross_entropy_grad(a, b, c, d, **hp),
         (labels, x, rstats, rones)),
    ]
    results = []
    for name, fn, args in ops:
        # Both in a tf.function, one jit-compiled: the same call path, so what differs is XLA's
        # (its buffers and threads). A bare eager call skips tf.function's dispatch, ~1 ms from an
        # emptied cache on the 2-core VM, with or without XLA (the note gives it).
        jit, graph = _jit(fn), tf.function(fn)
        jit_ms, graph_ms, eager_ms = (t * 1e3 for t in timed_together(
            [lambda: jit(*args), lambda: graph(*args), lambda: fn(*args)], repeats))
        results.append(Target(f"{name} under XLA vs without, [{n},{h},{w},{classes}] x{f}", jit_ms,
                              "op without XLA", graph_ms, "at_most", 1.15, f"eager call {eager_ms:.1f} ms"))
    return results


_XLA_STEP = r"""
import json, os, sys
mode = sys.argv[1]
if mode == "lowering":
    os.environ["TFUPSAMPLE_XLA_KERNELS"] = "0"
import numpy as np, tensorflow as tf, keras
import tfupsample as tu
from tfupsample.keras import UpsampledSparseCategoricalCrossentropy
from tfupsample.tools import bench
n, h, w, c, f = (int(v) for v in sys.argv[2:7])
keras.utils.set_random_seed(0)
inputs = keras.Input((h, w, c))
model = keras.Model(inputs, keras.layers.Conv2D(c, 1)(inputs))
model.compile(optimizer=keras.optimizers.SGD(0.01), loss=UpsampledSparseCategoricalCrossentropy(f),
              jit_compile=mode != "eager")
rng = np.random.default_rng(0)
x = tf.constant(rng.standard_normal((n, h, w, c), np.float32))
y = tf.constant(rng.integers(0, c, (n, h * f, w * f)))
step = lambda: model.train_on_batch(x, y, return_dict=True)["loss"]
seconds, peak = bench.measure(step, repeats=3, warmup=2)
print(json.dumps({"ms": seconds * 1e3, "mb": peak / 1e6, "xla_kernels": tu.xla_kernels()}))
"""


def xla_memory_targets(shape=(2, 16, 22, 150), factor=32):
    """Peak RSS growth of one Keras training step with the fused loss (model.train_on_batch) under
    jit_compile=True against the same step without XLA, and against the stock-op lowering under
    XLA; each in a fresh process, after two warm-up steps, without oneDNN (below)."""
    import json
    import os

    # Freed buffers must go back to the system, so that the warm-up steps (the compilation
    # among them) leave no peak behind for the measured step to hide under: TF's plain CPU
    # allocator (oneDNN's keeps a pool that never shrinks: no step would grow the peak at all)
    # and a fixed mmap threshold (glibc's adaptive one keeps large freed blocks on its heap).
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", MALLOC_MMAP_THRESHOLD_="131072", TF_CPP_MIN_LOG_LEVEL="2")
    got = {mode: json.loads(_fresh_process(_XLA_STEP, mode, *shape, factor, env=env))
           for mode in ("eager", "xla", "lowering")}
    name = f"[{','.join(map(str, shape))}] x{factor}"
    note = f"step: {got['eager']['ms']:.0f} ms without XLA, {got['xla']['ms']:.0f} ms with, " \
           f"{got['lowering']['ms']:.0f} ms lowered"
    return [Target(f"Keras training step, fused loss, {name}: peak memory growth under XLA vs without",
                   got["xla"]["mb"], "without XLA", got["eager"]["mb"], "at_most", 1.2, note, unit="MB"),
            Target(f"Keras training step, fused loss, {name}: peak memory growth under XLA, kernels vs the "
                   "stock-op lowering", got["xla"]["mb"], "stock-op lowering", got["lowering"]["mb"], "faster",
                   5.0, note, unit="MB")]


def targets(size=(16, 22), classes=1000, factor=32, filter_classes=100, logits=("random", "segmentation"),
            repeats=7, which=("forward", "input_grad", "filter_grad", "argmax", "loss", "resize", "heads", "xla")):
    """Measures the targets in this process and returns them (a list of Target)."""
    h, w = size

    def run(*peers, reps=repeats):
        """ms of Problem's peers, timed together (a scaled one's time scaled)."""
        return timed_ms(peers, reps)[0]

    out = []
    prob = Problem(1, h, w, classes, factor)
    f = factor
    if "forward" in which:
        peers = prob.forward(dense_limit_bytes=0)
        ours_note = getattr(peers["tfupsample"], "note", None)
        stock_peer = peers["depthwise_backprop_input"]
        note = getattr(stock_peer, "note", None)
        together = [peers["tfupsample"], peers["write floor"], peers["tf.image.resize"]]
        rounds = [FLOOR_ROUNDS * repeats, FLOOR_ROUNDS * repeats, repeats]  # ours, floor, resize
        if getattr(stock_peer, "scale", 1.0) == 1.0:
            (ours, floor, resize, stock), calls = timed_ms([*together, stock_peer], rounds + [repeats])
        else:  # a scaled peer stands for a call of over a minute: one run, on its few channels
            (ours, floor, resize), calls = timed_ms(together, rounds)
            stock = run(stock_peer, reps=1)[0]
        out += [Target("forward vs the write floor", ours, "write floor", floor, "at_most", 1.3,
                       calls_note(calls[0], calls[1], _floor_note(peers["write floor"], ours_note))),
                Target("forward vs tf.image.resize", ours, "tf.image.resize", resize, "faster", 1.0, ours_note),
                Target("forward vs stock depthwise_conv2d_backprop_input", ours,
                       "depthwise_conv2d_backprop_input", stock, "faster", 1.0, note or ours_note)]
    if "input_grad" in which:
        peers = prob.input_grad()
        (ours, floor), calls = timed_ms([peers["tfupsample"], peers["read dy once (floor)"]],
                                        FLOOR_ROUNDS * repeats)
        out.append(Target("input gradient vs the read floor", ours, "read floor", floor, "at_most", 1.3,
                          calls_note(*calls, getattr(peers["tfupsample"], "note", None))))
    if "filter_grad" in which:
        fp = Problem(1, h, w, filter_classes, factor)
        fx, fdy = fp.x, fp.dy
        wv = tf.Variable(fp.filter)

        def tape_filter_grad():  # as a user gets it: through the tape, the filter only
            with tf.GradientTape() as tape:
                y = tu.depthwise_conv2d_transpose(fx, wv, fp.out_shape, f)
            return tape.gradient(y, wv, output_gradients=fdy)

        # The target times the gradient op itself (what the tape runs for the filter alone), not the
        # tape's time less its forward's: that difference of two times swung 2.2-3.9x the floor
        # between runs of unchanged code on the EPYC VM. The tape's figure is printed beside.
        (op_ms, tape_ms, fwd, floor), calls = timed_ms([
            fp.filter_grad()["tfupsample"], tape_filter_grad,
            lambda: tu.depthwise_conv2d_transpose(fx, wv, fp.out_shape, f), read_floor(fdy)],
            FLOOR_ROUNDS * repeats)
        out.append(Target(f"filter gradient ({filter_classes} classes) vs the read floor", op_ms, "read floor",
                          floor, "at_most", 3.0, calls_note(
                              calls[0], calls[3], f"through the tape {tape_ms:.1f} ms incl. forward {fwd:.1f} ms")))
    if "argmax" in which:
        for kind in logits:
            peers = (prob if kind == "random" else Problem(1, h, w, classes, factor, logits=kind)).argmax()
            ours, unfused = run(peers["tfupsample upsample_argmax"], peers["bilinear_upsample + tf.argmax"])
            out.append(Target(f"upsample_argmax, {kind} logits", ours,
                              "bilinear_upsample + tf.argmax", unfused, "faster",
                              4.0 if kind == "random" else 20.0))
    if "loss" in which:
        peers = prob.loss_and_grad()
        ours, unfused = run(peers["tfupsample fused loss"], peers["bilinear_upsample + stock loss"],
                            reps=repeats)
        out.append(Target("fused loss forward + gradient", ours, "bilinear_upsample + stock loss + gradient",
                          unfused, "faster", 6.0))
    if "resize" in which:
        out += resize_targets(repeats)
    if "heads" in which:
        out += head_targets(repeats) + head_memory_targets()
    if "xla" in which and tu.xla_kernels():
        out += xla_speed_targets(1, h, w, classes, factor, filter_classes, repeats)
        out += xla_memory_targets()
    return out
