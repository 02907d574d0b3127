"""Collects the target lines measured by test_cpu.py's test_targets (every figure a ratio against
this machine's floors and the stock peers, measured in the same run) and prints them with the
environment they depend on (run: pytest benchmarks --benchmark-only)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MEDIANS = {}  # (group, name) -> seconds
EXTRA = {}
LINES = []  # target lines, in order
ENVIRONMENT = {}


def record(benchmark, group, name, scale=1.0):
    """scale: the peer ran on fewer channels than the problem; its time is scaled up by this."""
    MEDIANS[(group, name)] = benchmark.stats.stats.median * scale
    if scale != 1.0:
        benchmark.extra_info["time_scale"] = scale


def pytest_terminal_summary(terminalreporter):
    if not (LINES or EXTRA):
        return
    tr = terminalreporter
    tr.section("tfupsample targets (ratios measured in this run)")
    if ENVIRONMENT:
        from tfupsample.tools import bench_cli

        tr.write_line(bench_cli.describe(ENVIRONMENT, evicted=False))
    for line in LINES:
        tr.write_line(line)
    for key, value in EXTRA.items():
        tr.write_line(f"{key}: {value}")
