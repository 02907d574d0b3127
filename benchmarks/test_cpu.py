"""CPU benchmarks of tfupsample against the stock peers, at the FCN-32 shape
[1, 16, 22, 1000] x32 float32 (filter gradient on 100 classes to keep it short)."""

import numpy as np
import pytest
import tensorflow as tf

import tfupsample as tu
from conftest import ENVIRONMENT, EXTRA, LINES, record
from tfupsample.tools import bench

ROUNDS = dict(rounds=7, warmup_rounds=3, iterations=1)
BIG = bench.Problem(1, 16, 22, 1000, 32)
FILTER = bench.Problem(1, 16, 22, 100, 32)
SMALL = bench.Problem(8, 64, 64, 21, 8)


def run_peer(benchmark, peer, group, name, rounds=ROUNDS):
    """Times a peer; one run for the slow stock ones that run on a few channels, scaled."""
    scale = getattr(peer, "scale", 1.0)
    benchmark.pedantic(peer, **(dict(rounds=1, warmup_rounds=0) if scale != 1.0 else rounds))
    record(benchmark, group, name, scale)


# The FCN-32 shape, ours against each peer: (group, record key, the problem's peers, rounds).
PAIRS = [
    ("forward x32, 1000 classes", "forward", lambda: BIG.forward(dense_limit_bytes=0), ROUNDS),
    ("input gradient x32, 1000 classes", "input_grad", BIG.input_grad, ROUNDS),
    ("upsample + argmax x32, 1000 classes", "argmax", BIG.argmax, ROUNDS),
    ("softmax cross-entropy forward + gradient x32, 1000 classes", "loss", BIG.loss_and_grad,
     dict(rounds=3, warmup_rounds=1)),
]


@pytest.mark.parametrize("group, key, peers, rounds, name",
                         [pytest.param(*pair, name, id=f"{pair[1]}-{name}") for pair in PAIRS
                          for name in pair[2]()])
def test_fcn32(benchmark, group, key, peers, rounds, name):
    benchmark.group = group
    run_peer(benchmark, peers()[name], key, name, rounds)


@pytest.mark.parametrize("classes", [64, 128])
def test_forward_dense_small_classes(benchmark, classes):
    """Dense conv2d_transpose only on small class counts: at 1000 its filter alone is 16.4 GB."""
    prob = bench.Problem(1, 16, 22, classes, 32)
    benchmark.group = "dense conv2d_transpose"
    benchmark.pedantic(prob.forward()["dense conv2d_transpose"], **ROUNDS)
    EXTRA["dense filter bytes at 1000 classes x32"] = f"{bench.dense_filter_bytes(32, 1000) / 1e9:.1f} GB"


@pytest.mark.parametrize("name", list(FILTER.filter_grad()))
def test_filter_grad(benchmark, name):
    benchmark.group = "filter gradient x32, 100 classes"
    benchmark.pedantic(FILTER.filter_grad()[name], rounds=3, warmup_rounds=1 if name == "tfupsample" else 0)
    record(benchmark, "filter_grad", name)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_layouts(benchmark, layout):
    x = BIG.x if layout == "NHWC" else tf.transpose(BIG.x, [0, 3, 1, 2])
    benchmark.group = "forward layouts"
    benchmark.pedantic(lambda: tu.bilinear_upsample(x, 32, data_format=layout), **ROUNDS)
    record(benchmark, "layout", layout)


@pytest.mark.parametrize("name", ["tfupsample", "depthwise_backprop_input", "tf.image.resize"])
def test_small(benchmark, name):
    benchmark.group = "forward [8,64,64,21] x8"
    run_peer(benchmark, SMALL.forward(dense_limit_bytes=0)[name], "small", name, dict(rounds=5, warmup_rounds=1))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_other_dtypes(benchmark, dtype):
    x = tf.cast(SMALL.x, dtype)
    benchmark.group = f"forward [8,64,64,21] x8 {dtype}"
    benchmark.pedantic(lambda: tu.bilinear_upsample(x, 8), rounds=10, warmup_rounds=1)


@pytest.mark.parametrize("what", ["forward", "input_grad", "filter_grad"])
def test_peak_memory(benchmark, what):
    """Peak RSS growth of one call: the forward against the output's bytes (target <= 1.05), the
    gradients against the output's bytes too (they should allocate only their small results)."""
    if what == "filter_grad":
        fn = FILTER.filter_grad()["tfupsample"]
        out_bytes = FILTER.output_bytes
    else:
        fn = (BIG.forward(dense_limit_bytes=0) if what == "forward" else BIG.input_grad())["tfupsample"]
        out_bytes = BIG.output_bytes
    _, peak = bench.measure(fn, repeats=3)
    benchmark.group = "memory"
    benchmark.pedantic(lambda: None, rounds=1)
    if peak is not None:
        EXTRA[f"{what}: peak RSS growth / output bytes"] = f"{peak / out_bytes:.3f}"
        benchmark.extra_info["peak_over_output"] = peak / out_bytes


@pytest.mark.parametrize("what", ["argmax", "loss"])
def test_heads_peak_memory(benchmark, what):
    """Peak RSS growth of the fused heads against their maps' bytes (targets: <= 2x)."""
    n_pixels = int(np.prod(BIG.out_shape[:3]))
    if what == "argmax":
        fn, budget = BIG.argmax()["tfupsample upsample_argmax"], n_pixels * 8  # int64 label map
    else:
        fn, budget = BIG.loss_and_grad()["tfupsample fused loss"], n_pixels * (8 + 4)  # labels + loss
    _, peak = bench.measure(fn, repeats=3)
    benchmark.group = "memory"
    benchmark.pedantic(lambda: None, rounds=1)
    if peak is not None:
        EXTRA[f"{what}: peak RSS growth / map bytes"] = f"{peak / budget:.2f} (target <= 2)"


@pytest.mark.parametrize("logits", ["random", "segmentation"])
def test_targets(benchmark, logits):
    """The targets, as `tfupsample bench --targets` measures and prints them."""
    which = ("forward", "input_grad", "filter_grad", "argmax", "loss", "resize", "heads", "xla") if logits == "random" else ("argmax",)
    ENVIRONMENT.update(bench.environment())
    found = bench.targets(logits=(logits,), which=which)
    benchmark.group = "targets"
    benchmark.pedantic(lambda: None, rounds=1)
    for t in found:
        LINES.append(t.line())
        benchmark.extra_info[t.name] = t.as_dict()


