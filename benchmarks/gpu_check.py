"""GPU check of tfupsample's CUDA kernels, through tfupsample.cuda (no TensorFlow). Run by
benchmarks/gpu_check.sh, which builds the kernels first.

  --backend cuda   torch tensors on the GPU: parity, determinism, then timings against torch
  --backend host   the same parity and determinism checks over the CPU emulation of the kernels
                   (tests/cuda_host), on NumPy arrays: checks this script where there is no GPU
  --backend torch-cpu  the cuda backend's code and the timing code, on torch CPU tensors over the
                   emulation (DLPack, bfloat16 included): a dry run where torch has no GPU
  --sanitize       one small case of every op and dtype only (for compute-sanitizer)

The reference and the bounds are tfupsample.testing's (the test suite's too): NumPy float64
loops written from the definition of the transposed convolution (out[i*s - pad + a] += x[i] * w[a]),
independent of the kernels, and one tolerance table. Run it from the checkout's root as a module
(`python -m benchmarks.gpu_check`), so that the checkout's tfupsample is the one imported.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import traceback

import numpy as np

import tfupsample.cuda as tc
import tfupsample.testing as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACTORS = [2, 3, 4, 5, 6, 7, 8, 9, 32]


def _emulator():
    """The checkout's CPU emulation of the kernels (tests/cuda_host/emulator.py), for the host
    backends: loaded from its file, as it is not part of the package."""
    import importlib.util

    name = "tfupsample_cuda_host_emulator"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(ROOT, "tests", "cuda_host", "emulator.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


# ------------------------------------------------------------------------------------------------
# Backends: where the arrays live

class Cuda:
    """torch tensors on the GPU. With device="cpu" (backend torch-cpu) the same code runs on torch
    CPU tensors over the CPU emulation, reaching it through DLPack: a dry run of this class."""

    name = "cuda"

    def __init__(self, device="cuda"):
        import torch

        self.torch, self.device = torch, device
        self.dtypes = ["float16", "bfloat16", "float32", "float64"]
        if device != "cuda":
            Host.use_emulation()
            tc._DL_CUDA = 1  # admit the CPU device
            self.name = "torch-cpu"

    def put(self, a, dtype):
        t = self.torch
        if dtype in ("int32", "int64"):
            return t.from_numpy(np.ascontiguousarray(a, dtype)).to(self.device)
        host = np.ascontiguousarray(a, np.float64 if dtype == "float64" else np.float32)
        return t.from_numpy(host).to(self.device).to(getattr(t, dtype)).contiguous()

    def empty(self, shape, dtype):
        return self.torch.empty(tuple(shape), dtype=getattr(self.torch, dtype), device=self.device)

    def get(self, a):
        a = a.detach()
        return (a.to(self.torch.float64) if a.is_floating_point() else a).cpu().numpy()

    def equal(self, a, b):
        return bool(self.torch.equal(a, b))

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()


class Host:
    """NumPy arrays through the CPU emulation (no bfloat16: the CUDA array interface has none)."""

    name = "host"

    def __init__(self):
        self.emulator = _emulator()
        self.use_emulation()
        self.dtypes = ["float16", "float32", "float64"]

    @staticmethod
    def use_emulation():
        """Point tfupsample.cuda at the CPU emulation of the kernels."""
        emulator = _emulator()
        lib = emulator.build(tempfile.mkdtemp())
        tc._ext = lambda: emulator.Ext(lib)

    def put(self, a, dtype):
        return self.emulator.HostArray(np.asarray(a).astype(dtype))

    def empty(self, shape, dtype):
        return self.emulator.HostArray(np.full(shape, np.nan if dtype != "int64" else -7, dtype))

    def get(self, a):
        return a.array.astype(np.float64) if a.array.dtype.kind == "f" else a.array

    def equal(self, a, b):
        return a.array.tobytes() == b.array.tobytes()

    def sync(self):
        pass


# ------------------------------------------------------------------------------------------------
# Parity

class Report:
    def __init__(self):
        self.failures, self.checked, self.worst = [], 0, {}

    def close(self, what, dtype, actual, expected, op="forward"):
        """Within tfupsample.testing's bound for op in dtype (NaN, never written, fails)."""
        self.checked += 1
        err = ref.relative_error(actual, expected)
        key = (what.split("[")[0], dtype)
        self.worst[key] = max(self.worst.get(key, 0.0), err)
        if not err <= ref.tolerance(op, dtype):
            self.failures.append(f"{what} {dtype}: max relative error {err:.3g}")

    def true(self, what, ok):
        self.checked += 1
        if not ok:
            self.failures.append(what)


to_layout, from_layout = ref.to_layout, ref.from_layout


def layout_shape(nhwc, fmt):
    n, h, w, c = nhwc
    return (n, c, h, w) if fmt == "NCHW" else (n, h, w, c)


def check_bilinear(be, rep, rng, factors, dtypes, layouts):
    for f in factors:
        # Channels 8 / 6 / 7 take the kernel's 4-, 2- and 1-wide vector paths (NHWC).
        shape = (1, 3, 4, 6) if f == 32 else (2, 5, 6, 8 if f % 2 else 7)
        n, h, w, c = shape
        for dtype in dtypes:
            for fmt in layouts:
                x = be.put(to_layout(rng.standard_normal(shape), fmt), dtype)
                x64 = from_layout(be.get(x), fmt)
                y = be.empty(layout_shape((n, h * f, w * f, c), fmt), dtype)
                tc.bilinear_upsample(x, f, data_format=fmt, out=y)
                be.sync()
                rep.close(f"bilinear forward[f={f} {fmt}]", dtype, from_layout(be.get(y), fmt),
                          ref.bilinear_loop(x64, f))
                dy = be.put(to_layout(rng.standard_normal((n, h * f, w * f, c)), fmt), dtype)
                dx = be.empty(layout_shape(shape, fmt), dtype)
                tc.bilinear_upsample_grad(dy, f, data_format=fmt, out=dx)
                be.sync()
                rep.close(f"bilinear input grad[f={f} {fmt}]", dtype, from_layout(be.get(dx), fmt),
                          ref.bilinear_grad_loop(from_layout(be.get(dy), fmt), f), "input_grad")


def depthwise_cases(factors):
    for f in factors:  # the FCN case: kernel 2f, stride f, SAME, a trained (random) filter
        yield ((1, 3, 4, 5) if f == 32 else (2, 4, 5, 6)), (2 * f, 2 * f), (f, f), "SAME", None
    yield (2, 3, 4, 3), (3, 5), (2, 3), "SAME", (5, 11)
    yield (1, 3, 3, 4), (2, 2), (3, 3), "VALID", None
    yield (1, 2, 2, 300), (3, 3), (2, 2), "VALID", (6, 5)


def check_depthwise(be, rep, rng, factors, dtypes, layouts):
    for shape, k, s, padding, out_hw in depthwise_cases(factors):
        n, h, w, c = shape
        if out_hw is None:
            out_hw = (h * s[0], w * s[1]) if padding == "SAME" else ((h - 1) * s[0] + k[0], (w - 1) * s[1] + k[1])
        tag = f"[{shape} k={k} s={s} {padding}"
        for dtype in dtypes:
            for fmt in layouts:
                x = be.put(to_layout(rng.standard_normal(shape), fmt), dtype)
                wt = be.put(rng.standard_normal((*k, c)), dtype)
                dy = be.put(to_layout(rng.standard_normal((n, *out_hw, c)), fmt), dtype)
                x64, w64, dy64 = from_layout(be.get(x), fmt), be.get(wt), from_layout(be.get(dy), fmt)
                y = be.empty(layout_shape((n, *out_hw, c), fmt), dtype)
                tc.depthwise_conv2d_transpose(x, wt, layout_shape((n, *out_hw, c), fmt), s, padding, fmt, out=y)
                dx = be.empty(layout_shape(shape, fmt), dtype)
                tc.depthwise_conv2d_transpose_backprop_input(dy, wt, layout_shape(shape, fmt), s, padding,
                                                             fmt, out=dx)
                dw = be.empty((*k, c, 1), dtype)
                tc.depthwise_conv2d_transpose_backprop_filter(x, dy, (*k, c, 1), s, padding,
                                                              fmt, out=dw)
                be.sync()
                rep.close(f"depthwise forward{tag} {fmt}]", dtype, from_layout(be.get(y), fmt),
                          ref.transposed_conv_loop(x64, w64, out_hw, s, padding))
                rep.close(f"depthwise input grad{tag} {fmt}]", dtype, from_layout(be.get(dx), fmt),
                          ref.transposed_conv_input_grad_loop(dy64, w64, (h, w), s, padding), "input_grad")
                rep.close(f"depthwise filter grad{tag} {fmt}]", dtype, be.get(dw)[..., 0],
                          ref.transposed_conv_filter_grad_loop(x64, dy64, k, s, padding), "filter_grad")


def check_heads(be, rep, rng, factors, dtypes):
    for f in factors:
        shape = (1, 2, 3, 6) if f == 32 else (2, 3, 4, 9)
        n, h, w, c = shape
        m = (n, h * f, w * f)
        for dtype in dtypes:
            x = be.put(rng.standard_normal(shape) * 3, dtype)
            up = be.empty((*m, c), dtype)
            tc.bilinear_upsample(x, f, out=up)
            labels, scores = be.empty(m, "int64"), be.empty(m, dtype)
            tc.upsample_argmax(x, f, return_scores=True, out=(labels, scores))
            be.sync()
            up_ours = be.get(up)
            # Same arithmetic as our forward: equal to argmax / max of it, bit for bit.
            rep.true(f"argmax[f={f}] {dtype}: labels differ from argmax of the forward",
                     np.array_equal(be.get(labels), np.argmax(up_ours, -1)))
            rep.true(f"argmax[f={f}] {dtype}: scores differ from max of the forward",
                     np.array_equal(be.get(scores), up_ours.max(-1)))
            target = rng.integers(0, c, m)
            target[:, 0, :] = 2  # the ignore label on the first row
            tl = be.put(target, "int32" if f % 2 == 0 else "int64")  # int32 labels on the even factors
            loss, stats = be.empty(m, dtype), be.empty((*m, 2), "float64")
            s = 0.1 if f % 2 else 0.0  # label smoothing on the odd factors
            tc.upsample_sparse_softmax_cross_entropy(tl, x, f, ignore_label=2, label_smoothing=s,
                                                     return_stats=True, out=(loss, stats))
            g = be.put(rng.standard_normal(m), dtype)
            grad = be.empty(shape, dtype)
            tc.upsample_sparse_softmax_cross_entropy_grad(tl, x, g, f, stats=stats, ignore_label=2,
                                                          label_smoothing=s, out=grad)
            be.sync()
            loss_ref, expected = ref.upsample_softmax_cross_entropy(be.get(x), target, f, be.get(g),
                                                                    ignore=2, smoothing=float(np.float32(s)))
            rep.close(f"cross-entropy[f={f}]", dtype, be.get(loss), loss_ref, "loss")
            rep.close(f"cross-entropy grad[f={f}]", dtype, be.get(grad), expected, "loss_grad")


RESIZE_CASES = [((2, 5, 6, 7), (23, 17)), ((1, 12, 10, 3), (5, 7)), ((1, 9, 9, 21), (65, 65))]


def check_resize(be, rep, rng, dtypes, layouts):
    # tf.image.resize's bilinear, its three conventions, up, down and fractional: the float32
    # output and the gradient against the float64 loops of the definition.
    for (shape, size) in RESIZE_CASES:
        n, h, w, c = shape
        for mode, (align, half) in (("half_pixel", (False, True)), ("align_corners", (True, False)),
                                    ("asymmetric", (False, False))):
            for dtype in dtypes:
                for fmt in layouts:
                    x = be.put(to_layout(rng.standard_normal(shape), fmt), dtype)
                    x64 = from_layout(be.get(x), fmt).astype(np.float32).astype(np.float64)
                    y = be.empty(layout_shape((n, *size, c), fmt), "float32")
                    tc.resize_bilinear(x, size, align, half, data_format=fmt, out=y)
                    dy = be.put(to_layout(rng.standard_normal((n, *size, c)), fmt), "float32")
                    dx = be.empty(layout_shape(shape, fmt), dtype)
                    tc.resize_bilinear_grad(dy, (h, w), dtype, align, half, data_format=fmt, out=dx)
                    be.sync()
                    what = f"resize {mode} {fmt}"
                    rep.close(what, "float32", from_layout(be.get(y), fmt), ref.resize_bilinear_loop(x64, size, mode),
                              "resize")
                    rep.close(what + " grad", dtype, from_layout(be.get(dx), fmt),
                              ref.resize_bilinear_grad_loop(from_layout(be.get(dy), fmt), (h, w), mode), "resize_grad")


def check_determinism(be, rep, rng, big):
    """Every backward twice on the same inputs: the same bits (no atomics anywhere)."""
    n, h, w, c, f = (2, 16, 22, 150, 8) if big else (1, 3, 4, 40, 4)
    x = be.put(rng.standard_normal((n, h, w, c)), "float32")
    dy = be.put(rng.standard_normal((n, h * f, w * f, c)), "float32")
    wt = be.put(rng.standard_normal((2 * f, 2 * f, c)), "float32")
    labels = be.put(rng.integers(0, c, (n, h * f, w * f)), "int64")
    g = be.put(rng.standard_normal((n, h * f, w * f)), "float32")
    stats = be.empty((n, h * f, w * f, 2), "float64")
    tc.upsample_sparse_softmax_cross_entropy(labels, x, f, return_stats=True,
                                             out=(be.empty((n, h * f, w * f), "float32"), stats))
    runs = {
        "bilinear input grad": lambda: tc.bilinear_upsample_grad(dy, f, out=be.empty((n, h, w, c), "float32")),
        "depthwise input grad": lambda: tc.depthwise_conv2d_transpose_backprop_input(
            dy, wt, (n, h, w, c), f, out=be.empty((n, h, w, c), "float32")),
        "depthwise filter grad": lambda: tc.depthwise_conv2d_transpose_backprop_filter(
            x, dy, (2 * f, 2 * f, c, 1), f, out=be.empty((2 * f, 2 * f, c, 1), "float32")),
        "cross-entropy grad": lambda: tc.upsample_sparse_softmax_cross_entropy_grad(
            labels, x, g, f, stats=stats, out=be.empty((n, h, w, c), "float32")),
    }
    for name, fn in runs.items():
        a, b = fn(), fn()
        be.sync()
        rep.true(f"{name}: two runs differ", be.equal(a, b))


def check_allocation(be, rep, rng):
    """Without out=, the result is a new array of the input's framework."""
    x = be.put(rng.standard_normal((1, 2, 3, 4)), "float32")
    y = tc.bilinear_upsample(x, 2)
    labels, scores = tc.upsample_argmax(x, 2, return_scores=True)
    be.sync()
    rep.true("allocated output has the wrong shape", tuple(y.shape) == (1, 4, 6, 4) and tuple(labels.shape) == (1, 4, 6))
    rep.close("allocated output", "float32", be.get(y),
              ref.bilinear_loop(be.get(x), 2))
    # The loss gradient without the forward's stats computes them first: the same result.
    target = be.put(rng.integers(0, 4, (1, 4, 6)), "int64")
    g = be.put(rng.standard_normal((1, 4, 6)), "float32")
    loss, stats = tc.upsample_sparse_softmax_cross_entropy(target, x, 2, return_stats=True)
    with_stats = tc.upsample_sparse_softmax_cross_entropy_grad(target, x, g, 2, stats=stats)
    without = tc.upsample_sparse_softmax_cross_entropy_grad(target, x, g, 2)
    be.sync()
    rep.true("allocated stats have the wrong shape", tuple(stats.shape) == (1, 4, 6, 2))
    rep.true("loss gradient without stats differs from the one with them", be.equal(with_stats, without))


# ------------------------------------------------------------------------------------------------
# Timings (cuda only)

def timings(device="cuda", shapes=(((1, 16, 22, 1000), 32), ((8, 16, 22, 150), 32), ((8, 64, 64, 150), 8),
                                   ((8, 128, 128, 21), 4), ((8, 64, 64, 21), 8)),
            resize_shapes=(((8, 64, 64, 150), (512, 512)), ((2, 128, 256, 19), (1024, 2048)),
                           ((8, 65, 65, 21), (513, 513)))):
    """Median ms of ours and the torch peers. device="cpu" (with tiny shapes, over the CPU
    emulation) only exercises this code where there is no GPU."""
    import torch
    import torch.nn.functional as F

    def once(fn):
        if device != "cuda":
            start = time.perf_counter()
            fn()
            return 1000 * (time.perf_counter() - start)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    def timed(fn, reps=20):
        first = once(fn)  # a slow peer gets fewer runs: the check must stay short
        warm, reps = (2, reps) if first < 200 else (0, max(3, min(reps, int(3000 / first))))
        for _ in range(warm):
            fn()
        return float(np.median([once(fn) for _ in range(reps)]))

    def copy_bandwidth():
        a = torch.empty(1 << 30 if device == "cuda" else 1 << 20, dtype=torch.uint8, device=device)
        b = torch.empty_like(a)
        return 2 * a.numel() / (timed(lambda: b.copy_(a)) * 1e-3)  # bytes read + written per s

    def one_shape(shape, f, copy_bw):
        n, h, w, c = shape
        x = torch.randn(shape, device=device)
        y = torch.empty((n, h * f, w * f, c), device=device)
        dy = torch.randn((n, h * f, w * f, c), device=device)
        dx = torch.empty(shape, device=device)
        wb = torch.from_numpy(ref.bilinear_filter(f, c)).float().to(device).contiguous()
        wt = wb.permute(2, 0, 1).unsqueeze(1).contiguous()  # torch's [C, 1, k, k]
        xc = x.permute(0, 3, 1, 2)  # NCHW view of channels-last memory
        dyc = dy.permute(0, 3, 1, 2)
        byte_fwd = 4 * (x.numel() + y.numel())
        r = {"shape": list(shape), "factor": f, "copy_GBps": copy_bw / 1e9}
        r["ours_forward_ms"] = timed(lambda: tc.bilinear_upsample(x, f, out=y))
        r["ours_depthwise_forward_ms"] = timed(lambda: tc.depthwise_conv2d_transpose(x, wb, None, f, out=y))
        r["torch_interpolate_ms"] = timed(lambda: F.interpolate(xc, scale_factor=f, mode="bilinear", align_corners=False))
        with torch.no_grad():
            r["torch_conv_transpose_ms"] = timed(lambda: F.conv_transpose2d(xc, wt, stride=f, padding=f // 2, groups=c))
        r["ours_input_grad_ms"] = timed(lambda: tc.bilinear_upsample_grad(dy, f, out=dx))
        r["ours_depthwise_input_grad_ms"] = timed(
            lambda: tc.depthwise_conv2d_transpose_backprop_input(dy, wb, shape, f, out=dx))
        xr = xc.detach().requires_grad_()
        yi = F.interpolate(xr, scale_factor=f, mode="bilinear", align_corners=False)
        r["torch_interpolate_grad_ms"] = timed(lambda: torch.autograd.grad(yi, xr, dyc, retain_graph=True))
        yt = F.conv_transpose2d(xr, wt, stride=f, padding=f // 2, groups=c)
        r["torch_conv_transpose_grad_ms"] = timed(lambda: torch.autograd.grad(yt, xr, dyc, retain_graph=True))
        r["ours_filter_grad_ms"] = timed(
            lambda: tc.depthwise_conv2d_transpose_backprop_filter(x, dy, (2 * f, 2 * f, c, 1), f), reps=5)
        labels = torch.randint(0, c, (n, h * f, w * f), device=device)
        r["ours_argmax_ms"] = timed(lambda: tc.upsample_argmax(x, f))  # random logits: the worst case
        seg = torch.from_numpy(ref.segmentation_logits(np.random.default_rng(0), shape).astype(np.float32))
        seg = seg.to(device).contiguous()
        r["ours_argmax_segmentation_ms"] = timed(lambda: tc.upsample_argmax(seg, f))
        r["torch_interpolate_argmax_ms"] = timed(
            lambda: F.interpolate(xc, scale_factor=f, mode="bilinear", align_corners=False).argmax(1))
        g = torch.ones((n, h * f, w * f), device=device)
        def loss_fwd_grad():  # as TF runs it: the gradient takes the forward's stats
            _, stats = tc.upsample_sparse_softmax_cross_entropy(labels, x, f, return_stats=True)
            return tc.upsample_sparse_softmax_cross_entropy_grad(labels, x, g, f, stats=stats)

        r["ours_loss_fwd_grad_ms"] = timed(loss_fwd_grad, reps=5)
        # NCHW: its own memory order (a run of x per thread, lanes along x).
        xn, yn = x.permute(0, 3, 1, 2).contiguous(), torch.empty((n, c, h * f, w * f), device=device)
        dyn, dxn = dy.permute(0, 3, 1, 2).contiguous(), torch.empty((n, c, h, w), device=device)
        r["ours_forward_nchw_ms"] = timed(lambda: tc.bilinear_upsample(xn, f, data_format="NCHW", out=yn))
        r["ours_input_grad_nchw_ms"] = timed(lambda: tc.bilinear_upsample_grad(dyn, f, data_format="NCHW", out=dxn))
        r["forward_GBps"] = byte_fwd / (r["ours_forward_ms"] * 1e-3) / 1e9
        r["input_grad_GBps"] = byte_fwd / (r["ours_input_grad_ms"] * 1e-3) / 1e9
        r["forward_pct_of_copy"] = 100 * r["forward_GBps"] * 1e9 / copy_bw
        r["input_grad_pct_of_copy"] = 100 * r["input_grad_GBps"] * 1e9 / copy_bw
        r["forward_nchw_pct_of_copy"] = 100 * byte_fwd / (r["ours_forward_nchw_ms"] * 1e-3) / copy_bw
        r["input_grad_nchw_pct_of_copy"] = 100 * byte_fwd / (r["ours_input_grad_nchw_ms"] * 1e-3) / copy_bw
        r["targets"] = {
            "forward >= 85% of copy bandwidth": r["forward_pct_of_copy"] >= 85,
            "forward NCHW >= 85% of copy bandwidth": r["forward_nchw_pct_of_copy"] >= 85,
            "input grad NCHW >= 70% of copy bandwidth": r["input_grad_nchw_pct_of_copy"] >= 70,
            "forward faster than torch interpolate": r["ours_forward_ms"] < r["torch_interpolate_ms"],
            "forward faster than torch conv_transpose2d": r["ours_forward_ms"] < r["torch_conv_transpose_ms"],
            "input grad >= 70% of copy bandwidth": r["input_grad_pct_of_copy"] >= 70,
            "argmax >= 4x faster than interpolate + argmax (random logits)":
                r["torch_interpolate_argmax_ms"] >= 4 * r["ours_argmax_ms"],
        }
        return r

    def resize_shape(shape, size, copy_bw):  # tf.image.resize semantics against torch's (same rule)
        n, h, w, c = shape
        x = torch.randn(shape, device=device)
        y = torch.empty((n, *size, c), device=device)
        dy = torch.randn((n, *size, c), device=device)
        dx = torch.empty(shape, device=device)
        xc, dyc = x.permute(0, 3, 1, 2), dy.permute(0, 3, 1, 2)
        r = {"shape": list(shape), "size": list(size), "copy_GBps": copy_bw / 1e9}
        r["ours_resize_ms"] = timed(lambda: tc.resize(x, size, out=y))
        r["torch_interpolate_ms"] = timed(lambda: F.interpolate(xc, size=size, mode="bilinear", align_corners=False))
        r["ours_resize_grad_ms"] = timed(lambda: tc.resize_bilinear_grad(dy, (h, w), half_pixel_centers=True, out=dx))
        xr = xc.detach().requires_grad_()
        yi = F.interpolate(xr, size=size, mode="bilinear", align_corners=False)
        r["torch_interpolate_grad_ms"] = timed(lambda: torch.autograd.grad(yi, xr, dyc, retain_graph=True))
        moved = 4 * (x.numel() + y.numel())
        r["forward_pct_of_copy"] = 100 * moved / (r["ours_resize_ms"] * 1e-3) / copy_bw
        r["input_grad_pct_of_copy"] = 100 * moved / (r["ours_resize_grad_ms"] * 1e-3) / copy_bw
        r["targets"] = {
            "resize >= 85% of copy bandwidth": r["forward_pct_of_copy"] >= 85,
            "resize faster than torch interpolate": r["ours_resize_ms"] < r["torch_interpolate_ms"],
            "resize grad >= 70% of copy bandwidth": r["input_grad_pct_of_copy"] >= 70,
        }
        return r

    copy_bw = copy_bandwidth()
    rows = []
    for shape, factor in shapes:
        rows.append(one_shape(shape, factor, copy_bw))
        if device == "cuda":
            torch.cuda.empty_cache()  # the previous shape's tensors are gone with its frame
    for shape, size in resize_shapes:
        rows.append(resize_shape(shape, size, copy_bw))
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def versions():
    """The driver's CUDA version (libcuda), the CUDA runtime torch uses, and the nvcc that built the
    kernels: what a figure was measured with."""
    import ctypes
    import subprocess

    out = {}
    try:
        v = ctypes.c_int(0)
        ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(v))
        out["driver CUDA"] = f"{v.value // 1000}.{v.value % 1000 // 10}"
    except OSError:
        out["driver CUDA"] = "none"
    try:
        import torch

        out["torch CUDA runtime"] = str(torch.version.cuda)
    except ImportError:
        out["torch CUDA runtime"] = "no torch"
    try:
        text = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
        out["nvcc"] = text.strip().splitlines()[-1] if text.strip() else "none"
    except OSError:
        out["nvcc"] = "none"
    return out


def print_timings(rows, device):
    print(f"\nTimings on {device}, float32 (NHWC unless a name says NCHW), median ms (CUDA events)")
    for r in rows:
        what = f"resize to {r['size']}" if "size" in r else f"x{r['factor']}"
        print(f"\n  {r['shape']} {what}   device-to-device copy {r['copy_GBps']:.0f} GB/s "
              "(read + write)")
        for k, v in r.items():
            if k.endswith("_ms"):
                print(f"    {k[:-3]:34s} {v:9.3f}")
        for k, v in r.items():
            if k.endswith("_pct_of_copy"):
                print(f"    {k[:-12]:34s} {v:6.0f}% of copy")
        for name, ok in r["targets"].items():
            print(f"    {'MET   ' if ok else 'MISSED'} {name}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["cuda", "host", "torch-cpu"], default="cuda")
    p.add_argument("--sanitize", action="store_true")
    p.add_argument("--quick", action="store_true", help="fewer factors (host runs)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    be = {"cuda": Cuda, "host": Host, "torch-cpu": lambda: Cuda("cpu")}[args.backend]()
    rng = np.random.default_rng(0)
    rep = Report()
    factors = [2, 3, 32] if args.quick else FACTORS
    layouts = ["NHWC", "NCHW"]
    small = args.sanitize
    sections = [
        ("bilinear", lambda: check_bilinear(be, rep, rng, [3] if small else factors, be.dtypes, layouts)),
        ("depthwise", lambda: check_depthwise(be, rep, rng, [2] if small else factors, be.dtypes, layouts)),
        ("heads", lambda: check_heads(be, rep, rng, [3] if small else factors, be.dtypes)),
        ("resize", lambda: check_resize(be, rep, rng, be.dtypes, ["NHWC"] if small else layouts)),
        ("determinism", lambda: check_determinism(be, rep, rng, big=args.backend == "cuda" and not (small or args.quick))),
    ]
    if args.backend != "host" and not small:  # new arrays need torch
        sections.append(("allocation", lambda: check_allocation(be, rep, rng)))
    for name, fn in sections:  # one failing section must not hide the others' results
        start = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            rep.failures.append(f"{name}: raised {type(e).__name__}: {e}")
        print(f"  {name}: done in {time.perf_counter() - start:.1f} s", flush=True)
    print(f"parity and determinism ({be.name}): {rep.checked} checks, {len(rep.failures)} failed")
    for (what, dtype), err in sorted(rep.worst.items()):
        print(f"  worst relative error  {what:28s} {dtype:9s} {err:.2e}")
    for msg in rep.failures[:40]:
        print("  FAIL", msg)
    result = {"backend": be.name, "checks": rep.checked, "failures": rep.failures,
              "worst": {f"{w} {d}": e for (w, d), e in rep.worst.items()}}
    if args.backend == "cuda" and not args.sanitize:
        import torch

        device = torch.cuda.get_device_name()
        result["device"] = device
        result["versions"] = versions()
        print("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
        try:
            result["timings"] = timings()
            print_timings(result["timings"], device)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            rep.failures.append(f"timings: raised {type(e).__name__}: {e}")
    if args.backend == "torch-cpu":  # the timing code on tiny shapes
        rows = timings("cpu", shapes=(((1, 2, 3, 8), 4), ((2, 2, 2, 6), 4)),
                       resize_shapes=(((1, 2, 3, 8), (5, 7)),))
        result["versions"] = versions()
        print_timings(rows, "the CPU emulation (dry run: the figures mean nothing)")
        result["timings"] = rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
