"""`tfupsample verify`: parity, factor by factor.

For each factor, a 3x3x3 test image (value (x + y) / 6) and random inputs of several shapes go
through our op (NHWC and NCHW), the NumPy binding, the dense `tf.nn.conv2d_transpose` with the
[k, k, C, C] filter written from the bilinear formula (`tfupsample.testing`, not our weights, so
the weights are checked too), and skimage's `rescale(order=1, mode="constant", clip=False)`.
Gradients of our ops (to the input, and to a trainable filter holding `bilinear_upsample_weights`)
are compared with autodiff through the dense path. `tfupsample.image`'s resize is compared with
`tf.image.resize` / `tf.compat.v1.image.resize_bilinear` at f x the size (half-pixel centres, and
the asymmetric convention: neither half-pixel centres nor aligned corners) and at DeepLab's
`f * (n - 1) + 1` with aligned corners, and at fractional sizes (65 -> 513, 33 -> 100, 100 -> 37, ...)
in all three conventions with stock TF and the float64 definition, gradients included. Bounds:
tfupsample.testing's table for float32, except the resize against stock TF: the same bits
(error 0), as promised.
"""

import numpy as np

from tfupsample import testing

SHAPES = [(1, 5, 7, 1), (2, 4, 6, 21), (1, 3, 5, 10)]
EXACT = "exact"  # a column held to error 0: stock TF's bits
# Which bound of tfupsample.testing each column is held to.
COLUMNS = {"forward": "forward", "nchw": "forward", "numpy": "forward", "skimage": "forward",
           "grad_input": "input_grad", "grad_filter": "filter_grad",
           # tfupsample.image against stock TF, bit for bit: tf.image.resize to f x the size
           # (half-pixel), resize_bilinear to it in the asymmetric convention, and
           # resize_bilinear(align_corners=True) to f * (n - 1) + 1 (DeepLab's sizes)
           "resize": EXACT, "resize_asym": EXACT, "resize_ac": EXACT}
# Fractional sizes: (input height, width), (output height, width), convention.
FRACTIONAL = [((65, 65), (513, 513), "align_corners"), ((33, 33), (100, 100), "half_pixel"),
              ((100, 100), (37, 37), "half_pixel"), ((65, 65), (513, 513), "half_pixel"),
              ((21, 14), (50, 31), "half_pixel"), ((33, 33), (100, 100), "asymmetric"),
              ((100, 100), (37, 37), "asymmetric"), ((21, 14), (50, 31), "align_corners")]
CONVENTIONS = {"half_pixel": dict(align_corners=False, half_pixel_centers=True),
               "align_corners": dict(align_corners=True, half_pixel_centers=False),
               "asymmetric": dict(align_corners=False, half_pixel_centers=False)}


def _bound(column_or_op):
    return 0.0 if column_or_op == EXACT else testing.tolerance(column_or_op, "float32")


def test_image():
    """3x3, 3 channels, value (x + y) / 6."""
    y, x = np.mgrid[0:3, 0:3]
    img = (x + y) / 6.0
    return np.repeat(img[None, :, :, None], 3, axis=3).astype(np.float32)


def check_factor(factor, rng):
    """{column: (max relative error, within its bound)} for one factor, across all inputs."""
    import tensorflow as tf

    import tfupsample as tu
    import tfupsample.numpy as tnp

    errs = dict.fromkeys(COLUMNS, 0.0)
    err = testing.relative_error
    inputs = [test_image()] + [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    for x in inputs:
        c = x.shape[-1]
        dense_w = testing.dense_filter(testing.bilinear_filter(factor, c)).astype(np.float32)
        dense = testing.dense_bilinear(x, factor).numpy()
        upd = lambda k, v: errs.__setitem__(k, max(errs[k], v))  # noqa: E731
        upd("forward", err(tu.bilinear_upsample(x, factor), dense))
        upd("numpy", err(tnp.bilinear_upsample(x, factor), dense))
        upd("skimage", err(testing.skimage_rescale(x, factor), dense))
        nchw = tu.bilinear_upsample(x.transpose(0, 3, 1, 2), factor, data_format="NCHW")
        upd("nchw", err(np.transpose(nchw, (0, 2, 3, 1)), dense))

        # Gradients: upstream g, our ops vs autodiff through the dense conv2d_transpose.
        g = rng.standard_normal(dense.shape).astype(np.float32)
        xt = tf.constant(x)
        w = tf.Variable(tu.bilinear_upsample_weights(factor, c))
        wd = tf.Variable(dense_w)
        out_shape = list(dense.shape)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(xt)
            ours = tf.reduce_sum(tu.bilinear_upsample(xt, factor) * g)
            ours_dw = tf.reduce_sum(tu.depthwise_conv2d_transpose(xt, w, out_shape, factor) * g)
            ref = tf.reduce_sum(tf.nn.conv2d_transpose(xt, wd, out_shape, factor, "SAME") * g)
        dx_ref, dwd_ref = tape.gradient(ref, [xt, wd])
        dw_ref = np.stack([dwd_ref.numpy()[:, :, i, i] for i in range(c)], axis=2)[..., None]
        upd("grad_input", err(tape.gradient(ours, xt), dx_ref))
        dx2, dw2 = tape.gradient(ours_dw, [xt, w])
        upd("grad_input", err(dx2, dx_ref))
        upd("grad_filter", err(dw2, dw_ref))

        h, wd = x.shape[1:3]
        up = [h * factor, wd * factor]
        upd("resize", err(tu.image.resize(x, up), tf.image.resize(x, up)))
        upd("resize_asym", err(tu.image.resize_bilinear(x, up, **CONVENTIONS["asymmetric"]),
                               tf.raw_ops.ResizeBilinear(images=x, size=up, **CONVENTIONS["asymmetric"])))
        ac = [factor * (h - 1) + 1, factor * (wd - 1) + 1]
        upd("resize_ac", err(tu.image.resize_bilinear(x, ac, align_corners=True),
                             tf.raw_ops.ResizeBilinear(images=x, size=ac, align_corners=True)))
    return {k: (v, v <= _bound(COLUMNS[k])) for k, v in errs.items()}


def check_size(in_hw, out_hw, mode, rng):
    """{column: (max relative error, within its bound)} of tfupsample.image's resize to a
    fractional size in convention `mode` (a key of CONVENTIONS): against stock TF (the forward bit
    for bit, its gradient against ResizeBilinearGrad) and against the float64 definition
    (tfupsample.testing.resize_bilinear_loop)."""
    import tensorflow as tf

    import tfupsample as tu

    conv = CONVENTIONS[mode]
    x = tf.constant(rng.standard_normal((2, *in_hw, 3)).astype(np.float32))
    g = rng.standard_normal((2, *out_hw, 3)).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tu.image.resize_bilinear(x, out_hw, **conv)
        stock = tf.raw_ops.ResizeBilinear(images=x, size=out_hw, **conv)
        lo, ls = tf.reduce_sum(ours * g), tf.reduce_sum(stock * g)
    err = testing.relative_error
    res = {"vs stock": (err(ours, stock), EXACT),
           "definition": (err(ours, testing.resize_bilinear_loop(x.numpy(), out_hw, mode)), "resize"),
           "grad vs stock": (err(tape.gradient(lo, x), tape.gradient(ls, x)), "resize_grad"),
           "grad definition": (err(tape.gradient(lo, x), testing.resize_bilinear_grad_loop(g, in_hw, mode)),
                               "resize_grad")}
    return {k: (v, v <= _bound(op)) for k, (v, op) in res.items()}


def run(factors, seed=0, out=print):
    rng = np.random.default_rng(seed)
    names = list(COLUMNS)
    out("tfupsample verify: max relative error against the dense tf.nn.conv2d_transpose "
        f"(a test image + {len(SHAPES)} random inputs per factor); resize columns against stock TF, "
        "which they must equal bit for bit (0)")
    out(f"{'factor':>6}  " + "  ".join(f"{n:>11}" for n in names) + "  result")
    ok = True
    for f in factors:
        res = check_factor(f, rng)
        passed = all(p for _, p in res.values())
        ok &= passed
        out(f"{f:>6}  " + "  ".join(f"{res[n][0]:>11.2e}" for n in names) + ("  PASS" if passed else "  FAIL"))
    out("all factors PASS" if ok else "FAILED")
    out("resize to fractional sizes (tfupsample.image against stock TF -- the forward bit for bit -- "
        "and the float64 definition)")
    cols = ["vs stock", "definition", "grad vs stock", "grad definition"]
    out(f"{'size':>28}  " + "  ".join(f"{c:>15}" for c in cols) + "  result")
    sizes_ok = True
    for in_hw, out_hw, mode in FRACTIONAL:
        res = check_size(in_hw, out_hw, mode, rng)
        passed = all(p for _, p in res.values())
        sizes_ok &= passed
        label = f"{in_hw[0]}x{in_hw[1]}->{out_hw[0]}x{out_hw[1]} {mode}"
        out(f"{label:>28}  " + "  ".join(f"{res[c][0]:>15.2e}" for c in cols) + ("  PASS" if passed else "  FAIL"))
    out("all sizes PASS" if sizes_ok else "FAILED")
    return ok and sizes_ok
