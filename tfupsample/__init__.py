"""tfupsample: bilinear upsampling and depthwise transposed convolution for TensorFlow, without
the dense [k, k, C, C] filter that tf.nn.conv2d_transpose needs.

TensorFlow is imported on first use of a TF-level function, so that `tfupsample.numpy` (the
NumPy binding over the same kernels) and `tfupsample.cuda` (the CUDA kernels for CuPy / torch
arrays) work without it.
"""

import sys as _sys

__version__ = "0.1.0"

_API = (
    "backend",
    "bilinear_upsample",
    "depthwise_conv2d_transpose",
    "conv2d_transpose",
    "bilinear_upsample_weights",
    "bilinear_kernel_size",
    "upsample_argmax",
    "upsample_sparse_softmax_cross_entropy",
)

__all__ = list(_API) + ["load_ops"]


def load_ops():
    """Register tfupsample's TensorFlow ops and their gradients now, importing TensorFlow.

    `import tfupsample` does this by itself only when TensorFlow is already imported (so that
    `tfupsample.numpy` and `tfupsample.cuda` never import it). Call it before
    `tf.saved_model.load` of a model that uses the ops when nothing else of tfupsample's
    TensorFlow API has been used yet. Returns `backend()`: "op", or "pure-tf" if the library
    could not load.
    """
    from . import api, heads  # noqa: F401 (registers the ops, the gradients and the heads)

    return api.backend()


def __getattr__(name):
    if name in ("keras", "numpy", "cuda"):  # submodules, imported on first use
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name in _API:
        from . import api, heads

        return getattr(heads if hasattr(heads, name) else api, name)
    raise AttributeError(f"module 'tfupsample' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))


# Where TensorFlow is already loaded, register the ops now (a SavedModel that uses them can
# then be loaded right after `import tfupsample`).
if "tensorflow" in _sys.modules:
    from . import _ops  # noqa: F401
