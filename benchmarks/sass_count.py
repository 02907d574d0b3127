"""SASS instructions per output element of the float32 bilinear forward, without a GPU.

Compiles csrc/cuda/kernels.cu for one architecture (default sm_90) with the build's flags, and a
probe file that instantiates launch shapes' unrolled element loops alone, dumps the machine code
with cuobjdump and counts the instructions a thread executes:
- row runs (two rows at a time), in the op's kernels: every path from the top of the grid-stride
  loop through a whole run whose two rows share their input rows, both second taps present
  (stores alternating between the two rows, five loads per pair: the x entry and four inputs,
  no bounds test), the costliest; its instructions per store, and its setup (the walk to the
  first pair's stores less one pair's step); conditional branches are taken both ways before
  the first store and not taken after it (the one-tap cases skipped), predicated instructions
  count;
- channel lanes, runs cut by the row end and rows one after the other (pairs that do not share
  their input rows), on the probes: from one store to the next along the probe's path (the
  median of two consecutive walks, halved);
- per element: steps and setups at the shapes the issue names, divided by the elements.
The budget is 24 (what an H100 can issue per element at 85% of its copy bandwidth). Also prints
the -Xptxas -v summary (stack frames, spills, registers) of every entry function of kernels.cu,
and the float32 input gradient's pass along x (int32 indices): instructions per tap of its
densest loop and the static count before it, in both layouts.

Needs nvcc, cuobjdump and nvdisasm (the pip wheels nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm).

    python -m benchmarks.sass_count [--arch 90]
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET = 24
kRun = 16  # csrc/cuda/device.cuh: elements per lane in a row run


def _cuobjdump():
    found = os.environ.get("CUOBJDUMP") or shutil.which("cuobjdump")
    if not found:
        for base in {sysconfig.get_paths()["purelib"], *sys.path}:
            hits = glob.glob(os.path.join(base, "nvidia", "cu*", "bin", "cuobjdump"))
            if hits:
                found = hits[0]
                break
    if not found:
        sys.exit("cuobjdump not found: put it on the PATH, set CUOBJDUMP, or pip install nvidia-cuda-cuobjdump")
    # cuobjdump runs nvdisasm (the pip wheel nvidia-cuda-nvdisasm installs it beside cuobjdump's)
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(found)])
    return found


def _functions(sass):
    out, name = {}, None
    for line in sass.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            name = m.group(1)
            out[name] = []
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m and name:
            out[name].append((int(m.group(1), 16), m.group(2).strip()))
    return out


def _is_store(text):
    return re.match(r"(@!?P\d+ )?STG", text) is not None


def _walk(ins, start):
    """(instructions executed after ins[start] up to the next store, included; that store's index)
    with conditional branches not taken and unconditional ones taken; None at the exit."""
    where = {a: i for i, (a, _) in enumerate(ins)}
    i, n = start + 1, 0
    while i < len(ins) and n < len(ins):
        text = ins[i][1]
        n += 1
        if _is_store(text):
            return n, i
        if text.startswith("EXIT"):
            return None
        m = re.match(r"BRA(?:\.\w+)* 0x([0-9a-f]+)", text)  # unconditional (also BRA.U)
        i = where[int(m.group(1), 16)] if m else i + 1
    return None


def _loop_head(ins):
    """The index of the grid-stride loop's top: the widest backward branch's target."""
    addr = [a for a, _ in ins]
    loops = []
    for i, (a, text) in enumerate(ins):
        m = re.search(r"BRA(?:\.\w+)* (?:!?U?P\w+, )?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) <= a:
            loops.append((addr.index(int(m.group(1), 16)), i))
    return max(loops, key=lambda l: l[1] - l[0])[0]


def _pair_runs(ins, head, stores):
    """Every path from the loop head through its first `stores` stores, as (instruction counts
    from the head to each store, the texts walked): the conditional branches before the first
    store both taken and not (each path one choice per branch), those after it not taken."""
    where = {a: i for i, (a, _) in enumerate(ins)}
    out, todo = [], [(head, 0, [], [])]
    while todo:
        if len(out) + len(todo) > 4096:
            raise ValueError("too many paths before the first store")
        i, n, counts, texts = todo.pop()
        while i < len(ins) and len(counts) < stores and n < 20 * len(ins):
            if i == head and n > 0:  # round the grid-stride loop without a store: not a run
                break
            text = ins[i][1]
            n += 1
            texts = texts + [text]
            if _is_store(text):
                counts = counts + [n]
            if text.startswith("EXIT"):
                break
            m = re.match(r"BRA(?:\.\w+)* 0x([0-9a-f]+)", text)  # unconditional
            c = re.match(r"@!?U?P\w+ BRA(?:\.\w+)* (?:!?U?P\w+, )?0x([0-9a-f]+)", text)
            if c and not counts and sum("BRA" in t for t in texts) <= 24:  # before the first store:
                todo.append((where[int(c.group(1), 16)], n, counts, texts))  # both ways
            i = where[int(m.group(1), 16)] if m else i + 1
        if len(counts) == stores:
            out.append((counts, texts))
    return out


def _pair_run(ins, stores):
    """(setup, instructions per store) of a row run of two rows sharing their inputs in the op's
    kernel, both second taps present: of the paths through the first `stores` stores, those that
    store two rows' elements in turn (two output pointers) with five loads per pair (the x entry,
    four inputs) and no bounds test (whole runs); the costliest. Setup: the walk to the first
    pair's second store less one pair's step."""
    head = _loop_head(ins)
    best = None
    for counts, texts in _pair_runs(ins, head, stores):
        bases = [(re.findall(r"\[(U?R\d+)", texts[c - 1]) or [None])[-1] for c in counts]  # (after desc[..])
        if None in bases or len(set(bases[0::2])) != 1 or len(set(bases[1::2])) != 1 or bases[0] == bases[1]:
            continue  # not two rows in turn
        tail = texts[counts[1]:]  # after the first pair
        loads = sum(bool(re.search(r"\bLDG", t)) for t in tail)
        bounds = any(re.search(r"ISETP\.(?!NE|EQ)", t) for t in tail)  # (the tap tests compare i1, i0)
        if bounds or loads != 5 * (stores // 2 - 1):
            continue  # a run cut by the row end (a bounds test per element), or a one-tap variant
        per_store = (counts[-1] - counts[1]) / (stores - 2)
        setup = counts[1] - 2 * per_store
        if best is None or per_store > best[1]:
            best = (setup, per_store)
    if best is None:
        raise ValueError("no path through a whole run of two rows sharing their inputs")
    return best


def _step(ins):
    """The instructions per store along a probe's path: the median over consecutive pairs of
    store-to-store walks, halved (for a single row, walks alike; for two rows stored in turn, one
    walk with the element's x work and loads and one without)."""
    walks, at = [], _walk(ins, -1)
    while at is not None:
        at = _walk(ins, at[1])
        if at is not None:
            walks.append(at[0])
    pairs = sorted(a + b for a, b in zip(walks, walks[1:]))
    return pairs[len(pairs) // 2] / 2


def _setup(ins, step):
    """The walk from the top of the grid-stride loop to its first store, less one step: a
    position's work before its elements."""
    walk = _walk(ins, _loop_head(ins) - 1)
    if walk is None:
        raise ValueError("the grid-stride loop ends before its first store")
    return walk[0] - step


PROBES = r"""
#include "cuda/bodies.cuh"
using namespace tfup::cuda;
using Tap = Taps2<float, int>;
template <int V> using W = Vec<float, V>;
#define ROWS(name, pair, one, v, full)                                                                 \
  __global__ void name(BilinearRowsBody<float, int, one, v> b, Tap ta, Tap tb, const W<v>* r0,         \
                       const W<v>* r1, W<v>* oa, W<v>* ob, int e, int n) {                             \
    b.Elements<pair, true, full>(ta, tb, r0, r1, oa, ob, e, n);                                        \
  }
ROWS(rows_nchw_cut, true, true, 1, false)
ROWS(alone_nchw_full, false, true, 1, true)
ROWS(alone_nhwc1_full, false, false, 1, true)
#define LANES(name, v)                                                                                 \
  __global__ void name(BilinearChannelsBody<float, int, v> b, Tap ty, Tap tx, const W<v>* p00,         \
                       const W<v>* p01, const W<v>* p10, const W<v>* p11, W<v>* o, int c0, int cs,     \
                       int c_end) {                                                                    \
    b.Loop<true, true>(ty, tx, p00, p01, p10, p11, o, c0, c_end);                              \
  }
LANES(lanes4_warp, 4)
"""


def _tap_loop(ins, loads_per_tap):
    """(instructions per tap, instructions before it) of a gather's tap loop: the loop (a backward
    branch) whose body has the most global loads per instruction (the unrolled inner loop), each
    tap loading loads_per_tap values. Before it: the static count from the top of the loop over
    elements (the second loop around it, outside the loop over the other axis' taps) to the tap
    loop, an upper bound of the per-element setup."""
    where = {a: i for i, (a, _) in enumerate(ins)}
    loops = []
    for i, (_, text) in enumerate(ins):
        m = re.match(r"(?:@!?U?P\w+ )?BRA(?:\.\w+)* 0x([0-9a-f]+)", text)
        top = where.get(int(m.group(1), 16)) if m else None
        if top is not None and top < i:
            loops.append((top, i, sum(bool(re.search(r"\bLDG", t)) for _, t in ins[top:i + 1])))
    dense = [lp for lp in loops if lp[2]]
    if not dense:
        raise ValueError("no loop with loads")
    top, end, loads = max(dense, key=lambda lp: lp[2] / (lp[1] + 1 - lp[0]))
    around = sorted((lp for lp in loops if lp[0] < top and lp[1] > end), key=lambda lp: lp[1] - lp[0])
    start = around[1][0] if len(around) > 1 else 0
    return (end + 1 - top) / (loads / loads_per_tap), top - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="90")
    args = p.parse_args(argv)
    flags = ["-std=c++17", "-O3", "--fmad=false", f"-arch=sm_{args.arch}", "-I" + os.path.join(ROOT, "csrc")]
    src = os.path.join(ROOT, "csrc", "cuda", "kernels.cu")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernels.cubin")
        built = subprocess.run(["nvcc", *flags, "-Xptxas", "-v", "-cubin", src, "-o", cubin],
                               capture_output=True, text=True, check=True)
        sass = subprocess.run([_cuobjdump(), "-sass", cubin], capture_output=True, text=True, check=True).stdout
        probe_src, probe_cubin = os.path.join(tmp, "probes.cu"), os.path.join(tmp, "probes.cubin")
        with open(probe_src, "w") as f:
            f.write(PROBES)
        subprocess.run(["nvcc", *flags, "-cubin", probe_src, "-o", probe_cubin], check=True)
        probe_sass = subprocess.run([_cuobjdump(), "-sass", probe_cubin], capture_output=True, text=True,
                                    check=True).stdout
    version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    print(f"{version}; {' '.join(flags[:-1])}")

    frames = [int(v) for v in re.findall(r"(\d+) bytes stack frame", built.stderr)]
    spills = [int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", built.stderr)]
    regs = [int(v) for v in re.findall(r"Used (\d+) registers", built.stderr)]
    print(f"entry functions: {len(regs)}; largest stack frame {max(frames)} bytes; spill bytes {sum(spills)}; "
          f"registers {min(regs)}-{max(regs)}")

    probes, kernels = _functions(probe_sass), _functions(sass)
    probe = lambda key: next(ins for name, ins in probes.items() if key in name)  # noqa: E731
    kernel = lambda key: next(ins for name, ins in kernels.items() if key in name)  # noqa: E731
    # Row runs, from the op's kernels: a whole run of two rows sharing their inputs (setup, per
    # store: a vector of V elements of one row); a run cut by the row end and a row alone (a pair
    # whose rows do not share their inputs) from the probes.
    width = {"nchw": 1, "nhwc1": 1, "nhwc2": 2, "nhwc4": 4}
    rows_kernel = "RowRunsINS0_16BilinearRowsBodyIfiLb{}ELi{}E"
    setup, step = {}, {}
    for k, v in width.items():
        setup[k], per_store = _pair_run(kernel(rows_kernel.format(int(k == "nchw"), v)), 2 * kRun)
        step[k] = per_store / v
    step["nchw_cut"] = _step(probe("rows_nchw_cut"))
    step["alone_nchw"], step["alone_nhwc1"] = _step(probe("alone_nchw_full")), _step(probe("alone_nhwc1_full"))
    step["lanes4"] = _step(probe("lanes4_warp")) / 4
    setup["lanes4"] = _setup(kernel("ChannelLanesINS0_20BilinearChannelsBodyIfiLi4E"), 4 * step["lanes4"])
    rows = [  # shape, launch shape, instructions per element there
        ("[1,16,22,1000] x32 NCHW", "row pairs: 704 per row, runs of 16 and 6",
         (16 * step["nchw"] + 6 * step["nchw_cut"] + setup["nchw"]) / 22),
        ("[8,64,64,150] x8 NCHW", "row pairs: 512 per row, runs of 16", step["nchw"] + setup["nchw"] / 32),
        ("[1,16,22,1000] x32 NHWC", "channel lanes, 4-wide, 7.8 vectors per thread",
         step["lanes4"] + setup["lanes4"] / (4 * 250 / 32)),
        ("[8,64,64,150] x8 NHWC", "row pairs, 2-wide, runs of 16", step["nhwc2"] + setup["nhwc2"] / 64),
        ("C = 21 NHWC", "row pairs, 1-wide, runs of 16", step["nhwc1"] + setup["nhwc1"] / 32),
        ("C = 16 NHWC", "row pairs, 4-wide, runs of 16", step["nhwc4"] + setup["nhwc4"] / 128),
    ]
    alone = [  # pairs whose rows read different input rows (one row after the other): odd factors
        ("NCHW, rows one after the other", step["alone_nchw"] + setup["nchw"] / 32),
        ("C = 21 NHWC, rows one after the other", step["alone_nhwc1"] + setup["nhwc1"] / 32),
    ]
    print("\nsteady steps per element:", {k: round(v, 2) for k, v in step.items()})
    print("setups per run (two rows) or position:", setup)
    print(f"\n| float32 forward | launch shape | SASS per element | budget {BUDGET} |")
    print("|---|---|---|---|")
    for label, shape, total in rows:
        print(f"| {label} | {shape} | {total:.1f} | {'MET' if total <= BUDGET else 'MISSED'} |")
    for label, total in alone:
        print(f"| {label} | (the pairs that straddle an input row at odd factors) | {total:.1f} | - |")
    # The input gradient's pass along x (the larger one: it reads every output-gradient element, each
    # by two taps), int32 indices: NCHW (runs of 16 along x per lane) and NHWC under 32 channels (one
    # element per thread) one channel per body call (a tap loads the element and its weight), NHWC
    # a thread's 8 channels per tap (8 elements and the weight).
    gather = "GatherBodyIffNS0_16AxisTableWeightsIfLb0EEELb1EEEiEE"
    nchw_tap, nchw_setup = _tap_loop(kernel("ColumnRunsINS0_10" + gather), 2)
    nhwc_tap, nhwc_setup = _tap_loop(kernel("ChannelLanesINS0_10" + gather), 9)
    few_tap, few_setup = _tap_loop(kernel("ElementLanesINS0_10" + gather[:-2] + "Lb1EE"), 2)
    print("\n| float32 input gradient, pass along x (int32) | per tap | per element before the tap loop (static) | "
          "per output-gradient element (2 taps) at f = 2 / 32 |")
    print("|---|---|---|---|")
    for label, tap, setup, per_tap in (("NCHW, runs of 16 along x per thread", nchw_tap, nchw_setup, 1),
                                       ("NHWC, 8 channels per thread", nhwc_tap, nhwc_setup, 8),
                                       ("NHWC under 32 channels, one element per thread", few_tap, few_setup, 1)):
        at = lambda f: 2 * (tap + setup / (2 * f)) / per_tap  # noqa: E731 (k = 2f taps per element)
        print(f"| {label} | {tap:.1f} | {setup} | {at(2):.1f} / {at(32):.1f} |")
    return 0 if max(r[2] for r in rows) <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
