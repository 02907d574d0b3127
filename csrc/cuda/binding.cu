// A C ABI over the CUDA kernels, for GPU arrays of any framework: tfupsample/cuda.py loads it with
// ctypes (so it needs neither Python headers nor TF, and one build serves every Python), reads
// CuPy / torch arrays through __cuda_array_interface__ or DLPack and checks them; the sizes are
// checked again here.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "cuda/kernels.h"

namespace tfup {
namespace cuda {
namespace {

enum Result { kOk = 0, kInvalidArgument = 1, kCudaError = 2 };

// Scratch from the stream-ordered allocator, freed in stream order after the kernels: only for
// callers that bring none (tfupsample/cuda.py gives torch and CuPy arrays theirs from the
// framework's allocator).
struct Scratch {
  void* p = nullptr;
  cudaStream_t s;
  cudaError_t status = cudaSuccess;
  bool owned = false;
  Scratch(int64_t bytes, cudaStream_t stream, void* given) : p(given), s(stream) {
    if (given != nullptr || bytes <= 0) return;
    status = cudaMallocAsync(&p, bytes, s);
    owned = status == cudaSuccess;
  }
  ~Scratch() {
    if (owned) cudaFreeAsync(p, s);
  }
};

// Where each array is (CheckDevices' codes), and the device to run on: "" or why not (a CUDA
// error other than "not CUDA's memory" says so as such, in *cuda_error).
std::string LocateArrays(void* const* p, int n, int* device, bool* cuda_error) {
  *cuda_error = false;
  if (n < 0 || n > 8) return "an op takes 0 to 8 arrays, got " + std::to_string(n);
  int types[8] = {}, devices[8] = {}, managed = -1;
  for (int k = 0; k < n; ++k) {
    cudaPointerAttributes attr{};
    if (p[k] == nullptr) {
      types[k] = -1;
      continue;
    }
    const cudaError_t e = cudaPointerGetAttributes(&attr, p[k]);
    if (e == cudaErrorInvalidValue) {  // not memory CUDA knows
      cudaGetLastError();
      types[k] = 0;
      continue;
    }
    if (e != cudaSuccess) {  // no device, an old driver, a context already broken, ...
      cudaGetLastError();
      *cuda_error = true;
      return std::string("CUDA error: ") + cudaGetErrorString(e);
    }
    types[k] = attr.type == cudaMemoryTypeDevice ? 2 : attr.type == cudaMemoryTypeManaged ? 3
             : attr.type == cudaMemoryTypeHost ? 1 : 0;
    devices[k] = attr.device;
    if (types[k] == 3 && managed < 0) managed = attr.device;
  }
  std::string bad = CheckDevices(types, devices, n, device);
  if (bad.empty() && *device < 0) {  // no device memory: the managed arrays' GPU, else the current one
    *device = managed;
    if (*device < 0) cudaGetDevice(device);
  }
  return bad;
}

// Runs op with its scratch (given, or from the stream-ordered allocator); *known is false for
// no such op.
std::string Dispatch(const char* op, const Geometry& g, DType t, LabelRule rule, void* const* p,
                     cudaStream_t stream, void* scratch, bool* known) {
  const int64_t bytes = OpScratchBytes(op, g, t);
  *known = bytes >= 0;
  if (!*known) return std::string("unknown op ") + op;
  Scratch s(bytes, stream, scratch);
  if (s.status != cudaSuccess) return std::string("CUDA error: ") + cudaGetErrorString(s.status);
  return RunOp(op, g, t, rule, p, s.p, stream);
}

}  // namespace
}  // namespace cuda
}  // namespace tfup

namespace {

// Parses op's arguments; "" or why they are bad.
std::string ParseArgs(const char* op, const int64_t* args, int dtype, tfup::Geometry* g, tfup::LabelRule* rule) {
  if (dtype < 0 || dtype > 3) return "dtype must be 0..3";
  std::string bad = tfup::cuda::GeometryFromArgs(args, g, rule);
  if (bad.empty()) bad = tfup::cuda::CheckOpGeometry(op, *g);
  return bad;
}

}  // namespace

// The device scratch op needs (bytes), or -1 for no such op or bad arguments (tfupsample/cuda.py
// allocates it from the array's framework).
extern "C" int64_t tfupsample_cuda_scratch_bytes(const char* op, const int64_t* args, int dtype) {
  tfup::Geometry g;
  tfup::LabelRule rule;
  if (!ParseArgs(op, args, dtype, &g, &rule).empty()) return -1;
  return tfup::cuda::OpScratchBytes(op, g, static_cast<tfup::cuda::DType>(dtype));
}

// Runs op (a name of csrc/cpu/kernel_list.h; tfupsample/cuda.py) on the device holding its arrays
// (the n pointers, null for an absent one; all on one device), on stream. args: the kArgCount
// values of GeometryFromArgs; dtype: 0 float16, 1 bfloat16, 2 float32, 3 float64. scratch: at least
// tfupsample_cuda_scratch_bytes of device memory, 256-byte aligned, or null (then from the
// stream-ordered allocator).
// Returns 0, or 1 (bad arguments) / 2 (CUDA error) with the reason in error.
extern "C" int tfupsample_cuda_run(const char* op, const int64_t* args, int dtype, void* const* pointers,
                                   int n, uintptr_t stream, void* scratch, size_t scratch_size,
                                   char* error, size_t error_size) {
  using namespace tfup;
  using namespace tfup::cuda;
  auto fail = [&](int code, const std::string& why) {
    if (error_size > 0) {
      std::strncpy(error, why.c_str(), error_size - 1);
      error[error_size - 1] = '\0';
    }
    return code;
  };
  Geometry g;
  LabelRule rule;
  const std::string bad = ParseArgs(op, args, dtype, &g, &rule);
  if (!bad.empty()) return fail(kInvalidArgument, bad);
  const int64_t bytes = OpScratchBytes(op, g, static_cast<DType>(dtype));
  if (scratch != nullptr && bytes > 0 && scratch_size < static_cast<size_t>(bytes)) {
    return fail(kInvalidArgument, "scratch must hold " + std::to_string(bytes) + " bytes, got " +
                                      std::to_string(scratch_size));
  }
  if (scratch != nullptr && bytes > 0 && reinterpret_cast<uintptr_t>(scratch) % 256 != 0) {
    return fail(kInvalidArgument, "scratch must be 256-byte aligned (the kernels' tables are read 16 bytes at a time)");
  }
  int device = 0;
  bool cuda_error = false;
  const std::string where = LocateArrays(pointers, n, &device, &cuda_error);
  if (!where.empty()) return fail(cuda_error ? kCudaError : kInvalidArgument, where);
  int old = 0;
  cudaGetDevice(&old);
  const cudaError_t set = cudaSetDevice(device);
  if (set != cudaSuccess) return fail(kCudaError, std::string("CUDA error: ") + cudaGetErrorString(set));
  bool known = true;
  const std::string err = Dispatch(op, g, static_cast<DType>(dtype), rule, pointers,
                                   reinterpret_cast<cudaStream_t>(stream), scratch, &known);
  cudaSetDevice(old);
  if (!known) return fail(kInvalidArgument, err);
  return err.empty() ? kOk : fail(kCudaError, err);
}

extern "C" int tfupsample_cuda_device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

// geometry.h's rules, for tfupsample/cuda.py (which sizes the outputs it allocates with them).
extern "C" int64_t tfupsample_cuda_bilinear_kernel_size(int64_t factor) {
  return tfup::BilinearKernelSize(factor);
}
extern "C" int64_t tfupsample_cuda_default_output_size(int64_t n, int64_t k, int64_t s, int valid) {
  return tfup::DefaultOutputSize(n, k, s, valid ? tfup::Padding::kValid : tfup::Padding::kSame);
}
