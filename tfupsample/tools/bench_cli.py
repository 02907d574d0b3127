"""`tfupsample bench`: time and peak memory of ours and the stock peers, classes x factors."""

import sys

from . import bench


def cpu_name():
    return bench.cpu_info()[0]


def describe(env, evicted):
    """One line naming what the figures depend on; evicted: whether each timed call started
    from an emptied cache (the targets) or not (the grid's many short calls)."""
    onednn = {True: "on", False: "off", None: "unknown"}[env["onednn"]]
    return (f"CPU: {env['cpu']} ({', '.join(env['isa'])}), {env['cores']} cores; "
            f"{env['tensorflow']}, oneDNN {onednn}, intra-op threads {env['intra_op_threads']}; "
            f"tfupsample kernels: {env['kernel_isa']} (x pass by {env['kernel_x_pass']}), backend {env['backend']}; "
            f"THP {env['transparent_hugepages']}, last-level cache {env['last_level_cache_mb']} MB; "
            + ("each timed call from an emptied cache" if evicted else "timed calls back to back"))


# Fast calls are noisy: the peers of a grid cell are called in turn, round after round, each for
# at least `repeats` rounds and about GRID_SECONDS of its own calls (at most MAX_ROUNDS).
GRID_SECONDS = 0.5
MAX_ROUNDS = 101


def run(classes, factors, size, repeats, dense_limit_mb, progress=sys.stderr):
    rows = []
    combos = [(c, f) for c in classes for f in factors]
    for i, (c, f) in enumerate(combos, 1):
        progress.write(f"\r[{i}/{len(combos)}] classes={c} factor={f}   ")
        progress.flush()
        prob = bench.Problem(1, size[0], size[1], c, f)
        peers = prob.forward(dense_limit_bytes=dense_limit_mb << 20)
        # Every peer a few times first (the allocator's state is then the same for all, whichever
        # is timed first), then timed in interleaved rounds, so a slow spell of the machine hits
        # all alike; the peak memory of each from calls of its own (they collect garbage first).
        first = {name: max(bench.measure_once(fn)[0] for _ in range(3)) for name, fn in peers.items()}
        rounds = {name: max(repeats, min(MAX_ROUNDS, int(GRID_SECONDS / max(t, 1e-6)))) for name, t in first.items()}
        medians = bench.timed_together(list(peers.values()), [rounds[name] for name in peers], warmup=0,
                                       evict=False)  # up to MAX_ROUNDS short calls: emptying the cache would dwarf them
        for (name, fn), median in zip(peers.items(), medians):
            _, mem = bench.summarize(fn, [bench.measure_once(fn) for _ in range(min(repeats, 3))])
            t = median * getattr(fn, "scale", 1.0)
            row = dict(classes=c, factor=f, impl=name, ms=t * 1e3,
                       peak_mb=None if mem is None else mem / 2**20,
                       output_mb=prob.output_bytes / 2**20, calls=rounds[name])
            if getattr(fn, "note", None):
                row["note"] = fn.note
            rows.append(row)
        if "dense conv2d_transpose" not in peers:
            rows.append(dict(classes=c, factor=f, impl="dense conv2d_transpose", ms=None,
                             peak_mb=None, output_mb=prob.output_bytes / 2**20,
                             skipped=f"filter alone {bench.dense_filter_bytes(f, c) / 1e9:.2f} GB"))
        del prob
    progress.write("\r" + " " * 70 + "\r")
    return rows


# The grid's targets: the forward within 1.5x the write floor wherever its output is at least
# 64 MB (below that, fixed costs dominate a call of a few milliseconds), and never slower than
# tf.image.resize.
FLOOR_LIMIT, FLOOR_FROM_MB = 1.5, 64


def grid_targets(rows):
    """The grid's targets (a list of bench.Target) from run()'s rows."""
    ms = {(r["classes"], r["factor"], r["impl"]): r["ms"] for r in rows}
    out = []
    for (c, f, impl), ours in ms.items():
        if impl != "tfupsample":
            continue
        at = f"forward, {c} classes x{f}"
        output_mb = next(r["output_mb"] for r in rows if (r["classes"], r["factor"]) == (c, f))
        floor = ms.get((c, f, "write floor"))
        if floor and output_mb >= FLOOR_FROM_MB:
            out.append(bench.Target(f"{at} ({output_mb:.0f} MB) vs the write floor", ours, "write floor",
                                    floor, "at_most", FLOOR_LIMIT))
        resize = ms.get((c, f, "tf.image.resize"))
        if resize:
            out.append(bench.Target(f"{at} vs tf.image.resize", ours, "tf.image.resize", resize, "faster", 1.0))
    return out


def table(rows):
    lines = [f"{'classes':>7} {'factor':>6}  {'implementation':<28} {'time ms':>9} {'peak MB':>9}  note"]
    for r in rows:
        t = "-" if r["ms"] is None else f"{r['ms']:.1f}"
        m = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        note = r.get("skipped") or r.get("note") or ""
        lines.append(f"{r['classes']:>7} {r['factor']:>6}  {r['impl']:<28} {t:>9} {m:>9}  {note}".rstrip())
    return "\n".join(lines)


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    impls = sorted({r["impl"] for r in rows})
    factors = sorted({r["factor"] for r in rows})
    styles = ["-", "--", ":", "-."]
    for key, ax, label in (("ms", axes[0], "time (ms)"), ("peak_mb", axes[1], "peak RSS growth (MB)")):
        for ii, impl in enumerate(impls):
            for fi, f in enumerate(factors):
                # Log axes: a measured 0 (memory reused, nothing new touched) cannot be drawn.
                pts = [(r["classes"], r[key]) for r in rows
                       if r["impl"] == impl and r["factor"] == f and (r.get(key) or 0) > 0]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, styles[fi % len(styles)], marker="o", color=f"C{ii}",
                            label=f"{impl} x{f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("classes")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle(f"tfupsample vs stock TensorFlow, bilinear upsample, {cpu_name()}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
