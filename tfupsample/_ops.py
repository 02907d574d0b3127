"""Loads the compiled op library and registers the gradients of its ops.

If the library cannot be loaded (a TensorFlow it was not built for, say), `lib` is None, one
warning says why, and the public functions run on stock TensorFlow ops (`_pure_tf`).
"""

import os
import warnings

import tensorflow as tf
from tensorflow.python.framework import ops as _framework_ops

try:
    from . import _build_info
except ImportError:  # a source checkout that was never built
    _build_info = None


def _load():
    path = os.path.join(os.path.dirname(__file__), "_tfupsample_ops.so")
    try:
        return tf.load_op_library(path), None
    except (tf.errors.NotFoundError, OSError) as e:
        built = ("an unknown TensorFlow" if _build_info is None else
                 f"TensorFlow {_build_info.TF_VERSION} (C++11 ABI {_build_info.CXX11_ABI_FLAG})")
        reason = (f"could not load {path}: {e}. It was built against {built}; this process has "
                  f"TensorFlow {tf.__version__}. Rebuild tfupsample in this environment, which "
                  "builds it against the TensorFlow installed here and leaves that TensorFlow as "
                  "it is: pip install --force-reinstall --no-deps <tfupsample source>.")
        warnings.warn(f"tfupsample: {reason} Falling back to stock TensorFlow ops (slower, more "
                      "memory).", RuntimeWarning, stacklevel=3)
        return None, reason


lib, load_error = _load()



def _register(op_name):
    """RegisterGradient, when the ops exist."""
    if lib is None:
        return lambda fn: fn
    return _framework_ops.RegisterGradient(op_name)


def _attrs(op):
    return dict(
        strides=op.get_attr("strides"),
        padding=op.get_attr("padding"),
        data_format=op.get_attr("data_format"),
    )


@_register("TfupsampleBilinearUpsample")
def _bilinear_upsample_grad(op, grad):
    return lib.tfupsample_bilinear_upsample_grad(
        grad, factor=op.get_attr("factor"), data_format=op.get_attr("data_format"))


@_register("TfupsampleBilinearUpsampleGrad")
def _bilinear_upsample_grad_grad(op, grad):
    # The gradient op is linear in its input; its adjoint is the forward.
    return lib.tfupsample_bilinear_upsample(
        grad, factor=op.get_attr("factor"), data_format=op.get_attr("data_format"))


def _skipped(op):
    """Inputs whose gradient nobody asked for (the tape says so; a graph gradient computes all)."""
    return getattr(op, "skip_input_indices", None) or ()


@_register("TfupsampleDepthwiseConv2dTranspose")
def _depthwise_grad(op, grad):
    x, w, out_shape = op.inputs
    a = _attrs(op)
    skip = _skipped(op)
    dx = None if 0 in skip else lib.tfupsample_depthwise_conv2d_transpose_backprop_input(
        grad, w, tf.shape(x, out_type=out_shape.dtype), **a)
    dw = None if 1 in skip else lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(
        x, grad, tf.shape(w, out_type=out_shape.dtype), **a)
    return dx, dw, None


@_register("TfupsampleDepthwiseConv2dTransposeBackpropInput")
def _depthwise_backprop_input_grad(op, grad):
    dy, w, sizes = op.inputs
    a = _attrs(op)
    d_dy = lib.tfupsample_depthwise_conv2d_transpose(grad, w, tf.shape(dy, out_type=sizes.dtype), **a)
    d_w = lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(
        grad, dy, tf.shape(w, out_type=sizes.dtype), **a)
    return d_dy, d_w, None


@_register("TfupsampleDepthwiseConv2dTransposeBackpropFilter")
def _depthwise_backprop_filter_grad(op, grad):
    x, dy, sizes = op.inputs
    a = _attrs(op)
    d_x = lib.tfupsample_depthwise_conv2d_transpose_backprop_input(
        dy, grad, tf.shape(x, out_type=sizes.dtype), **a)
    d_dy = lib.tfupsample_depthwise_conv2d_transpose(x, grad, tf.shape(dy, out_type=sizes.dtype), **a)
    return d_x, d_dy, None


@_register("TfupsampleUpsampleSparseSoftmaxCrossEntropy")
def _upsample_cross_entropy_grad(op, grad):
    labels, logits = op.inputs
    attrs = {k: op.get_attr(k) for k in ("factor", "ignore_label", "use_ignore_label")}
    return None, lib.tfupsample_upsample_sparse_softmax_cross_entropy_grad(labels, logits, grad, **attrs)


@_register("TfupsampleUpsampleSparseSoftmaxCrossEntropyGrad")
def _upsample_cross_entropy_grad_grad(op, grad):
    raise NotImplementedError(
        "the second derivative of upsample_sparse_softmax_cross_entropy (op "
        "TfupsampleUpsampleSparseSoftmaxCrossEntropyGrad) is not implemented: it would need the "
        "full-resolution logits the fused loss avoids. For Hessian-vector products use the unfused "
        "tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tfupsample.bilinear_upsample(logits, f)).")


if lib is not None:
    _framework_ops.no_gradient("TfupsampleUpsampleArgmax")  # argmax has none
