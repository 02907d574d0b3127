"""A small DeepLab-style model trained with the fused loss in tf.image.resize's semantics.

DeepLab heads (keras-hub DeepLabV3, the keras-io DeepLabV3+ example) upsample *features* x8
with a half-pixel bilinear resize and then apply a 1x1 classifier. The resize's weights sum to 1
at every output pixel, so the classifier commutes with it: applied first, to the coarse features,
it gives coarse logits whose resize is the same full-resolution logits (up to rounding), and
the fused loss then never builds the upsampled features, the logits or their softmax. The model
here outputs the coarse logits; `reference_model` is the usual full-resolution head sharing its
layers, for the equivalence. Used by examples/train_deeplab.py and its test."""

import keras
import numpy as np
import tensorflow as tf

import tfupsample
from tfupsample.keras import UpsampledSparseCategoricalCrossentropy

from .training import fit, iou, make_shapes

IGNORE = 255


def void_borders(labels):
    """PASCAL VOC's convention: the pixels where the class changes within one pixel are 255."""
    padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)), mode="edge")
    edge = np.zeros(labels.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[:, dy:dy + labels.shape[1], dx:dx + labels.shape[2]] != labels
    return np.where(edge, IGNORE, labels).astype(np.int32)


def build_model(classes=4, width=32):
    """Stride-8 encoder, an atrous-pyramid-like block of dilated branches, a 1x1 classifier: the
    model's output is the coarse logits [N, H/8, W/8, classes]."""
    inputs = keras.Input((None, None, 3))
    h = inputs
    for i in range(3):
        h = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name=f"down{i}")(h)
    branches = [keras.layers.Conv2D(width, 1, activation="relu", name="aspp_1x1")(h)]
    branches += [keras.layers.Conv2D(width, 3, dilation_rate=r, padding="same", activation="relu",
                                     name=f"aspp_rate{r}")(h) for r in (2, 4)]
    features = keras.layers.Conv2D(width, 1, activation="relu", name="aspp_project")(
        keras.layers.Concatenate()(branches))
    logits = keras.layers.Conv2D(classes, 1, name="classifier")(features)
    return keras.Model(inputs, logits)


def reference_model(model, stride=8):
    """The same layers, DeepLab's way round: features resized x`stride` (keras UpSampling2D,
    bilinear: tf.image.resize), then the classifier: full-resolution logits."""
    features = model.get_layer("classifier").input
    up = keras.layers.UpSampling2D(stride, interpolation="bilinear")(features)
    return keras.Model(model.input, model.get_layer("classifier")(up))


def loss_fn(**options):
    """The fused loss at the labels' size, half-pixel resize, VOC's ignore label; options:
    label_smoothing, class_weights, top_k_percent_pixels."""
    return UpsampledSparseCategoricalCrossentropy(interpolation="bilinear", ignore_class=IGNORE, **options)


def predict(model, images, batch=16):
    """Labels at the images' size: the fused argmax of the resized coarse logits."""
    out = []
    for i in range(0, len(images), batch):
        coarse = model(images[i:i + batch], training=False)
        out.append(tfupsample.upsample_argmax(coarse, size=images.shape[1:3], interpolation="bilinear").numpy())
    return np.concatenate(out)


def train(seconds=60.0, epochs=None, n_train=256, n_val=32, classes=4, seed=0, verbose=1, **options):
    """Trains with the fused loss until `seconds` pass (or `epochs` end). Returns a dict with the
    losses, the validation mean IoU before and after, and the fused and full-resolution losses of
    the initial model on one batch."""
    keras.utils.set_random_seed(seed)
    x, y = make_shapes(n_train, classes=classes, seed=seed)
    xv, yv = make_shapes(n_val, classes=classes, seed=seed + 1)
    y, yv = void_borders(y), void_borders(yv)
    model = build_model(classes)
    # The two orders, like for like (no options): the same loss up to rounding.
    stock = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)
    batch = (x[:16], y[:16])
    equivalence = (float(loss_fn()(batch[1], model(batch[0]))),
                   float(stock(batch[1], reference_model(model)(batch[0]))))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss_fn(**options))
    iou0 = iou(predict(model, xv), yv, classes)
    history = fit(model, x, y, seconds, epochs, verbose)
    return dict(model=model, loss=history, iou_before=iou0, iou_after=iou(predict(model, xv), yv, classes),
                fused_loss=equivalence[0], full_resolution_loss=equivalence[1],
                feature_bytes=_bytes(model.get_layer("classifier").input, x[:16]),
                logit_bytes=_bytes(model.output, x[:16]))


def _bytes(tensor, images):
    """Bytes the reference head would hold at full resolution for one batch of `images`: the
    upsampled tensor's channels x the image's pixels x 4."""
    return int(tensor.shape[-1]) * int(np.prod(images.shape[:3])) * tf.float32.size
