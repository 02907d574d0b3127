"""Model Garden's loss options on the fused loss: tfupsample.segmentation_loss and the Keras loss
against a float64 reference written from Model Garden's formula on the unfused path
(testing.model_garden_loss of the exactly resized / upsampled logits), its gradient against the
adjoint of that formula, and the options' errors."""

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
import tfupsample.testing as ref

MODES = {"bilinear": "half_pixel", "align_corners": "align_corners", "asymmetric": "asymmetric"}
C = 5


def _case(rng, hw=(5, 6), size=(23, 17), ignore_rows=3):
    x = tf.constant(rng.standard_normal((2, *hw, C)) * 2, tf.float32)
    labels = rng.integers(0, C, (2, *size))
    labels[0, :ignore_rows] = 255
    return x, labels


def _up(x, size, interpolation, factor=None):
    x64 = tf.cast(x, tf.float64).numpy()
    if interpolation == "transposed_conv":
        return ref.bilinear_loop(x64, factor)
    return ref.resize_bilinear_loop(x64, size, MODES[interpolation])


def _reference_and_gradient(x, labels, size, interpolation, factor=None, **options):
    """Model Garden's loss of the float64 upsample, and its gradient to x: the per-pixel
    cross-entropy gradient softmax - target, times each pixel's weight over the normaliser, at
    the pixels the loss sums (for top-k: those whose loss is among the k largest), through the
    adjoint of the upsample."""
    up = _up(x, size, interpolation, factor)
    loss = ref.model_garden_loss(up, labels, **options)
    ignore = options.get("ignore_label")
    s = float(np.float32(options.get("label_smoothing", 0.0)))
    per_pixel, grad_up = ref.softmax_cross_entropy(up, labels, ignore, s)
    valid = labels != ignore if ignore is not None else np.ones(labels.shape, bool)
    cw = options.get("class_weights")
    w = np.where(valid, 1.0 if cw is None else np.asarray(cw)[np.where(valid, labels, 0)], 0.0)
    if options.get("pixel_weights") is not None:
        w = w * options["pixel_weights"]
    weighted = per_pixel * w
    fraction = options.get("top_k_percent_pixels", 1.0)
    if fraction < 1.0:
        k = int(np.float32(fraction) * np.float32(weighted.size))
        order = np.argsort(-weighted.ravel(), kind="stable")
        chosen = np.zeros(weighted.size, bool)
        chosen[order[:k]] = True
        w = w * chosen.reshape(weighted.shape)
        norm = min(k, valid.sum())
    else:
        norm = valid.sum()
    d_up = grad_up * (w / (norm + 1e-5))[..., None]
    if interpolation == "transposed_conv":
        return loss, ref.bilinear_grad_loop(d_up, factor)
    return loss, ref.resize_bilinear_grad_loop(d_up, x.shape[1:3], MODES[interpolation])


OPTIONS = [
    dict(ignore_label=255),
    dict(ignore_label=255, label_smoothing=0.1),
    dict(ignore_label=255, class_weights=[0.5, 1.0, 2.0, 0.0, 3.0]),
    dict(ignore_label=255, top_k_percent_pixels=0.2),
    dict(ignore_label=255, class_weights=[0.5, 1.0, 2.0, 1.5, 3.0], label_smoothing=0.3, top_k_percent_pixels=0.6),
    dict(label_smoothing=1.0, top_k_percent_pixels=0.05),
    dict(ignore_label=255, top_k_percent_pixels=0.95),  # fewer pixels valid than k: the valid ones
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("interpolation", ["bilinear", "align_corners", "asymmetric", "transposed_conv"])
def test_segmentation_loss_is_model_gardens(interpolation, options, rng):
    factor = 4 if interpolation == "transposed_conv" else None
    size = (20, 24) if factor else (23, 17)
    x, labels = _case(rng, size=size, ignore_rows=10)
    if "ignore_label" not in options:
        labels[labels == 255] = 1
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tu.segmentation_loss(labels[..., None].astype(np.float32), x, factor, interpolation=interpolation,
                                    **options)
    exp_loss, exp_grad = _reference_and_gradient(x, labels, size, interpolation, factor, **options)
    assert loss.shape == () and loss.dtype == tf.float32
    ref.assert_close(loss, exp_loss, "float32", "resize")
    ref.assert_close(tape.gradient(loss, x), exp_grad, "float32", "resize_grad")


@pytest.mark.parametrize("interpolation", ["bilinear", "transposed_conv"])
def test_losses_take_nchw_logits(interpolation, rng):
    factor = 4 if interpolation == "transposed_conv" else None
    size = (20, 24) if factor else (23, 17)
    x, labels = _case(rng, size=size, ignore_rows=10)
    options = dict(ignore_label=255, class_weights=[0.5, 1.0, 2.0, 1.5, 3.0], label_smoothing=0.1)
    nchw = tf.transpose(x, [0, 3, 1, 2])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(nchw)
        loss = tu.segmentation_loss(labels, nchw, factor, interpolation=interpolation, data_format="NCHW", **options)
        per_pixel = tu.upsample_sparse_softmax_cross_entropy(labels, nchw, factor, ignore_label=255, label_smoothing=0.1,
                                                             interpolation=interpolation, data_format="NCHW")
    exp_loss, exp_grad = _reference_and_gradient(x, labels, size, interpolation, factor, **options)
    ref.assert_close(loss, exp_loss, "float32", "resize")
    ref.assert_close(tf.transpose(tape.gradient(loss, nchw), [0, 2, 3, 1]), exp_grad, "float32", "resize_grad")
    exp_pixels, exp_up_grad = ref.softmax_cross_entropy(_up(x, size, interpolation, factor), labels, 255,
                                                        float(np.float32(0.1)))
    ref.assert_close(per_pixel, exp_pixels, "float32", "resize")
    if interpolation == "transposed_conv":
        exp_pixel_grad = ref.bilinear_grad_loop(exp_up_grad, factor)
    else:
        exp_pixel_grad = ref.resize_bilinear_grad_loop(exp_up_grad, x.shape[1:3], MODES[interpolation])
    got = tf.transpose(tape.gradient(per_pixel, nchw), [0, 2, 3, 1])  # of the per-pixel losses' sum
    ref.assert_close(got, exp_pixel_grad, "float32", "resize_grad")


def test_segmentation_loss_pixel_weights_and_dtypes(rng):
    x, labels = _case(rng)
    pixel_weights = rng.uniform(0, 2, labels.shape)
    options = dict(ignore_label=255, class_weights=[1, 2, 3, 4, 5], pixel_weights=pixel_weights,
                   top_k_percent_pixels=0.5)
    exp_loss, _ = _reference_and_gradient(x, labels, (23, 17), "bilinear", **options)
    ref.assert_close(tu.segmentation_loss(labels, x, **options), exp_loss, "float32", "resize")
    # Half logits: the resize reads their values and computes in float32; so does the loss.
    half = tf.cast(x, tf.float16)
    exp_half, _ = _reference_and_gradient(tf.cast(half, tf.float32), labels, (23, 17), "bilinear", **options)
    out = tu.segmentation_loss(labels, half, **options)
    assert out.dtype == tf.float32
    ref.assert_close(out, exp_half, "float32", "resize")
    # No pixel valid: 0 (the 1e-5 in the normaliser), not NaN.
    none = tu.segmentation_loss(np.full(labels.shape, 255), x, ignore_label=255, top_k_percent_pixels=0.5)
    assert none.numpy() == 0.0


def test_segmentation_loss_under_xla_is_the_same(rng, xla_path):
    # Under XLA (the kernels, or the stock-op lowering) the same loss.
    x, labels = _case(rng)
    options = dict(ignore_label=255, class_weights=[1, 2, 3, 4, 5], label_smoothing=0.2, top_k_percent_pixels=0.4)
    fused = tu.segmentation_loss(labels, x, **options)
    jit = tf.function(lambda t: tu.segmentation_loss(labels, t, **options), jit_compile=True)(x)
    exp_loss, _ = _reference_and_gradient(x, labels, (23, 17), "bilinear", **options)
    ref.assert_close(fused, exp_loss, "float32", "resize")
    ref.assert_close(jit, exp_loss, "float32", "resize_grad")  # the lowering: XLA's own resize rounds differently


@pytest.mark.parametrize("options", OPTIONS[1:5], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_keras_loss_options_are_model_gardens(options, rng):
    from tfupsample.keras import UpsampledSparseCategoricalCrossentropy

    x, labels = _case(rng, ignore_rows=10)
    keras_options = {k: v for k, v in options.items() if k != "ignore_label"}
    loss = UpsampledSparseCategoricalCrossentropy(ignore_class=options.get("ignore_label"), interpolation="bilinear",
                                                  **keras_options)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(labels[..., None], x)
    exp_loss, exp_grad = _reference_and_gradient(x, labels, (23, 17), "bilinear", **options)
    # Keras divides by the count alone; Model Garden adds 1e-5 (a relative 1e-5 / count here).
    ref.assert_close(value, exp_loss, "float32", "resize")
    ref.assert_close(tape.gradient(value, x), exp_grad, "float32", "resize_grad")
    clone = UpsampledSparseCategoricalCrossentropy.from_config(loss.get_config())
    for key, v in keras_options.items():
        assert getattr(clone, key) == v
    ref.assert_close(clone(labels[..., None], x), value, "float32", "loss")


def test_option_errors(rng):
    from tfupsample.keras import UpsampledSparseCategoricalCrossentropy

    x, labels = _case(rng)
    for bad in (-0.1, 1.5, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="label_smoothing must be a number in \\[0, 1\\]"):
            tu.upsample_sparse_softmax_cross_entropy(labels, x, label_smoothing=bad, interpolation="bilinear")
        with pytest.raises(ValueError, match="top_k_percent_pixels must be a number in \\[0, 1\\]"):
            tu.segmentation_loss(labels, x, top_k_percent_pixels=bad)
    with pytest.raises(ValueError, match="label_smoothing must be a number in \\[0, 1\\]"):
        UpsampledSparseCategoricalCrossentropy(factor=2, label_smoothing=2.0)
    with pytest.raises(ValueError, match=r"class_weights must hold one weight per class \(5\), got shape \(3,\)"):
        tu.segmentation_loss(labels, x, ignore_label=255, class_weights=[1, 2, 3])
    with pytest.raises(ValueError, match=r"labels must be \[N, H, W\] or \[N, H, W, 1\]"):
        tu.segmentation_loss(np.zeros((2, 23, 17, 2), np.int64), x)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be in \[0, 5\)"):
        tu.segmentation_loss(np.full(labels.shape, 7), x, ignore_label=255)
    # The op checks the attribute itself (a graph written by hand).
    for op, extra in ((tu._ops.lib.tfupsample_upsample_sparse_softmax_cross_entropy, dict(factor=2)),
                      (tu._ops.lib.tfupsample_resize_sparse_softmax_cross_entropy, dict(half_pixel_centers=True))):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
            op(np.zeros((2, 10, 12), np.int64), x, label_smoothing=1.5, **extra)
