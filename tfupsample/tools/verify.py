"""`tfupsample verify`: parity, factor by factor.

For each factor, a 3x3x3 test image (value (x + y) / 6) and random inputs of several shapes go
through our op (NHWC and NCHW), the NumPy binding, the dense `tf.nn.conv2d_transpose` with the
[k, k, C, C] filter written from the bilinear formula (`tfupsample.testing`, not our weights, so
the weights are checked too), and skimage's `rescale(order=1, mode="constant", clip=False)`.
Gradients of our ops (to the input, and to a trainable filter holding `bilinear_upsample_weights`)
are compared with autodiff through the dense path. Bounds: tfupsample.testing's table for float32.
"""

import numpy as np

from tfupsample import testing

SHAPES = [(1, 5, 7, 1), (2, 4, 6, 21), (1, 3, 5, 10)]
# Which bound of tfupsample.testing each column is held to.
COLUMNS = {"forward": "forward", "nchw": "forward", "numpy": "forward", "skimage": "forward",
           "grad_input": "input_grad", "grad_filter": "filter_grad"}


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
    return {k: (v, v <= testing.tolerance(COLUMNS[k], "float32")) for k, v in errs.items()}


def run(factors, seed=0, out=print):
    rng = np.random.default_rng(seed)
    names = list(COLUMNS)
    out("tfupsample verify: max relative error against the dense tf.nn.conv2d_transpose "
        f"(a test image + {len(SHAPES)} random inputs per factor)")
    out(f"{'factor':>6}  " + "  ".join(f"{n:>11}" for n in names) + "  result")
    ok = True
    for f in factors:
        res = check_factor(f, rng)
        passed = all(p for _, p in res.values())
        ok &= passed
        out(f"{f:>6}  " + "  ".join(f"{res[n][0]:>11.2e}" for n in names) + ("  PASS" if passed else "  FAIL"))
    out("all factors PASS" if ok else "FAILED")
    return ok
