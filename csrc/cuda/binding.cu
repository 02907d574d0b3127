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

// Scratch from the stream-ordered allocator, freed in stream order after the kernels.
struct Scratch {
  void* p = nullptr;
  cudaStream_t s;
  cudaError_t status;
  Scratch(int64_t bytes, cudaStream_t stream) : s(stream) {
    status = cudaMallocAsync(&p, bytes > 0 ? bytes : 1, s);
  }
  ~Scratch() {
    if (status == cudaSuccess) cudaFreeAsync(p, s);
  }
};

// The device that holds p (the current one for host or unknown pointers).
int DeviceOf(const void* p) {
  int current = 0;
  cudaGetDevice(&current);
  cudaPointerAttributes attr{};
  if (p != nullptr && cudaPointerGetAttributes(&attr, p) == cudaSuccess &&
      attr.type == cudaMemoryTypeDevice) {
    return attr.device;
  }
  cudaGetLastError();  // clear a failed query
  return current;
}

// Runs op with its scratch from the stream-ordered allocator; *known is false for no such op.
std::string Dispatch(const char* op, const Geometry& g, DType t, LabelRule rule,
                     void* const* p, cudaStream_t stream, bool* known) {
  const int64_t bytes = OpScratchBytes(op, g, t);
  *known = bytes >= 0;
  if (!*known) return std::string("unknown op ") + op;
  Scratch s(bytes, stream);
  if (s.status != cudaSuccess) return std::string("CUDA error: ") + cudaGetErrorString(s.status);
  return RunOp(op, g, t, rule, p, s.p, stream);
}

}  // namespace
}  // namespace cuda
}  // namespace tfup

// Runs op (a name of csrc/cpu/kernel_list.h; tfupsample/cuda.py) on the device holding pointers[0], on stream. args: the
// kArgCount values of GeometryFromArgs; dtype: 0 float16, 1 bfloat16, 2 float32, 3 float64. Returns 0, or
// 1 (bad arguments) / 2 (CUDA error) with the reason in error.
extern "C" int tfupsample_cuda_run(const char* op, const int64_t* args, int dtype,
                                   void* const* pointers, uintptr_t stream, char* error,
                                   size_t error_size) {
  using namespace tfup;
  using namespace tfup::cuda;
  auto fail = [&](int code, const std::string& why) {
    if (error_size > 0) {
      std::strncpy(error, why.c_str(), error_size - 1);
      error[error_size - 1] = '\0';
    }
    return code;
  };
  if (dtype < 0 || dtype > 3) return fail(kInvalidArgument, "dtype must be 0..3");
  Geometry g;
  LabelRule rule;
  std::string bad = GeometryFromArgs(args, &g, &rule);
  if (bad.empty()) bad = CheckOpGeometry(op, g);
  if (!bad.empty()) return fail(kInvalidArgument, bad);

  int old = 0;
  cudaGetDevice(&old);
  const cudaError_t set = cudaSetDevice(DeviceOf(pointers[0]));
  if (set != cudaSuccess) return fail(kCudaError, std::string("CUDA error: ") + cudaGetErrorString(set));
  bool known = true;
  const std::string err = Dispatch(op, g, static_cast<DType>(dtype), rule, pointers,
                                   reinterpret_cast<cudaStream_t>(stream), &known);
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
