"""Collects each benchmark's median and prints the issue's target ratios, computed from peers
measured in this same process (run: pytest benchmarks --benchmark-only)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MEDIANS = {}  # (group, name) -> seconds
EXTRA = {}

# (description, group, ours, peer, required peer/ours ratio); ratios < 1 are "at most x ours".
TARGETS = [
    ("forward <= 1.15x np.full of the output", "forward", "tfupsample", "np.full (write floor)", 1 / 1.15),
    ("forward >= 4x faster than depthwise_backprop_input", "forward", "tfupsample", "depthwise_backprop_input", 4),
    ("forward >= 1.8x faster than tf.image.resize", "forward", "tfupsample", "tf.image.resize", 1.8),
    ("input grad >= 2.5x faster than the resize grad", "input_grad", "tfupsample", "tf.image.resize grad", 2.5),
    ("input grad >= 5x faster than the stock depthwise grad", "input_grad", "tfupsample", "stock depthwise input grad", 5),
    ("filter grad (100 classes) >= 50x faster than depthwise_backprop_filter", "filter_grad", "tfupsample", "depthwise_backprop_filter", 50),
    ("NCHW forward within 1.5x of NHWC", "layout", "NHWC", "NCHW", 1 / 1.5),
    ("small [8,64,64,21] x8 no slower than stock depthwise", "small", "tfupsample", "depthwise_backprop_input", 1),
    ("upsample_argmax >= 5x faster than resize + argmax", "argmax", "tfupsample upsample_argmax", "tf.image.resize + tf.argmax", 5),
    ("fused loss fwd+grad >= 5x faster than our upsample + stock loss", "loss", "tfupsample fused loss", "bilinear_upsample + stock loss", 5),
    ("fused loss fwd+grad >= 50x faster than the stock depthwise pipeline", "loss", "tfupsample fused loss", "stock depthwise pipeline", 50),
]


def record(benchmark, group, name, scale=1.0):
    """scale: the peer ran on fewer channels than the problem; its time is scaled up by this."""
    MEDIANS[(group, name)] = benchmark.stats.stats.median * scale
    if scale != 1.0:
        benchmark.extra_info["time_scale"] = scale


def pytest_terminal_summary(terminalreporter):
    if not MEDIANS:
        return
    tr = terminalreporter
    tr.section("tfupsample targets (peer time / our time, same process)")
    for desc, group, ours, peer, need in TARGETS:
        a, b = MEDIANS.get((group, ours)), MEDIANS.get((group, peer))
        if a is None or b is None:
            continue
        ratio = b / a
        tr.write_line(f"{'MET   ' if ratio >= need else 'MISSED'} {desc}: {ratio:.2f}x (need {need:.2f}x)")
    for key, value in EXTRA.items():
        tr.write_line(f"{key}: {value}")
