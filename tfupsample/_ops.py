"""Loads the compiled op library and registers the gradients of its ops.

If the library cannot be loaded (a TensorFlow it was not built for, say), `lib` is None, one
warning says why, and the public functions run on stock TensorFlow ops (`_pure_tf`).
"""

import functools
import os
import warnings

import tensorflow as tf
from tensorflow.python.framework import ops as _framework_ops

try:
    from . import _build_info
except ImportError:  # a source checkout that was never built
    _build_info = None


path = os.path.join(os.path.dirname(__file__), "_tfupsample_ops.so")


def _load():
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


def library_string(symbol):
    """A string the loaded library reports about itself (an exported `const char* symbol()`),
    read once; the error's text where it cannot be read."""
    if symbol not in _library_strings:
        try:
            import ctypes

            fn = getattr(ctypes.CDLL(path), symbol)
            fn.restype = ctypes.c_char_p
            _library_strings[symbol] = fn().decode()
        except (OSError, AttributeError) as e:
            _library_strings[symbol] = str(e)
    return _library_strings[symbol]


_library_strings = {}


def cuda_status():
    """"" where the library's GPU kernels are registered (or it has none), else why not: the
    driver cannot run what the toolkit compiled (the library says so at load)."""
    if lib is None or _build_info is None or not _build_info.CUDA_KERNELS:
        return ""
    return library_string("tfupsample_cuda_status")


@functools.lru_cache(maxsize=None)
def gpu_visible():
    """Whether TensorFlow sees a GPU (physical devices: asking for logical ones would start TF's
    runtime, after which a user's tf.config.set_visible_devices fails). Asked once."""
    return bool(tf.config.list_physical_devices("GPU"))


def _warn_gpu_without_cuda():
    """Once, at load: the GPU kernels were left unregistered (an old driver: TF then places the
    ops on the CPU), or a GPU is visible but this build has no CUDA kernels."""
    if lib is None or _build_info is None:
        return
    if _build_info.CUDA_KERNELS:
        status = cuda_status()
        if status:
            warnings.warn(f"tfupsample: its GPU kernels are not registered, so its ops run on the CPU: "
                          f"{status}.", RuntimeWarning, stacklevel=3)
        return
    if not gpu_visible():
        return
    cuda = "a CUDA build" if _build_info.TF_BUILT_WITH_CUDA else "not a CUDA build"
    warnings.warn(f"tfupsample: a GPU is visible but tfupsample was built without its CUDA kernels "
                  f"(the TensorFlow it was built against, {_build_info.TF_VERSION}, is {cuda}; or no "
                  "CUDA compiler was found): its ops run on the CPU, their tensors copied there and "
                  "back. Rebuild with a CUDA toolkit on the PATH (docs/gpu.md).",
                  RuntimeWarning, stacklevel=3)


_warn_gpu_without_cuda()



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


def _resize_attrs(op):
    return {k: op.get_attr(k) for k in ("align_corners", "half_pixel_centers", "data_format")}


def _spatial(t, data_format):
    shape = tf.shape(t)
    return shape[2:4] if data_format in ("NCHW", b"NCHW") else shape[1:3]


@_register("TfupsampleResizeBilinear")
def _resize_bilinear_grad(op, grad):
    attrs = _resize_attrs(op)
    images = op.inputs[0]
    return lib.tfupsample_resize_bilinear_grad(grad, _spatial(images, attrs["data_format"]), T=images.dtype,
                                               **attrs), None


@_register("TfupsampleResizeBilinearGrad")
def _resize_bilinear_grad_grad(op, grad):
    # The gradient op is linear in output_grad; its adjoint is the forward, to output_grad's size.
    attrs = _resize_attrs(op)
    return lib.tfupsample_resize_bilinear(grad, _spatial(op.inputs[0], attrs["data_format"]), **attrs), None


# The three depthwise ops are the partial derivatives of T(x, w, dy) = <dy, conv(x, w)>, where
# conv is the depthwise transposed convolution: the forward is dT/d(dy), the input gradient dT/dx,
# the filter gradient dT/dw. Each takes the other two as inputs, so the gradient of any of them
# with respect to one of its inputs is another partial, with the upstream gradient in place of
# what the op computes.
_DEPTHWISE = {  # op: (the partial it computes, its two tensor inputs)
    "TfupsampleDepthwiseConv2dTranspose": ("dy", ("x", "w")),
    "TfupsampleDepthwiseConv2dTransposeBackpropInput": ("x", ("dy", "w")),
    "TfupsampleDepthwiseConv2dTransposeBackpropFilter": ("w", ("x", "dy")),
}


def _partial(wrt, v, shape, attrs):
    """dT/d(wrt) at the values v {"x", "w", "dy"}, of the given shape."""
    if wrt == "dy":
        return lib.tfupsample_depthwise_conv2d_transpose(v["x"], v["w"], shape, **attrs)
    if wrt == "x":
        return lib.tfupsample_depthwise_conv2d_transpose_backprop_input(v["dy"], v["w"], shape, **attrs)
    return lib.tfupsample_depthwise_conv2d_transpose_backprop_filter(v["x"], v["dy"], shape, **attrs)


def _depthwise_grad(op, grad):
    computes, names = _DEPTHWISE[op.type]
    sizes = op.inputs[2]
    values = dict(zip(names, op.inputs[:2]), **{computes: grad})
    skip, attrs = _skipped(op), _attrs(op)
    return (*(None if i in skip else _partial(name, values, tf.shape(op.inputs[i], out_type=sizes.dtype), attrs)
              for i, name in enumerate(names)), None)


for _name in _DEPTHWISE:
    _register(_name)(_depthwise_grad)


# The loss ops' attributes their gradient ops take, by semantics.
LOSS_ATTRS = {"upsample": ("factor", "ignore_label", "use_ignore_label", "label_smoothing"),
              "resize": ("ignore_label", "use_ignore_label", "label_smoothing", "align_corners", "half_pixel_centers")}


def cross_entropy_grad(kind, labels, logits, stats, unit, grad, attrs):
    """The fused loss's gradient to its logits for the loss map's gradient grad (kind "upsample"
    or "resize"; attrs: LOSS_ATTRS[kind]'s values). Where the loss op also computed the gradient
    for a loss gradient of 1 at every pixel (unit, its with_grad output; else None) and grad holds
    one finite value at every pixel not ignored (Keras' and Model Garden's mean of the losses; the
    ignored ones contribute nothing), that gradient times the value; else the gradient op from the
    forward's stats (each pixel's (max, sum)). A second derivative through either path raises
    NotImplementedError."""
    op = (lib.tfupsample_upsample_sparse_softmax_cross_entropy_grad if kind == "upsample" else
          lib.tfupsample_resize_sparse_softmax_cross_entropy_grad)
    general = lambda: op(labels, logits, stats, grad, **attrs)  # noqa: E731
    if unit is None:
        return general()
    # Reductions only (no map-sized temporaries without an ignore label): the largest and
    # smallest value equal and finite, and a finite sum (a NaN anywhere makes it NaN).
    flat = tf.reshape(grad, [-1])
    if attrs["use_ignore_label"]:
        flat_labels = tf.reshape(labels, [-1])
        kept = tf.not_equal(flat_labels, tf.cast(attrs["ignore_label"], flat_labels.dtype))
        masked = lambda fill: tf.where(kept, flat, tf.constant(fill, flat.dtype))  # noqa: E731
    else:
        masked = lambda fill: flat  # noqa: E731
    value = tf.reduce_max(masked(float("-inf")))
    uniform = tf.logical_and(tf.equal(value, tf.reduce_min(masked(float("inf")))),
                             tf.logical_and(tf.math.is_finite(value), tf.math.is_finite(tf.reduce_sum(masked(0.0)))))

    @tf.custom_gradient
    def scaled(u, v):  # any derivative of this product (forward mode's too) raises; half types in float32
        wide = u if u.dtype in (tf.float32, tf.float64) else tf.cast(u, tf.float32)
        return tf.cast(wide * tf.cast(v, wide.dtype), u.dtype), lambda _: _no_second_derivative(kind)

    return tf.cond(uniform, lambda: scaled(unit, value), general)


def _no_second_derivative(kind):
    op = ("TfupsampleUpsampleSparseSoftmaxCrossEntropyGrad" if kind == "upsample" else
          "TfupsampleResizeSparseSoftmaxCrossEntropyGrad")
    unfused = "tfupsample.bilinear_upsample(logits, f)" if kind == "upsample" else "tf.image.resize(logits, size)"
    raise NotImplementedError(
        f"the second derivative of upsample_sparse_softmax_cross_entropy (op {op}) is not "
        "implemented: it would need the full-resolution logits the fused loss avoids. For "
        f"Hessian-vector products use the unfused tf.nn.sparse_softmax_cross_entropy_with_logits(labels, {unfused}).")


def _loss_op_grad(kind):
    # The registered gradient of a loss op (a graph's tf.gradients, or a tape that recorded the
    # op itself; heads.py records a custom gradient instead, so that the tape makes no zeros for
    # the op's other two outputs).
    def grad_fn(op, grad, _stats_grad, _unit_grad):
        unit = op.outputs[2] if op.get_attr("with_grad") else None
        attrs = {k: op.get_attr(k) for k in LOSS_ATTRS[kind]}
        return None, cross_entropy_grad(kind, op.inputs[0], op.inputs[1], op.outputs[1], unit, grad, attrs)
    return grad_fn


_register("TfupsampleUpsampleSparseSoftmaxCrossEntropy")(_loss_op_grad("upsample"))
_register("TfupsampleResizeSparseSoftmaxCrossEntropy")(_loss_op_grad("resize"))


@_register("TfupsampleResizeSparseSoftmaxCrossEntropyGrad")
def _resize_cross_entropy_grad_grad(op, grad):
    _no_second_derivative("resize")


@_register("TfupsampleUpsampleSparseSoftmaxCrossEntropyGrad")
def _upsample_cross_entropy_grad_grad(op, grad):
    _no_second_derivative("upsample")


if lib is not None:
    _framework_ops.no_gradient("TfupsampleUpsampleArgmax")  # argmax has none
    _framework_ops.no_gradient("TfupsampleResizeArgmax")
