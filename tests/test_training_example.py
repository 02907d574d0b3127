"""The training examples, short. FCN-32: the loss falls, the bilinear-initialised x32 kernel gets
a gradient and changes, and the mean IoU rises. DeepLab-style: the fused loss on coarse logits
equals the full-resolution head's loss, and training with it (and Model Garden's options) learns."""

import numpy as np

from tfupsample.tools import deeplab, training


def test_short_training_learns(tmp_path):
    r = training.train(epochs=6, n_train=48, n_val=16, verbose=0, png=str(tmp_path / "out.png"))
    assert r["loss"][-1] < r["loss"][0]
    assert r["kernel_change"] > 0
    assert r["iou_after"] > r["iou_before"]
    assert (tmp_path / "out.png").stat().st_size > 0


def test_generated_shapes():
    x, y = training.make_shapes(4, size=64, classes=4, seed=3)
    assert x.shape == (4, 64, 64, 3) and y.shape == (4, 64, 64)
    assert set(np.unique(y)) <= {0, 1, 2, 3} and (y > 0).any() and (y == 0).any()


def test_deeplab_head_trains_with_the_fused_loss():
    r = deeplab.train(epochs=5, n_train=48, n_val=16, verbose=0, label_smoothing=0.05, top_k_percent_pixels=0.5)
    # Classifier before or after the x8 resize: the same loss up to float32 rounding.
    assert abs(r["fused_loss"] - r["full_resolution_loss"]) <= 1e-5 * abs(r["full_resolution_loss"])
    assert r["loss"][-1] < r["loss"][0]
    assert r["iou_after"] > r["iou_before"]
    assert r["feature_bytes"] == 32 * 16 * 128 * 128 * 4 and r["logit_bytes"] == 4 * 16 * 128 * 128 * 4


def test_void_borders_and_iou():
    labels = np.zeros((1, 6, 6), np.int32)
    labels[0, 2:4, 2:4] = 1
    void = deeplab.void_borders(labels)
    assert (void[0, 2:4, 2:4] == 255).all() and void[0, 0, 0] == 0 and void[0, 1, 2] == 255 and void[0, 1, 1] == 0
    # The ignore label counts for nothing in the IoU.
    assert training.iou(np.zeros_like(void), void, 2) == 1.0
