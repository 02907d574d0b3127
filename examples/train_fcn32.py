"""Train a small FCN-32 on generated shapes for about a minute on the CPU.

    python examples/train_fcn32.py [--seconds 60] [--png fcn32_shapes.png]

The x32 upsampling is a trainable tfupsample.keras.DepthwiseConv2DTranspose initialised bilinear,
as in FCN; prints the mean IoU before and after and saves image / ground truth / prediction.
"""

import argparse

from tfupsample.tools import training

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=60.0)
parser.add_argument("--png", default="fcn32_shapes.png")
args = parser.parse_args()
result = training.train(seconds=args.seconds, png=args.png)
print(f"mean IoU before {result['iou_before']:.3f}, after {result['iou_after']:.3f}; "
      f"largest change of the upsampling kernel {result['kernel_change']:.3g}; picture: {args.png}")
