"""The CUDA kernels' launch sequences (csrc/cuda/launch.cuh), run on the CPU: nvcc compiles them as
host code and every block and thread of the real grid runs in turn (tests/cuda_host/emulate.cu).
This checks the GPU index arithmetic, tap runs, chunked filter reduction and heads against the
NumPy loops on machines without a GPU; benchmarks/gpu_check.sh runs the same kernels on a GPU."""

import os
import subprocess

import ml_dtypes
import numpy as np
import pytest

import tfupsample.testing as ref
import tfupsample.cuda as tc
from cuda_host import emulator

ROOT = emulator.ROOT
DTYPES = {"float16": (0, np.float16), "bfloat16": (1, ml_dtypes.bfloat16),
          "float32": (2, np.float32), "float64": (3, np.float64)}

pytestmark = pytest.mark.skipif(not emulator.have_nvcc(), reason="needs nvcc")


def call(lib, op, dims, dtype, *arrays):
    """Runs op on NumPy arrays; a refused call raises (ValueError with the kernel's reason)."""
    emulator.Ext(lib).run(op, dims, DTYPES[dtype][0], [a.ctypes.data for a in arrays], 0)


def dims(x_shape, out_hw, k, s, padding="SAME", layout="NHWC", ignore=None):
    """The values the bindings pass (tfupsample.cuda builds them the same way)."""
    return tc._args(*x_shape, *out_hw, k, s, padding, layout, ignore)


to_layout, from_layout = ref.to_layout, ref.from_layout


def bilinear_dims(shape, f, layout="NHWC"):
    k = 2 * f - f % 2
    return dims(shape, (shape[1] * f, shape[2] * f), (k, k), (f, f), "SAME", layout)


def test_divider_matches_integer_division(emu):
    rng = np.random.default_rng(0)
    cases = [(n, d) for d in (1, 2, 3, 7, 32, 1000, 2**31 - 1, 2**31, 2**32 + 1, 2**62 + 3)
             for n in (0, 1, d - 1, d, d + 1, 2**31, 2**32 - 1, 2**62, 2**63 - 1) if n >= 0]
    cases += [(int(rng.integers(0, 2**63 - 1)), int(rng.integers(1, 2**rng.integers(1, 63))))
              for _ in range(3000)]
    for n, d in cases:
        assert emu.tfup_emu_divide(n, d) == n // d, (n, d)


def test_divider_32_bit_matches_integer_division(emu):
    # The int32 indices of tensors under 2^31 - 2^28 elements: every n >= 0 up to 2^31 - 1.
    rng = np.random.default_rng(1)
    divisors = [1, 2, 3, 5, 7, 21, 32, 150, 704, 1000, 4096, 65537, 2**30 + 3, 2**31 - 1]
    divisors += [int(rng.integers(1, 2**rng.integers(1, 32))) for _ in range(200)]
    for d in divisors:
        ns = {0, 1, d - 1, d, d + 1, 2 * d - 1, 2**31 - 1, 2**31 - 2, 2**30}
        ns |= {int(v) for v in rng.integers(0, 2**31 - 1, 40)}
        for n in ns:
            if 0 <= n < 2**31:
                assert emu.tfup_emu_divide32(n, d) == n // d, (n, d)


def test_short_divider_matches_integer_division_in_its_range(emu):
    # One multiply-high, exact for n * d < 2^32 (the NHWC row runs: n < w * C / V, d = C / V).
    rng = np.random.default_rng(2)
    for d in [2, 3, 7, 19, 21, 75, 127, 250, 1000, 65535, 2**20 + 7]:  # (d >= 2: C / V = 1 does not divide)
        top = min(2**31 - 1, (2**32 - 1) // d)
        ns = {0, 1, d - 1, d, d + 1, top, top - 1, top - d} | {int(v) for v in rng.integers(0, top + 1, 300)}
        for n in ns:
            if 0 <= n <= top:
                assert emu.tfup_emu_divide_short(n, d) == n // d, (n, d)


def test_row_pairs_share_their_input_rows(emu):
    # The bilinear forward's row runs pair rows (y, y + 1) from y = -shift; the launch's shift
    # makes at least as many pairs away from the edges read the same input rows as the other
    # would, and at an even factor all of them (inputs from the definition: 0 <= y + pad - i*f < k).
    for f in range(2, 10):
        k = 2 * f - f % 2
        for n_in in (3, 7, 20):
            n_out = n_in * f
            pad = max((n_in - 1) * f + k - n_out, 0) // 2
            inputs = [tuple(i for i in range(n_in) if 0 <= y + pad - i * f < k) for y in range(n_out)]
            # pairs (y, y + 1) with y = shift mod 2, away from the edges (2f rows)
            shared = {s: [y for y in range(2 * f + s, n_out - 2 * f - 1, 2) if inputs[y] == inputs[y + 1]]
                      for s in (0, 1)}
            shift = emu.tfup_emu_pair_shift(n_in, n_out, f, k, pad)
            assert len(shared[shift]) >= len(shared[1 - shift]), (f, n_in, shift)
            if f % 2 == 0:
                assert len(shared[shift]) == len(range(2 * f + shift, n_out - 2 * f - 1, 2)), (f, n_in, shift)


def test_argmax_cells_tile_each_axis(emu):
    # Every output lies in its cell's span, the spans tile the axis, none is longer than the
    # factor (the argmax's sub-blocks per cell are sized by it).
    for f in list(range(1, 41)) + [63, 64, 100]:
        for n in (1, 2, 3, 4, 7, 16):
            assert emu.tfup_emu_check_cells(n, f) == 0, (n, f)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 7, 8, 9, 32])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_bilinear_forward_and_gradient(emu, factor, layout, rng):
    shape = {2: (1, 2, 2, 600), 32: (1, 2, 3, 3)}.get(factor, (2, 3, 4, 5))  # 600: 3 groups
    x = rng.standard_normal(shape)
    oh, ow = shape[1] * factor, shape[2] * factor
    for dtype, (_, np_t) in DTYPES.items():
        xt = to_layout(x.astype(np_t), layout)
        out = np.zeros_like(to_layout(np.zeros((shape[0], oh, ow, shape[3]), np_t), layout))
        call(emu, "BilinearForward", bilinear_dims(shape, factor, layout), dtype, xt, out)
        ref.assert_close(from_layout(out.astype(np.float64), layout),
                         ref.bilinear_loop(x.astype(np_t).astype(np.float64), factor), dtype)

    dy = rng.standard_normal((shape[0], oh, ow, shape[3]))
    for dtype in ("float32", "float64", "bfloat16"):
        np_t = DTYPES[dtype][1]
        dx = np.full_like(to_layout(x.astype(np_t), layout), np.nan)  # unwritten stays NaN
        call(emu, "BilinearBackpropInput", bilinear_dims(shape, factor, layout), dtype,
             to_layout(dy.astype(np_t), layout), dx)
        exp = ref.bilinear_grad_loop(dy.astype(np_t), factor)
        # NaN (an element never written) fails this too.
        ref.assert_close(from_layout(dx, layout), exp, dtype, "input_grad")


CASES = [  # input [n, h, w, c], kernel, strides, padding, output size (None: the default)
    ((2, 3, 4, 3), (4, 4), (2, 2), "SAME", None),
    ((1, 3, 3, 2), (3, 5), (2, 3), "SAME", (5, 8)),
    ((2, 2, 3, 4), (2, 2), (3, 3), "VALID", None),  # kernel smaller than the stride
    ((1, 4, 2, 1), (5, 3), (1, 2), "VALID", (8, 6)),
    ((1, 3, 2, 33), (6, 6), (3, 3), "SAME", (8, 6)),  # channels past one warp
    ((1, 2, 2, 300), (3, 2), (2, 2), "SAME", None),  # channels split into groups of 256
    ((2, 1, 1, 2), (1, 1), (1, 1), "SAME", None),
    ((0, 3, 3, 2), (3, 3), (2, 2), "SAME", None),  # empty batch
    ((1, 0, 3, 2), (3, 3), (2, 2), "VALID", (2, 7)),  # empty input height, non-empty output
]


def _out_hw(shape, k, s, padding, out):
    if out is not None:
        return out
    return tuple(n * st if padding == "SAME" else (n - 1) * st + kk if n else 0
                 for n, kk, st in zip(shape[1:3], k, s))


def _depthwise_case(case, layout, dtype, rng):
    """(shape, strides, padding, output size, x, filter, dy, the binding's dims) of a CASES entry."""
    shape, k, s, padding, out = case
    out_hw = _out_hw(shape, k, s, padding, out)
    np_t = DTYPES[dtype][1]
    x = rng.standard_normal(shape).astype(np_t)
    w = rng.standard_normal((*k, shape[3])).astype(np_t)
    dy = rng.standard_normal((shape[0], *out_hw, shape[3])).astype(np_t)
    return shape, s, padding, out_hw, x, w, dy, dims(shape, out_hw, k, s, padding, layout)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_depthwise_forward_and_gradients(emu, case, layout, dtype, rng):
    shape, s, padding, out_hw, x, w, dy, d = _depthwise_case(case, layout, dtype, rng)
    k = w.shape[:2]
    np_t = DTYPES[dtype][1]
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))

    y = np.full(to_layout(dy, layout).shape, np.nan, np_t)  # every element must be written
    call(emu, "DepthwiseForward", d, dtype, to_layout(x, layout), w, y)
    ref.assert_close(from_layout(y.astype(np.float64), layout),
                     ref.transposed_conv_loop(x64, w64, out_hw, s, padding), dtype)

    dx = np.full(to_layout(x, layout).shape, np.nan, np_t)
    call(emu, "DepthwiseBackpropInput", d, dtype, to_layout(dy, layout), w, dx)
    ref.assert_close(from_layout(dx.astype(np.float64), layout),
                     ref.transposed_conv_input_grad_loop(dy64, w64, shape[1:3], s, padding), dtype,
                     "input_grad")

    dw = np.full(w.shape, np.nan, np_t)
    call(emu, "DepthwiseBackpropFilter", d, dtype, to_layout(x, layout), to_layout(dy, layout), dw)
    ref.assert_close(dw, ref.transposed_conv_filter_grad_loop(x64, dy64, k, s, padding), dtype,
                     "filter_grad")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("shape", [(3, 700, 2, 1), (1, 70001, 1, 1)], ids=str)
def test_filter_gradient_chunked_over_many_rows(emu, shape, layout, rng):
    # 1 tap x 1 channel: the rows are cut into many chunks (2^20 threads wanted; at most 2^16
    # partials: 70001 rows make 35001 chunks of 2, or in NCHW 2001 chunks of 35 with a partial per
    # lane), added in two levels of up to 256 in order. (C = 1: the layouts share the memory.)
    x = rng.standard_normal(shape)
    out_hw = (shape[1] * 2, shape[2] * 2)
    dy = rng.standard_normal((shape[0], *out_hw, 1))
    dw = np.full((1, 1, 1), np.nan)
    call(emu, "DepthwiseBackpropFilter", dims(shape, out_hw, (1, 1), (2, 2), layout=layout), "float64",
         to_layout(x, layout), to_layout(dy, layout), dw)
    expected = ref.transposed_conv_filter_grad_loop(x, dy, (1, 1), (2, 2), "SAME")
    ref.assert_close(dw, expected, "float64", "filter_grad")


@pytest.mark.parametrize("factor", [2, 3, 8, 32])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_heads(emu, factor, dtype, rng):
    shape = (2, 3, 2, 7) if factor < 32 else (1, 2, 2, 5)
    np_t = DTYPES[dtype][1]
    x = (rng.standard_normal(shape) * 3).astype(np_t)
    d = bilinear_dims(shape, factor)
    oh, ow = shape[1] * factor, shape[2] * factor
    up = np.zeros((shape[0], oh, ow, shape[3]), np_t)
    call(emu, "BilinearForward", d, dtype, x, up)

    labels = np.full((shape[0], oh, ow), -7, np.int64)  # every element must be written
    scores = np.full((shape[0], oh, ow), np.nan, np_t)
    call(emu, "UpsampleArgmax", d, dtype, x, labels, scores)
    # The same arithmetic as the forward: labels and scores equal argmax / max of it, bit for bit.
    np.testing.assert_array_equal(labels, np.argmax(up.astype(np.float64), -1))
    np.testing.assert_array_equal(scores.astype(np.float64), up.astype(np.float64).max(-1))
    # And the float64 definition, which shares nothing with the kernels (the forward above does).
    ref.assert_argmax_matches_loop(labels, scores, x.astype(np.float64), factor, dtype)

    target = rng.integers(0, shape[3], labels.shape)
    target[0, 0, :] = 3  # the ignore label, on one row
    g = rng.standard_normal(labels.shape)
    exp_loss, expected = ref.upsample_softmax_cross_entropy(x, target, factor, g.astype(np_t), ignore=3)
    loss = np.full(labels.shape, np.nan, np_t)  # so "ignored pixels give 0" can fail
    stats = np.full(labels.shape + (2,), np.nan)
    call(emu, "UpsampleSoftmaxCrossEntropy", d[:12] + [1, 3] + d[14:], dtype, x, target, loss, stats)
    ref.assert_close(loss, exp_loss, dtype, "loss")
    assert np.all(loss[0, 0, :] == 0)
    # stats: the scores' max and sum of exp(score - max), from the upsample as stored; 0 where
    # the label is ignored.
    up64, keep = up.astype(np.float64), target != 3
    top = up64.max(-1)
    ref.assert_close(stats[..., 0], np.where(keep, top, 0), dtype, "loss")
    ref.assert_close(stats[..., 1], np.where(keep, np.exp(up64 - top[..., None]).sum(-1), 0), dtype, "loss")

    grad = np.full(shape, np.nan, np_t)
    call(emu, "UpsampleSoftmaxCrossEntropyGrad", d[:12] + [1, 3] + d[14:], dtype, x, target, stats, g.astype(np_t), grad)
    ref.assert_close(grad, expected, dtype, "loss_grad")

    # int32 labels, read as such (narrow labels): the same loss and gradient.
    narrow = d[:12] + [1, 3] + d[14:16] + [1, 0]
    target32 = target.astype(np.int32)
    loss32, stats32, grad32 = np.full_like(loss, np.nan), np.full_like(stats, np.nan), np.full_like(grad, np.nan)
    call(emu, "UpsampleSoftmaxCrossEntropy", narrow, dtype, x, target32, loss32, stats32)
    ref.assert_close(loss32, exp_loss, dtype, "loss")
    call(emu, "UpsampleSoftmaxCrossEntropyGrad", narrow, dtype, x, target32, stats32, g.astype(np_t), grad32)
    ref.assert_close(grad32, expected, dtype, "loss_grad")

    # One loss gradient value for every pixel (uniform loss_grad, as XLA may pass it): loss_grad[0].
    uniform = d[:12] + [1, 3] + d[14:16] + [0, 1]
    _, expected_u = ref.upsample_softmax_cross_entropy(x, target, factor, np.full(labels.shape, 0.75, np_t), ignore=3)
    grad_u = np.full_like(grad, np.nan)
    call(emu, "UpsampleSoftmaxCrossEntropyGrad", uniform, dtype, x, target, stats, np.array([0.75], np_t), grad_u)
    ref.assert_close(grad_u, expected_u, dtype, "loss_grad")

    # The loss with its gradient for a loss gradient of 1 at every pixel (the TF op's with_grad),
    # and without it (a null gradient: the loss and stats alone).
    _, expected_1 = ref.upsample_softmax_cross_entropy(x, target, factor, np.ones(labels.shape, np_t), ignore=3)
    loss_1, stats_1, grad_1 = np.full_like(loss, np.nan), np.full_like(stats, np.nan), np.full_like(grad, np.nan)
    call(emu, "UpsampleSoftmaxCrossEntropyWithGrad", d[:12] + [1, 3] + d[14:], dtype, x, target, loss_1, stats_1, grad_1)
    ref.assert_close(loss_1, exp_loss, dtype, "loss")
    ref.assert_close(grad_1, expected_1, dtype, "loss_grad")
    loss_0, stats_0 = np.full_like(loss, np.nan), np.full_like(stats, np.nan)
    emulator.Ext(emu).run("UpsampleSoftmaxCrossEntropyWithGrad", d[:12] + [1, 3] + d[14:], DTYPES[dtype][0],
                          [x.ctypes.data, target.ctypes.data, loss_0.ctypes.data, stats_0.ctypes.data, None], 0)
    ref.assert_same_bits(loss_0, loss_1, "loss without the gradient")
    ref.assert_same_bits(stats_0, stats_1, "stats without the gradient")


@pytest.mark.parametrize("factor", [2, 3, 5, 8, 32])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", ref.ARGMAX_CASES)
def test_pruned_argmax_equals_argmax_of_the_forward(emu, factor, dtype, kind, rng):
    # The two-pass argmax (candidates per cell, then the survivors per pixel) against the argmax
    # of the CUDA forward, bit for bit, on the logits that stress the pruning.
    # 150 classes: three mask words, each word's statistics needed by the others' pixels.
    classes = 150 if factor in (3, 32) else 40
    shape = (1, 3, 4, classes) if factor >= 16 else (2, 5, 6, classes)
    np_t = DTYPES[dtype][1]
    x = ref.argmax_logits(kind, shape, rng, dtype).astype(np_t)
    d = bilinear_dims(shape, factor)
    oh, ow = shape[1] * factor, shape[2] * factor
    up = np.zeros((shape[0], oh, ow, shape[3]), np_t)
    call(emu, "BilinearForward", d, dtype, x, up)
    labels = np.full((shape[0], oh, ow), -7, np.int64)
    scores = np.full((shape[0], oh, ow), np.nan, np_t)
    call(emu, "UpsampleArgmax", d, dtype, x, labels, scores)
    if kind in ("random", "segmentation", "huge"):  # the float64 definition, away from near-ties
        ref.assert_argmax_matches_loop(labels, scores, x.astype(np.float64), factor, dtype)
    up64 = up.astype(np.float64)
    # tf.argmax's rule (the ops' on both devices): the first maximum above the dtype's lowest
    # value; NaN, -inf never win, and nothing above lowest gives class 0.
    np.testing.assert_array_equal(labels, ref.tf_argmax(up64, float(ml_dtypes.finfo(np_t).min)))
    np.testing.assert_array_equal(scores.astype(np.float64), np.take_along_axis(up64, labels[..., None], -1)[..., 0])


def test_bad_labels_give_nan_like_tf_on_gpu(emu, rng):
    shape = (1, 2, 2, 4)
    x = rng.standard_normal(shape)
    d = bilinear_dims(shape, 2)
    target = np.zeros((1, 4, 4), np.int64)
    target[0, 1, 2] = 4  # out of range
    target[0, 3, 3] = -1
    loss, stats = np.zeros(target.shape), np.zeros(target.shape + (2,))
    call(emu, "UpsampleSoftmaxCrossEntropy", d, "float64", x, target, loss, stats)
    bad = np.zeros(target.shape, bool)
    bad[0, 1, 2] = bad[0, 3, 3] = True
    assert np.all(np.isnan(loss[bad])) and np.all(np.isfinite(loss[~bad]))
    assert np.all(np.isnan(stats[bad])) and np.all(np.isfinite(stats[~bad]))
    grad = np.zeros(shape)
    call(emu, "UpsampleSoftmaxCrossEntropyGrad", d, "float64", x, target, stats, np.ones(target.shape), grad)
    assert np.isnan(grad).any()


def test_tf_gpu_adapter_compiles():
    # The GPU registrations exist only under GOOGLE_CUDA, which this CPU build never defines:
    # compile the TF adapters that way (syntax only) so that a break shows here, not on a GPU.
    import tensorflow as tf

    flags = [f for f in tf.sysconfig.get_compile_flags() if not f.startswith(("--std", "-std"))]
    files = [os.path.join(ROOT, "csrc", "tf", f) for f in ("kernels.cc", "heads.cc")]
    include = tf.sysconfig.get_include()
    if os.path.exists(os.path.join(include, "xla", "ffi", "api", "ffi.h")):  # the XLA handlers (CUDA ones too)
        files += [os.path.join(ROOT, "csrc", "tf_xla", f) for f in ("kernels.cc", "ffi.cc")]
        flags += ["-I" + os.path.join(include, "external", "highwayhash"),
                  "-I" + os.path.join(include, "external", "farmhash_archive", "src")]
    result = subprocess.run(["nvcc", "-std=c++17", "-x", "c++", "-c", "-DGOOGLE_CUDA=1",
                             "-I" + os.path.join(ROOT, "csrc"),
                             "-Xcompiler", "-fsyntax-only,-Wno-deprecated-declarations", *flags, *files],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_bilinear_forward_vector_paths_agree_bitwise(emu, rng):
    # C = 8: 4-wide vectors when aligned; from a buffer offset by one element, the scalar path.
    # Both do the same arithmetic per element: the same bits.
    shape, f = (2, 3, 4, 8), 3
    x = rng.standard_normal(shape).astype(np.float32)
    buf = np.zeros(x.size + 1, np.float32)
    buf[1:] = x.ravel()
    shifted = buf[1:].reshape(shape)
    assert shifted.ctypes.data % 16 != 0
    outs = []
    for src in (x, shifted):
        out = np.zeros((2, 9, 12, 8), np.float32)
        call(emu, "BilinearForward", bilinear_dims(shape, f), "float32", src, out)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    ref.assert_close(outs[0], ref.bilinear_loop(x.astype(np.float64), f), "float32")


@pytest.fixture(scope="module")
def emu64(tmp_path_factory):
    """The emulation built so that every launch takes the 64-bit index path."""
    return emulator.build(str(tmp_path_factory.mktemp("cuda_host64")), defines=["TFUP_INDEX32_LIMIT=0"])


# Shapes that reach each launch shape of the bilinear forward: NHWC channel lanes (at least 128
# vectors: 600 channels 4-wide (float64: 2-wide), 1100 in two groups of 256 vectors, 129 1-wide with
# a partial warp), NHWC rows (4-, 2- and 1-wide: 64, 150, 33, 21, 5, 3, 16 and 1 channels; one
# vector per position: 4, 2 and 1 channels), NCHW rows; rows of more than one 512-element piece and
# runs cut by the row end. Rows go in pairs: pairs whose rows share their input rows (every pair
# at even factors, some at 3 and 5), pairs that do not, and a last row alone (odd heights: 9, 15, 5).
FORWARD_SHAPES = [((1, 3, 2, 64), 2), ((2, 2, 3, 600), 3), ((1, 2, 2, 1100), 2), ((1, 2, 2, 129), 3),
                  ((1, 2, 2, 150), 4), ((1, 3, 2, 33), 2), ((2, 3, 4, 21), 3), ((1, 2, 3, 5), 8),
                  ((1, 2, 40, 3), 8), ((1, 3, 2, 16), 32), ((2, 2, 9, 1), 32), ((1, 3, 5, 4), 2),
                  ((2, 5, 3, 2), 3), ((1, 1, 3, 7), 5)]


@pytest.mark.parametrize("shape, f", FORWARD_SHAPES, ids=str)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_bilinear_forward_launch_shapes_and_index_widths(emu, emu64, shape, f, layout, rng):
    # Every launch shape against the loop from the definition; the 64-bit index path (huge
    # tensors: rows only) gives the same bits as the 32-bit one.
    x = rng.standard_normal(shape)
    out_shape = to_layout(np.zeros((shape[0], shape[1] * f, shape[2] * f, shape[3])), layout).shape
    for dtype in ("float32", "float16", "float64"):
        np_t = DTYPES[dtype][1]
        outs = []
        for lib in (emu, emu64):
            out = np.full(out_shape, np.nan, np_t)  # every element must be written
            call(lib, "BilinearForward", bilinear_dims(shape, f, layout), dtype, to_layout(x.astype(np_t), layout), out)
            outs.append(out)
        np.testing.assert_array_equal(outs[0], outs[1])
        ref.assert_close(from_layout(outs[0].astype(np.float64), layout),
                         ref.bilinear_loop(x.astype(np_t).astype(np.float64), f), dtype)


# The gathers (the bilinear input gradient's two passes, the depthwise forward and input
# gradient, the resize and its gradient's two passes) run int32 indices where every tensor and
# axis fits and int64 otherwise: both give the same bits, and the loops' values. Shapes: NCHW
# (int32: runs of 16 x per lane, rows of more than one 512-element piece; int64: an element per
# thread), NHWC under 32 channels (an element per thread) and channel groups past one warp (600:
# 3 groups), up and down.
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_gathers_index_widths_agree(emu, emu64, layout, rng):
    assert emu.tfup_emu_index32_limit() > 2**30 and emu64.tfup_emu_index32_limit() == 0

    def both(op, d, out_dtype, out_shape, *ins, dtype=None):
        outs = []
        for lib in (emu, emu64):
            out = np.full(out_shape, np.nan, DTYPES[out_dtype][1])  # every element must be written
            ins_laid = [a if a.ndim == 3 else to_layout(a, layout) for a in ins]  # (a filter stays)
            call(lib, op, d, dtype or out_dtype, *ins_laid, out)
            outs.append(out)
        np.testing.assert_array_equal(outs[0], outs[1], err_msg=op)
        return from_layout(outs[0].astype(np.float64), layout)

    for (shape, f), dtype in zip((((1, 2, 3, 600), 2), ((2, 3, 4, 5), 3), ((1, 2, 2, 3), 32)),
                                 ("float32", "bfloat16", "float64")):
        dy = rng.standard_normal((shape[0], shape[1] * f, shape[2] * f, shape[3])).astype(DTYPES[dtype][1])
        dx = both("BilinearBackpropInput", bilinear_dims(shape, f, layout), dtype,
                  to_layout(np.zeros(shape), layout).shape, dy)
        ref.assert_close(dx, ref.bilinear_grad_loop(dy, f), dtype, "input_grad")
    # Depthwise: every case (300 channels: two channel groups; empty batch and input height).
    for case, dtype in zip(CASES, ("float64", "float16", "float32") * 3):
        shape, s, padding, out_hw, x, w, dy, d = _depthwise_case(case, layout, dtype, rng)
        y = both("DepthwiseForward", d, dtype, to_layout(dy, layout).shape, x, w)
        ref.assert_close(y, ref.transposed_conv_loop(x.astype(np.float64), w.astype(np.float64), out_hw, s, padding),
                         dtype)
        dx = both("DepthwiseBackpropInput", d, dtype, to_layout(x, layout).shape, dy, w)
        ref.assert_close(dx, ref.transposed_conv_input_grad_loop(dy.astype(np.float64), w.astype(np.float64),
                                                                 shape[1:3], s, padding), dtype, "input_grad")
    for (h, w_in, oh, ow), c, name, dtype in (((3, 5, 8, 13), 3, "half_pixel", "float32"),
                                             ((9, 9, 65, 65), 2, "align_corners", "float16"),
                                             ((12, 7, 5, 3), 40, "half_pixel", "float64"),
                                             ((4, 6, 9, 4), 600, "asymmetric", "float32"),
                                             ((3, 40, 2, 1100), 2, "half_pixel", "float32")):  # rows of 3 pieces
        x = rng.standard_normal((2, h, w_in, c)).astype(DTYPES[dtype][1])
        g = rng.standard_normal((2, oh, ow, c)).astype(np.float32)
        args = tc._args(2, h, w_in, c, oh, ow, (1, 1), (1, 1), data_format=layout, resize=name)
        y = both("ResizeBilinear", args, "float32", to_layout(np.zeros((2, oh, ow, c)), layout).shape, x, dtype=dtype)
        ref.assert_close(y, ref.resize_bilinear_loop(x.astype(np.float64), (oh, ow), name), "float32")
        dx = both("ResizeBilinearBackpropInput", args, dtype, to_layout(x, layout).shape, g)
        ref.assert_close(dx, ref.resize_bilinear_grad_loop(g, (h, w_in), name), dtype, "resize_grad")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_bilinear_forward_of_an_empty_input_is_zeros(emu, layout):
    # VALID with no input rows still has output rows (up to k - 1): nothing reaches them.
    shape, out_hw = (1, 0, 3, 2), (3, 8)
    out = np.full(to_layout(np.zeros((1, *out_hw, 2)), layout).shape, np.nan, np.float32)
    x = np.zeros(to_layout(np.zeros(shape), layout).shape, np.float32)
    call(emu, "BilinearForward", dims(shape, out_hw, (4, 4), (2, 2), "VALID", layout), "float32", x, out)
    np.testing.assert_array_equal(out, 0)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_non_finite_inputs_reach_only_their_taps(emu, layout):
    # inf and NaN in the corners and the middle: the outputs they reach are inf / NaN exactly as
    # in the loop from the definition (a skipped tap is not "weight 0 times inf").
    shape, f = (1, 4, 5, 8), 4
    x = np.ones(shape)
    x[0, 0, 0, :4] = np.inf
    x[0, 3, 4, 4:] = -np.inf
    x[0, 2, 2, 1] = np.nan
    expected = ref.bilinear_loop(x, f)
    for dtype in ("float32", "float64", "float16"):
        np_t = DTYPES[dtype][1]
        out = np.zeros(to_layout(np.zeros(expected.shape), layout).shape, np_t)
        call(emu, "BilinearForward", bilinear_dims(shape, f, layout), dtype, to_layout(x.astype(np_t), layout), out)
        got = from_layout(out.astype(np.float64), layout)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
