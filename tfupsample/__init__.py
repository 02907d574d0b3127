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
    "segmentation_loss",
    "stock_ops",
    "resize",
    "resize_bilinear",
    "xla_kernels",
    "xla_kernels_missing",
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
    if name in ("keras", "numpy", "cuda", "image"):  # submodules, imported on first use
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name in _API:
        from . import api, heads, image

        for module in (heads, image, api):
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"module 'tfupsample' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))


# Where TensorFlow is already loaded, register the ops now (a SavedModel that uses them can
# then be loaded right after `import tfupsample`).
if "tensorflow" in _sys.modules:
    from . import _ops  # noqa: F401


# Keras objects (layers, initializer, loss) are registered for deserialisation whenever Keras is
# in the process: now if it is already imported, else right after it is -- so `.keras` files load
# after `import tfupsample` in either order, while `tfupsample.numpy` / `tfupsample.cuda` alone
# never import Keras or TensorFlow.
def _keras_name():
    import os

    legacy = os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")
    return "tf_keras" if legacy else "keras"


def _register_keras():
    try:
        from . import keras  # noqa: F401 (its import registers the classes)
    except ImportError as e:  # a Keras without what the layers need: say so once, keep going
        import warnings

        warnings.warn(f"tfupsample: Keras objects not registered: {e}", RuntimeWarning, stacklevel=2)


class _AfterKerasImport:
    """A one-shot import hook: lets the usual finders load Keras, then registers."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        import importlib.util

        _sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_keras()

        spec.loader.exec_module = exec_then_register
        return spec


if _keras_name() in _sys.modules:
    _register_keras()
elif not any(isinstance(f, _AfterKerasImport) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _AfterKerasImport(_keras_name()))
