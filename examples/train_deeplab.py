"""Train a small DeepLab-style model with the fused loss for about a minute on the CPU.

    python examples/train_deeplab.py [--seconds 60] [--label-smoothing 0.05] [--top-k 1.0]

DeepLab upsamples features x8 (tf.image.resize, half-pixel) and then applies a 1x1 classifier.
The resize's weights sum to 1, so the classifier can go first: the model outputs coarse logits,
and tfupsample's loss in tf.image.resize semantics (UpsampledSparseCategoricalCrossentropy,
interpolation="bilinear") trains it without the full-resolution features, logits or softmax.
Prints that the two orders give the same loss, and the mean IoU before and after.
"""

import argparse

from tfupsample.tools import deeplab

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=60.0)
parser.add_argument("--label-smoothing", type=float, default=0.0)
parser.add_argument("--top-k", type=float, default=1.0, help="top_k_percent_pixels (hard-pixel mining)")
args = parser.parse_args()
r = deeplab.train(seconds=args.seconds, label_smoothing=args.label_smoothing, top_k_percent_pixels=args.top_k)
print(f"initial loss: fused on coarse logits {r['fused_loss']:.6f}, DeepLab's order (resize features, "
      f"then classify) {r['full_resolution_loss']:.6f}")
print(f"the fused loss never holds the x8 features ({r['feature_bytes'] / 2**20:.1f} MiB a batch) nor the "
      f"full-resolution logits ({r['logit_bytes'] / 2**20:.1f} MiB)")
print(f"mean IoU before {r['iou_before']:.3f}, after {r['iou_after']:.3f}")
