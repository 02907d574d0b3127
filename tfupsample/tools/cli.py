"""Command line: `tfupsample verify`, `tfupsample bench`, `tfupsample demo`."""

import argparse
import importlib.util
import os
import sys

# What each program needs beyond the library: (extra, {module: distribution}).
NEEDS = {
    "verify": ("verify", {"skimage": "scikit-image"}),
    "demo": ("demo", {"skimage": "scikit-image", "matplotlib": "matplotlib"}),
    "demo --train": ("plot", {"matplotlib": "matplotlib"}),
    "bench --plot": ("plot", {"matplotlib": "matplotlib"}),
}


def missing(program):
    """None, or the message telling which extra to install for `tfupsample <program>`."""
    extra, modules = NEEDS[program]
    absent = [dist for mod, dist in modules.items() if importlib.util.find_spec(mod) is None]
    if not absent:
        return None
    return (f"tfupsample {program} needs {' and '.join(absent)}, which is not installed: "
            f"pip install 'tfupsample[{extra}]' (or pip install {' '.join(absent)})")


def _factors(text):
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--factors takes integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--factors takes positive integers, got {text!r}")
    return values


TARGET_GROUPS = ("forward", "input_grad", "filter_grad", "argmax", "loss", "resize", "heads", "xla")


def _groups(text):
    groups = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in groups if g not in TARGET_GROUPS]
    if bad or not groups:
        raise argparse.ArgumentTypeError(f"--which takes groups of {', '.join(TARGET_GROUPS)}, got {text!r}")
    return groups


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="tfupsample", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("verify", help="check our ops against the dense conv2d_transpose, the NumPy "
                                      "binding and skimage, forward and gradients")
    p.add_argument("--factors", type=_factors, default=list(range(2, 10)),
                   help="factors to check, e.g. '2,3,32' (default 2-9)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the random inputs")
    b = sub.add_parser("bench", help="time and peak memory of ours and the stock peers "
                                     "(dense conv2d_transpose, depthwise_backprop_input, tf.image.resize)")
    b.add_argument("--classes", type=_factors, default=[21, 150, 1000], help="default 21,150,1000")
    b.add_argument("--factors", type=_factors, default=[2, 8, 32], help="default 2,8,32")
    b.add_argument("--size", default="16x22", help="coarse input HxW (default 16x22, VGG-16 on 512x704)")
    b.add_argument("--repeats", type=int, default=None,
                   help="rounds per measurement (medians): with --targets 7 by default (at least 3; ours and "
                        "the floors take 3x as many), else timed calls per grid cell, at least 3 by default "
                        "(the grid calls its peers in turn, more rounds for fast cells)")
    b.add_argument("--dense-limit-mb", type=int, default=512,
                   help="skip dense conv2d_transpose when its filter alone exceeds this (default 512)")
    b.add_argument("--targets", action="store_true",
                   help="measure the performance targets instead of the grid: each a ratio against "
                        "this machine's floors and the stock peers timed in this run")
    b.add_argument("--logits", choices=["random", "segmentation", "both"], default="both",
                   help="logits for the upsample_argmax target (default both)")
    b.add_argument("--which", type=_groups, default=list(TARGET_GROUPS),
                   help="target groups to measure, comma-separated (default all: "
                        f"{','.join(TARGET_GROUPS)}); resize and heads run at their own fixed shapes "
                        "(ADE20K-, Cityscapes-, DeepLab-, VOC-like), not --size/--classes/--factors; "
                        "xla: each op jit-compiled against the eager op, and a Keras training step's "
                        "peak memory with and without XLA")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.add_argument("--plot", metavar="FILE.png", help="draw time and memory against classes")
    d = sub.add_parser("demo", help="VGG-16 FCN-32 on a sample image, upsampled x32 with "
                                    "upsample_argmax; --train: the training example")
    d.add_argument("--weights", help="the standard Keras ImageNet VGG-16 weights file (with top); "
                                     "default: random weights, marked on the figure")
    d.add_argument("--image", default="chelsea", help="a scikit-image sample (default chelsea)")
    d.add_argument("--out", default=None, help="PNG to write (default demo.png / fcn32_shapes.png)")
    d.add_argument("--train", action="store_true", help="train a small FCN-32 on generated shapes")
    d.add_argument("--seconds", type=float, default=60.0, help="training time with --train")
    args = parser.parse_args(argv)

    program = args.command + (" --train" if getattr(args, "train", False) else "") + (
        " --plot" if getattr(args, "plot", None) else "")
    why = missing(program) if program in NEEDS else None
    if why:
        print(why, file=sys.stderr)
        return 2
    if args.command == "verify":
        from . import verify

        return 0 if verify.run(args.factors, seed=args.seed) else 1
    if args.command == "bench":
        from . import bench_cli

        try:
            size = tuple(int(v) for v in args.size.lower().split("x"))
        except ValueError:
            size = ()
        if len(size) != 2 or min(size) < 1:  # a real check: it must survive python -O
            parser.error(f"--size takes HxW, e.g. 16x22, got {args.size!r}")
        if args.repeats is not None and args.repeats < 1:
            parser.error("--repeats must be at least 1")
        repeats = args.repeats if args.repeats is not None else (7 if args.targets else 3)
        import json

        from . import bench

        env = bench.environment()
        if args.targets:
            logits = ("random", "segmentation") if args.logits == "both" else (args.logits,)
            found = bench.targets(size=size, classes=max(args.classes), factor=max(args.factors),
                                  logits=logits, repeats=max(repeats, 3), which=tuple(args.which))
            if args.json:
                print(json.dumps({"environment": env, "targets": [t.as_dict() for t in found]}, indent=1))
            else:
                print(bench_cli.describe(env, evicted=True))
                print(f"[1, {size[0]}, {size[1]}, {max(args.classes)}] float32 NHWC, x{max(args.factors)}")
                for t in found:
                    print(t.line())
            return 0
        rows = bench_cli.run(args.classes, args.factors, size, repeats, args.dense_limit_mb)
        found = bench_cli.grid_targets(rows)
        if args.json:
            print(json.dumps({"environment": env, "size": size, "rows": rows,
                              "targets": [t.as_dict() for t in found]}, indent=1))
        else:
            print(bench_cli.describe(env, evicted=False))
            print(f"input [1, {size[0]}, {size[1]}, classes] float32 NHWC")
            print(bench_cli.table(rows))
            for t in found:
                print(t.line())
        if args.plot:
            bench_cli.plot(rows, args.plot)
            print(f"plot written to {args.plot}", file=sys.stderr)
        return 0
    if args.command == "demo":
        if args.train:
            from . import training

            out = args.out or "fcn32_shapes.png"
            r = training.train(seconds=args.seconds, png=out)
            print(f"mean IoU before {r['iou_before']:.3f}, after {r['iou_after']:.3f}; largest change "
                  f"of the x32 kernel {r['kernel_change']:.3g}; picture: {out}")
        else:
            from . import demo

            demo.run(weights=args.weights, image=args.image, out=args.out or "demo.png")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
