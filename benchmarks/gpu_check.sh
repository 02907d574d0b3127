#!/usr/bin/env bash
# GPU check of the CUDA kernels (no TensorFlow needed): build them from this checkout with nvcc,
# then parity against a NumPy float64 reference (factors 2-9 and 32, every dtype, both layouts,
# forward and both gradients, fused heads), bitwise-repeatable backward, the torch peers' timings
# and the card's copy bandwidth (benchmarks/gpu_check.py), and compute-sanitizer memcheck on small
# cases. Meant to stay under 8 minutes on an H100. Extra arguments go to gpu_check.py (e.g. --json FILE).
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
arch=${CUDA_ARCH:-90}

echo "== build (nvcc, sm_$arch)"
# The same two sources CMake builds into _tfupsample_cuda.so; nvcc alone, so that the GPU machine
# needs no Python headers, pybind11 or TensorFlow.
nvcc -std=c++17 -O3 --fmad=false -arch="sm_$arch" -shared -Xcompiler -fPIC -Icsrc \
  csrc/cuda/kernels.cu csrc/cuda/binding.cu -o tfupsample/_tfupsample_cuda.so || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "== parity, determinism, timings"
PYTHONUNBUFFERED=1 "$py" -m benchmarks.gpu_check --backend cuda "$@"
status=$?

echo "== compute-sanitizer memcheck (small cases of every op and dtype)"
if command -v compute-sanitizer >/dev/null 2>&1; then
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
    "$py" -m benchmarks.gpu_check --backend cuda --sanitize
  sanitizer=$?
  echo "memcheck exit status: $sanitizer"
  [ "$sanitizer" -eq 0 ] || status=1
else
  echo "compute-sanitizer not found: skipped"
fi
exit $status
