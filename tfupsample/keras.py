"""Keras pieces. For now: the fused upsample + sparse softmax cross-entropy as a Keras loss."""

import keras
import tensorflow as tf

from ._weights import check_factor
from .heads import upsample_sparse_softmax_cross_entropy


@keras.saving.register_keras_serializable(package="tfupsample")
class UpsampledSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy of the x`factor` bilinear upsample of the model's coarse
    logits against full-resolution labels, without materialising the upsampled logits.

    Use on a model whose output is the coarse logits `[N, H, W, classes]`; `y_true` is the label
    map `[N, H*factor, W*factor]` (or with a trailing 1). Pixels equal to `ignore_label` count as 0
    loss (the default reduction still averages over every pixel).
    """

    def __init__(self, factor, ignore_label=None, from_logits=True,
                 reduction="sum_over_batch_size", name="upsampled_sparse_categorical_crossentropy",
                 dtype=None):
        if not from_logits:
            raise ValueError("UpsampledSparseCategoricalCrossentropy needs from_logits=True: "
                             "upsampling probabilities is not the same as upsampling logits")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.factor = check_factor(factor)
        self.ignore_label = ignore_label
        self.from_logits = True

    def call(self, y_true, y_pred):
        labels = tf.convert_to_tensor(y_true)
        if labels.shape.rank == 4:
            labels = tf.squeeze(labels, -1)
        if not labels.dtype.is_integer:
            labels = tf.cast(tf.round(labels), tf.int64)  # Keras may hand labels over as floats
        return upsample_sparse_softmax_cross_entropy(labels, y_pred, self.factor,
                                                     ignore_label=self.ignore_label)

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor, ignore_label=self.ignore_label, from_logits=True)
        return config
