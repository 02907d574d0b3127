"""SASS instructions per output element of the float32 bilinear forward, without a GPU.

Compiles csrc/cuda/kernels.cu for one architecture (default sm_90) with the build's flags, and a
probe file that instantiates each launch shape's unrolled element loop alone (both second taps
present: the costliest variant), dumps the machine code with cuobjdump and counts the
instructions a thread executes:
- step: from one output store to the next in the probe's loop, per element (a vector store
  writes V elements), walking the code with conditional branches not taken (the early exits and
  the one-tap cases) and unconditional ones taken; predicated instructions count;
- setup: in the op's kernel, the same walk from the top of the grid-stride loop to the first
  store, less one step (a row or position's divisions, table entries and pointers);
- per element: steps and setups at the shapes the issue names, divided by the elements.
The budget is 24 (what an H100 can issue per element at 85% of its copy bandwidth). Also prints
the -Xptxas -v summary (stack frames, spills, registers) of every entry function of kernels.cu.

Needs nvcc and cuobjdump (the pip wheel nvidia-cuda-cuobjdump has it).

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


def _cuobjdump():
    found = os.environ.get("CUOBJDUMP") or shutil.which("cuobjdump")
    if found:
        return found
    for base in {sysconfig.get_paths()["purelib"], *sys.path}:
        hits = glob.glob(os.path.join(base, "nvidia", "cu*", "bin", "cuobjdump"))
        if hits:
            return hits[0]
    sys.exit("cuobjdump not found: put it on the PATH, set CUOBJDUMP, or pip install nvidia-cuda-cuobjdump")


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


def _step(ins):
    """The median instructions from one store to the next along a probe's path."""
    walks, at = [], _walk(ins, -1)
    while at is not None:
        at = _walk(ins, at[1])
        if at is not None:
            walks.append(at[0])
    walks.sort()
    return walks[len(walks) // 2]


def _setup(ins):
    """The walk from the top of the grid-stride loop (the widest backward branch's target) to the
    first store, less the walk from that store to the next."""
    addr = [a for a, _ in ins]
    loops = []
    for i, (a, text) in enumerate(ins):
        m = re.search(r"BRA(?:\.\w+)* (?:!?U?P\w+, )?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) <= a:
            loops.append((addr.index(int(m.group(1), 16)), i))
    head = max(loops, key=lambda l: l[1] - l[0])[0]
    to_first, first = _walk(ins, head - 1)
    step = _walk(ins, first)
    if step is None:
        raise ValueError("the grid-stride loop stores once per pass: no step to take off")
    return to_first - step[0]


PROBES = r"""
#include "cuda/bodies.cuh"
using namespace tfup::cuda;
using Tap = Taps2<float, int>;
template <int V> using W = Vec<float, V>;
#define ROWS(name, planar, v, full)                                                                    \
  __global__ void name(BilinearRowsBody<float, int, planar, v> b, Tap ty, const W<v>* r0,              \
                       const W<v>* r1, W<v>* o, int e, int n) {                                        \
    b.Elements<true, full>(ty, r0, r1, o, e, n);                                                       \
  }
ROWS(rows_nchw_full, true, 1, true)
ROWS(rows_nchw_cut, true, 1, false)
ROWS(rows_nhwc1_full, false, 1, true)
ROWS(rows_nhwc2_full, false, 2, true)
ROWS(rows_nhwc4_full, false, 4, true)
#define LANES(name, v)                                                                                 \
  __global__ void name(BilinearChannelsBody<float, int, v> b, Tap ty, Tap tx, const W<v>* p00,         \
                       const W<v>* p01, const W<v>* p10, const W<v>* p11, W<v>* o, int c0, int cs,     \
                       int c_end) {                                                                    \
    b.Loop<true, true>(ty, tx, p00, p01, p10, p11, o, c0, c_end);                              \
  }
LANES(lanes4_warp, 4)
"""


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
    step = {"nchw": _step(probe("rows_nchw_full")), "nchw_cut": _step(probe("rows_nchw_cut")),
            "nhwc1": _step(probe("rows_nhwc1_full")), "nhwc2": _step(probe("rows_nhwc2_full")) / 2,
            "nhwc4": _step(probe("rows_nhwc4_full")) / 4, "lanes4": _step(probe("lanes4_warp")) / 4}
    setup = {"nchw": _setup(kernel("RowRunsINS0_16BilinearRowsBodyIfiLb1ELi1E")),
             "nhwc1": _setup(kernel("RowRunsINS0_16BilinearRowsBodyIfiLb0ELi1E")),
             "nhwc2": _setup(kernel("RowRunsINS0_16BilinearRowsBodyIfiLb0ELi2E")),
             "nhwc4": _setup(kernel("RowRunsINS0_16BilinearRowsBodyIfiLb0ELi4E")),
             "lanes4": _setup(kernel("ChannelLanesINS0_20BilinearChannelsBodyIfiLi4E"))}
    rows = [  # shape, launch shape, instructions per element there
        ("[1,16,22,1000] x32 NCHW", "rows: 704 per row, runs of 16 and 6",
         (16 * step["nchw"] + 6 * step["nchw_cut"] + 2 * setup["nchw"]) / 22),
        ("[8,64,64,150] x8 NCHW", "rows: 512 per row, runs of 16", step["nchw"] + setup["nchw"] / 16),
        ("[1,16,22,1000] x32 NHWC", "channel lanes, 4-wide, 7.8 vectors per thread",
         step["lanes4"] + setup["lanes4"] / (4 * 250 / 32)),
        ("[8,64,64,150] x8 NHWC", "rows, 2-wide, runs of 16", step["nhwc2"] + setup["nhwc2"] / 32),
        ("C = 21 NHWC", "rows, 1-wide, runs of 16", step["nhwc1"] + setup["nhwc1"] / 16),
        ("C = 16 NHWC", "rows, 4-wide, runs of 16", step["nhwc4"] + setup["nhwc4"] / 64),
    ]
    print("\nsteady steps per element:", {k: round(v, 2) for k, v in step.items()})
    print("setups per run or position:", setup)
    print(f"\n| float32 forward | launch shape | SASS per element | budget {BUDGET} |")
    print("|---|---|---|---|")
    for label, shape, total in rows:
        print(f"| {label} | {shape} | {total:.1f} | {'MET' if total <= BUDGET else 'MISSED'} |")
    return 0 if max(r[2] for r in rows) <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
