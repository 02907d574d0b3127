"""The FCN-32 training example, short: the loss falls, the bilinear-initialised x32 kernel gets a
gradient and changes, and the mean IoU rises."""

import numpy as np

from tfupsample.tools import training


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
