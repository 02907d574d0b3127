"""The AVX-512, AVX2 and baseline builds of the kernels give the same bits (contraction is off in
all), for every kernel; TFUPSAMPLE_ISA=baseline|avx2 selects a build in a subprocess."""

import os
import subprocess
import sys
import tempfile

import numpy as np

from tfupsample import testing as ref

SCRIPT = r"""
import sys, numpy as np, tensorflow as tf, tfupsample as tu
import tfupsample.numpy as tnp
from tfupsample._ops import lib
rng = np.random.default_rng(7)
out = {"isa": np.array(tnp.kernel_isa()), "x_pass": np.array(tnp.kernel_x_pass())}
for dtype in ("float32", "float64", "float16", "bfloat16"):
    xv = rng.standard_normal((2, 5, 6, 19))
    # Conversions at the edges: inf, nan, overflow to inf, half subnormals, rounding ties.
    xv[0, 0, 0, :8] = [np.inf, -np.inf, np.nan, 6.5e4, 1e-7, 3e-5, 1 + 2**-11, 2049.0]
    x = tf.cast(xv, dtype)
    w = tf.cast(rng.standard_normal((5, 4, 19, 1)), dtype)
    dy = tf.cast(rng.standard_normal((2, 10, 18, 19)), dtype)
    kw = dict(strides=[2, 3], padding="SAME")
    res = {
        "up": tu.bilinear_upsample(x, 3), "up_nchw": tu.bilinear_upsample(tf.transpose(x, [0, 3, 1, 2]), 3, data_format="NCHW"),
        "up_grad": lib.tfupsample_bilinear_upsample_grad(tf.cast(rng.standard_normal((2, 15, 18, 19)), dtype), factor=3),
        "dw": lib.tfupsample_depthwise_conv2d_transpose(x, w, [2, 10, 18, 19], **kw),
        "dw_dx": lib.tfupsample_depthwise_conv2d_transpose_backprop_input(dy, w, [2, 5, 6, 19], **kw),
        "dw_dw": lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(x, dy, [5, 4, 19, 1], **kw),
        "argmax": tu.upsample_argmax(x * 4, 8, return_scores=True)[1],
        "argmax_labels": tu.upsample_argmax(x * 4, 8),
        "loss": tu.upsample_sparse_softmax_cross_entropy(rng.integers(0, 19, (2, 40, 48)), x, 8),
        "resize_up": tu.image.resize(x, [13, 17]), "resize_down": tu.image.resize(x, [3, 4]),
        "resize_ac": tu.image.resize_bilinear(x, [9, 11], align_corners=True),
        "resize_nchw": lib.tfupsample_resize_bilinear(tf.transpose(x, [0, 3, 1, 2]), [11, 13], half_pixel_centers=True, data_format="NCHW"),
        "resize_grad": lib.tfupsample_resize_bilinear_grad(tf.cast(rng.standard_normal((2, 13, 17, 19)), tf.float32), [5, 6], T=x.dtype, half_pixel_centers=True),
        "resize_argmax": tu.upsample_argmax(x * 4, size=[13, 17], interpolation="bilinear", return_scores=True)[1],
        "resize_loss": tu.upsample_sparse_softmax_cross_entropy(rng.integers(0, 19, (2, 13, 17)), x, interpolation="bilinear"),
    }
    for k, v in res.items():
        out[f"{dtype}_{k}"] = tf.cast(v, tf.float64).numpy()
# The float x passes' channel counts: 1 to 4 vectors with a partial last one (masked) in either
# build, and counts the blocks take.
out["up_grad_f64_70"] = lib.tfupsample_bilinear_upsample_grad(rng.standard_normal((1, 12, 9, 70)), factor=3).numpy()
# 1100 channels: in block order the input gradient splits them into blocks of 512 (x passes over
# part pixels); pixel by pixel they stay whole, in bands of one input row (6 of them).
out["up_grad_1100"] = lib.tfupsample_bilinear_upsample_grad(rng.standard_normal((1, 6, 6, 1100)).astype(np.float32), factor=2).numpy()
for c in (5, 12, 28, 45, 63, 70, 130):
    out[f"up_grad_{c}"] = lib.tfupsample_bilinear_upsample_grad(rng.standard_normal((1, 12, 9, c)).astype(np.float32), factor=3).numpy()
    out[f"resize_grad_{c}"] = lib.tfupsample_resize_bilinear_grad(rng.standard_normal((1, 17, 11, c)).astype(np.float32), [5, 4], T=tf.float32, half_pixel_centers=True).numpy()
# Upsampling (clamped edges: both taps on one column; align-corners' exact taps) at one channel,
# a whole vector, and one pass over the row (19, 21).
for c in (1, 16, 19, 21):
    for align in (False, True):
        out[f"resize_grad_up_{c}_{align}"] = lib.tfupsample_resize_bilinear_grad(
            rng.standard_normal((2, 33, 43, c)).astype(np.float32), [5, 6], T=tf.float32,
            align_corners=align, half_pixel_centers=not align).numpy()
# The resize gradient's y pass over runs of output rows (bands of several input rows need a batch):
# rows of sums at most 128 KB together (eight rows at a time, the clamped top rows joined to the
# first run) and over it (four at a time).
out["resize_grad_row_runs"] = lib.tfupsample_resize_bilinear_grad(rng.standard_normal((8, 32, 40, 21)).astype(np.float32), [4, 5], T=tf.float32, half_pixel_centers=True).numpy()
out["resize_grad_wide_row_runs"] = lib.tfupsample_resize_bilinear_grad(rng.standard_normal((8, 32, 520, 32)).astype(np.float32), [4, 65], T=tf.float32, half_pixel_centers=True).numpy()
# The resize loss gradient at 1 to 5 vectors of classes, the last whole or partial (the few-class
# vector rows take up to 4 in either build), up (clamped edges: both taps on one column) and down, label smoothing, an ignored
# label, per-pixel loss weights.
for c in (5, 16, 19, 28, 32, 40, 70):  # 70: past the rows' 4 vectors (a vector at a time)
    xv = rng.standard_normal((2, 6, 7, c)).astype(np.float32)
    if c == 19:  # an infinite and a NaN logit
        xv[0, 1, 2, 3], xv[1, 4, 5, 0] = np.inf, np.nan
    xc = tf.constant(xv)
    for size, kw in (((21, 26), {}), ((4, 5), dict(label_smoothing=0.1)), ((13, 15), dict(ignore_label=255, interpolation="align_corners"))):
        lab = rng.integers(0, c, (2, *size))
        if "ignore_label" in kw:
            lab[rng.random(lab.shape) < 0.2] = 255
        weights = tf.constant(rng.random((2, *size)).astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch(xc)
            loss = tu.upsample_sparse_softmax_cross_entropy(lab, xc, **{"interpolation": "bilinear", **kw}) * weights
        out[f"resize_loss_grad_{c}_{size[0]}"] = tape.gradient(loss, xc).numpy()
    # The FCN-semantics loss gradient alike (its few-class rows take up to 4 vectors too): an even
    # and an odd factor (one or two input columns per pixel), label smoothing, an ignored label.
    for f, kw in ((4, {}), (3, dict(label_smoothing=0.1)), (2, dict(ignore_label=255))):
        lab = rng.integers(0, c, (2, 6 * f, 7 * f))
        if "ignore_label" in kw:
            lab[rng.random(lab.shape) < 0.2] = 255
        weights = tf.constant(rng.random((2, 6 * f, 7 * f)).astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch(xc)
            loss = tu.upsample_sparse_softmax_cross_entropy(lab, xc, f, **kw) * weights
        out[f"loss_grad_{c}_x{f}"] = tape.gradient(loss, xc).numpy()
# The loss gradients a vector of classes at a time over runs longer than their pieces of 64
# pixels (3 -> 260 columns; the FCN's x130), with label smoothing and ignored labels.
x70 = tf.constant(rng.standard_normal((1, 3, 3, 70)).astype(np.float32))
for name, make_loss, shape in (
        ("resize", lambda lab: tu.upsample_sparse_softmax_cross_entropy(lab, x70, interpolation="bilinear", label_smoothing=0.1), (1, 5, 260)),
        ("fcn", lambda lab: tu.upsample_sparse_softmax_cross_entropy(lab, x70, 130, ignore_label=255), (1, 390, 390))):
    lab = rng.integers(0, 70, shape)
    if name == "fcn":
        lab[rng.random(lab.shape) < 0.2] = 255
    with tf.GradientTape() as tape:
        tape.watch(x70)
        loss = make_loss(lab) * tf.constant(rng.random(shape).astype(np.float32))
    out[f"loss_grad_long_runs_{name}"] = tape.gradient(loss, x70).numpy()
# The few-class loss forwards' class-major scores over rows of several blocks: windows that fit
# (8x up, the FCN's 3x), rows where only some blocks fit (40 -> 44 columns with 8-lane windows,
# 40 -> 17) or the last block is part of one, label smoothing, ignored labels, an infinite and a
# NaN logit.
xw = rng.standard_normal((2, 5, 40, 21)).astype(np.float32) * 3
xw[0, 1, 7, 3], xw[1, 2, 30, 0] = np.inf, np.nan
for name, size, kw in (("up", (9, 320), {}), ("near", (7, 44), dict(label_smoothing=0.2)),
                       ("near_ac", (6, 45), dict(interpolation="align_corners", ignore_label=255)), ("down", (3, 17), {})):
    lab = rng.integers(0, 21, (2, *size))
    if "ignore_label" in kw:
        lab[rng.random(lab.shape) < 0.2] = 255
    out[f"resize_loss_rows_{name}"] = tu.upsample_sparse_softmax_cross_entropy(
        lab, xw, **{"interpolation": "bilinear", **kw}).numpy()
out["loss_rows_x3"] = tu.upsample_sparse_softmax_cross_entropy(rng.integers(0, 21, (2, 15, 120)), xw, 3, label_smoothing=0.1).numpy()
# The loss forwards pixel by pixel (Reduce's 64 partials and their tree: 150 classes), with an
# infinite and a NaN logit in some pixels.
x150 = rng.standard_normal((2, 5, 6, 150)).astype(np.float32) * 3
x150[0, 1, 2, 7], x150[1, 3, 4, 0], x150[1, 0, 0, 140] = np.inf, np.nan, np.nan
lab150 = rng.integers(0, 150, (2, 20, 24))
out["loss_150"] = tu.upsample_sparse_softmax_cross_entropy(lab150, x150, 4).numpy()
out["resize_loss_150"] = tu.upsample_sparse_softmax_cross_entropy(lab150[:, :17, :19], x150, interpolation="bilinear").numpy()
# Reduce's tails past its whole blocks of partials (64 floats, 32 doubles): none (128), whole
# vectors only (72, 1000: 8 and 40 values), a partial vector (float64 70: 6 values past 64; 45:
# 13 past 32), in the loss forwards (an ignored label, label smoothing) and the argmax; all
# scores at -100 in one pixel (the exps of the partial vector's unused lanes stay in range).
for c, dtype in ((72, np.float32), (128, np.float32), (1000, np.float32), (45, np.float64), (70, np.float64)):
    xr = rng.standard_normal((1, 3, 4, c)).astype(dtype) * 4
    xr[0, 1, 1, :] = -100.0
    labr = rng.integers(0, c, (1, 7, 9))
    labr[0, 0, :3] = 255
    xt = tf.constant(xr)
    out[f"loss_tail_{c}_{dtype.__name__}"] = tu.upsample_sparse_softmax_cross_entropy(labr[:, :6, :8], xt, 2, ignore_label=255).numpy()
    out[f"resize_loss_tail_{c}_{dtype.__name__}"] = tu.upsample_sparse_softmax_cross_entropy(
        labr, xt, interpolation="bilinear", label_smoothing=0.1, ignore_label=255).numpy()
    out[f"argmax_tail_{c}_{dtype.__name__}"] = tu.upsample_argmax(xt, size=[7, 9], interpolation="bilinear", return_scores=True)[1].numpy()
# The losses with their gradient for 1 at every pixel (with_grad: one sweep in the vector builds
# from 64 classes past 4 vectors, the forward then the gradient below), label smoothing, ignored
# labels, and the transposed convolution's bands that reduce their shared rows each on their own.
for c, shape, f in ((70, (2, 3, 4, 70), 3), (150, (1, 5, 6, 150), 2), (1000, (1, 40, 3, 1000), 2)):
    xg = tf.constant(rng.standard_normal(shape).astype(np.float32) * 3)
    labg = rng.integers(0, c, (shape[0], shape[1] * f, shape[2] * f))
    labg[0, :2] = 255
    for name, kw in (("plain", {}), ("smooth", dict(label_smoothing=0.1)), ("ignore", dict(ignore_label=255, use_ignore_label=True))):
        lab = labg if name == "ignore" else np.where(labg == 255, 0, labg)
        for k, v in zip(("loss", "stats", "grad"), lib.tfupsample_upsample_sparse_softmax_cross_entropy(lab, xg, factor=f, with_grad=True, **kw)):
            out[f"with_grad_{c}_{name}_{k}"] = v.numpy()
        for k, v in zip(("loss", "stats", "grad"), lib.tfupsample_resize_sparse_softmax_cross_entropy(lab[:, :17, :11], xg, half_pixel_centers=True, with_grad=True, **kw)):
            out[f"resize_with_grad_{c}_{name}_{k}"] = v.numpy()
np.savez(sys.argv[1], **out)
"""


def _cpu_has(*flags):
    try:
        with open("/proc/cpuinfo") as f:
            have = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return all(flag in have for flag in flags)


def _run(path, isa=None, stream=False, x_pass=None):
    env = dict(os.environ)
    for name in ("TFUPSAMPLE_ISA", "TFUPSAMPLE_STREAM_BYTES", "TFUPSAMPLE_X_PASS"):
        env.pop(name, None)
    if isa:
        env["TFUPSAMPLE_ISA"] = isa
    if x_pass:  # the input gradients' x pass pixel by pixel or block by block (the CPU's vendor picks otherwise)
        env["TFUPSAMPLE_X_PASS"] = x_pass
    if stream:  # every output streamed (non-temporal stores: code of each build's own)
        env["TFUPSAMPLE_STREAM_BYTES"] = "0"
    r = subprocess.run([sys.executable, "-c", SCRIPT, path], env=env, capture_output=True,
                       text=True, timeout=300, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    return dict(np.load(path))


def test_every_build_agrees_bitwise(tmp_path):
    best = _run(str(tmp_path / "best.npz"))
    # The AVX2 and baseline builds stream every output, the best build none: equal bits also say
    # that each build's streamed path writes what the plain one does. Each of the best and the
    # AVX2 builds runs its x passes both pixel by pixel and block by block (the best build's first
    # as the CPU's vendor chooses, then the other way); the baseline's block by block, then pixel
    # by pixel (its scalar loop, also float64's in every build).
    other = "blocks" if str(best["x_pass"]) == "pixels" else "pixels"
    best_other = _run(str(tmp_path / "best_other.npz"), x_pass=other)
    avx2 = _run(str(tmp_path / "avx2.npz"), "avx2", stream=True, x_pass="pixels")
    avx2_blocks = _run(str(tmp_path / "avx2_blocks.npz"), "avx2", x_pass="blocks")
    base = _run(str(tmp_path / "base.npz"), "baseline", stream=True, x_pass="blocks")
    base_pixels = _run(str(tmp_path / "base_pixels.npz"), "baseline", x_pass="pixels")
    assert [str(r["x_pass"]) for r in (best_other, avx2, avx2_blocks, base, base_pixels)] == [
        other, "pixels", "blocks", "blocks", "pixels"]
    assert str(base["isa"]) == "baseline"  # TFUPSAMPLE_ISA=baseline is honoured
    # Dispatch picks the best build the CPU has (as /proc/cpuinfo says); TFUPSAMPLE_ISA=avx2 caps it.
    expected = ("avx512" if _cpu_has("avx2", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq")
                else "avx2" if _cpu_has("avx2", "f16c") else "baseline")
    assert str(best["isa"]) == expected
    assert str(avx2["isa"]) == ("baseline" if expected == "baseline" else "avx2")
    for key in best:
        if key not in ("isa", "x_pass"):
            for run in (best, best_other, avx2, avx2_blocks, base_pixels):
                ref.assert_same_bits(run[key], base[key], key)
