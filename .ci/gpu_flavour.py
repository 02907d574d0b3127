"""CI, the GPU flavour (no GPU here): the library built against TensorFlow's GPU wheel with the
CUDA kernels loads, registers a GPU kernel (and an XLA:GPU one) for every op, and leaves those
unregistered, with one warning naming driver, toolkit and fix, where the driver is too old."""

import os
import subprocess
import sys
import warnings

CHECK = r"""
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import tensorflow as tf
    import tfupsample as tu
    tu.load_ops()
from tensorflow.python.framework import kernels
from tfupsample import _build_info, _ops
ops = sorted({k.op for k in kernels.get_all_registered_kernels().kernel
              if k.op.startswith("Tfupsample") and k.op != "TfupsampleStreamFill"})
devices = {op: sorted({k.device_type for k in kernels.get_registered_kernels_for_op(op).kernel}) for op in ops}
print(json.dumps({"cuda_kernels": _build_info.CUDA_KERNELS, "tf_cuda": _build_info.TF_BUILT_WITH_CUDA,
                  "devices": devices, "status": _ops.cuda_status(),
                  "warnings": [str(w.message) for w in caught if "tfupsample" in str(w.message)]}))
"""


def run(env_extra):
    import json

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env_extra)
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        sys.exit(f"gpu flavour: the check failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    got = run({})
    assert got["tf_cuda"] and got["cuda_kernels"], got
    assert got["status"] == "" and not got["warnings"], got
    assert len(got["devices"]) == 13, got["devices"]
    for op, devices in got["devices"].items():
        missing = {"CPU", "GPU", "XLA_CPU_JIT", "XLA_GPU_JIT"} - set(devices)
        assert not missing, f"{op}: no kernel on {sorted(missing)} (has {devices})"
    print(f"gpu flavour: {len(got['devices'])} ops, each with CPU, GPU, XLA_CPU_JIT and XLA_GPU_JIT kernels")
    # A driver for CUDA 12.4 cannot run what a CUDA 13 toolkit compiled (a CUDA 12 build: 11.8).
    old = run({"TFUPSAMPLE_CUDA_DRIVER_VERSION": "11080"})
    for op, devices in old["devices"].items():
        assert "GPU" not in devices and "XLA_GPU_JIT" not in devices, f"{op}: {devices}"
        assert "CPU" in devices and "XLA_CPU_JIT" in devices, f"{op}: {devices}"
    assert len(old["warnings"]) == 1 and "the NVIDIA driver supports CUDA 11.8" in old["warnings"][0], old
    assert "Update the driver" in old["warnings"][0], old
    print("gpu flavour: with an old driver the GPU and XLA:GPU kernels stay unregistered, and one warning says why:")
    print("  " + old["warnings"][0])


if __name__ == "__main__":
    warnings.simplefilter("error")
    main()
