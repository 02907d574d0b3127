"""tfupsample.cuda's argument checks, which run before any GPU work (no GPU needed): arrays are
described through __cuda_array_interface__ here; benchmarks/gpu_check.py runs the kernels."""

import os
import struct
import subprocess
import sys
import tempfile
import types

import numpy as np
import pytest

import tfupsample.cuda as tc
from cuda_host import emulator


class FakeGpuArray:
    """Anything with a __cuda_array_interface__; its pointer is never dereferenced by the checks."""

    def __init__(self, shape, typestr="<f4", strides=None, ptr=0):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr,
                                         "data": (ptr, False), "strides": strides, "version": 3}


def framework_array(framework, shape, ptr, device, typestr="<f4"):
    """A fake torch or CuPy array (by its class's module) on GPU `device`."""
    cls = type("Tensor" if framework == "torch" else "ndarray", (FakeGpuArray,), {"__module__": framework})
    a = cls(shape, typestr, ptr=ptr)
    a.device = types.SimpleNamespace(index=device, id=device, type="cuda")
    a.is_cuda = True
    return a


class RecordingExt:
    """Stands in for the compiled C ABI: records what would be launched."""

    def __init__(self):
        self.calls, self.args = [], []

    def run(self, op, args, dtype, pointers, stream):
        self.calls.append((op, list(pointers), stream))
        self.args.append(list(args))

    def bilinear_kernel_size(self, factor):
        return 2 * factor - factor % 2

    def scratch_bytes(self, op, args, dtype):
        return 0


@pytest.fixture
def ext(monkeypatch):
    fake = RecordingExt()
    monkeypatch.setattr(tc, "_ext", lambda: fake)
    return fake


def test_every_array_must_be_on_the_input_s_gpu(fake_torch, ext):
    x = framework_array("torch", (1, 2, 2, 3), 1 << 40, 0)
    with pytest.raises(ValueError, match="out is on GPU 1 but images on GPU 0"):
        tc.bilinear_upsample(x, 2, out=framework_array("torch", (1, 4, 4, 3), 2 << 40, 1), stream=5)
    w = framework_array("torch", (4, 4, 3, 1), 3 << 40, 1)
    with pytest.raises(ValueError, match="filter is on GPU 1 but input on GPU 0"):
        tc.depthwise_conv2d_transpose(x, w, [1, 4, 4, 3], 2, out=framework_array("torch", (1, 4, 4, 3), 2 << 40, 0),
                                      stream=5)

    class Stream:  # a torch stream of GPU 1
        cuda_stream, device = 77, types.SimpleNamespace(index=1)

    with pytest.raises(ValueError, match="stream is on GPU 1 but images on GPU 0"):
        tc.bilinear_upsample(x, 2, out=framework_array("torch", (1, 4, 4, 3), 2 << 40, 0), stream=Stream())
    assert not ext.calls
    tc.bilinear_upsample(x, 2, out=framework_array("torch", (1, 4, 4, 3), 2 << 40, 0), stream=5)
    assert ext.calls == [("BilinearForward", [1 << 40, 2 << 40], 5)]


def test_an_output_overlapping_an_input_is_refused(ext):
    base = 1 << 40
    x = FakeGpuArray((1, 2, 2, 3), ptr=base)  # 48 bytes
    with pytest.raises(ValueError, match="out overlaps images"):
        tc.bilinear_upsample(x, 2, out=FakeGpuArray((1, 4, 4, 3), ptr=base + 16), stream=0)
    tc.bilinear_upsample(x, 2, out=FakeGpuArray((1, 4, 4, 3), ptr=base + 48), stream=0)  # adjacent: fine
    logits = FakeGpuArray((1, 2, 2, 3), ptr=base)
    labels = FakeGpuArray((1, 4, 4), "<i8", ptr=base + 4096)
    with pytest.raises(ValueError, match="scores overlaps labels"):
        tc.upsample_argmax(logits, 2, return_scores=True, stream=0,
                           out=(labels, FakeGpuArray((1, 4, 4), ptr=base + 4096 + 8)))
    assert len(ext.calls) == 1


def test_int32_labels_go_to_the_kernels_as_they_are(ext):
    # int32 labels: the same array, its width in the arguments (narrow labels, index 16); the loss
    # gradient's map always whole (uniform loss_grad, index 17, is XLA's alone).
    base = 1 << 40
    logits = FakeGpuArray((1, 2, 2, 3), ptr=base)
    loss, loss_grad = FakeGpuArray((1, 4, 4), ptr=base + 4096), FakeGpuArray((1, 4, 4), ptr=base + 8192)
    stats, grad = FakeGpuArray((1, 4, 4, 2), "<f8", ptr=base + 12288), FakeGpuArray((1, 2, 2, 3), ptr=base + 16384)
    for typestr, narrow in (("<i8", False), ("<i4", True)):
        labels = FakeGpuArray((1, 4, 4), typestr, ptr=base + 20480)
        tc.upsample_sparse_softmax_cross_entropy(labels, logits, 2, out=loss, stream=0)
        tc.upsample_sparse_softmax_cross_entropy_grad(labels, logits, loss_grad, 2, stats=stats, out=grad, stream=0)
        assert [c[0] for c in ext.calls[-2:]] == ["UpsampleSoftmaxCrossEntropy", "UpsampleSoftmaxCrossEntropyGrad"]
        assert [c[1][1] for c in ext.calls[-2:]] == [base + 20480] * 2
        assert [(a[16], a[17]) for a in ext.args[-2:]] == [(narrow, False)] * 2
    with pytest.raises(ValueError, match="labels must be int32 or int64 of shape"):
        tc.upsample_sparse_softmax_cross_entropy(FakeGpuArray((1, 4, 4), "<f4"), logits, 2, out=loss, stream=0)


def test_cupy_s_stream_is_the_array_s_device_s(monkeypatch, ext):
    current = {"device": 0}

    class Device:
        def __init__(self, i):
            self.i = i

        def __enter__(self):
            self.saved, current["device"] = current["device"], self.i

        def __exit__(self, *exc):
            current["device"] = self.saved

    cuda = types.SimpleNamespace(Device=Device,
                                 get_current_stream=lambda: types.SimpleNamespace(ptr=1000 + current["device"]))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    x = framework_array("cupy", (1, 2, 2, 3), 1 << 40, 1)
    tc.bilinear_upsample(x, 2, out=framework_array("cupy", (1, 4, 4, 3), 2 << 40, 1))
    assert ext.calls[-1][2] == 1001 and current["device"] == 0


def test_non_gpu_arrays_and_dtypes_are_refused():
    with pytest.raises(TypeError, match="images must be a CUDA array"):
        tc.bilinear_upsample([[1.0]], 2)
    with pytest.raises(TypeError, match="images must be float16, bfloat16, float32 or float64"):
        tc.bilinear_upsample(FakeGpuArray((1, 2, 2, 3), "<i4"), 2)
    with pytest.raises(ValueError, match="images must be C-contiguous"):
        tc.bilinear_upsample(FakeGpuArray((1, 2, 2, 3), "<f4", (48, 4, 24, 8)), 2)


def test_shapes_factors_and_formats_are_checked():
    x = FakeGpuArray((1, 2, 2, 3))
    with pytest.raises(TypeError, match="factor must be a positive integer"):
        tc.bilinear_upsample(x, 2.0)
    with pytest.raises(ValueError, match="data_format must be"):
        tc.bilinear_upsample(x, 2, data_format="NWHC")
    with pytest.raises(ValueError, match="images must be 4-D"):
        tc.bilinear_upsample(FakeGpuArray((2, 2, 3)), 2)
    with pytest.raises(ValueError, match=r"out must have shape \[1, 4, 4, 3\] and dtype float32"):
        tc.bilinear_upsample(x, 2, out=FakeGpuArray((1, 4, 4, 2)))
    with pytest.raises(TypeError, match="pass out"):  # no framework to allocate with
        tc.bilinear_upsample(x, 2)
    with pytest.raises(ValueError, match="multiples of factor 3"):
        tc.bilinear_upsample_grad(FakeGpuArray((1, 4, 6, 3)), 3)
    f3 = FakeGpuArray((4, 4, 3))
    with pytest.raises(ValueError, match=r"filter must be \[kernel_h, kernel_w, 3, 1\]"):
        tc.depthwise_conv2d_transpose(x, FakeGpuArray((4, 4, 2, 1)), [1, 4, 4, 3], 2)
    with pytest.raises(TypeError, match="filter must have input's dtype float32"):
        tc.depthwise_conv2d_transpose(x, FakeGpuArray((4, 4, 3), "<f8"), [1, 4, 4, 3], 2)
    with pytest.raises(ValueError, match="padding must be"):
        tc.depthwise_conv2d_transpose(x, f3, [1, 4, 4, 3], 2, padding="FULL")
    with pytest.raises(ValueError, match="output_shape must be 4 non-negative integers"):
        tc.depthwise_conv2d_transpose(x, f3, (1, 8, -1, 3), 2)
    with pytest.raises(ValueError, match=r"output_shape must keep the batch 1 and channels 3"):
        tc.depthwise_conv2d_transpose(x, f3, (1, 4, 4, 2), 2)
    with pytest.raises(ValueError, match="input_sizes must be 4 non-negative integers"):
        tc.depthwise_conv2d_transpose_backprop_input(FakeGpuArray((1, 4, 4, 3)), f3, 2, 2)
    with pytest.raises(ValueError, match=r"filter_sizes must be \[kernel_h, kernel_w, 3, 1\]"):
        tc.depthwise_conv2d_transpose_backprop_filter(x, FakeGpuArray((1, 4, 4, 3)), [4, 4, 2, 1], 2)
    with pytest.raises(TypeError, match="output_type must be int32 or int64"):
        tc.upsample_argmax(x, 2, output_type="float32")
    with pytest.raises(ValueError, match="labels must be int32 or int64 of shape"):
        tc.upsample_sparse_softmax_cross_entropy(FakeGpuArray((1, 4, 4), "<i8"), x, 4)


def test_without_the_cuda_build_the_error_says_so():
    if os.path.exists(os.path.join(os.path.dirname(tc.__file__), "_tfupsample_cuda.so")):
        pytest.skip("this build has the CUDA kernels")
    assert not tc.available()
    x = FakeGpuArray((1, 2, 2, 3))
    with pytest.raises(RuntimeError, match="built without its CUDA kernels"):
        tc.bilinear_upsample(x, 2, out=FakeGpuArray((1, 4, 4, 3)))


def test_importing_it_does_not_import_tensorflow():
    code = "import sys, tfupsample.cuda; assert 'tensorflow' not in sys.modules, 'imported TF'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tempfile.gettempdir())


@pytest.mark.skipif(not emulator.have_nvcc(), reason="needs nvcc")
def test_gpu_check_script_passes_on_the_cpu_emulation(monkeypatch):
    # benchmarks/gpu_check.py drives tfupsample.cuda end to end (array interface, out=, checks,
    # references); over the CPU emulation of the kernels it must pass here before a GPU sees it.
    monkeypatch.setattr(tc, "_ext", tc._ext)  # gpu_check points it at the emulation; restored
    monkeypatch.syspath_prepend(os.path.join(emulator.ROOT, "benchmarks"))
    import gpu_check

    assert gpu_check.main(["--backend", "host", "--quick"]) == 0


def _visible_gpus():
    """CUDA devices as the driver lists them (0 without a driver)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


@pytest.mark.skipif(not emulator.have_nvcc(), reason="needs nvcc")
def test_c_abi_library_builds_and_reports_errors(tmp_path):
    # The library gpu_check.sh builds, loaded the way tfupsample.cuda loads it: the ctypes
    # signature must match binding.cu, and a bad geometry must come back as a ValueError (checked
    # before any CUDA call, so this runs without a GPU).
    so = str(tmp_path / "_tfupsample_cuda.so")
    subprocess.run(["nvcc", "-std=c++17", "-O0", "-arch=sm_90", "-shared", "-Xcompiler", "-fPIC",
                    "-I" + os.path.join(emulator.ROOT, "csrc"),
                    os.path.join(emulator.ROOT, "csrc", "cuda", "kernels.cu"),
                    os.path.join(emulator.ROOT, "csrc", "cuda", "binding.cu"), "-o", so], check=True)
    lib = tc._Library(so)
    assert lib.device_count() == _visible_gpus()
    # geometry.h's rules through the C ABI (tfupsample.cuda sizes its outputs with them).
    assert lib.bilinear_kernel_size(3) == 5 and lib.bilinear_kernel_size(4) == 8
    assert lib.default_output_size(2, 2, 3, "VALID") == 6  # Keras: n * s + max(k - s, 0)
    assert lib.default_output_size(2, 5, 3, "VALID") == 8 and lib.default_output_size(2, 5, 3, "SAME") == 6
    args = [1, 2, 2, 3, 5, 4, 4, 4, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0]  # output height 5 cannot come from 2 x2
    with pytest.raises(ValueError, match=r"height: output size 5 is inconsistent .* expected a value in \[3, 4\]"):
        lib.run("BilinearForward", args, 2, [0, 0], 0)
    with pytest.raises(ValueError, match="dtype must be 0..3"):
        lib.run("BilinearForward", args, 7, [0, 0], 0)
    with pytest.raises(ValueError, match="args must have 18 values, got 17"):
        lib.run("BilinearForward", args[:-1], 2, [0, 0], 0)
    # Scratch: how much (none for the depthwise forward, the tap tables for the bilinear one, -1 for
    # bad arguments), and too little is refused.
    good = [1, 2, 2, 3, 4, 4, 4, 4, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0]
    assert lib.scratch_bytes("DepthwiseForward", good, 2) == 0 and lib.scratch_bytes("BilinearForward", good, 2) > 0
    assert lib.scratch_bytes("BilinearForward", args, 2) == -1
    need = lib.scratch_bytes("BilinearBackpropInput", good, 2)
    assert need > 0
    with pytest.raises(ValueError, match=f"scratch must hold {need} bytes, got 8"):
        lib.run("BilinearBackpropInput", good, 2, [1 << 40, 1 << 41], 0, scratch=1 << 42, scratch_size=8)
    with pytest.raises(ValueError, match="scratch must be 256-byte aligned"):
        lib.run("BilinearForward", good, 2, [1 << 40, 1 << 41], 0, scratch=(1 << 42) + 8, scratch_size=1 << 20)
    # Host memory is refused before any launch (an illegal address would end the CUDA context);
    # without a GPU the pointer query itself fails, and says so.
    host = np.zeros(64, np.float32)
    gpus = _visible_gpus()
    with pytest.raises(ValueError if gpus else RuntimeError, match="array 0 is not GPU memory" if gpus else "CUDA error"):
        lib.run("BilinearForward", good, 2, [host.ctypes.data, host.ctypes.data + 64], 0)
    # The label smoothing (the bits of a double) must lie in [0, 1]: the C ABI checks it too.
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        tc._args(1, 2, 2, 3, 4, 4, (4, 4), (2, 2), label_smoothing=1.5)
    for bad, text in ((1.5, "1.5"), (-0.25, "-0.25"), (float("nan"), "nan")):
        smoothing = tc._args(1, 2, 2, 3, 4, 4, (4, 4), (2, 2))
        smoothing[15] = struct.unpack("<q", struct.pack("<d", bad))[0]
        with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got " + text):
            lib.run("UpsampleSoftmaxCrossEntropy", smoothing, 2, [0, 0, 0, 0], 0)


def test_dlpack_arrays_are_read_through_the_capsule(monkeypatch):
    # NumPy arrays export DLPack capsules (on the CPU device): with the CPU admitted for the test,
    # the pointer, shape, dtype and contiguity read through ctypes must match NumPy's own.
    import numpy as np

    with pytest.raises(TypeError, match="x must be on a CUDA device, got DLPack device type 1"):
        tc._view(np.zeros((2, 3), np.float32), "x")
    monkeypatch.setattr(tc, "_DL_CUDA", 1)
    for dtype in ("float16", "float32", "float64", "int32", "int64"):
        a = np.arange(24).astype(dtype).reshape(2, 3, 4)
        v = tc._view(a, "a")
        assert (v.ptr, v.shape, v.dtype) == (a.ctypes.data, (2, 3, 4), dtype)
    with pytest.raises(ValueError, match="b must be C-contiguous"):
        tc._view(np.zeros((4, 6), np.float32)[:, ::2], "b")
    with pytest.raises(TypeError, match="c must be float16, bfloat16, float32 or float64"):
        tc._view(np.zeros(3, np.int16), "c")


def test_streams_are_taken_as_ints_or_framework_stream_objects():
    class TorchLike:
        cuda_stream = 1234

    class CupyLike:
        ptr = 5678

    x = tc._view(FakeGpuArray((1, 2, 2, 3)), "x")
    assert [tc._stream(x, s) for s in (None, 42, TorchLike(), CupyLike())] == [0, 42, 1234, 5678]


@pytest.mark.skipif(not emulator.have_nvcc(), reason="needs nvcc")
def test_gpu_check_torch_dry_run(monkeypatch):
    # Where torch is installed (not in CI): the script's torch backend and timing code, on torch
    # CPU tensors over the emulation (DLPack, bfloat16 included).
    pytest.importorskip("torch")
    monkeypatch.setattr(tc, "_ext", tc._ext)
    monkeypatch.setattr(tc, "_DL_CUDA", tc._DL_CUDA)
    monkeypatch.syspath_prepend(os.path.join(emulator.ROOT, "benchmarks"))
    import gpu_check

    assert gpu_check.main(["--backend", "torch-cpu", "--quick"]) == 0


@pytest.fixture
def fake_torch(monkeypatch):
    """A fake torch module: which stream is current when each piece of work is queued (log)."""
    log, current = [], [types.SimpleNamespace(cuda_stream=5)]
    ptrs = iter(range(1 << 40, 1 << 41, 1 << 30))

    class StreamContext:
        def __init__(self, s):
            self.s = s

        def __enter__(self):
            self.saved, current[0] = current[0], self.s

        def __exit__(self, *exc):
            current[0] = self.saved

    def empty(shape, dtype, device):
        log.append(("empty", current[0].cuda_stream))
        a = framework_array("torch", shape, next(ptrs) + 8, device.index,
                            {"int64": "<i8", "uint8": "|u1"}.get(dtype, "<f4"))
        a.to = lambda t: log.append(("to", current[0].cuda_stream)) or a
        a.record_stream = lambda s: log.append(("record", s.cuda_stream))
        return a

    cuda = types.SimpleNamespace(current_stream=lambda device=None: current[0], stream=StreamContext,
                                 ExternalStream=lambda ptr, device=None: types.SimpleNamespace(cuda_stream=ptr))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(
        cuda=cuda, empty=empty, int32="int32", int64="int64", float32="float32", uint8="uint8"))
    return log, current


def test_a_given_stream_orders_the_framework_work_with_the_kernel(fake_torch, ext):
    log, current = fake_torch
    x = framework_array("torch", (1, 2, 2, 3), 1 << 39, 0)
    labels = tc.upsample_argmax(x, 2, output_type="int32", stream=77)
    assert ext.calls[-1][2] == 77 and current[0].cuda_stream == 5
    # Both outputs allocated and the labels converted on stream 77; the result recorded on the caller's.
    assert log == [("empty", 77), ("empty", 77), ("to", 77), ("record", 5)], log
    log.clear()
    tc.upsample_argmax(x, 2)  # no stream given: the caller's current stream, nothing switched
    assert log == [("empty", 5), ("empty", 5)] and ext.calls[-1][2] == 5
    del labels


def test_scratch_comes_from_the_framework_s_allocator(fake_torch, ext):
    log, _ = fake_torch
    ext.scratch_bytes = lambda op, args, dtype: 1000 if op == "BilinearBackpropInput" else 0
    runs = []
    ext.run = lambda op, args, dtype, pointers, stream, scratch=None, scratch_size=0: runs.append(
        (op, scratch, scratch_size))
    dy = framework_array("torch", (1, 4, 4, 3), 1 << 39, 0)
    tc.bilinear_upsample_grad(dy, 2, stream=5)
    tc.bilinear_upsample(framework_array("torch", (1, 2, 2, 3), 1 << 38, 0), 2, stream=5)
    (op, scratch, size), (op2, scratch2, size2) = runs
    assert op == "BilinearBackpropInput" and size == 1000 and scratch % 256 == 0 and scratch >= 1 << 40
    assert op2 == "BilinearForward" and scratch2 is None and size2 == 0  # no scratch needed: none made
