"""Public TensorFlow-level functions."""

import contextlib
import functools
import os
import threading
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops as _framework_ops
from tensorflow.python.ops import control_flow_util as _control_flow_util

from . import _ops, _pure_tf
from ._checks import _check_data_format, _check_padding, _pair
from ._weights import (bilinear_kernel_size, bilinear_upsample_weights,  # noqa: F401 (re-export)
                       check_factor)

_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_INT64_MAX = 2**63 - 1


# ------------------------------------------------------------------------------------------------
# Argument checks: each error names the argument and what was expected.

def _float_tensor(x, name, dtype=None):
    x = tf.convert_to_tensor(x, dtype_hint=dtype)
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype.name}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} must have the input's dtype {dtype.name}, got {x.dtype.name}")
    if x.shape.rank is not None and x.shape.rank != 4:
        raise ValueError(f"{name} must be a 4-D tensor, got shape {x.shape}")
    return x


def _layout_dims(x, data_format):
    """Static (n, h, w, c) of a 4-D tensor, None where unknown."""
    dims = x.shape.as_list() if x.shape.rank is not None else [None] * 4
    return (dims[0], dims[2], dims[3], dims[1]) if data_format == "NCHW" else tuple(dims)


def _output_shape_tensor(output_shape):
    """output_shape as a 1-D int32/int64 tensor of 4 elements, checked where it is static.

    Takes what tf.nn.conv2d_transpose takes: a list or tuple of Python ints and scalar integer
    tensors (mixed freely), a 1-D int32/int64 tensor or variable, a TensorShape, a NumPy array.
    """
    if isinstance(output_shape, tf.TensorShape):
        if not output_shape.is_fully_defined():
            raise ValueError(f"output_shape must be fully defined, got {output_shape}")
        output_shape = output_shape.as_list()
    if isinstance(output_shape, (list, tuple)) and any(
            tf.is_tensor(v) or isinstance(v, tf.Variable) for v in output_shape):
        shape = _stack_sizes(output_shape)
    elif tf.is_tensor(output_shape) or isinstance(output_shape, tf.Variable):
        shape = tf.convert_to_tensor(output_shape)
        if shape.dtype not in (tf.int32, tf.int64):
            raise TypeError(f"output_shape must be int32 or int64, got {shape.dtype.name}")
    else:
        try:
            values = np.asarray(output_shape)
        except Exception:  # noqa: BLE001
            values = None
        if values is None or values.dtype.kind not in "iu":
            raise TypeError(f"output_shape must be a list of 4 integers or a 1-D integer tensor, got {output_shape!r}")
        dtype = tf.int64 if values.size and values.max() > 2**31 - 1 else tf.int32
        shape = tf.constant(values, dtype=dtype)
    if shape.shape.rank is not None and (shape.shape.rank != 1 or shape.shape[0] not in (None, 4)):
        raise ValueError(f"output_shape must have 4 elements, got shape {shape.shape}")
    static = tf.get_static_value(shape)
    if static is not None and (np.asarray(static) < 0).any():
        raise ValueError(f"output_shape must be non-negative, got {list(static)}")
    return shape


def _stack_sizes(values):
    """A list mixing Python ints and scalar integer tensors -> one 1-D tensor (int64 if any
    element is int64, else int32), as TensorFlow packs such a list."""
    tensors = [tf.convert_to_tensor(v) if (tf.is_tensor(v) or isinstance(v, tf.Variable)) else None
               for v in values]
    for i, t in enumerate(tensors):
        if t is not None and (t.dtype not in (tf.int32, tf.int64) or t.shape.rank not in (None, 0)):
            raise TypeError(f"output_shape[{i}] must be a Python int or a scalar int32/int64 tensor, "
                            f"got {t.dtype.name} of shape {t.shape}")
    dtype = tf.int64 if any(t is not None and t.dtype == tf.int64 for t in tensors) else tf.int32
    parts = []
    for i, (v, t) in enumerate(zip(values, tensors)):
        if t is None:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"output_shape[{i}] must be a Python int or a scalar integer tensor, got {v!r}")
            t = tf.constant(int(v), dtype)
        if t.dtype != dtype:
            t = tf.cast(t, dtype)
        if t.shape.rank != 0:
            t = tf.reshape(t, [])
        parts.append(t)
    return tf.stack(parts)  # tf.get_static_value(..., partial=True) still sees the constants


# ------------------------------------------------------------------------------------------------
# Which implementation runs.

def backend():
    """"op" when tfupsample's compiled kernels are loaded, "pure-tf" when the library could not be
    loaded and every function runs on stock TensorFlow ops (the warning at import says why).
    Under XLA (`jit_compile=True`) the kernels run where `xla_kernels()` is True."""
    return "op" if _ops.lib is not None else "pure-tf"


_stock = threading.local()


@contextlib.contextmanager
def stock_ops():
    """Within this context every tfupsample function and Keras layer traces to stock TensorFlow
    ops only (the same lowering XLA gets), so what is exported -- `model.export(path)`,
    `tf.saved_model.save`, a `tf.function` -- loads and runs where tfupsample is not installed
    (TensorFlow Serving, another process) and converts with `tf.lite.TFLiteConverter`:

        with tfupsample.stock_ops():
            model.export("exported")

    Same results within float rounding; slower and hungrier than the kernels. It applies to what
    is traced or run inside it, in this thread.
    """
    _stock.depth = getattr(_stock, "depth", 0) + 1
    try:
        yield
    finally:
        _stock.depth -= 1


def _in_stock_ops():
    return getattr(_stock, "depth", 0) > 0


def _in_xla():
    return _control_flow_util.GraphOrParentsInXlaContext(_framework_ops.get_default_graph())


def xla_kernels():
    """Whether tfupsample's kernels run inside XLA (`jit_compile=True`) here: True where the
    library was built with its XLA custom calls (TensorFlow 2.21's wheel has what they need), on
    the CPU, and on a GPU where the build has the CUDA kernels too. Elsewhere every function
    lowers to stock TensorFlow ops under XLA: the same results, but the fused heads then build the
    full-size logits. `xla_kernels_missing()` says why."""
    return not xla_kernels_missing()


@functools.lru_cache(maxsize=None)
def _xla_library_missing():
    if _ops.lib is None:
        return f"the compiled library did not load ({_ops.load_error})"
    info = _ops._build_info
    if info is None or not getattr(info, "XLA_KERNELS", False):
        why = getattr(info, "XLA_KERNELS_MISSING", "") if info is not None else ""
        return (f"the library was built without its XLA kernels ({why or 'unknown reason'}; "
                f"TensorFlow {tf.__version__})")
    failed = _ops.library_string("tfupsample_xla_status")  # the handlers register at load: did they?
    if failed:
        return f"XLA did not take the custom-call handlers: {failed}"
    return ""


def xla_kernels_missing():
    """"" where `xla_kernels()` is True, else why tfupsample lowers to stock ops under XLA
    (`TFUPSAMPLE_XLA_KERNELS=0` in the environment asks for that lowering)."""
    if os.environ.get("TFUPSAMPLE_XLA_KERNELS", "1").strip().lower() in ("0", "false", "off", "no"):
        return "TFUPSAMPLE_XLA_KERNELS=0 asks for the stock-op lowering"
    missing = _xla_library_missing()
    if not missing and _ops.gpu_visible():
        if not _ops._build_info.CUDA_KERNELS:
            missing = "a GPU is visible and this build has no CUDA kernels (its XLA custom calls are XLA:CPU's only)"
        elif _ops.cuda_status():
            missing = f"a GPU is visible and the CUDA kernels cannot run on it: {_ops.cuda_status()}"
    return missing


_lowering_warned = set()


def _warn_lowering(what):
    """Once per fused head: under XLA it runs the stock-op lowering."""
    if what in _lowering_warned:
        return
    _lowering_warned.add(what)
    warnings.warn(f"tfupsample.{what} runs on stock TensorFlow ops under XLA (jit_compile): "
                  f"{xla_kernels_missing()}. It then builds the full-size logits (and, for the "
                  "loss, their softmax and gradient): the fused head's memory saving is lost. "
                  "Without jit_compile it runs the kernels.",
                  RuntimeWarning, stacklevel=_caller_stacklevel())


def _caller_stacklevel():
    """The warnings stacklevel of the first frame outside tfupsample (and TF's tracing), so that
    a warning points at the user's line whichever public function or Keras loss led here."""
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _use_pure_tf(impl="auto", what=None):
    """Whether this call runs the stock-op lowering. "auto": when the compiled kernels cannot run
    (the library did not load, tfupsample.stock_ops(), or XLA without tfupsample's XLA kernels;
    `what`, the public function, is warned about once there). "op": never -- an error saying why
    when the kernel cannot run."""
    if impl == "op":
        if _in_stock_ops():
            raise RuntimeError("impl='op' cannot run inside tfupsample.stock_ops(), which asks for "
                               "stock TensorFlow ops only")
        if _ops.lib is None:
            raise RuntimeError(f"impl='op' needs tfupsample's compiled kernels, which did not load: "
                               f"{_ops.load_error}")
        if _in_xla() and not xla_kernels():
            raise RuntimeError(f"impl='op' cannot run under XLA (jit_compile=True) here: "
                               f"{xla_kernels_missing()}; use impl='auto' to lower to stock "
                               "TensorFlow ops there")
        return False
    if _ops.lib is None or _in_stock_ops():
        return True
    if _in_xla() and not xla_kernels():
        if what is not None:
            _warn_lowering(what)
        return True
    return False


# ------------------------------------------------------------------------------------------------
# Public functions.

def bilinear_upsample(images, factor, *, data_format="NHWC", impl="auto", name=None):
    """Upsample `images` by the integer `factor` with the bilinear kernel.

    `tf.nn.conv2d_transpose(images, W, [N, H*f, W*f, C], f, "SAME")` with the dense bilinear
    filter `W = bilinear_upsample_weights(f, C, dense=True)`, computed per channel without it
    (equal up to float rounding: the kernel sums its four taps separably, rows of two column
    sums, see the README's guarantees for the bound).

    impl: "auto" runs tfupsample's kernel (the kernel is computed on the fly: no filter tensor
    exists), or the stock-op lowering where the kernel cannot run (under XLA, or when the compiled
    library did not load); "op" always runs the kernel and raises RuntimeError, saying why, where
    it cannot; "dense" builds the dense [k, k, C, C] filter and calls tf.nn.conv2d_transpose (the
    reference, for verification; its size grows with C squared).
    """
    factor = check_factor(factor)
    _check_data_format(data_format)
    if impl not in ("auto", "op", "dense"):
        raise ValueError(f"impl must be 'auto', 'op' or 'dense', got {impl!r}")
    with tf.name_scope(name or "bilinear_upsample"):
        x = _float_tensor(images, "images")
        n, h, w, c = _layout_dims(x, data_format)
        if None not in (n, h, w, c) and n * h * w * c > 0 and n * c * (h * factor) * (w * factor) > _INT64_MAX:
            raise ValueError(f"factor {factor} is too large: the output of {x.shape} would not fit in memory")
        if impl == "dense":
            return _dense_bilinear(x, factor, data_format)
        if _use_pure_tf(impl):
            return _pure_tf.bilinear_upsample(x, factor, data_format)
        return _ops.lib.tfupsample_bilinear_upsample(x, factor=factor, data_format=data_format)


def _dense_bilinear(x, factor, data_format):
    if data_format == "NCHW":  # stock conv2d_transpose has no NCHW kernel on the CPU
        y = _dense_bilinear(tf.transpose(x, [0, 2, 3, 1]), factor, "NHWC")
        return tf.transpose(y, [0, 3, 1, 2])
    c = x.shape[-1]
    if c is None:
        raise ValueError("impl='dense' needs a static channel count")
    filt = tf.cast(bilinear_upsample_weights(factor, c, dense=True, dtype=np.float64), x.dtype)
    s = tf.shape(x)
    out_shape = tf.stack([s[0], s[1] * factor, s[2] * factor, s[3]])
    return tf.nn.conv2d_transpose(x, filt, out_shape, strides=factor, padding="SAME")


def depthwise_conv2d_transpose(input, filter, output_shape, strides, padding="SAME",  # noqa: A002
                               data_format="NHWC", name=None):
    """Per-channel transposed convolution with a `[kh, kw, C, 1]` filter.

    Equals `tf.nn.conv2d_transpose` with the dense filter whose `[:, :, c, c]` slices are
    `filter[:, :, c, 0]` and zeros elsewhere. `strides` is an int, `[sh, sw]` (may differ) or a
    4-list; `output_shape` a list or a 1-D int tensor in `data_format` order.
    """
    _check_data_format(data_format)
    padding = _check_padding(padding)
    sy, sx = _pair(strides, "strides", data_format)
    with tf.name_scope(name or "depthwise_conv2d_transpose"):
        x = _float_tensor(input, "input")
        w = _float_tensor(filter, "filter", dtype=x.dtype)
        fdims = w.shape.as_list() if w.shape.rank is not None else [None] * 4
        if fdims[3] not in (None, 1):
            raise ValueError(f"filter must be [kernel_h, kernel_w, channels, 1] (channel multiplier 1), got shape {w.shape}")
        c = _layout_dims(x, data_format)[3]
        if None not in (c, fdims[2]) and c != fdims[2]:
            raise ValueError(f"filter has {fdims[2]} channels but input has {c}")
        shape = _output_shape_tensor(output_shape)
        if _use_pure_tf():
            checks = []
            if not _check_static_geometry(x, w, shape, (sy, sx), padding, data_format):
                checks = _dynamic_geometry_check(x, w, shape, (sy, sx), padding, data_format)
            with tf.control_dependencies(checks):
                return _pure_tf.depthwise_conv2d_transpose(x, w, shape, (sy, sx), padding, data_format)
        return _ops.lib.tfupsample_depthwise_conv2d_transpose(
            x, w, shape, strides=[sy, sx], padding=padding, data_format=data_format)


def _check_static_geometry(x, w, shape, strides, padding, data_format):
    """The kernel's checks, for the stock-op path (which has no kernel to refuse bad sizes)."""
    from ._numpy_ext import check_depthwise_geometry

    dims = _layout_dims(x, data_format)
    out = tf.get_static_value(shape)
    k = w.shape.as_list()[:2] if w.shape.rank == 4 else [None, None]
    if out is None or None in dims or None in k:
        return False
    out = [int(v) for v in out]
    out_dims = (out[0], out[2], out[3], out[1]) if data_format == "NCHW" else tuple(out)
    if out_dims[0] != dims[0] or out_dims[3] != dims[3]:
        raise ValueError(f"output_shape must keep the input's batch {dims[0]} and channels {dims[3]}, "
                         f"got {out}")
    err = check_depthwise_geometry(list(dims), list(out_dims[1:3]), k, list(strides), padding)
    if err:
        raise ValueError(f"output_shape: {err}")
    return True


def _dynamic_geometry_check(x, w, shape, strides, padding, data_format):
    """The same rule as a run-time assertion, for sizes known only when the graph runs (the
    load fallback inside a tf.function with unknown shapes). Under XLA every size is static."""
    if _control_flow_util.GraphOrParentsInXlaContext(_framework_ops.get_default_graph()):
        return []
    xs, out = tf.shape(x, out_type=tf.int64), tf.cast(shape, tf.int64)
    order = [0, 2, 3, 1] if data_format == "NCHW" else [0, 1, 2, 3]
    xs, out = tf.gather(xs, order), tf.gather(out, order)
    k, s = tf.shape(w, out_type=tf.int64)[:2], tf.constant(strides, tf.int64)
    o = out[1:3]
    back = (o + s - 1) // s if padding == "SAME" else tf.where(o < k, tf.zeros_like(o), (o - k) // s + 1)
    empty = (o == 0) | (xs[1:3] == 0)  # as in the kernels: an empty side goes with any size
    ok = tf.reduce_all(tf.concat([(back == xs[1:3]) | empty, [out[0] == xs[0], out[3] == xs[3]], o >= 0], 0))
    return [tf.debugging.Assert(ok, [f"output_shape is inconsistent with the input, kernel size, "
                                     f"strides {list(strides)} and padding {padding}: output_shape",
                                     shape, "input shape", tf.shape(x), "kernel size", k])]


def _dilate(w, dy, dx):
    """Insert dy - 1 / dx - 1 zero rows / columns between the taps of a [kh, kw, C, 1] filter."""
    if dy == 1 and dx == 1:
        return w
    s = tf.shape(w)
    kh, kw = s[0], s[1]
    w6 = tf.reshape(w, [kh, 1, kw, 1, s[2], s[3]])
    w6 = tf.pad(w6, [[0, 0], [0, dy - 1], [0, 0], [0, dx - 1], [0, 0], [0, 0]])
    w = tf.reshape(w6, [kh * dy, kw * dx, s[2], s[3]])
    return w[: (kh - 1) * dy + 1, : (kw - 1) * dx + 1]


def conv2d_transpose(input, filters, output_shape, strides, padding="SAME",  # noqa: A002
                     data_format="NHWC", dilations=None, name=None):
    """Drop-in for `tf.nn.conv2d_transpose`: every call it accepts gives its answer.

    The rule: a `[kh, kw, C, 1]` filter applied to an input with C channels runs tfupsample's
    per-channel op (the dense `[kh, kw, C, C]` filter it stands for is never built). Every other
    call -- any other filter, or a `[kh, kw, C, 1]` filter on a 1-channel input, which stock TF
    reads as 1 -> C channels -- goes to `tf.nn.conv2d_transpose` unchanged. When the input's
    channel count is unknown when the graph is traced, the choice is made when it runs
    (`tf.cond` on the channel count), so the meaning never depends on what was known at trace
    time. (For C > 1 stock TF refuses the per-channel call; for C = 1 both readings agree.)
    """
    x = tf.convert_to_tensor(input)
    fshape = filters.shape if hasattr(filters, "shape") else np.shape(filters)
    fdims = list(fshape) if len(fshape) == 4 else None
    per_channel_filter = fdims is not None and fdims[3] == 1 and fdims[2] is not None
    known = data_format in ("NHWC", "NCHW") and x.shape.rank == 4
    c = _layout_dims(x, data_format)[3] if known else None

    def stock():
        return tf.nn.conv2d_transpose(x, filters, output_shape, strides, padding=padding,
                                      data_format=data_format, dilations=dilations, name=name)

    def per_channel():
        dy, dx = _pair(1 if dilations is None else dilations, "dilations", data_format)
        with tf.name_scope(name or "conv2d_transpose"):
            w = _float_tensor(filters, "filters", dtype=x.dtype if x.dtype in _FLOAT_DTYPES else None)
            return depthwise_conv2d_transpose(x, _dilate(w, dy, dx), output_shape, strides,
                                              padding=padding, data_format=data_format)

    if not per_channel_filter or not known or (c is not None and c != fdims[2]):
        return stock()
    if c is not None:
        return per_channel()
    channels = tf.shape(x)[1 if data_format == "NCHW" else 3]
    return tf.cond(tf.equal(channels, fdims[2]), per_channel, stock)
