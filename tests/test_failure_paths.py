"""Failure paths end in an error naming the cause, never in a dead process."""

import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

from tfupsample.testing import assert_close, bilinear_loop

# Runs the NumPy binding with the address space capped just above what the output needs
# (RLIMIT_AS counts reservations, so it does not depend on the host's overcommit policy): the
# runner's threads (8 MiB stacks each) cannot all start. Prints the outcome.
_CAPPED = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import tfupsample.numpy as tn
    x = np.load(sys.argv[1])
    margin = int(sys.argv[2]) << 20  # -1: half the output's size, which cannot fit
    out_bytes = x.nbytes * 16
    if margin < 0:
        out_bytes, margin = out_bytes // 2, 0
    vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + out_bytes + margin, resource.RLIM_INFINITY))
    try:
        y = tn.bilinear_upsample(x, 4)
    except MemoryError as e:
        print("MemoryError:", e)
    else:
        np.save(sys.argv[3], y)
        print("ok")
""")


@pytest.mark.parametrize("margin_mib", [-1, 1, 4])
def test_numpy_binding_under_a_memory_cap_errors_or_computes_never_dies(margin_mib, tmp_path, rng):
    x = rng.standard_normal((1, 64, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    # Outside the checkout, so the installed package is the one imported.
    r = subprocess.run([sys.executable, "-c", _CAPPED, str(tmp_path / "x.npy"), str(margin_mib),
                        str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=120,
                       cwd=tempfile.gettempdir())
    assert r.returncode == 0, f"process died (rc {r.returncode}): {r.stderr[-2000:]}"
    outcome = r.stdout.strip().splitlines()[-1]
    if margin_mib < 0:
        assert outcome.startswith("MemoryError:")  # the output itself does not fit
        return
    # With a few MiB left the worker threads cannot all start: the calling thread does their
    # share, and the result is still the definition's.
    assert outcome == "ok", outcome
    assert_close(np.load(tmp_path / "y.npy"), bilinear_loop(x, 4), "float32")
