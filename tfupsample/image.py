"""Bilinear resize with `tf.image.resize`'s semantics, on tfupsample's kernels.

`tfupsample.image.resize` takes what `tf.image.resize` takes and `tfupsample.image.resize_bilinear`
what `tf.compat.v1.image.resize_bilinear` takes, in the same order; swapping the call keeps the
results (float32, the bits of TensorFlow's CPU kernel) and the gradient (a gather: deterministic,
no atomics), with the kernel's speed. A call the kernel does not cover (another method,
`antialias=True`, ragged images) goes to the stock function, which gives stock's answer. Both
also take `data_format="NCHW"`.
"""

import functools

import numpy as np
import tensorflow as tf

from . import _ops
from ._checks import _check_data_format
from .api import _use_pure_tf

_KERNEL_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_KERNEL_DTYPE_SET = frozenset(_KERNEL_DTYPES)
_INTEGER_DTYPES = (tf.int8, tf.uint8, tf.int16, tf.uint16, tf.int32, tf.int64)


class InvalidArgumentError(tf.errors.InvalidArgumentError, ValueError):
    """An argument stock TF's resize kernel refuses, caught before the kernel runs: the
    `tf.errors.InvalidArgumentError` stock raises for the same call, and a ValueError as every
    other argument error of tfupsample is. Made as `InvalidArgumentError(None, None, message)`:
    TF's own constructor, which autograph and Keras' traceback filter call again to re-raise it."""


def _mode(align_corners, half_pixel_centers):
    if align_corners and half_pixel_centers:
        raise InvalidArgumentError(None, None, "If half_pixel_centers is True, align_corners must be False.")
    return dict(align_corners=bool(align_corners), half_pixel_centers=bool(half_pixel_centers))


def _images(images, ranks):
    x = tf.convert_to_tensor(images, name="images")
    if x.shape.rank is not None and x.shape.rank not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"images must be a {want}-D tensor, got shape {x.shape}")
    if x.dtype in _INTEGER_DTYPES:  # ResizeBilinear converts them to float first: so do we
        x = tf.cast(x, tf.float32)
    elif x.dtype not in _KERNEL_DTYPES:
        raise TypeError("images must be a float or integer tensor (float16, bfloat16, float32, float64, "
                        f"int8, uint8, int16, uint16, int32, int64), got {x.dtype.name}")
    return x


def _size(size):
    """size as a 1-D int32 tensor [new_height, new_width], checked where it is static."""
    if (type(size) in (tuple, list) and len(size) == 2 and all(type(v) is int and 0 < v < 2**31 for v in size)
            and tf.executing_eagerly()):
        return _eager_size(*size)  # the common call, (h, w) as ints: checked here, made once
    if isinstance(size, (list, tuple)) and any(tf.is_tensor(v) or isinstance(v, tf.Variable) for v in size):
        size = tf.stack([tf.cast(v, tf.int32) for v in size])  # [h, w] mixing ints and scalar tensors
    if tf.is_tensor(size) or isinstance(size, tf.Variable):
        s = tf.convert_to_tensor(size)
        if s.dtype not in (tf.int32, tf.int64):
            raise TypeError(f"size must be a 1-D int32 tensor [new_height, new_width], got dtype {s.dtype.name}")
        s = tf.cast(s, tf.int32)
    else:
        values = np.asarray(size)
        if values.dtype.kind not in "iu":
            raise TypeError(f"size must be a 1-D int32 tensor [new_height, new_width], got {size!r}")
        s = tf.constant(values, tf.int32)
    if s.shape.rank is not None and (s.shape.rank != 1 or s.shape[0] not in (None, 2)):
        raise ValueError(f"size must be a 1-D tensor of 2 elements [new_height, new_width], got shape {s.shape}")
    static = tf.get_static_value(s)
    if static is not None and (np.asarray(static) <= 0).any():
        raise InvalidArgumentError(
            None, None, f"size must be positive (output dimensions must be positive), got {[int(v) for v in static]}")
    return s


@functools.lru_cache(maxsize=64)
def _eager_size(h, w):
    """A static size's int32 tensor, made once per size (an eager call would otherwise spend
    half its Python time making and reading it back)."""
    return tf.constant([h, w], tf.int32)


def _eager_size_of(images, size, name):
    """The common eager call -- a 4-D tensor of a kernel dtype, (h, w) as positive ints, the kernel
    loaded -- checked in a few microseconds: size's int32 tensor, made once per size; None for
    anything else, which takes the general path and its errors. (With a cold cache, the general
    path's conversions and name scope cost ~0.3 ms a call: 5% of a 513 x 513 x 21 x 8 resize.)"""
    if (type(size) in (tuple, list) and len(size) == 2 and type(size[0]) is int and type(size[1]) is int
            and 0 < size[0] < 2**31 and 0 < size[1] < 2**31 and (name is None or type(name) is str)
            and isinstance(images, tf.Tensor)
            and tf.executing_eagerly() and images.dtype in _KERNEL_DTYPE_SET and images.shape.rank == 4
            and not _use_pure_tf()):
        return _eager_size(*size)
    return None


def _resize4(x, size, data_format, mode):
    """The 4-D resize: the kernel, or the stock op where the kernel cannot run (XLA, export)."""
    if _use_pure_tf():
        if data_format == "NCHW":
            x = tf.transpose(x, [0, 2, 3, 1])
        y = tf.raw_ops.ResizeBilinear(images=x, size=size, **mode)
        return tf.transpose(y, [0, 3, 1, 2]) if data_format == "NCHW" else y
    return _ops.lib.tfupsample_resize_bilinear(x, size, data_format=data_format, **mode)


def resize_bilinear(images, size, align_corners=False, name=None, half_pixel_centers=False, *,
                    data_format="NHWC"):
    """`tf.compat.v1.image.resize_bilinear` (its arguments in its order): resize the 4-D `images`
    to `size` = [new_height, new_width] by bilinear interpolation, float32 output.
    `align_corners=True` maps the corner pixels onto each other (DeepLab's convention, sizes
    `(n - 1) * s + 1`); `half_pixel_centers=True` samples at pixel centres (what `tf.image.resize`
    does); neither: `o * in / out`."""
    _check_data_format(data_format)
    mode = _mode(align_corners, half_pixel_centers)
    fast = _eager_size_of(images, size, name)
    if fast is not None:
        return _ops.lib.tfupsample_resize_bilinear(images, fast, data_format=data_format, **mode)
    with tf.name_scope(name or "resize_bilinear"):
        return _resize4(_images(images, (4,)), _size(size), data_format, mode)


def resize(images, size, method="bilinear", preserve_aspect_ratio=False, antialias=False, name=None, *,
           data_format="NHWC"):
    """`tf.image.resize`: 3-D or 4-D `images` to `size` = [new_height, new_width], float32 output.

    method "bilinear" (half-pixel centres, no antialiasing) runs tfupsample's kernel; any other
    method, `antialias=True` and ragged images are passed to `tf.image.resize` unchanged (stock's
    answer).
    `preserve_aspect_ratio=True` fits the image inside `size` as stock does.
    """
    _check_data_format(data_format)
    # Stock's own comparison (ResizeMethod.BILINEAR is the string "bilinear"): any other spelling
    # goes to tf.image.resize, which runs it or says why not. Ragged images too.
    if method != "bilinear" or antialias or isinstance(images, tf.RaggedTensor):
        if data_format != "NHWC":
            raise ValueError(f"data_format {data_format!r} needs method='bilinear', antialias=False and a "
                             "dense tensor (other calls go to tf.image.resize, which is NHWC only)")
        return tf.image.resize(images, size, method=method, preserve_aspect_ratio=preserve_aspect_ratio,
                               antialias=antialias, name=name)
    fast = None if preserve_aspect_ratio else _eager_size_of(images, size, name)
    if fast is not None:
        return _ops.lib.tfupsample_resize_bilinear(images, fast, data_format=data_format,
                                                   **_mode(False, True))
    with tf.name_scope(name or "resize"):
        x = _images(images, (3, 4))
        batched = x.shape.rank != 3
        if not batched:
            x = x[None]
        s = _size(size)
        if preserve_aspect_ratio:
            s = _fit_aspect_ratio(x, s, data_format)
        y = _resize4(x, s, data_format, _mode(False, True))
        return y if batched else y[0]


def _fit_aspect_ratio(x, size, data_format):
    """tf.image.resize's preserve_aspect_ratio: the largest size within `size` with x's aspect."""
    shape = tf.shape(x)
    h, w = (shape[2], shape[3]) if data_format == "NCHW" else (shape[1], shape[2])
    h, w = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    scale = tf.minimum(tf.cast(size[0], tf.float32) / h, tf.cast(size[1], tf.float32) / w)
    return tf.stack([tf.cast(tf.round(scale * h), tf.int32), tf.cast(tf.round(scale * w), tf.int32)])
