"""Keras layers, initializer and loss (TensorFlow backend).

They are classes of the Keras that `tf.keras` is in this process: Keras 3, or legacy Keras
(`tf_keras`) when `TF_USE_LEGACY_KERAS` is set, as TensorFlow itself decides. `import tfupsample`
registers them for deserialisation as soon as that Keras is imported.

With another Keras 3 backend (JAX, PyTorch) the drop-ins `UpSampling2D` and `Resizing` call the
stock layers' own code (tfupsample's kernels are TensorFlow ops), and the classes that exist only here
(`BilinearUpsampling2D`, `DepthwiseConv2DTranspose`, `UpsampledSparseCategoricalCrossentropy`)
refuse to be made, saying so; `BilinearInitializer` works with any backend.
"""

import numpy as np
import tensorflow as tf

from . import _keras_name

if _keras_name() == "tf_keras":  # the rule TensorFlow applies to tf.keras, written once
    import tf_keras as keras

    LEGACY = True
    _floatx, _image_data_format = keras.backend.floatx, keras.backend.image_data_format
else:
    import keras

    LEGACY = False
    _floatx, _image_data_format = keras.config.floatx, keras.config.image_data_format

from ._numpy_ext import default_output_size
from ._weights import bilinear_kernel_2d, check_factor
from .heads import _check_fraction, _cross_entropy, _hard_pixels, _pixel_weights

# Keras 3 fixes its backend at import (KERAS_BACKEND); tf_keras is TensorFlow's.
TF_BACKEND = keras.backend.backend() == "tensorflow"


def _need_tf_backend(what):
    if not TF_BACKEND:
        raise RuntimeError(f"tfupsample.keras.{what} runs tfupsample's TensorFlow ops and needs Keras' "
                           f"TensorFlow backend; this Keras runs the {keras.backend.backend()!r} backend "
                           "(set KERAS_BACKEND=tensorflow before importing Keras)")


def _set_mask(losses, mask):
    """Attach a Keras mask to per-sample losses, as keras.losses.sparse_categorical_crossentropy
    does for ignore_class: the loss reduction then leaves masked entries out of the mean."""
    if LEGACY:  # tf_keras reads the attribute
        losses._keras_mask = mask
        return losses
    try:
        from keras.src.backend import set_keras_mask
    except ImportError:  # Keras 3 versions before the helper set the attribute directly
        losses._keras_mask = mask
    else:
        set_keras_mask(losses, mask)
    return losses


@keras.saving.register_keras_serializable(package="tfupsample")
class UpsampledSparseCategoricalCrossentropy(keras.losses.Loss):
    """`keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=...)` of the
    x`factor` bilinear upsample of the model's coarse logits, without materialising the upsampled
    logits.

    Use on a model whose output is the coarse logits `[N, H, W, classes]`; `y_true` is the label
    map `[N, H*factor, W*factor]` (or with a trailing 1). With `interpolation="bilinear"` (also
    "align_corners", "asymmetric") the logits are resized as `tf.image.resize` does to the label
    map's size, whatever it is (Model Garden's and most Keras models' semantics; no factor needed).
    Pixels whose label is `ignore_class`
    (e.g. 255 in PASCAL VOC) are left out, as in Keras: 0 loss, and out of the mean of the default
    reduction. `ignore_label` is accepted as another name for `ignore_class` (the function-level
    API's name).

    Model Garden's options (`tfupsample.segmentation_loss`): `label_smoothing` s (target
    `(1 - s) one_hot + s / classes`, in the kernel), `class_weights` (each pixel's loss times its
    label's weight) and `top_k_percent_pixels` f < 1 (hard-pixel mining: the mean over the
    k = int(f * pixels) largest losses, or over every pixel not ignored where fewer are left).
    With the default reduction the result is Model Garden's loss (without its 1e-5 in the
    denominator); Keras' `sample_weight` multiplies the pixels after the mining.
    """

    def __init__(self, factor=None, ignore_class=None, from_logits=True,
                 reduction="sum_over_batch_size", name="upsampled_sparse_categorical_crossentropy",
                 dtype=None, ignore_label=None, interpolation="transposed_conv", label_smoothing=0.0,
                 class_weights=None, top_k_percent_pixels=1.0):
        _need_tf_backend(type(self).__name__)
        if not from_logits:
            raise ValueError("UpsampledSparseCategoricalCrossentropy needs from_logits=True: "
                             "upsampling probabilities is not the same as upsampling logits")
        if ignore_label is not None:
            if ignore_class is not None and ignore_class != ignore_label:
                raise ValueError(f"ignore_class={ignore_class} and ignore_label={ignore_label} "
                                 "name the same thing: pass one")
            ignore_class = ignore_label
        if LEGACY:  # tf_keras' Loss takes no dtype
            super().__init__(name=name, reduction=reduction)
        else:
            super().__init__(name=name, reduction=reduction, dtype=dtype)
        from .heads import _interpolation

        self.resize = _interpolation(interpolation) is not None
        self.interpolation = interpolation
        self.factor = check_factor(factor) if factor is not None or not self.resize else None
        self.ignore_class = ignore_class
        self.from_logits = True
        self.label_smoothing = _check_fraction(label_smoothing, "label_smoothing")
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.top_k_percent_pixels = _check_fraction(top_k_percent_pixels, "top_k_percent_pixels")

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras' sample_weight weights the pixels after call(): the loss map's gradient is then
        # not one value, and the loss op's gradient for one (with_grad) would go unused.
        outer, self._weighted = getattr(self, "_weighted", False), sample_weight is not None
        try:
            return super().__call__(y_true, y_pred, sample_weight)
        finally:
            self._weighted = outer

    def call(self, y_true, y_pred):
        labels = tf.convert_to_tensor(y_true)
        if labels.shape.rank == 4:
            labels = tf.squeeze(labels, -1)
        if not labels.dtype.is_integer:
            labels = tf.cast(tf.round(labels), tf.int32)  # Keras may hand labels over as floats
        weighted = (getattr(self, "_weighted", False) or self.class_weights is not None or
                    self.top_k_percent_pixels < 1.0)  # the losses' gradient is then not one value
        losses = _cross_entropy(labels, y_pred, self.factor, self.ignore_class, self.label_smoothing,
                                self.interpolation, "NHWC", None, unit_grad=not weighted)
        valid = (tf.not_equal(labels, tf.cast(self.ignore_class, labels.dtype)) if self.ignore_class is not None
                 else None)
        if self.class_weights is not None:
            everywhere = tf.ones_like(labels, tf.bool) if valid is None else valid
            losses *= _pixel_weights(labels, everywhere, self.class_weights, None, losses.dtype, y_pred.shape[-1])
        if self.top_k_percent_pixels < 1.0:
            valid = _hard_pixels(losses, tf.ones_like(labels, tf.bool) if valid is None else valid,
                                 self.top_k_percent_pixels)
            losses = tf.where(valid, losses, tf.zeros_like(losses))
        return losses if valid is None else _set_mask(losses, valid)

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor, ignore_class=self.ignore_class, from_logits=True,
                      interpolation=self.interpolation, label_smoothing=self.label_smoothing,
                      class_weights=self.class_weights, top_k_percent_pixels=self.top_k_percent_pixels)
        return config


# ------------------------------------------------------------------------------------------------
# Layers

@keras.saving.register_keras_serializable(package="tfupsample")
class BilinearInitializer(keras.initializers.Initializer):
    """Bilinear upsampling kernel for a `[kh, kw, C, 1]` (or `[kh, kw, C, C]`, diagonal) filter:
    with kernel 2f - f % 2 and stride f the layer starts as an exact bilinear upsample."""

    def __call__(self, shape, dtype=None):
        if len(shape) != 4 or shape[3] not in (1, shape[2]):
            raise ValueError(f"BilinearInitializer needs a [kh, kw, C, 1] or [kh, kw, C, C] shape, got {shape}")
        k2 = bilinear_kernel_2d(shape[0], shape[1])
        w = np.zeros(shape)
        if shape[3] == 1:
            w[:] = k2[:, :, None, None]
        else:
            w[:, :, np.arange(shape[2]), np.arange(shape[2])] = k2[:, :, None]
        if LEGACY:
            return tf.constant(w, dtype=dtype or _floatx())
        return keras.ops.convert_to_tensor(w, dtype=dtype or _floatx())  # the backend's own tensor

    def get_config(self):
        return {}


def _initializer(value):
    return BilinearInitializer() if value == "bilinear" else keras.initializers.get(value)


def _standardize_format(data_format):
    fmt = _image_data_format() if data_format is None else str(data_format).lower()
    if fmt not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
    return fmt


def _tf_format(data_format):
    return "NHWC" if _standardize_format(data_format) == "channels_last" else "NCHW"


def _transpose_length(n, k, s, padding):
    """Output length of keras.layers.Conv2DTranspose (no output_padding): geometry.h's
    DefaultOutputSize, n * s + its value at n = 0 (a tensor n stays a tensor)."""
    return n * s + default_output_size(0, k, s, padding.upper())


@keras.saving.register_keras_serializable(package="tfupsample")
class BilinearUpsampling2D(keras.layers.Layer):
    """x`factor` bilinear upsample (the FCN transposed convolution, fixed kernel, no weights)."""

    def __init__(self, factor, data_format=None, **kwargs):
        _need_tf_backend(type(self).__name__)
        super().__init__(**kwargs)
        self.factor = check_factor(factor)
        self.data_format = _standardize_format(data_format)

    def call(self, inputs):
        from . import api

        return api.bilinear_upsample(inputs, self.factor, data_format=_tf_format(self.data_format))

    def compute_output_shape(self, input_shape):
        n, a, b, c = input_shape
        if self.data_format == "channels_last":
            return (n, None if a is None else a * self.factor, None if b is None else b * self.factor, c)
        return (n, a, None if b is None else b * self.factor, None if c is None else c * self.factor)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="tfupsample")
class DepthwiseConv2DTranspose(keras.layers.Layer):
    """Trainable per-channel transposed convolution, kernel `[kh, kw, C, 1]`, initialised bilinear
    by default. Output shapes follow keras.layers.Conv2DTranspose."""

    def __init__(self, kernel_size, strides=(1, 1), padding="same", data_format=None,
                 activation=None, use_bias=False, kernel_initializer="bilinear",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 depth_multiplier=1, groups=None, **kwargs):
        _need_tf_backend(type(self).__name__)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if depth_multiplier != 1:
            raise ValueError(f"DepthwiseConv2DTranspose supports depth_multiplier=1 only, got {depth_multiplier}")
        if groups is not None:
            raise ValueError("DepthwiseConv2DTranspose is per channel (groups = channels): "
                             f"the groups argument is not supported, got groups={groups}")
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        self.kernel_size, self.strides = pair(kernel_size), pair(strides)
        if len(self.kernel_size) != 2 or min(self.kernel_size) < 1:
            raise ValueError(f"kernel_size must be a positive int or a pair, got {kernel_size!r}")
        if len(self.strides) != 2 or min(self.strides) < 1:
            raise ValueError(f"strides must be a positive int or a pair, got {strides!r}")
        self.padding = str(padding).lower()
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.data_format = _standardize_format(data_format)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = _initializer(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def _axes(self):
        return (1, 2, 3) if self.data_format == "channels_last" else (2, 3, 1)

    def build(self, input_shape):
        c = input_shape[self._axes()[2]]
        if c is None:
            raise ValueError("DepthwiseConv2DTranspose needs a known channel count")
        self.kernel = self.add_weight(name="kernel", shape=(*self.kernel_size, c, 1),
                                      initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.bias = self.add_weight(name="bias", shape=(c,), initializer=self.bias_initializer,
                                    regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis, k, s in zip(self._axes()[:2], self.kernel_size, self.strides):
            if shape[axis] is not None:
                shape[axis] = _transpose_length(shape[axis], k, s, self.padding)
        return tuple(shape)

    def call(self, inputs):
        from . import api

        ya, xa, ca = self._axes()
        dyn = tf.shape(inputs)
        # Sizes known when tracing stay Python ints (the output keeps a static shape).
        dims = [inputs.shape[i] if inputs.shape[i] is not None else dyn[i] for i in range(4)]
        out = [dims[0], None, None, None]
        out[ca] = dims[ca]
        for axis, k, s in zip((ya, xa), self.kernel_size, self.strides):
            out[axis] = _transpose_length(dims[axis], k, s, self.padding)
        y = api.depthwise_conv2d_transpose(inputs, tf.cast(self.kernel, inputs.dtype), out,
                                           self.strides, self.padding.upper(),
                                           data_format=_tf_format(self.data_format))
        if self.use_bias:
            y = tf.nn.bias_add(y, tf.cast(self.bias, y.dtype), data_format=_tf_format(self.data_format))
        return self.activation(y) if self.activation is not None else y

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "data_format": self.data_format,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": ser(self.kernel_initializer),
                "bias_initializer": ser(self.bias_initializer),
                "kernel_regularizer": ser(self.kernel_regularizer),
                "bias_regularizer": ser(self.bias_regularizer),
                "kernel_constraint": ser(self.kernel_constraint),
                "bias_constraint": ser(self.bias_constraint)}


# ------------------------------------------------------------------------------------------------
# Drop-ins for Keras' own bilinear resizing layers: the same class (a subclass), arguments,
# config and outputs; the bilinear case runs tfupsample's resize kernel, every other case the
# stock layer's own code.

# Keras 3.6 brought keras.ops.saturate_cast, and with it the resizing layers' saturating cast of
# their float32 result (keras/src/ops/core.py `_saturate_cast`); before it they cast with tf.cast.
_SATURATE_CAST = None if LEGACY else getattr(keras.ops, "saturate_cast", None)


def _resize_like_keras(inputs, size, data_format, dtype):
    """Keras' bilinear resize of a 3-D or 4-D tensor (tf.image.resize: half-pixel centres, float32)
    on tfupsample's kernel, cast to dtype as the stock layer casts its result: Keras 3.6 and later
    saturate (clip to the dtype's finite range first, so an inf or a float32 beyond float16's range
    becomes its largest value), tf_keras and earlier Keras 3 cast plainly."""
    from . import image

    y = image.resize(inputs, size, data_format=_tf_format(data_format))
    if y.dtype == dtype:
        return y
    return _SATURATE_CAST(y, dtype) if _SATURATE_CAST is not None else tf.cast(y, dtype)


@keras.saving.register_keras_serializable(package="tfupsample")
class UpSampling2D(keras.layers.UpSampling2D):
    """`keras.layers.UpSampling2D`: with `interpolation="bilinear"` on float inputs the resize runs
    on tfupsample's kernel (the same outputs); every other case, and every call under another
    Keras backend than TensorFlow, is the stock layer's."""

    def call(self, inputs):
        if not TF_BACKEND:
            return super().call(inputs)
        inputs = tf.convert_to_tensor(inputs)
        if self.interpolation != "bilinear" or not inputs.dtype.is_floating:  # Keras rounds integers
            return super().call(inputs)
        shape = tf.shape(inputs)
        h, w = (shape[1], shape[2]) if self.data_format == "channels_last" else (shape[2], shape[3])
        size = tf.stack([h * self.size[0], w * self.size[1]])
        # Keras 3 casts the resize back to the input's dtype; tf_keras returns its float32.
        y = _resize_like_keras(inputs, size, self.data_format, tf.float32 if LEGACY else inputs.dtype)
        static = self.compute_output_shape(inputs.shape)
        return tf.ensure_shape(y, static) if None not in static[1:] else y


@keras.saving.register_keras_serializable(package="tfupsample")
class Resizing(keras.layers.Resizing):
    """`keras.layers.Resizing`: with `interpolation="bilinear"`, no antialiasing, neither
    `crop_to_aspect_ratio` nor `pad_to_aspect_ratio`, on dense float inputs, the resize runs on
    tfupsample's kernel (the same outputs); every other case, and every call under another Keras
    backend than TensorFlow, is the stock layer's."""

    def _ours(self, data):
        # fill_mode matters only with padding, but Keras 3 refuses any other than "constant" in
        # every call: the stock layer says so.
        return (TF_BACKEND and tf.is_tensor(data) and not isinstance(data, tf.RaggedTensor) and self.interpolation == "bilinear"
                and not getattr(self, "antialias", False) and not self.crop_to_aspect_ratio
                and not getattr(self, "pad_to_aspect_ratio", False) and getattr(self, "fill_mode", "constant") == "constant"
                and data.dtype.is_floating)

    def call(self, inputs, *args, **kwargs):
        if not self._ours(inputs):
            return super().call(inputs, *args, **kwargs)
        return _resize_like_keras(inputs, [self.height, self.width],
                                  getattr(self, "data_format", "channels_last"),  # tf_keras: NHWC only
                                  tf.as_dtype(self.compute_dtype) if LEGACY else inputs.dtype)
