"""The CUDA launch sequences run on the CPU (emulate.cu, built with nvcc as host code), behind the
same interface as tfupsample's `_cuda_ext`, with NumPy arrays standing in for GPU arrays. Used by
tests/test_cuda_host.py, tests/test_cuda_binding.py and `benchmarks/gpu_check.py --backend host`.
"""

import ctypes
import os
import shutil
import subprocess

import numpy as np

ARG_COUNT = 18  # GeometryFromArgs' values
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def have_nvcc():
    return shutil.which("nvcc") is not None


def build(directory, defines=()):
    """Compile emulate.cu into directory (with the -D defines given); returns the loaded library."""
    so = os.path.join(directory, "emulate.so")
    # -fno-gnu-unique: the op table (a static in the inline FindOp) is otherwise a GNU unique symbol,
    # one per process, so a second build loaded beside the first (another -D) ran the first one's
    # ops, and the two compared equal whatever their defines.
    subprocess.run(["nvcc", "-std=c++17", "-O1", "-shared", "-Xcompiler", "-fPIC,-fno-gnu-unique",
                    *("-D" + d for d in defines),
                    "-I" + os.path.join(ROOT, "csrc"),
                    os.path.join(ROOT, "tests", "cuda_host", "emulate.cu"), "-o", so], check=True)
    lib = ctypes.CDLL(so)
    lib.tfup_emu_run.restype = ctypes.c_int
    lib.tfup_emu_run.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64), ctypes.c_int] + [ctypes.c_void_p] * 5
    lib.tfup_emu_error.restype = ctypes.c_char_p
    lib.tfup_emu_check_cells.restype = ctypes.c_int64
    lib.tfup_emu_check_cells.argtypes = [ctypes.c_int64, ctypes.c_int64]
    lib.tfup_emu_pair_shift.restype = ctypes.c_int
    lib.tfup_emu_pair_shift.argtypes = [ctypes.c_int64] * 5
    lib.tfup_emu_divide.restype = ctypes.c_int64
    lib.tfup_emu_divide.argtypes = [ctypes.c_int64, ctypes.c_int64]
    lib.tfup_emu_divide32.restype = ctypes.c_int32
    lib.tfup_emu_divide32.argtypes = [ctypes.c_int32, ctypes.c_int64]
    lib.tfup_emu_index32_limit.restype = ctypes.c_int64
    lib.tfup_emu_divide_short.restype = ctypes.c_int32
    lib.tfup_emu_divide_short.argtypes = [ctypes.c_int32, ctypes.c_int64]
    lib.tfup_emu_bilinear_kernel_size.restype = ctypes.c_int64
    lib.tfup_emu_bilinear_kernel_size.argtypes = [ctypes.c_int64]
    lib.tfup_emu_default_output_size.restype = ctypes.c_int64
    lib.tfup_emu_default_output_size.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_int]
    return lib


class Ext:
    """Stands in for tfupsample._cuda_ext: run(op, args, dtype, pointers, stream) on the CPU."""

    def __init__(self, lib):
        self.lib = lib

    def run(self, op, args, dtype, pointers, stream):
        if len(args) != ARG_COUNT:  # the kernels read all of them (csrc/cuda/kernels.h, GeometryFromArgs)
            raise ValueError(f"args must have {ARG_COUNT} values, got {len(args)}")
        d = (ctypes.c_int64 * ARG_COUNT)(*args)
        ptrs = list(pointers) + [None] * (5 - len(pointers))
        if self.lib.tfup_emu_run(op.encode(), d, dtype, *ptrs) != 0:
            raise ValueError(self.lib.tfup_emu_error().decode())

    def device_count(self):
        return 1

    def scratch_bytes(self, op, args, dtype):
        return 0  # the emulation allocates its own

    def bilinear_kernel_size(self, factor):
        return self.lib.tfup_emu_bilinear_kernel_size(factor)

    def default_output_size(self, n, k, s, padding):
        return self.lib.tfup_emu_default_output_size(n, k, s, padding == "VALID")


class HostArray:
    """A NumPy array presented as a GPU array (float16/32/64, int64: the CUDA array interface has
    no bfloat16)."""

    def __init__(self, array):
        self.array = np.ascontiguousarray(array)
        self.__cuda_array_interface__ = {
            "shape": self.array.shape, "typestr": self.array.dtype.str, "version": 3,
            "data": (self.array.ctypes.data if self.array.size else 0, False), "strides": None}
        self.shape = self.array.shape
