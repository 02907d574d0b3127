"""`tfupsample verify` end to end, in a subprocess as a user runs it."""

import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import tfupsample.tools.verify as verify


def _cli(*args):
    # Run outside the checkout so the installed package is the one imported.
    return subprocess.run([sys.executable, "-m", "tfupsample.tools.cli", *args], capture_output=True,
                          text=True, timeout=600, cwd=tempfile.gettempdir())


def test_verify_passes_for_factors_2_to_9():
    out = _cli("verify", "--factors", "2,3,4,5,6,7,8,9")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if line.split()[0].isdigit()]
    assert [r.split()[0] for r in rows] == [str(f) for f in range(2, 10)]
    assert all(r.endswith("PASS") for r in rows)
    assert "all factors PASS" in out.stdout


def test_verify_fails_when_an_implementation_is_wrong(monkeypatch):
    """The check can fail: corrupt our op's result and the factor must be reported FAIL."""
    import tfupsample.api as api

    real_lib = api._ops.lib
    real = real_lib.tfupsample_bilinear_upsample
    monkeypatch.setattr(api._ops, "lib", type("L", (), {
        "tfupsample_bilinear_upsample": staticmethod(lambda x, **kw: real(x, **kw) * 1.001),
        "__getattr__": lambda self, name: getattr(real_lib, name),
    })())
    lines = []
    assert verify.run([2], out=lines.append) is False
    factor_rows = [line for line in lines if line.split() and line.split()[0] == "2"]
    assert len(factor_rows) == 1 and factor_rows[0].endswith("FAIL") and "FAILED" in lines
    assert lines[-1] == "all sizes PASS"  # the resize's rows do not use the corrupted op


def test_verify_fails_when_the_resize_is_wrong(monkeypatch):
    import tfupsample.image as image

    real_lib = image._ops.lib
    real = real_lib.tfupsample_resize_bilinear
    monkeypatch.setattr(image._ops, "lib", type("L", (), {
        "tfupsample_resize_bilinear": staticmethod(lambda x, s, **kw: real(x, s, **kw) * 1.0001),
        "__getattr__": lambda self, name: getattr(real_lib, name),
    })())
    lines = []
    assert verify.run([3], out=lines.append) is False
    assert lines[-1] == "FAILED" and all(line.endswith("FAIL") for line in lines if "->" in line)


def test_verify_holds_the_resize_to_stock_bits(monkeypatch):
    """One ulp off stock TF is within the float64 definition's bound but not the same bits: FAIL."""
    import tensorflow as tf

    import tfupsample.image as image

    real_lib = image._ops.lib
    real = real_lib.tfupsample_resize_bilinear
    def one_ulp_up(y):  # the next float32 up, exactly (adjacent floats' difference is exact); the gradient kept
        return y + tf.stop_gradient(tf.constant(np.nextafter(y.numpy(), np.float32(np.inf))) - y)

    monkeypatch.setattr(image._ops, "lib", type("L", (), {
        "tfupsample_resize_bilinear": staticmethod(lambda x, s, **kw: one_ulp_up(real(x, s, **kw))),
        "__getattr__": lambda self, name: getattr(real_lib, name),
    })())
    res = verify.check_size((33, 33), (100, 100), "asymmetric", np.random.default_rng(0))
    assert res["vs stock"][0] > 0 and not res["vs stock"][1]  # only the bits fail
    assert all(ok for key, (_, ok) in res.items() if key != "vs stock"), res
    lines = []
    assert verify.run([2], out=lines.append) is False
    rows = [line for line in lines if "->" in line]
    assert len(rows) == len(verify.FRACTIONAL) and all(line.endswith("FAIL") for line in rows)
    assert {"half_pixel", "align_corners", "asymmetric"} == {line.split()[1] for line in rows}
    factor_row = next(line for line in lines if line.split() and line.split()[0] == "2")
    assert factor_row.endswith("FAIL")


@pytest.mark.parametrize("argv, needs, extra", [
    (["verify"], "scikit-image", "verify"),
    (["demo"], "scikit-image", "demo"),
    (["demo", "--train"], "matplotlib", "plot"),
    (["bench", "--plot", "x.png"], "matplotlib", "plot"),
])
def test_a_tool_without_its_extra_names_the_extra(argv, needs, extra, monkeypatch, capsys):
    from tfupsample.tools import cli

    real = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("skimage", "matplotlib") else real(name, *a))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needs in err and f"pip install 'tfupsample[{extra}]'" in err, err


def test_bad_factors_argument():
    out = _cli("verify", "--factors", "0")
    assert out.returncode == 2
    assert "--factors takes positive integers" in out.stderr


@pytest.mark.parametrize("args", [["--help"], ["verify", "--help"]])
def test_help(args):
    out = _cli(*args)
    assert out.returncode == 0 and "verify" in out.stdout


def test_bench_json_small():
    import json

    out = _cli("bench", "--classes", "3", "--factors", "2", "--size", "4x5", "--repeats", "1", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    impls = {r["impl"] for r in data["rows"]}
    assert {"tfupsample", "tf.image.resize", "depthwise_backprop_input", "dense conv2d_transpose"} <= impls
    assert all(r["ms"] is None or r["ms"] >= 0 for r in data["rows"])
    assert "[1/1]" in out.stderr  # the progress line
    env = data["environment"]
    assert env["cores"] >= 1 and env["tensorflow"].startswith("tensorflow") and env["backend"] == "op"
    assert isinstance(env["onednn"], (bool, type(None)))
    # The grid's targets: vs tf.image.resize everywhere; vs the write floor only from 64 MB up.
    assert [t["name"] for t in data["targets"]] == ["forward, 3 classes x2 vs tf.image.resize"]
    rows = {r["impl"]: r for r in data["rows"]}
    t = data["targets"][0]
    assert (t["ours_ms"], t["ref_ms"]) == (rows["tfupsample"]["ms"], rows["tf.image.resize"]["ms"])
    assert t["met"] == (t["ref_ms"] >= t["ours_ms"])
    assert rows["tfupsample"]["calls"] >= 1


def test_grid_targets_apply_the_floor_from_64_mb():
    from tfupsample.tools.bench_cli import grid_targets

    rows = [dict(classes=c, factor=f, impl=impl, ms=ms, output_mb=mb)
            for c, f, mb, times in ((21, 2, 0.2, (1.0, 0.5, 0.9)), (1000, 32, 1375.0, (160.0, 100.0, 200.0)))
            for impl, ms in zip(("tfupsample", "write floor", "tf.image.resize"), times)]
    found = {t.name: t for t in grid_targets(rows)}
    assert sorted(found) == ["forward, 1000 classes x32 (1375 MB) vs the write floor",
                             "forward, 1000 classes x32 vs tf.image.resize", "forward, 21 classes x2 vs tf.image.resize"]
    assert not found["forward, 1000 classes x32 (1375 MB) vs the write floor"].met  # 1.6x > 1.5x
    assert not found["forward, 21 classes x2 vs tf.image.resize"].met  # slower than resize
    assert found["forward, 1000 classes x32 vs tf.image.resize"].met


# Which write floor won its short trial, printed with each write-floor row.
FLOOR_KIND = re.compile(r"floor: (plain|streaming) stores")
# The range of single calls behind a floor row's two medians (ms, one decimal).
CALLS = re.compile(r"calls: ours ([\d.]+)-([\d.]+) ms, floor ([\d.]+)-([\d.]+) ms")


def _calls_cover_medians(ours_ms, ref_ms, note):
    # Each median lies in its own range of calls: the ranges are of the calls the medians came from.
    m = CALLS.search(note or "")
    if m is None:
        return False
    lo_o, hi_o, lo_f, hi_f = map(float, m.groups())
    return lo_o - 0.05 <= ours_ms <= hi_o + 0.05 and lo_f - 0.05 <= ref_ms <= hi_f + 0.05


@pytest.mark.parametrize("logits", ["random", "segmentation"])
def test_bench_targets_small(logits):
    # Each target is ours against a floor or a peer measured in the same run, with its verdict.
    import json

    out = _cli("bench", "--targets", "--logits", logits, "--classes", "6", "--factors", "4",
               "--size", "3x4", "--repeats", "1", "--json", "--which", "forward,input_grad,filter_grad,argmax,loss")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    names = [t["name"] for t in data["targets"]]
    assert any("write floor" in t["ref_name"] for t in data["targets"])
    assert any("read floor" in t["ref_name"] for t in data["targets"])
    assert all(FLOOR_KIND.search(t["note"] or "") for t in data["targets"] if t["ref_name"] == "write floor")
    floors = [t for t in data["targets"] if t["ref_name"] in ("write floor", "read floor")]
    assert len(floors) == 3 and all(_calls_cover_medians(t["ours_ms"], t["ref_ms"], t["note"]) for t in floors)
    assert f"upsample_argmax, {logits} logits" in names and not any(
        "argmax" in n and logits not in n for n in names)
    for t in data["targets"]:
        ratio = t["ours_ms"] / t["ref_ms"] if t["kind"] == "at_most" else t["ref_ms"] / t["ours_ms"]
        assert abs(ratio - t["ratio"]) < 1e-9 and t["met"] == (
            ratio <= t["limit"] if t["kind"] == "at_most" else ratio >= t["limit"])
    text = _cli("bench", "--targets", "--logits", logits, "--classes", "6", "--factors", "4",
                "--size", "3x4", "--repeats", "1", "--which", "forward,argmax")
    assert text.returncode == 0 and "CPU:" in text.stdout and "oneDNN" in text.stdout
    assert all(line.startswith(("MET", "MISSED")) for line in text.stdout.splitlines()[2:])


def test_resize_and_head_targets_at_small_shapes():
    # The resize and head targets (their real shapes are the benchmark's), on tiny ones: every
    # verdict consistent with its ratio, every group present.
    from tfupsample.tools import bench

    found = bench.resize_targets(repeats=1, shapes=[("tiny", (1, 3, 4, 2), (7, 9), False),
                                                    ("tiny aligned", (1, 3, 4, 2), (5, 7), True)])
    found += bench.head_targets(repeats=1, cases=[("tiny", (1, 3, 4, 5), 2, True)])
    found += bench.head_memory_targets(shape=(1, 3, 4, 5), size=(6, 8))
    assert all(FLOOR_KIND.search(t.note or "") for t in found if t.ref_name == "write floor")
    floors = [t for t in found if t.ref_name in ("write floor", "read floor")]
    assert len(floors) == 4 and all(_calls_cover_medians(t.ours_ms, t.ref_ms, t.note) for t in floors)
    names = " | ".join(t.name for t in found)
    for part in ("resize forward", "resize input gradient", "resize semantics", "FCN semantics", "peak memory"):
        assert part in names, names
    for t in found:
        ratio = t.ours_ms / t.ref_ms if t.kind == "at_most" else t.ref_ms / t.ours_ms
        assert abs(ratio - t.ratio) < 1e-9 and t.met == (ratio <= t.limit if t.kind == "at_most" else ratio >= t.limit)
    assert _cli("bench", "--targets", "--which", "nope").returncode == 2


def test_bench_reports_the_dense_filter_it_skips():
    out = _cli("bench", "--classes", "40", "--factors", "32", "--size", "1x1", "--repeats", "1",
               "--dense-limit-mb", "1")
    assert out.returncode == 0, out.stderr
    assert "filter alone 0.03 GB" in out.stdout  # 64*64*40*40*4 bytes, computed, not allocated


def test_demo_writes_the_segmentation_picture(tmp_path):
    out = tmp_path / "demo.png"
    r = _cli("demo", "--image", "coffee", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "16.4 GB" in r.stdout and "neither was allocated" in r.stdout
    assert out.stat().st_size > 10_000


def test_demo_class_names_come_from_the_installed_package():
    from tfupsample.tools.demo import class_names

    names = class_names()
    assert len(names) == 1000 and names[0] == "tench"


@pytest.mark.parametrize("size", ["16", "0x4", "4x5x6", "ax3"])
def test_bench_size_is_checked_even_under_python_O(size):
    r = subprocess.run([sys.executable, "-O", "-m", "tfupsample.tools.cli", "bench", "--size", size],
                       capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    assert r.returncode == 2 and "--size takes HxW" in r.stderr, r.stderr[-2000:]
