"""Independent references for tfupsample's ops, and the tolerances they are held to.

Every op is defined here again as a NumPy float64 loop written from its definition (the scatter
form of the transposed convolution, out[i*s - pad + a] += x[i] * w[a]; the FCN bilinear kernel
from its formula), not from tfupsample's code. The test suite, `tfupsample verify` and
`benchmarks/gpu_check.py` all compare against these, with the one tolerance table below and one
`assert_close`. Only `dense_transpose` needs TensorFlow and only `skimage_rescale` scikit-image
(each imports it when called), so the rest runs wherever NumPy does (a GPU machine without TF).

All arrays are NHWC unless a function says otherwise; `to_layout` / `from_layout` convert.
"""

import numpy as np

DTYPES = ("float16", "bfloat16", "float32", "float64")

# The largest error allowed: max |actual - reference| / max(1, max |reference|), per operation and
# dtype. The reference sees the values the op saw (inputs already rounded to the dtype), so what
# is left is the op's own rounding: its accumulation (in float32 for the half types), and the final
# rounding to the dtype, up to 2^-10 of the value for float16, 2^-7 for bfloat16, 2^-23 for
# float32 and 2^-52 for float64 at the bottom of a binade. The bounds are about twice that for the
# half types; for float32, the accumulation of a few dozen terms dominates.
#            float16  bfloat16  float32  float64
TOLERANCES = {
    # A sum of at most (k/s)^2 products per output (36 with a 6x6 kernel at stride 1), rounded
    # once to the dtype.
    "forward": (2e-3, 1e-2, 4e-6, 1e-12),
    # Each input sums every output its k x k taps reach (4096 products at factor 32): rounding
    # grows with the count, 5x the forward's bound for float32 and 10x for float64.
    "input_grad": (2e-3, 1e-2, 2e-5, 1e-11),
    # A sum over every output a tap reaches (N*H*W products): as the input gradient's, and twice
    # the forward's bound for the half types.
    "filter_grad": (4e-3, 2e-2, 2e-5, 1e-11),
    # The half types round the upsampled scores to the dtype before the softmax (as the unfused
    # path does); a score's rounding goes straight into log-sum-exp - score: twice the forward's.
    "loss": (4e-3, 2e-2, 4e-6, 1e-12),
    # softmax - onehot of those scores (an exp of each), then the input gradient's sum of up to
    # (2f)^2 terms: twice the loss's bound for float32.
    "loss_grad": (4e-3, 2e-2, 1e-5, 1e-12),
    # tf.image.resize's arithmetic (tfupsample.image; TF's own results are the reference it equals
    # bit for bit): the sample position u = (o + 0.5) * scale - 0.5 is computed in float32, a few
    # ulp of u off the exact position, and the value moves by that times the difference of two
    # neighbouring inputs: ~4 * 128 * 2^-23 = 6e-5 of the values' range for inputs of up to 128
    # pixels a side. The output is float32 whatever the input type (TF's rule): one bound for all.
    "resize": (6e-5, 6e-5, 6e-5, 6e-5),
    # Its gradient: the same positions' error, in sums over the outputs each input reaches, rounded
    # to the input's type at the end (2^-10 / 2^-7 of the value for the half types, as input_grad).
    "resize_grad": (2e-3, 1e-2, 6e-5, 6e-5),
    # tf.test.compute_gradient's numerical Jacobian (central differences in float64) against the
    # theoretical one: the differences' truncation error, not the op's rounding.
    "jacobian": (None, None, None, 1e-7),
}


def tolerance(op, dtype):
    """The bound for op (a key of TOLERANCES: "forward", "input_grad", "filter_grad", "loss",
    "loss_grad", "resize", "resize_grad", "jacobian") in dtype (a name, NumPy dtype or tf.DType)."""
    if not isinstance(dtype, str):
        dtype = getattr(dtype, "name", None) or np.dtype(dtype).name
    if op not in TOLERANCES:
        raise ValueError(f"op must be one of {sorted(TOLERANCES)}, got {op!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    tol = TOLERANCES[op][DTYPES.index(dtype)]
    if tol is None:
        raise ValueError(f"no tolerance for {op} in {dtype}")
    return tol


def _float64(a):
    if hasattr(a, "numpy") and callable(a.numpy):  # a TF / torch CPU tensor, any dtype
        import sys

        tf = sys.modules.get("tensorflow")
        if tf is not None and tf.is_tensor(a):
            a = tf.cast(a, tf.float64)
        a = a.numpy()
    return np.asarray(a, np.float64)


def relative_error(actual, expected):
    """max |actual - expected| / max(1, max |expected|); inf where the shapes differ, NaN where
    actual has a NaN that expected has not (so no bound passes it)."""
    actual, expected = _float64(actual), _float64(expected)
    if actual.shape != expected.shape:
        return float("inf")
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    diff = np.abs(actual - expected)
    if np.isnan(diff).any():
        return float("nan")
    return float(np.max(diff, initial=0.0)) / scale


def assert_close(actual, expected, dtype="float64", op="forward", what=""):
    """Fails unless relative_error(actual, expected) <= tolerance(op, dtype); `what` names the
    case in the message."""
    a, e = _float64(actual), _float64(expected)
    where = f"{what}: " if what else ""
    assert a.shape == e.shape, f"{where}shape {a.shape} != reference shape {e.shape}"
    err, tol = relative_error(a, e), tolerance(op, dtype)
    assert err <= tol, f"{where}{op} {dtype}: max relative error {err:.3g} > {tol}"


def assert_same_bits(actual, expected, what=""):
    """Fails unless the two arrays hold the same bits (so -0 and +0, or two NaNs, are told apart:
    assert_array_equal takes them as equal)."""
    bits = lambda a: a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "f" else a  # noqa: E731
    np.testing.assert_array_equal(bits(np.asarray(actual)), bits(np.asarray(expected)), err_msg=what)


# ------------------------------------------------------------------------------------------------
# Layouts

def to_nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def from_nchw(x):
    return np.transpose(np.asarray(x), (0, 2, 3, 1))


def to_layout(x, data_format):
    """An NHWC array in data_format's order (C-contiguous)."""
    return np.ascontiguousarray(to_nchw(x) if data_format == "NCHW" else x)


def from_layout(x, data_format):
    """An array in data_format's order back to NHWC."""
    return from_nchw(x) if data_format == "NCHW" else np.asarray(x)


# ------------------------------------------------------------------------------------------------
# Definitions

def _pairs(in_hw, out_hw, k_hw, strides, padding):
    """Every (i, j, a, b, o, p): input pixel (i, j) reaches output (o, p) through tap (a, b).

    TF's convention for the padding of a transposed convolution: SAME pads
    max((n_in - 1) * s + k - n_out, 0) // 2 before, VALID pads nothing.
    """
    (h, wd), (oh, ow), (kh, kw), (sh, sw) = in_hw, out_hw, k_hw, strides
    ph = max((h - 1) * sh + kh - oh, 0) // 2 if padding == "SAME" else 0
    pw = max((wd - 1) * sw + kw - ow, 0) // 2 if padding == "SAME" else 0
    for i in range(h):
        for j in range(wd):
            for a in range(kh):
                for b in range(kw):
                    o, p = i * sh - ph + a, j * sw - pw + b
                    if 0 <= o < oh and 0 <= p < ow:
                        yield i, j, a, b, o, p


def transposed_conv_loop(x, w, out_hw, strides, padding):
    """Depthwise transposed convolution by scattering every input pixel through every tap.
    x [N, H, W, C], w [kh, kw, C]; float64 [N, *out_hw, C]."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    out = np.zeros((x.shape[0], *out_hw, x.shape[3]), np.float64)
    for i, j, a, b, o, p in _pairs(x.shape[1:3], out_hw, w.shape[:2], strides, padding):
        out[:, o, p, :] += x[:, i, j, :] * w[a, b, :]
    return out


def transposed_conv_input_grad_loop(dy, w, in_hw, strides, padding):
    """Adjoint of transposed_conv_loop with respect to x."""
    dy, w = np.asarray(dy, np.float64), np.asarray(w, np.float64)
    dx = np.zeros((dy.shape[0], *in_hw, dy.shape[3]))
    for i, j, a, b, o, p in _pairs(in_hw, dy.shape[1:3], w.shape[:2], strides, padding):
        dx[:, i, j, :] += dy[:, o, p, :] * w[a, b, :]
    return dx


def transposed_conv_filter_grad_loop(x, dy, k_hw, strides, padding):
    """Adjoint of transposed_conv_loop with respect to w: [kh, kw, C]."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    dw = np.zeros((*k_hw, x.shape[3]))
    for i, j, a, b, o, p in _pairs(x.shape[1:3], dy.shape[1:3], k_hw, strides, padding):
        dw[a, b, :] += (dy[:, o, p, :] * x[:, i, j, :]).sum(axis=0)
    return dw


def bilinear_kernel(factor):
    """The FCN bilinear kernel (`upsample_filt` of the FCN reference code): size 2f - f % 2."""
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - centre) / factor) * (1 - abs(og[1] - centre) / factor)


def bilinear_filter(factor, channels):
    """The bilinear kernel as a per-channel [k, k, channels] filter."""
    return np.repeat(bilinear_kernel(factor)[:, :, None], channels, axis=2)


def bilinear_loop(x, factor):
    """Bilinear upsample by factor: the transposed convolution with the FCN kernel, stride
    factor, SAME padding, output factor x the input."""
    w = bilinear_filter(factor, x.shape[-1])
    return transposed_conv_loop(x, w, (x.shape[1] * factor, x.shape[2] * factor),
                                (factor, factor), "SAME")


def bilinear_grad_loop(dy, factor):
    """Adjoint of bilinear_loop: the input gradient for an output gradient dy."""
    h, w = dy.shape[1] // factor, dy.shape[2] // factor
    return transposed_conv_input_grad_loop(dy, bilinear_filter(factor, dy.shape[-1]), (h, w),
                                           (factor, factor), "SAME")


def upsample_argmax_loop(x, factor):
    """upsample_argmax from its definition: (labels, scores) of bilinear_loop(x, factor) -- the
    first maximum over classes (ties: the lowest class) and that maximum."""
    up = bilinear_loop(x, factor)
    return up.argmax(-1), up.max(-1)


def softmax_cross_entropy(up, labels, ignore=None, smoothing=0.0):
    """Per-pixel cross-entropy -sum(p * log_softmax(up)) of the target p = onehot(label), or
    (1 - s) onehot(label) + s / classes with label smoothing s, and its gradient softmax(up) - p
    to `up` ([..., classes], float64), both 0 at the ignore label."""
    up = np.asarray(up, np.float64)
    m = up.max(-1, keepdims=True)
    lse = m + np.log(np.exp(up - m).sum(-1, keepdims=True))
    skip = labels == ignore if ignore is not None else np.zeros(labels.shape, bool)
    target = np.eye(up.shape[-1])[np.where(skip, 0, labels)] * (1 - smoothing) + smoothing / up.shape[-1]
    loss = -(target * (up - lse)).sum(-1)
    grad = np.exp(up - lse) - target
    return np.where(skip, 0, loss), np.where(skip[..., None], 0, grad)


def upsample_softmax_cross_entropy(x, labels, factor, loss_grad, ignore=None, smoothing=0.0):
    """The fused loss head from its definition: (per-pixel loss of bilinear_loop(x, factor),
    gradient to x given the loss map's gradient loss_grad)."""
    loss, grad_up = softmax_cross_entropy(bilinear_loop(x, factor), labels, ignore, smoothing)
    return loss, bilinear_grad_loop(grad_up * np.asarray(loss_grad, np.float64)[..., None], factor)


def model_garden_loss(up, labels, ignore_label=None, class_weights=None, label_smoothing=0.0,
                      pixel_weights=None, top_k_percent_pixels=1.0):
    """Model Garden's SegmentationLoss (official/vision/losses/segmentation_losses.py, categorical
    cross-entropy) of the full-resolution logits `up` [N, H, W, C] in float64, written from its
    formula: per-pixel cross-entropy of the smoothed one-hot, times class_weights[label] (and
    pixel_weights), 0 where the label is ignore_label; the sum over (num_valid + 1e-5), or with
    top_k_percent_pixels < 1 the sum of the k = int(fraction * pixels) largest over
    (min(k, num_valid) + 1e-5)."""
    up = np.asarray(up, np.float64)
    labels = np.asarray(labels)
    loss, _ = softmax_cross_entropy(up, labels, ignore_label, label_smoothing)
    valid = labels != ignore_label if ignore_label is not None else np.ones(labels.shape, bool)
    weights = np.ones(up.shape[-1]) if class_weights is None else np.asarray(class_weights, np.float64)
    loss = loss * np.where(valid, weights[np.where(valid, labels, 0)], 0.0)
    if pixel_weights is not None:
        loss = loss * np.asarray(pixel_weights, np.float64)
    num_valid = valid.sum()
    if top_k_percent_pixels >= 1.0:
        return loss.sum() / (num_valid + 1e-5)
    k = int(np.float32(top_k_percent_pixels) * np.float32(loss.size))
    top = np.sort(loss.ravel())[::-1][:k]
    return top.sum() / (min(k, num_valid) + 1e-5)


RESIZE_MODES = ("half_pixel", "align_corners", "asymmetric")


def resize_matrix(n_in, n_out, mode="half_pixel"):
    """The [n_out, n_in] float64 matrix of one axis of a bilinear resize, from its definition:
    output o samples the input at u = (o + 0.5) * n_in / n_out - 0.5 (half-pixel centres, what
    tf.image.resize does), o * (n_in - 1) / (n_out - 1) (align_corners; 0 when n_out is 1) or
    o * n_in / n_out (asymmetric: resize_bilinear's default), and mixes inputs floor(u) and
    floor(u) + 1 with weights 1 - frac(u) and frac(u), each clamped into [0, n_in - 1]."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        if mode == "half_pixel":
            u = (o + 0.5) * n_in / n_out - 0.5
        elif mode == "align_corners":
            u = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            u = o * n_in / n_out
        lo = int(np.floor(u))
        frac = u - lo
        m[o, min(max(lo, 0), n_in - 1)] += 1 - frac
        m[o, min(max(lo + 1, 0), n_in - 1)] += frac
    return m


def resize_bilinear_loop(x, size, mode="half_pixel"):
    """Bilinear resize of x [N, H, W, C] to size (out_h, out_w), float64, from the definition
    (resize_matrix along each axis)."""
    x = np.asarray(x, np.float64)
    my, mx = resize_matrix(x.shape[1], size[0], mode), resize_matrix(x.shape[2], size[1], mode)
    return np.einsum("nyjc,xj->nyxc", np.einsum("yi,nijc->nyjc", my, x), mx)  # one axis at a time


def resize_bilinear_grad_loop(dy, in_hw, mode="half_pixel"):
    """Adjoint of resize_bilinear_loop: the gradient to an [N, *in_hw, C] input for dy."""
    dy = np.asarray(dy, np.float64)
    my, mx = resize_matrix(in_hw[0], dy.shape[1], mode), resize_matrix(in_hw[1], dy.shape[2], mode)
    return np.einsum("nixc,xj->nijc", np.einsum("yi,nyxc->nixc", my, dy), mx)


def dense_filter(w):
    """[kh, kw, C] -> the dense [kh, kw, C, C] filter of tf.nn.conv2d_transpose."""
    kh, kw, c = w.shape
    d = np.zeros((kh, kw, c, c), w.dtype)
    d[:, :, np.arange(c), np.arange(c)] = w
    return d


def dense_transpose(x, w, out_shape, strides, padding):
    """Stock tf.nn.conv2d_transpose with the dense filter (NHWC); needs TensorFlow."""
    import tensorflow as tf

    return tf.nn.conv2d_transpose(x, dense_filter(w), out_shape, [1, *strides, 1], padding).numpy()


def dense_bilinear(x, factor):
    """Stock tf.nn.conv2d_transpose with the dense [k, k, C, C] FCN bilinear filter written from
    its formula here (bilinear_kernel), in x's dtype, SAME, stride factor: what impl="dense"
    stands for, with weights that do not come from tfupsample's code. Returns a tensor (so a
    GradientTape sees through it); needs TensorFlow."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    c = int(x.shape[-1])
    filt = tf.constant(dense_filter(bilinear_filter(factor, c)), x.dtype)
    shape = tf.shape(x)
    out = tf.stack([shape[0], shape[1] * factor, shape[2] * factor, c])
    return tf.nn.conv2d_transpose(x, filt, out, factor, "SAME")


def skimage_rescale(x, factor):
    """skimage's order-1 rescale with zero borders, which equals the bilinear transposed
    convolution with SAME padding; needs scikit-image."""
    try:
        from skimage.transform import rescale
    except ImportError as e:
        raise ImportError("skimage_rescale needs scikit-image: pip install 'tfupsample[verify]'") from e
    return np.stack([rescale(np.asarray(im, np.float64), factor, order=1, mode="constant", cval=0,
                             clip=False, anti_aliasing=False, channel_axis=-1) for im in x])


def argmax_reference(x, factor, dtype, size=None, mode="half_pixel"):
    """upsample_argmax_loop's labels of logits x (NHWC, the values an op saw), and where they are
    certain for an op computing in dtype: the pixels whose two best classes in the float64
    definition are further apart than twice the forward's bound (rounding cannot swap them). With
    `size`, of the resize to it in convention `mode` (resize_bilinear_loop), with the resize's
    bound."""
    x64 = np.asarray(x, np.float64)
    up = bilinear_loop(x64, factor) if size is None else resize_bilinear_loop(x64, size, mode)
    bound = tolerance("forward" if size is None else "resize", dtype)
    top2 = np.sort(up, -1)[..., -2:]
    margin = 2 * bound * max(1.0, float(np.max(np.abs(up), initial=0.0)))
    return up.argmax(-1), (top2[..., 1] - top2[..., 0]) > margin, up


def assert_argmax_matches_loop(labels, scores, x, factor, dtype, what=""):
    """An upsample argmax's labels (and scores, unless None) of logits x against the float64
    definition (argmax_reference): labels equal wherever the definition's winner is certain, and
    such pixels must be at least half of them, so that the comparison is not vacuous; the score
    is the definition's value at the op's label, within the forward's bound, everywhere. Returns
    the compared fraction."""
    expected, clear, up = argmax_reference(x, factor, dtype)
    labels = np.asarray(labels)
    where = f"{what}: " if what else ""
    assert labels.shape == expected.shape, f"{where}labels shape {labels.shape} != {expected.shape}"
    assert clear.mean() >= 0.5, f"{where}only {clear.mean():.2f} of the pixels have a clear winner"
    bad = np.flatnonzero(labels[clear] != expected[clear])
    assert bad.size == 0, (f"{where}{bad.size} of {clear.sum()} clear labels differ from the "
                           f"definition's, e.g. {labels[clear][bad[0]]} vs {expected[clear][bad[0]]}")
    if scores is not None:
        at_label = np.take_along_axis(up, labels[..., None].astype(np.int64), -1)[..., 0]
        assert_close(scores, at_label, dtype, "forward", what or "argmax scores")
    return float(clear.mean())


# ------------------------------------------------------------------------------------------------
# Logits that stress upsample_argmax's pruning

def segmentation_logits(rng, shape, lead=8.0, blobs=4):
    """Segmentation-like logits [n, h, w, c] (float64): a smooth label field (a few blobs),
    one-hot x lead plus unit noise, so one class leads by a margin almost everywhere."""
    n, h, w, c = shape
    yy, xx = np.mgrid[:h, :w]
    centres = rng.uniform([0, 0], [h, w], (blobs, 2))
    cls = rng.integers(0, c, blobs)
    field = cls[np.argmin([(yy - cy) ** 2 + (xx - cx) ** 2 for cy, cx in centres], 0)]
    x = rng.standard_normal((n, h, w, c))
    x[:, yy, xx, field] += lead
    return x


ARGMAX_CASES = ("random", "segmentation", "ties", "near_ties", "ulp_leads", "huge", "non_finite")


def tf_argmax(v, lowest):
    """tf.argmax over the last axis as TF's CPU kernel (Eigen's ArgMax reducer) computes it: the
    first place of the largest value above `lowest` (the dtype's lowest finite value), or 0 where
    nothing is above it -- so NaN, -inf and lowest itself never win."""
    v = np.asarray(v, np.float64)
    best = np.zeros(v.shape[:-1], np.int64)
    best_v = np.full(v.shape[:-1], float(lowest))
    for c in range(v.shape[-1]):
        better = v[..., c] > best_v
        best[better], best_v[better] = c, v[..., c][better]
    return best


def argmax_logits(kind, shape, rng, dtype="float32"):
    """Logits [n, h, w, c] (c >= 21, h >= 3, w >= 3; float64 values) of one of ARGMAX_CASES:
    uniform random, segmentation-like, exact ties between leading classes (the lowest must win),
    1-ulp near-ties, a higher class leading a lower one by 1-3 ulps of `dtype` at every pixel
    (rounding can tie them in the upsample, and the lower must then win), huge magnitudes (the
    rounding margin scales with them), inf / NaN."""
    n, h, w, c = shape
    x = segmentation_logits(rng, shape) if kind == "segmentation" else rng.standard_normal(shape)
    if kind == "ties":
        x[..., 7] = x[..., 3] = x.max(-1) + 1  # two leading classes, equal everywhere
        x[..., 20] = x[..., 11]
    elif kind == "near_ties":
        x[..., 9] = np.maximum(np.nextafter(x[..., 4].astype(np.float32), np.float32(np.inf)), x.max(-1))
        x[..., 4] = np.nextafter(x[..., 9].astype(np.float32), np.float32(-np.inf))
    elif kind == "ulp_leads":
        bits = {"float16": 10, "bfloat16": 7, "float32": 23, "float64": 52}[dtype]
        # mantissas [1, 2) on the dtype's grid, short of 2 by more than 3 ulps (the lead stays in the binade)
        mantissa = np.ldexp(rng.integers(2**bits, 2 ** (bits + 1) - 3, (n, h, w)).astype(np.float64), -bits)
        exponent = rng.integers(3, 5, (n, h, w))  # values in [8, 32): above the others
        x[..., 5] = np.ldexp(mantissa, exponent)
        x[..., 12] = x[..., 5] + rng.integers(1, 4, (n, h, w)) * np.ldexp(1.0, exponent - bits)
    elif kind == "huge":
        x = x * 1e30 if dtype in ("float32", "float64", "bfloat16") else x * 1e4
    elif kind == "non_finite":
        x[0, 1, 2, 5] = np.inf
        x[0, 2, 1, :] = -np.inf
        x[-1, 0, 0, 3] = np.nan
        x[0, 0, 1, 0] = np.nan  # in the first class: tf.argmax passes over it
    elif kind not in ("random", "segmentation"):
        raise ValueError(f"kind must be one of {ARGMAX_CASES}, got {kind!r}")
    return x
