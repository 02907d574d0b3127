"""tfupsample's CUDA kernels for GPU arrays of any framework -- CuPy, PyTorch, anything with
`__cuda_array_interface__` or `__dlpack__` -- without TensorFlow.

The same kernels the TF op runs on a GPU. Arrays must be C-contiguous and on a CUDA device;
results are written into `out` when given, else into a new array of the input's framework
(torch or CuPy). Work is queued on `stream` (a `cudaStream_t` as an int, a torch or CuPy stream),
by default the framework's current stream on the array's device, and not waited for, as the
frameworks' own ops do; with a stream given, the function's own framework work (new outputs,
transposes, conversions) goes on that stream too. Every array must be on one GPU, and an `out`
must not overlap an input.

    import torch, tfupsample.cuda as tc
    x = torch.randn(1, 16, 22, 1000, device="cuda")
    y = tc.bilinear_upsample(x, 32)          # [1, 512, 704, 1000]
"""

import ctypes
import functools
import inspect
import os
import struct

from ._checks import _check_data_format, _check_padding, _pair
from ._weights import check_factor

_DTYPE_CODES = {"float16": 0, "bfloat16": 1, "float32": 2, "float64": 3}
_TYPESTR = {"<f2": "float16", "<f4": "float32", "<f8": "float64", "<i4": "int32", "<i8": "int64", "|u1": "uint8"}
_DL_DTYPES = {(2, 16): "float16", (4, 16): "bfloat16", (2, 32): "float32", (2, 64): "float64", (1, 8): "uint8",
              (0, 32): "int32", (0, 64): "int64"}
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int32": 4, "int64": 8, "uint8": 1}
_DL_CUDA, _DL_CUDA_MANAGED = 2, 13
_MAX_ARRAYS = 5  # the most arrays an op takes (the loss gradient's)
_ARG_COUNT = 18  # GeometryFromArgs' values (csrc/cuda/kernels.h)


class _Library:
    """The C ABI of _tfupsample_cuda.so (csrc/cuda/binding.cu), loaded with ctypes."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.tfupsample_cuda_run.restype = ctypes.c_int
        self.lib.tfupsample_cuda_run.argtypes = [
            ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
        self.lib.tfupsample_cuda_scratch_bytes.restype = ctypes.c_int64
        self.lib.tfupsample_cuda_scratch_bytes.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64),
                                                           ctypes.c_int]
        self.lib.tfupsample_cuda_device_count.restype = ctypes.c_int
        self.lib.tfupsample_cuda_bilinear_kernel_size.restype = ctypes.c_int64
        self.lib.tfupsample_cuda_bilinear_kernel_size.argtypes = [ctypes.c_int64]
        self.lib.tfupsample_cuda_default_output_size.restype = ctypes.c_int64
        self.lib.tfupsample_cuda_default_output_size.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_int]

    def scratch_bytes(self, op, args, dtype):
        """Device scratch the op needs; -1 for bad arguments (run says why)."""
        if len(args) != _ARG_COUNT:
            return -1
        return self.lib.tfupsample_cuda_scratch_bytes(op.encode(), (ctypes.c_int64 * _ARG_COUNT)(*args), dtype)

    def run(self, op, args, dtype, pointers, stream, scratch=None, scratch_size=0):
        error = ctypes.create_string_buffer(1024)
        ptrs = (ctypes.c_void_p * _MAX_ARRAYS)(*(list(pointers) + [None] * (_MAX_ARRAYS - len(pointers))))
        if len(args) != _ARG_COUNT:
            raise ValueError(f"args must have {_ARG_COUNT} values, got {len(args)}")
        code = self.lib.tfupsample_cuda_run(op.encode(), (ctypes.c_int64 * _ARG_COUNT)(*args), dtype, ptrs,
                                            len(pointers), stream, scratch, scratch_size, error, len(error))
        if code == 1:
            raise ValueError(error.value.decode())
        if code != 0:
            raise RuntimeError(error.value.decode())

    def device_count(self):
        return self.lib.tfupsample_cuda_device_count()

    # geometry.h's rules, from the same library (this module imports no other binary).
    def bilinear_kernel_size(self, factor):
        return self.lib.tfupsample_cuda_bilinear_kernel_size(factor)

    def default_output_size(self, n, k, s, padding):
        return self.lib.tfupsample_cuda_default_output_size(n, k, s, padding == "VALID")


_library = None


def _ext():
    global _library
    if _library is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_tfupsample_cuda.so")
        if not os.path.exists(path):
            raise RuntimeError("tfupsample was built without its CUDA kernels: rebuild with a CUDA "
                               "toolkit present (TFUPSAMPLE_CUDA=ON forces it)")
        _library = _Library(path)
    return _library


def available():
    """True when the CUDA kernels were built (TFUPSAMPLE_CUDA) and a CUDA device is visible."""
    try:
        return _ext().device_count() > 0
    except (RuntimeError, OSError):
        return False


# ------------------------------------------------------------------------------------------------
# GPU arrays -> (pointer, shape, dtype)

class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


class _View:
    def __init__(self, array, name, ptr, shape, dtype, contiguous, device=None):
        if dtype is None:
            raise TypeError(f"{name} must be float16, bfloat16, float32 or float64 (int32 or int64 for labels)")
        if not contiguous:
            raise ValueError(f"{name} must be C-contiguous")
        self.array, self.name, self.ptr, self.shape, self.dtype = array, name, ptr, tuple(shape), dtype
        self.device = device  # the GPU's ordinal, where the array says (None: unknown)

    def byte_range(self):
        size = _ITEMSIZE[self.dtype]
        for n in self.shape:
            size *= n
        return self.ptr, self.ptr + size


def _device_of(array):
    """The ordinal of the GPU a torch or CuPy array is on; None for other arrays."""
    device = getattr(array, "device", None)
    if _framework(array) == "torch":
        return getattr(device, "index", None)
    if _framework(array) == "cupy":
        return getattr(device, "id", None)
    return None


def _contiguous(shape, strides, itemsize=1):
    expected = itemsize
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _view(array, name):
    try:
        cai = array.__cuda_array_interface__
    except (AttributeError, TypeError, RuntimeError, ValueError):
        cai = None  # e.g. torch's bfloat16 has none: DLPack below
    if cai is not None:
        dtype = _TYPESTR.get(cai["typestr"])
        shape = tuple(cai["shape"])
        strides = cai.get("strides")
        ok = strides is None or dtype is None or _contiguous(shape, strides, _ITEMSIZE[dtype])
        return _View(array, name, cai["data"][0] or 0, shape, dtype, ok, _device_of(array))
    if hasattr(array, "__dlpack__"):
        capsule = array.__dlpack__()
        t = ctypes.cast(_capsule_pointer(capsule, b"dltensor"), ctypes.POINTER(_DLTensor)).contents
        if t.device.device_type not in (_DL_CUDA, _DL_CUDA_MANAGED):
            raise TypeError(f"{name} must be on a CUDA device, got DLPack device type {t.device.device_type}")
        shape = tuple(t.shape[i] for i in range(t.ndim))
        ok = not t.strides or _contiguous(shape, [t.strides[i] for i in range(t.ndim)])
        dtype = _DL_DTYPES.get((t.dtype.code, t.dtype.bits)) if t.dtype.lanes == 1 else None
        # The capsule is not consumed: the array keeps owning the memory, and `array` is held.
        return _View(array, name, (t.data or 0) + t.byte_offset, shape, dtype, ok, t.device.device_id)
    raise TypeError(f"{name} must be a CUDA array (CuPy, torch, or anything with "
                    f"__cuda_array_interface__ or __dlpack__), got {type(array).__name__}")


def _framework(array):
    return type(array).__module__.split(".")[0]


def _empty(like, name, shape, dtype):
    if _framework(like) == "torch":
        import torch

        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
    if _framework(like) == "cupy" and dtype != "bfloat16":
        import cupy

        with cupy.cuda.Device(like.device.id):
            return cupy.empty(shape, dtype)
    raise TypeError(f"pass {name}: an array of shape {list(shape)} and dtype {dtype} "
                    f"(new arrays are made only for torch and CuPy inputs)")


def _output(out, like, name, shape, dtype):
    if out is None:
        out = _empty(like.array, name, shape, dtype)
    v = _view(out, name)
    if v.shape != tuple(shape) or v.dtype != dtype:
        raise ValueError(f"{name} must have shape {list(shape)} and dtype {dtype}, got "
                         f"{list(v.shape)} {v.dtype}")
    return v


def _handle(stream):
    """A stream as its cudaStream_t (an int): a torch.cuda.Stream, a CuPy stream, or an int."""
    for attr in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    return int(stream)


def _current_stream(array):
    """The current stream of a torch or CuPy array's framework on its device; None otherwise."""
    fw = _framework(array)
    if fw == "torch" and getattr(array, "is_cuda", False):
        import torch

        return torch.cuda.current_stream(array.device)
    if fw == "cupy":
        import cupy

        with cupy.cuda.Device(array.device.id):  # the array's device's stream, not the current device's
            return cupy.cuda.get_current_stream()
    return None


def _stream(like, stream):
    """A cudaStream_t as an int: given (an int, a torch.cuda.Stream, a CuPy stream), or the
    current stream of the array's framework on the array's device, or the legacy default stream.
    A stream object of another device than the array's is refused."""
    if stream is not None:
        device = getattr(stream, "device_id", None)  # CuPy
        if device is None:
            device = getattr(getattr(stream, "device", None), "index", None)  # torch
        if device is not None and device >= 0 and like.device is not None and device != like.device:
            raise ValueError(f"stream is on GPU {device} but {like.name} on GPU {like.device}")
        return _handle(stream)
    current = _current_stream(like.array)
    return 0 if current is None else _handle(current)


def _on_given_stream(fn):
    """fn with its `stream`, when given for a torch or CuPy array, made the framework's current
    stream on the array's device while fn runs: the function's own framework work -- the outputs'
    allocation, NCHW transposes, the int32 labels' conversion -- is then queued in order with its
    kernel, not on another stream that could race it. New torch outputs are recorded on the
    caller's stream, so that the caching allocator reuses their memory only after the caller's
    work on them."""
    first_name = next(iter(inspect.signature(fn).parameters))

    @functools.wraps(fn)
    def run(*args, stream=None, **kwargs):
        first = args[0] if args else kwargs.get(first_name)
        caller = None if stream is None or first is None else _current_stream(first)  # None: no framework's
        if caller is None or _handle(stream) == _handle(caller):
            return fn(*args, stream=stream, **kwargs)
        if _framework(first) == "cupy":
            import cupy

            with cupy.cuda.Device(first.device.id):
                target = stream if _framework(stream) == "cupy" else \
                    cupy.cuda.ExternalStream(_handle(stream), first.device.id)
                with target:
                    return fn(*args, stream=stream, **kwargs)
        import torch

        target = stream if _framework(stream) == "torch" else \
            torch.cuda.ExternalStream(_handle(stream), device=first.device)
        with torch.cuda.stream(target):
            result = fn(*args, stream=stream, **kwargs)
        out = kwargs.get("out")
        given = {id(a) for a in (out if isinstance(out, (tuple, list)) else (out,)) if a is not None}
        for t in result if isinstance(result, tuple) else (result,):
            if id(t) not in given and hasattr(t, "record_stream"):
                t.record_stream(caller)
        return result

    return run


def _rank4(v, data_format):
    if len(v.shape) != 4:
        raise ValueError(f"{v.name} must be 4-D, got shape {list(v.shape)}")
    n, a, b, c = v.shape
    return (n, b, c, a) if data_format == "NCHW" else (n, a, b, c)


def _layout(n, h, w, c, data_format):
    return (n, c, h, w) if data_format == "NCHW" else (n, h, w, c)


def _same_dtype(v, like):
    if v.dtype != like.dtype:
        raise TypeError(f"{v.name} must have {like.name}'s dtype {like.dtype}, got {v.dtype}")


# How many of an op's arrays are inputs (the kernel list's order: inputs, then outputs).
_INPUTS = {"BilinearForward": 1, "BilinearBackpropInput": 1, "ResizeBilinear": 1, "ResizeBilinearBackpropInput": 1,
           "DepthwiseForward": 2, "DepthwiseBackpropInput": 2, "DepthwiseBackpropFilter": 2, "UpsampleArgmax": 1,
           "UpsampleSoftmaxCrossEntropy": 2, "UpsampleSoftmaxCrossEntropyGrad": 4, "ResizeArgmax": 1,
           "ResizeSoftmaxCrossEntropy": 2, "ResizeSoftmaxCrossEntropyGrad": 4}


def _check_placement(op, views):
    """Every array on one GPU (where the arrays say which: an array on another one would be an
    illegal address that ends the CUDA context), and no output overlapping an input or another
    output (the kernels read their inputs while they write)."""
    present = [v for v in views if v is not None]
    known = [v for v in present if v.device is not None]
    for v in known[1:]:
        if v.device != known[0].device:
            raise ValueError(f"{v.name} is on GPU {v.device} but {known[0].name} on GPU {known[0].device}: "
                             "every array must be on the same GPU")
    inputs = _INPUTS[op]
    for i, out in enumerate(views[inputs:], inputs):
        if out is None or not out.ptr:
            continue
        lo, hi = out.byte_range()
        for other in views[:i]:
            if other is None or not other.ptr:
                continue
            olo, ohi = other.byte_range()
            if lo < ohi and olo < hi and lo < hi and olo < ohi:
                raise ValueError(f"{out.name} overlaps {other.name}: an output must not share memory "
                                 "with an input or another output")


def _run(op, args, views, stream, dtype=None):
    """Runs op on views (arrays in the kernel list's order); dtype: the op's element type, by
    default the first array's. The op's scratch comes from the framework's allocator for torch and
    CuPy arrays (on the current stream, which is the kernel's where a stream was given), so that
    the framework's memory accounting and caching see it."""
    _check_placement(op, views)
    ext, args, code = _ext(), [int(a) for a in args], _DTYPE_CODES[dtype or views[0].dtype]
    pointers = [None if v is None else v.ptr for v in views]
    like = views[0].array
    need = ext.scratch_bytes(op, args, code)
    current = _current_stream(like) if need > 0 else None
    if current is not None and _handle(current) == stream:  # (else the C side's, on the kernel's stream)
        # Released when this returns, with the kernel still queued: the frameworks' allocators are
        # stream-ordered, so only work queued after it on the same stream can reuse the memory.
        buffer = _empty(like, "scratch", (need + 255,), "uint8")
        base = _view(buffer, "scratch").ptr
        ext.run(op, args, code, pointers, stream, scratch=(base + 255) // 256 * 256, scratch_size=need)
        return
    ext.run(op, args, code, pointers, stream)


_RESIZE_CODES = {"half_pixel": 1, "align_corners": 2, "asymmetric": 3}


def _args(n, h, w, c, oh, ow, k, s, padding="SAME", data_format="NHWC", ignore_label=None, resize=None,
          label_smoothing=0.0, narrow_labels=False, uniform_loss_grad=False):
    """The flat arguments of csrc/cuda/kernels.h's GeometryFromArgs (_ARG_COUNT values); resize:
    None (the transposed convolution) or one of _RESIZE_CODES (then k, s and padding are unused);
    label_smoothing travels as the bits of a double, rounded to float32 first as the TF ops' float
    attribute is (the loss is then one function on both devices); narrow_labels: the labels are
    int32 (else int64); uniform_loss_grad: the loss gradients read loss_grad[0] for every pixel
    (as XLA's handlers may pass it; the functions below always pass the whole map)."""
    if not 0.0 <= float(label_smoothing) <= 1.0:  # also refused by the kernels' argument check
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    (single,) = struct.unpack("<f", struct.pack("<f", float(label_smoothing)))
    (smoothing,) = struct.unpack("<q", struct.pack("<d", single))
    return [n, h, w, c, oh, ow, k[0], k[1], s[0], s[1], padding == "VALID", data_format == "NCHW",
            ignore_label is not None, ignore_label or 0, _RESIZE_CODES[resize] if resize else 0, smoothing,
            bool(narrow_labels), bool(uniform_loss_grad)]


def _float(v):
    if v.dtype not in _DTYPE_CODES:
        raise TypeError(f"{v.name} must be float16, bfloat16, float32 or float64, got {v.dtype}")
    return v


# ------------------------------------------------------------------------------------------------
# The functions: the names, argument order and return conventions of the TF-level API
# (tfupsample.bilinear_upsample, ...), plus `out=` and `stream=`.

@_on_given_stream
def bilinear_upsample(images, factor, *, data_format="NHWC", out=None, stream=None):
    """Bilinear upsample by an integer `factor` (the FCN transposed convolution, SAME)."""
    f, fmt = check_factor(factor), _check_data_format(data_format)
    v = _float(_view(images, "images"))
    n, h, w, c = _rank4(v, fmt)
    o = _output(out, v, "out", _layout(n, h * f, w * f, c, fmt), v.dtype)
    k = _ext().bilinear_kernel_size(f)
    _run("BilinearForward", _args(n, h, w, c, h * f, w * f, (k, k), (f, f), "SAME", fmt),
         [v, o], _stream(v, stream))
    return o.array


@_on_given_stream
def bilinear_upsample_grad(grad, factor, *, data_format="NHWC", out=None, stream=None):
    """Gradient of `bilinear_upsample` to its input, given the output's gradient `grad`."""
    f, fmt = check_factor(factor), _check_data_format(data_format)
    v = _float(_view(grad, "grad"))
    n, oh, ow, c = _rank4(v, fmt)
    if oh % f or ow % f:
        raise ValueError(f"grad height and width must be multiples of factor {f}, got {list(v.shape)}")
    o = _output(out, v, "out", _layout(n, oh // f, ow // f, c, fmt), v.dtype)
    k = _ext().bilinear_kernel_size(f)
    _run("BilinearBackpropInput", _args(n, oh // f, ow // f, c, oh, ow, (k, k), (f, f), "SAME", fmt),
         [v, o], _stream(v, stream))
    return o.array


# ------------------------------------------------------------------------------------------------
# Resize (tf.image.resize's bilinear): float32 output, the CPU kernel's bits

def _resize_mode(align_corners, half_pixel_centers):
    if align_corners and half_pixel_centers:
        raise ValueError("If half_pixel_centers is True, align_corners must be False.")
    return "half_pixel" if half_pixel_centers else ("align_corners" if align_corners else "asymmetric")


@_on_given_stream
def resize_bilinear(images, size, align_corners=False, half_pixel_centers=False, *, data_format="NHWC",
                    out=None, stream=None):
    """`tf.compat.v1.image.resize_bilinear` of 4-D `images` to `size` [new_height, new_width]:
    float32, the bits of TF's CPU kernel (and of tfupsample's). align_corners and
    half_pixel_centers are the third and fourth arguments (there is no `name`)."""
    fmt, mode = _check_data_format(data_format), _resize_mode(align_corners, half_pixel_centers)
    v = _float(_view(images, "images"))
    n, h, w, c = _rank4(v, fmt)
    oh, ow = _sizes(size, "size", 2)
    o = _output(out, v, "out", _layout(n, oh, ow, c, fmt), "float32")
    _run("ResizeBilinear", _args(n, h, w, c, oh, ow, (1, 1), (1, 1), data_format=fmt, resize=mode), [v, o],
         _stream(v, stream))
    return o.array


def resize(images, size, *, data_format="NHWC", out=None, stream=None):
    """`tf.image.resize(images, size)` (bilinear, half-pixel centres) of 4-D `images`."""
    return resize_bilinear(images, size, half_pixel_centers=True, data_format=data_format, out=out,
                           stream=stream)


@_on_given_stream
def resize_bilinear_grad(grad, input_size, dtype="float32", align_corners=False, half_pixel_centers=False, *,
                         data_format="NHWC", out=None, stream=None):
    """Gradient of `resize_bilinear` to images of height and width `input_size` and type `dtype`,
    given the float32 gradient of its output: a gather (each element written once, no atomics)."""
    fmt, mode = _check_data_format(data_format), _resize_mode(align_corners, half_pixel_centers)
    v = _view(grad, "grad")
    if v.dtype != "float32":
        raise TypeError(f"grad must be float32 (the resize's output type), got {v.dtype}")
    if dtype not in _DTYPE_CODES:
        raise TypeError(f"dtype must be float16, bfloat16, float32 or float64, got {dtype!r}")
    n, oh, ow, c = _rank4(v, fmt)
    h, w = _sizes(input_size, "input_size", 2)
    o = _output(out, v, "out", _layout(n, h, w, c, fmt), dtype)
    _run("ResizeBilinearBackpropInput", _args(n, h, w, c, oh, ow, (1, 1), (1, 1), data_format=fmt, resize=mode),
         [v, o], _stream(v, stream), dtype=dtype)
    return o.array


# ------------------------------------------------------------------------------------------------
# Depthwise transposed convolution: filter [kh, kw, C, 1] (or [kh, kw, C])

def _filter(filter, c):  # noqa: A002
    v = _view(filter, "filter")
    if len(v.shape) == 4 and v.shape[3] == 1:
        v.shape = v.shape[:3]
    if len(v.shape) != 3 or v.shape[2] != c:
        raise ValueError(f"filter must be [kernel_h, kernel_w, {c}, 1] (or [kernel_h, kernel_w, {c}]), "
                         f"got {list(v.shape)}")
    return v


def _sizes(value, name, count):
    """`count` non-negative ints, or a ValueError naming the argument."""
    try:
        values = [int(v) for v in value]
        ok = len(values) == count and min(values) >= 0 and all(float(v) == int(v) for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be {count} non-negative integers, got {value!r}")
    return values


def _hw(value, name, n, c, fmt):
    """(h, w) of a 4-D size in `fmt` order whose batch and channels must be (n, c)."""
    dims = _sizes(value, name, 4)
    nn, h, w, cc = (dims[0], dims[2], dims[3], dims[1]) if fmt == "NCHW" else dims
    if (nn, cc) != (n, c):
        raise ValueError(f"{name} must keep the batch {n} and channels {c}, got {dims}")
    return h, w


def _with_filter(array, name, filter, strides, padding, data_format):  # noqa: A002
    """The checked operands of the two ops that take a filter: (format, padding, strides, the
    array's view, its (n, h, w, c), the filter's view)."""
    fmt, pad = _check_data_format(data_format), _check_padding(padding)
    s = _pair(strides, "strides", fmt)
    v = _float(_view(array, name))
    dims = _rank4(v, fmt)
    fv = _filter(filter, dims[3])
    _same_dtype(fv, v)
    return fmt, pad, s, v, dims, fv


@_on_given_stream
def depthwise_conv2d_transpose(input, filter, output_shape, strides, padding="SAME",  # noqa: A002
                               data_format="NHWC", *, out=None, stream=None):
    """Per-channel transposed convolution. `output_shape`: 4 ints in `data_format` order, or
    None for keras.layers.Conv2DTranspose's default size."""
    fmt, pad, s, v, (n, h, w, c), fv = _with_filter(input, "input", filter, strides, padding, data_format)
    k = fv.shape[:2]
    if output_shape is None:
        lib = _ext()
        oh, ow = lib.default_output_size(h, k[0], s[0], pad), lib.default_output_size(w, k[1], s[1], pad)
    else:
        oh, ow = _hw(output_shape, "output_shape", n, c, fmt)
    o = _output(out, v, "out", _layout(n, oh, ow, c, fmt), v.dtype)
    _run("DepthwiseForward", _args(n, h, w, c, oh, ow, k, s, pad, fmt), [v, fv, o],
         _stream(v, stream))
    return o.array


@_on_given_stream
def depthwise_conv2d_transpose_backprop_input(out_backprop, filter, input_sizes, strides,  # noqa: A002
                                              padding="SAME", data_format="NHWC", *, out=None,
                                              stream=None):
    """Gradient to the input; `input_sizes`: its 4 dimensions in `data_format` order."""
    fmt, pad, s, v, (n, oh, ow, c), fv = _with_filter(out_backprop, "out_backprop", filter, strides,
                                                       padding, data_format)
    h, w = _hw(input_sizes, "input_sizes", n, c, fmt)
    o = _output(out, v, "out", _layout(n, h, w, c, fmt), v.dtype)
    _run("DepthwiseBackpropInput", _args(n, h, w, c, oh, ow, fv.shape[:2], s, pad, fmt),
         [v, fv, o], _stream(v, stream))
    return o.array


@_on_given_stream
def depthwise_conv2d_transpose_backprop_filter(input, out_backprop, filter_sizes, strides,  # noqa: A002
                                               padding="SAME", data_format="NHWC", *, out=None,
                                               stream=None):
    """Gradient to the filter; `filter_sizes`: [kernel_h, kernel_w, C, 1]. Returns that shape."""
    fmt, pad = _check_data_format(data_format), _check_padding(padding)
    s = _pair(strides, "strides", fmt)
    v = _float(_view(input, "input"))
    dv = _view(out_backprop, "out_backprop")
    _same_dtype(dv, v)
    n, h, w, c = _rank4(v, fmt)
    n2, oh, ow, c2 = _rank4(dv, fmt)
    if (n2, c2) != (n, c):
        raise ValueError(f"out_backprop must keep input's batch {n} and channels {c}, got {list(dv.shape)}")
    kh, kw, kc, km = _sizes(filter_sizes, "filter_sizes", 4)
    if (kc, km) != (c, 1) or min(kh, kw) < 1:
        raise ValueError(f"filter_sizes must be [kernel_h, kernel_w, {c}, 1], got {list(filter_sizes)}")
    o = _output(out, v, "out", (kh, kw, c, 1), v.dtype)
    _run("DepthwiseBackpropFilter", _args(n, h, w, c, oh, ow, (kh, kw), s, pad, fmt), [v, dv, o],
         _stream(v, stream))
    return o.array


# ------------------------------------------------------------------------------------------------
# Fused heads. The kernels read NHWC logits; NCHW ones are transposed once by their framework
# (they are the small, coarse tensor), as the TF-level functions do.

def _permuted(array, perm):
    if hasattr(array, "permute"):  # torch (and the test suite's host arrays)
        return array.permute(*perm).contiguous()
    if _framework(array) == "cupy":
        import cupy

        return cupy.ascontiguousarray(array.transpose(perm))
    raise TypeError(f"data_format='NCHW' needs a torch or CuPy array, got {type(array).__name__}")


def _head(logits, factor, data_format):
    f, fmt = check_factor(factor), _check_data_format(data_format)
    if fmt == "NCHW":
        logits = _permuted(logits, (0, 2, 3, 1))
    v = _float(_view(logits, "logits"))
    n, h, w, c = _rank4(v, "NHWC")

    def args(ignore=None, smoothing=0.0, narrow=False):
        k = _ext().bilinear_kernel_size(f)
        return _args(n, h, w, c, h * f, w * f, (k, k), (f, f), ignore_label=ignore, label_smoothing=smoothing,
                     narrow_labels=narrow)

    return v, (n, h * f, w * f), args


def _labels(labels, shape):
    """The labels' view, and whether they are int32 (else int64)."""
    v = _view(labels, "labels")
    if v.dtype not in ("int32", "int64") or v.shape != tuple(shape):
        raise ValueError(f"labels must be int32 or int64 of shape {list(shape)}, got {v.dtype} {list(v.shape)}")
    return v, v.dtype == "int32"


@_on_given_stream
def upsample_argmax(logits, factor, *, data_format="NHWC", output_type="int64", return_scores=False,
                    out=None, stream=None):
    """Labels [N, H*f, W*f] = argmax over classes of the upsampled logits (ties: the lowest
    class); with return_scores=True, (labels, scores). output_type: "int64" or "int32" (int32
    labels are converted by the array's framework after the kernel). out: the labels array, or
    the (labels, scores) pair with return_scores=True."""
    if str(output_type) not in ("int64", "int32", "torch.int64", "torch.int32"):
        raise TypeError(f"output_type must be int32 or int64, got {output_type!r}")
    v, shape, args = _head(logits, factor, data_format)
    if v.shape[3] == 0:
        raise ValueError("logits must have at least one class")
    labels_out, scores_out = (out if out is not None else (None, None)) if return_scores else (out, None)
    int32 = str(output_type).endswith("int32")
    if int32 and labels_out is not None:
        raise ValueError("out= for the labels needs output_type int64 (the kernel writes int64)")
    labels = _output(labels_out, v, "labels", shape, "int64")
    scores = _output(scores_out, v, "scores", shape, v.dtype)
    _run("UpsampleArgmax", args(), [v, labels, scores], _stream(v, stream))
    result = labels.array
    if int32:
        import importlib

        fw = _framework(result)
        result = result.to(importlib.import_module("torch").int32) if fw == "torch" else result.astype("int32")
    return (result, scores.array) if return_scores else result


@_on_given_stream
def upsample_sparse_softmax_cross_entropy(labels, logits, factor, *, ignore_label=None, label_smoothing=0.0,
                                          data_format="NHWC", out=None, return_stats=False,
                                          stream=None):
    """Per-pixel softmax cross-entropy [N, H*f, W*f] of the upsampled logits; labels outside
    [0, C) (other than ignore_label) give NaN. label_smoothing s: the target is
    (1 - s) onehot(label) + s / C. With return_stats=True, (loss, stats): stats
    [N, H*f, W*f, 2] float64 holds each pixel's largest score and sum of exp(score - largest),
    which `upsample_sparse_softmax_cross_entropy_grad(..., stats=stats)` takes instead of
    computing them again; out is then the (loss, stats) pair."""
    v, shape, args = _head(logits, factor, data_format)
    lv, narrow = _labels(labels, shape)
    loss_out, stats_out = (out if out is not None else (None, None)) if return_stats else (out, None)
    loss = _output(loss_out, v, "out", shape, v.dtype)
    stats = _output(stats_out, v, "stats", (*shape, 2), "float64") if return_stats else None
    _run("UpsampleSoftmaxCrossEntropy", args(ignore_label, label_smoothing, narrow), [v, lv, loss, stats],
         _stream(v, stream))
    return (loss.array, stats.array) if return_stats else loss.array


@_on_given_stream
def upsample_sparse_softmax_cross_entropy_grad(labels, logits, loss_grad, factor, *, stats=None,
                                               ignore_label=None, label_smoothing=0.0, data_format="NHWC",
                                               out=None, stream=None):
    """Gradient of the loss map to the coarse logits (in `data_format`), given its gradient, and
    the forward's `stats` (return_stats=True) when kept: without them they are computed first."""
    v, shape, args = _head(logits, factor, data_format)
    lv, narrow = _labels(labels, shape)
    gv = _view(loss_grad, "loss_grad")
    _same_dtype(gv, v)
    if gv.shape != tuple(shape):
        raise ValueError(f"loss_grad must have shape {list(shape)}, got {list(gv.shape)}")
    nchw = data_format == "NCHW"
    if nchw and out is not None:
        raise ValueError("out= is for NHWC logits (an NCHW gradient is a transposed copy)")
    st = _stream(v, stream)
    if stats is None:
        sv = _output(None, v, "stats", (*shape, 2), "float64")
        _run("UpsampleSoftmaxCrossEntropy", args(ignore_label, label_smoothing, narrow), [v, lv, None, sv], st)
    else:
        sv = _output(stats, v, "stats", (*shape, 2), "float64")
    grad = _output(None if nchw else out, v, "out", v.shape, v.dtype)
    _run("UpsampleSoftmaxCrossEntropyGrad", args(ignore_label, label_smoothing, narrow), [v, lv, sv, gv, grad], st)
    if not nchw:
        return grad.array
    return _permuted(grad.array, (0, 3, 1, 2))
