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
    `size` = [height, width] (default: `factor` x the logits' size).

    Each pixel's values are computed exactly as the upsample (or the resize) computes them (the
    same bits), and ties go to the lowest class, like `tf.argmax`. With `return_scores=True` also
    returns the winning value per pixel (float32 for the resize, as tf.image.resize returns).
    Memory: the label map, not the upsampled logits.
    """
    conv = _interpolation(interpolation)
    output_type = tf.as_dtype(output_type)
    if output_type not in (tf.int32, tf.int64):
        raise TypeError(f"output_type must be int32 or int64, got {output_type.name}")
    if conv is None or size is None:
        factor = check_factor(factor)
    with tf.name_scope(name or "upsample_argmax"):
        x = _nhwc(logits, data_format)
        if conv is not None:
            hw = _size(size) if size is not None else tf.shape(x)[1:3] * factor
            if _use_pure_tf():
                up = tf.raw_ops.ResizeBilinear(images=x, size=hw, **_resize_kwargs(conv))
                labels, scores = tf.argmax(up, axis=-1, output_type=output_type), tf.reduce_max(up, axis=-1)
            else:
                labels, scores = _ops.lib.tfupsample_resize_argmax(x, hw, **_resize_kwargs(conv))
                labels = tf.cast(labels, output_type)
        elif _use_pure_tf():
            up = bilinear_upsample(x, factor)
            labels, scores = tf.argmax(up, axis=-1, output_type=output_type), tf.reduce_max(up, axis=-1)
        else:
            labels, scores = _ops.lib.tfupsample_upsample_argmax(x, factor=factor)
            labels = tf.cast(labels, output_type)
        return (labels, scores) if return_scores else labels


def upsample_sparse_softmax_cross_entropy(labels, logits, factor=None, *, ignore_label=None,
                                          interpolation="transposed_conv", data_format="NHWC", name=None):
    """Per-pixel loss `[N, H*f, W*f]` equal to
    `tf.nn.sparse_softmax_cross_entropy_with_logits(labels, bilinear_upsample(logits, factor))`,
    computed pixel by pixel (log-sum-exp with the max subtracted, float32 for half inputs). With
    `interpolation="bilinear"` (also "align_corners", "asymmetric"), Model Garden's and Keras'
    semantics: the loss of `tf.image.resize(logits, tf.shape(labels)[1:3])` (float32), at the
    labels' size whatever it is; `factor` is then not needed.

    Pixels whose label equals `ignore_label` (e.g. 255 in PASCAL VOC) give 0 loss and 0
    gradient. Any other label outside [0, classes) is an InvalidArgumentError on the CPU and, as
    with TF's own GPU kernel, NaN loss and gradient on a GPU. The gradient to `logits` never
    allocates anything of the upsampled logits' size.
    """
    conv = _interpolation(interpolation)
    if conv is None:
        factor = check_factor(factor)
    elif factor is not None:
        check_factor(factor)  # accepted for symmetry; the labels' size decides
    if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, numbers.Integral)):
        raise TypeError(f"ignore_label must be an integer or None, got {ignore_label!r}")
    with tf.name_scope(name or "upsample_sparse_softmax_cross_entropy"):
        x = _nhwc(logits, data_format)
        y = tf.convert_to_tensor(labels)
        if not y.dtype.is_integer:
            raise TypeError(f"labels must be an integer tensor, got {y.dtype.name}")
        if y.shape.rank is not None and y.shape.rank != 3:
            raise ValueError(f"labels must be [N, height, width], got shape {y.shape}")
        y = tf.cast(y, tf.int64)
        ignore = dict(ignore_label=0 if ignore_label is None else int(ignore_label),
                      use_ignore_label=ignore_label is not None)
        if conv is not None:
            if _use_pure_tf():
                up = tf.raw_ops.ResizeBilinear(images=x, size=tf.shape(y)[1:3], **_resize_kwargs(conv))
                return _masked_cross_entropy(y, up, ignore_label)
            loss, _stats = _ops.lib.tfupsample_resize_sparse_softmax_cross_entropy(
                y, x, **ignore, **_resize_kwargs(conv))
            return loss
        if _use_pure_tf():
            return _masked_cross_entropy(y, bilinear_upsample(x, factor), ignore_label)
        loss, _stats = _ops.lib.tfupsample_upsample_sparse_softmax_cross_entropy(y, x, factor=factor, **ignore)
        return loss  # _stats: each pixel's softmax max and sum, kept for the gradient


def _masked_cross_entropy(labels, up, ignore_label):
    """The unfused loss of the upsampled logits up, 0 at the ignore label."""
    if ignore_label is None:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, up)
    keep = tf.not_equal(labels, ignore_label)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.where(keep, labels, 0), up)
    return tf.where(keep, loss, tf.zeros_like(loss))
