"""A small FCN-32 trained end to end on generated shapes: the trainable x32
DepthwiseConv2DTranspose head starts bilinear and learns. Used by examples/train_fcn32.py and
its test."""

import time

import keras
import numpy as np

from tfupsample.keras import DepthwiseConv2DTranspose


def make_shapes(n, size=128, classes=4, seed=0):
    """Images of noise with 1-4 random rectangles and discs, one class each (0 = background)."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.2, 1.0, (classes, 3))
    colours[0] = 0.0
    yy, xx = np.mgrid[0:size, 0:size]
    images = rng.normal(0.0, 0.25, (n, size, size, 3)).astype(np.float32)
    labels = np.zeros((n, size, size), np.int32)
    for i in range(n):
        for _ in range(rng.integers(1, 5)):
            c = int(rng.integers(1, classes))
            cy, cx, r = rng.integers(16, size - 16, 2).tolist() + [int(rng.integers(10, size // 4))]
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) if rng.random() < 0.5 else (
                (abs(yy - cy) < r) & (abs(xx - cx) < r * 0.7))
            labels[i][mask] = c
        images[i] += colours[labels[i]]
    return images, labels


def build_model(classes=4, width=16):
    """Stride-32 encoder, 1x1 class logits, x32 DepthwiseConv2DTranspose initialised bilinear."""
    inputs = keras.Input((None, None, 3))
    h = inputs
    for i in range(5):
        h = keras.layers.Conv2D(width * min(2 ** i, 4), 3, strides=2, padding="same", activation="relu")(h)
    logits = keras.layers.Conv2D(classes, 1)(h)
    up = DepthwiseConv2DTranspose(64, strides=32, name="upsample_x32")(logits)
    return keras.Model(inputs, up)


def iou(pred, labels, classes):
    """Mean intersection over union of the classes present, over the pixels whose label is in
    [0, classes) (an ignore label such as 255 counts for nothing)."""
    keep = (labels >= 0) & (labels < classes)
    pred, labels = pred[keep], labels[keep]
    ious = []
    for c in range(classes):
        inter = np.logical_and(pred == c, labels == c).sum()
        union = np.logical_or(pred == c, labels == c).sum()
        if union:
            ious.append(inter / union)
    return float(np.mean(ious))


def mean_iou(model, images, labels, classes):
    pred = np.argmax(np.asarray(model.predict(images, verbose=0)), axis=-1)
    return iou(pred, labels, classes), pred


def fit(model, x, y, seconds, epochs, verbose):
    """model.fit in batches of 16 until `seconds` pass (or `epochs` end); the epochs' losses."""
    start, history = time.time(), []

    class StopAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            history.append(logs["loss"])
            if epochs is None and time.time() - start > seconds:
                self.model.stop_training = True

    model.fit(x, y, batch_size=16, epochs=epochs or 10_000, verbose=verbose, callbacks=[StopAfter()])
    return history


def train(seconds=60.0, epochs=None, n_train=256, n_val=32, classes=4, seed=0, verbose=1, png=None):
    """Trains until `seconds` pass (or `epochs` end). Returns a dict of what happened."""
    keras.utils.set_random_seed(seed)
    x, y = make_shapes(n_train, classes=classes, seed=seed)
    xv, yv = make_shapes(n_val, classes=classes, seed=seed + 1)
    model = build_model(classes)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kernel0 = model.get_layer("upsample_x32").kernel.numpy().copy()
    iou0, _ = mean_iou(model, xv, yv, classes)
    history = fit(model, x, y, seconds, epochs, verbose)
    iou1, pred = mean_iou(model, xv, yv, classes)
    kernel1 = model.get_layer("upsample_x32").kernel.numpy()
    if png:
        _plot(xv[:3], yv[:3], pred[:3], classes, png)
    return dict(model=model, loss=history, iou_before=iou0, iou_after=iou1,
                kernel_change=float(np.abs(kernel1 - kernel0).max()))


def _plot(images, labels, preds, classes, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(images), 3, figsize=(9, 3 * len(images)))
    for row, (im, lab, pr) in enumerate(zip(images, labels, preds)):
        for ax, data, title in zip(axes[row], (np.clip(im, 0, 1), lab, pr), ("image", "ground truth", "prediction")):
            ax.imshow(data, cmap=None if data.ndim == 3 else "tab10", vmin=0, vmax=9 if data.ndim == 2 else None)
            ax.set_title(title)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
