"""Command line: `tfupsample verify`."""

import argparse
import os
import sys


def _factors(text):
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--factors takes integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--factors takes positive integers, got {text!r}")
    return values


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="tfupsample", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("verify", help="check our ops against the dense conv2d_transpose, the NumPy "
                                      "binding and skimage, forward and gradients")
    p.add_argument("--factors", type=_factors, default=list(range(2, 10)),
                   help="factors to check, e.g. '2,3,32' (default 2-9)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the random inputs")
    args = parser.parse_args(argv)

    if args.command == "verify":
        from . import verify

        return 0 if verify.run(args.factors, seed=args.seed) else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
