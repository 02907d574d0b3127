"""Segmentation heads fused with the bilinear upsample: the full-resolution logits never exist."""

import numbers

import tensorflow as tf

from . import _ops
from .api import _check_data_format, _float_tensor, _use_pure_tf, bilinear_upsample
from ._weights import check_factor
from .image import _size


def _nhwc(logits, data_format):
    x = _float_tensor(logits, "logits")
    # The heads read whole pixels; an NCHW input is transposed once (it is the small, coarse one).
    return tf.transpose(x, [0, 2, 3, 1]) if _check_data_format(data_format) == "NCHW" else x


# The interpolations of the heads: the FCN transposed convolution (the default), or a resize in
# tf.image.resize's semantics -- (align_corners, half_pixel_centers) of ResizeBilinear.
INTERPOLATIONS = {"transposed_conv": None, "bilinear": (False, True), "half_pixel": (False, True),
                  "align_corners": (True, False), "asymmetric": (False, False)}


def _interpolation(interpolation):
    if interpolation not in INTERPOLATIONS:
        raise ValueError("interpolation must be 'transposed_conv' (the FCN upsample), 'bilinear' (alias "
                         "'half_pixel': tf.image.resize), 'align_corners' or 'asymmetric' "
                         f"(tf.compat.v1.image.resize_bilinear's conventions), got {interpolation!r}")
    return INTERPOLATIONS[interpolation]


def _resize_kwargs(conv):
    return dict(align_corners=conv[0], half_pixel_centers=conv[1])


def upsample_argmax(logits, factor=None, *, size=None, interpolation="transposed_conv", data_format="NHWC",
                    output_type=tf.int64, return_scores=False, name=None):
    """`tf.argmax(bilinear_upsample(logits, factor), axis=classes)` -> labels `[N, H*f, W*f]`, or
    with `interpolation="bilinear"` (also "align_corners", "asymmetric") the argmax of
    `tf.image.resize(logits, size)` (`tf.compat.v1.image.resize_bilinear(logits, size, ...)`),
    `size` = [height, width] (default: `factor` x the logits' size; given, it decides). `size` is
    for the resize conventions only: the FCN upsample's labels are `factor` x the logits' size.

    Each pixel's values are computed exactly as the upsample (or the resize) computes them (the
    same bits), and ties go to the lowest class, like `tf.argmax`. With `return_scores=True` also
    returns the winning value per pixel (float32 for the resize, as tf.image.resize returns).
    Memory: the label map, not the upsampled logits.
    """
    conv = _interpolation(interpolation)
    output_type = tf.as_dtype(output_type)
    if output_type not in (tf.int32, tf.int64):
        raise TypeError(f"output_type must be int32 or int64, got {output_type.name}")
    if conv is None and size is not None:
        raise ValueError("size is for interpolation='bilinear', 'align_corners' or 'asymmetric'; with "
                         "interpolation='transposed_conv' the labels are factor x the logits' size")
    if conv is None or size is None:
        factor = check_factor(factor)
    elif factor is not None:
        check_factor(factor)  # accepted beside size, which decides (as the loss takes the labels' size)
    with tf.name_scope(name or "upsample_argmax"):
        x = _nhwc(logits, data_format)
        if conv is not None:
            hw = _size(size) if size is not None else tf.shape(x)[1:3] * factor
            if _use_pure_tf(what="upsample_argmax"):
                up = tf.raw_ops.ResizeBilinear(images=x, size=hw, **_resize_kwargs(conv))
                labels, scores = tf.argmax(up, axis=-1, output_type=output_type), tf.reduce_max(up, axis=-1)
            else:
                labels, scores = _ops.lib.tfupsample_resize_argmax(x, hw, with_scores=bool(return_scores),
                                                                   **_resize_kwargs(conv))
                labels = tf.cast(labels, output_type)
        elif _use_pure_tf(what="upsample_argmax"):
            up = bilinear_upsample(x, factor)
            labels, scores = tf.argmax(up, axis=-1, output_type=output_type), tf.reduce_max(up, axis=-1)
        else:
            labels, scores = _ops.lib.tfupsample_upsample_argmax(x, factor=factor, with_scores=bool(return_scores))
            labels = tf.cast(labels, output_type)
        return (labels, scores) if return_scores else labels


def _check_ignore_label(ignore_label):
    if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, numbers.Integral)):
        raise TypeError(f"ignore_label must be an integer or None, got {ignore_label!r}")


def _check_fraction(value, name):
    """A Python number in [0, 1] (label_smoothing, top_k_percent_pixels), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def upsample_sparse_softmax_cross_entropy(labels, logits, factor=None, *, ignore_label=None, label_smoothing=0.0,
                                          interpolation="transposed_conv", data_format="NHWC", name=None,
                                          uniform_reduction=True):
    """Per-pixel loss `[N, H*f, W*f]` equal to
    `tf.nn.sparse_softmax_cross_entropy_with_logits(labels, bilinear_upsample(logits, factor))`,
    computed pixel by pixel (log-sum-exp with the max subtracted, float32 for half inputs). With
    `interpolation="bilinear"` (also "align_corners", "asymmetric"), Model Garden's and Keras'
    semantics: the loss of `tf.image.resize(logits, tf.shape(labels)[1:3])` (float32), at the
    labels' size whatever it is; `factor` is then not needed.

    Pixels whose label equals `ignore_label` (e.g. 255 in PASCAL VOC) give 0 loss and 0
    gradient. Any other label outside [0, classes) is an InvalidArgumentError on the CPU and, as
    with TF's own GPU kernel, NaN loss and gradient on a GPU. `label_smoothing` s in [0, 1]: the
    target is `(1 - s) * one_hot(label) + s / classes` (Keras' and Model Garden's rule), i.e.
    `tf.nn.softmax_cross_entropy_with_logits` of that target, still without the one-hot or the
    upsampled logits. The gradient to `logits` never allocates anything of the upsampled logits'
    size.

    Under a GradientTape, for float32 logits of more than 64 classes on the CPU, the loss and its
    gradient for a mean (or sum) of the losses are computed in one sweep, each score's exp once:
    the gradient then costs a scaling. It is used where the losses' gradient is one value at every
    pixel not ignored (a mean or sum, Keras' and Model Garden's reductions); weighted pixel by
    pixel, the gradient is computed again from the loss's statistics. Pass
    `uniform_reduction=False` when you weight the losses yourself: the one sweep would then be
    work in vain (8-23% of the loss step's time, measured).
    """
    return _cross_entropy(labels, logits, factor, ignore_label, label_smoothing, interpolation, data_format, name,
                          unit_grad=bool(uniform_reduction))


def _cross_entropy(labels, logits, factor, ignore_label, label_smoothing, interpolation, data_format, name,
                   unit_grad=True):
    """upsample_sparse_softmax_cross_entropy; unit_grad=False where the caller weights the losses
    (the upstream gradient is then not one value: the op's gradient for one would go unused)."""
    conv = _interpolation(interpolation)
    if conv is None:
        factor = check_factor(factor)
    elif factor is not None:
        check_factor(factor)  # accepted for symmetry; the labels' size decides
    _check_ignore_label(ignore_label)
    smoothing = _check_fraction(label_smoothing, "label_smoothing")
    with tf.name_scope(name or "upsample_sparse_softmax_cross_entropy"):
        x = _nhwc(logits, data_format)
        y = tf.convert_to_tensor(labels)
        if not y.dtype.is_integer:
            raise TypeError(f"labels must be an integer tensor, got {y.dtype.name}")
        if y.shape.rank is not None and y.shape.rank != 3:
            raise ValueError(f"labels must be [N, height, width], got shape {y.shape}")
        y = _label_type(y)
        rule = dict(ignore_label=0 if ignore_label is None else int(ignore_label),
                    use_ignore_label=ignore_label is not None, label_smoothing=smoothing)
        if conv is not None:
            if _use_pure_tf(what="upsample_sparse_softmax_cross_entropy"):
                up = tf.raw_ops.ResizeBilinear(images=x, size=tf.shape(y)[1:3], **_resize_kwargs(conv))
                return _masked_cross_entropy(y, up, ignore_label, smoothing)
            kind, attrs = "resize", dict(rule, **_resize_kwargs(conv))
            op = _ops.lib.tfupsample_resize_sparse_softmax_cross_entropy
        else:
            if _use_pure_tf(what="upsample_sparse_softmax_cross_entropy"):
                return _masked_cross_entropy(y, bilinear_upsample(x, factor), ignore_label, smoothing)
            kind, attrs = "upsample", dict(rule, factor=factor)
            op = _ops.lib.tfupsample_upsample_sparse_softmax_cross_entropy
        if not _recorded(x):
            return op(y, x, **attrs)[0]
        with_grad = unit_grad and _one_sweep(x)

        # The tape differentiates this custom gradient: reached through the op, the op's other
        # outputs (each pixel's softmax statistics, the gradient for 1) would get zeros of their
        # sizes from the tape (stats: 16 bytes a pixel), made for a gradient nothing reads.
        @tf.custom_gradient
        def fused_loss(v):
            loss, stats, unit = op(y, v, **attrs, with_grad=with_grad)
            return loss, lambda upstream: _ops.cross_entropy_grad(kind, y, v, stats, unit if with_grad else None,
                                                                  upstream, attrs)
        return fused_loss(x)


def _recorded(logits):
    """Whether a GradientTape records this call (decided when it runs, or when its tf.function is
    traced: Keras' train step records, its test step does not)."""
    try:
        from tensorflow.python.eager import record  # TF's own check (tf.custom_gradient's)
    except ImportError:  # pragma: no cover - every supported TF has it
        return False
    return bool(record.should_record_backprop([logits]))


# The CPU kernels' OneSweepClasses (csrc/cpu/heads_impl.h): at least kFewClasses (64) and more than four
# vectors (AVX-512: 64 floats).
_ONE_SWEEP_CLASSES = 65


def _one_sweep(logits):
    """Whether the loss op should also compute its gradient for a loss gradient of 1 (with_grad),
    in the loss's sweep, for the gradient to scale where the upstream gradient is one value
    (Keras' and Model Garden's mean): where that sweep exists -- float32 logits of more than 64
    classes (known when traced) on the CPU (no GPU visible: there the op would run the forward and
    the gradient one after the other, and the gradient's check of the upstream gradient would wait
    for the GPU)."""
    if logits.dtype != tf.float32 or logits.shape.rank != 4 or (logits.shape[-1] or 0) < _ONE_SWEEP_CLASSES:
        return False
    return not _ops.gpu_visible()


def _label_type(labels):
    """Integer labels as the loss ops take them: int32 and int64 as they are (as
    `tf.nn.sparse_softmax_cross_entropy_with_logits` takes them: no int64 copy of an int32 map),
    narrower types as int32, unsigned 32- and 64-bit ones as int64."""
    if labels.dtype in (tf.int32, tf.int64):
        return labels
    return tf.cast(labels, tf.int64 if labels.dtype in (tf.uint32, tf.uint64) else tf.int32)


def _masked_cross_entropy(labels, up, ignore_label, smoothing=0.0):
    """The unfused loss of the upsampled logits up, 0 at the ignore label."""
    keep = tf.not_equal(labels, ignore_label) if ignore_label is not None else None
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels if keep is None else tf.where(keep, labels, 0), up)
    if smoothing:  # (1 - s) CE(one-hot) + s CE(uniform), CE(uniform) = logsumexp - mean
        uniform = tf.reduce_logsumexp(up, axis=-1) - tf.reduce_mean(up, axis=-1)
        loss = (1 - smoothing) * loss + smoothing * uniform
    return loss if keep is None else tf.where(keep, loss, tf.zeros_like(loss))


def _hard_pixels(losses, valid, fraction):
    """Model Garden's hard-pixel mining over the per-pixel losses (valid: the pixels not ignored):
    k = int(fraction * pixels) (in float32, as Model Garden computes it) and the mask of the
    pixels whose losses it sums, such that the mask's count is its normaliser min(k, valid):
    the k largest losses where at least k pixels are valid, else every valid pixel (then the k
    largest are those and zeros)."""
    flat = tf.reshape(losses, [-1])
    k = tf.cast(tf.constant(fraction, tf.float32) * tf.cast(tf.size(flat), tf.float32), tf.int32)
    _, top = tf.math.top_k(flat, k=k)
    chosen = tf.scatter_nd(top[:, None], tf.ones_like(top, tf.bool), tf.shape(flat, out_type=tf.int32))
    num_valid = tf.reduce_sum(tf.cast(valid, tf.int32))
    return tf.where(num_valid >= k, tf.reshape(chosen, tf.shape(losses)), valid)


def segmentation_loss(labels, logits, factor=None, *, interpolation="bilinear", ignore_label=None,
                      class_weights=None, label_smoothing=0.0, pixel_weights=None, top_k_percent_pixels=1.0,
                      data_format="NHWC", name=None):
    """Model Garden's segmentation loss (`official.vision.losses.segmentation_losses.SegmentationLoss`
    with categorical cross-entropy and `use_groundtruth_dimension=True`), a scalar, fused: the
    logits `[N, h, w, C]` are resized to the labels' size (`interpolation="bilinear"`, as
    Model Garden's `tf.image.resize`; also "align_corners", "asymmetric", or "transposed_conv"
    with `factor`), and neither they nor their softmax exist at that size.

    labels: `[N, H, W]` or `[N, H, W, 1]`, integer or float (cast to int32, as Model Garden
    does); `ignore_label` pixels count for nothing. class_weights: C weights, each pixel's loss
    times its label's. label_smoothing s: the target `(1 - s) one_hot + s / C`. pixel_weights:
    `[N, H, W]` (or `[N, H, W, 1]`) weights multiplying each pixel's loss. The result is the sum of
    the weighted losses over (the number of pixels not ignored + 1e-5); with
    `top_k_percent_pixels` f < 1, the sum of the k = int(f * N * H * W) largest over
    (min(k, pixels not ignored) + 1e-5) (hard-pixel mining). float32 for half-precision logits.
    Labels outside [0, C) other than `ignore_label` are an error (Model Garden gives them weight
    0 but counts them in the normaliser).
    """
    _check_ignore_label(ignore_label)
    fraction = _check_fraction(top_k_percent_pixels, "top_k_percent_pixels")
    with tf.name_scope(name or "segmentation_loss"):
        y = tf.convert_to_tensor(labels)
        if not (y.dtype.is_integer or y.dtype.is_floating):
            raise TypeError(f"labels must be an integer or float tensor, got {y.dtype.name}")
        if y.shape.rank == 4:
            if y.shape[-1] not in (1, None):
                raise ValueError(f"labels must be [N, H, W] or [N, H, W, 1], got shape {y.shape}")
            y = tf.squeeze(y, -1)
        y = tf.cast(y, tf.int32)
        losses = _cross_entropy(y, logits, factor, ignore_label, label_smoothing, interpolation, data_format, None,
                                unit_grad=class_weights is None and pixel_weights is None and fraction >= 1.0)
        if losses.dtype in (tf.float16, tf.bfloat16):
            losses = tf.cast(losses, tf.float32)
        valid = tf.not_equal(y, ignore_label) if ignore_label is not None else tf.ones_like(y, tf.bool)
        weights = _pixel_weights(y, valid, class_weights, pixel_weights, losses.dtype, _classes(logits, data_format))
        if weights is not None:
            losses *= weights
        if fraction < 1.0:
            valid = _hard_pixels(losses, valid, fraction)
            losses = tf.where(valid, losses, tf.zeros_like(losses))
        count = tf.reduce_sum(tf.cast(valid, losses.dtype))
        return tf.reduce_sum(losses) / (count + 1e-5)


def _classes(logits, data_format):
    shape = tf.convert_to_tensor(logits).shape
    return shape[1 if _check_data_format(data_format) == "NCHW" else -1] if shape.rank == 4 else None


def _pixel_weights(labels, valid, class_weights, pixel_weights, dtype, classes):
    """class_weights[label] (0 where not valid) times pixel_weights, or None when both are None."""
    weights = None
    if class_weights is not None:
        table = tf.convert_to_tensor(class_weights, dtype)
        if table.shape.rank != 1 or (classes is not None and table.shape[0] != classes):
            raise ValueError(f"class_weights must hold one weight per class ({classes}), got shape {table.shape}")
        weights = tf.where(valid, tf.gather(table, tf.where(valid, labels, 0)), tf.zeros([], dtype))
    if pixel_weights is not None:
        w = tf.cast(pixel_weights, dtype)
        if w.shape.rank == 4 and w.shape[-1] == 1:
            w = tf.squeeze(w, -1)
        weights = w if weights is None else weights * w
    return weights
