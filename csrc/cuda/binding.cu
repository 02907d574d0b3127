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

std::string Dispatch(const std::string& op, const Geometry& g, DType t, IgnoreLabel ignore,
                     void* const* p, cudaStream_t stream, bool* known) {
  *known = true;
  if (op == "bilinear_forward") return BilinearForward(g, t, p[0], p[1], stream);
  if (op == "depthwise_forward") return DepthwiseForward(g, t, p[0], p[1], p[2], stream);
  if (op == "depthwise_backprop_input") return DepthwiseBackpropInput(g, t, p[0], p[1], p[2], stream);
  if (op == "argmax") return UpsampleArgmax(g, t, p[0], static_cast<int64_t*>(p[1]), p[2], stream);
  if (op == "cross_entropy") {
    return UpsampleSoftmaxCrossEntropy(g, t, p[0], static_cast<const int64_t*>(p[1]), ignore, p[2],
                                       stream);
  }
  // The ops with scratch.
  int64_t bytes = -1;
  if (op == "bilinear_backprop_input") bytes = BilinearBackpropInputScratch(g, t);
  if (op == "depthwise_backprop_filter") bytes = DepthwiseBackpropFilterScratch(g, t);
  if (op == "cross_entropy_grad") bytes = UpsampleSoftmaxCrossEntropyGradScratch(g, t);
  if (bytes < 0) {
    *known = false;
    return "unknown op " + op;
  }
  Scratch s(bytes, stream);
  if (s.status != cudaSuccess) return std::string("CUDA error: ") + cudaGetErrorString(s.status);
  if (op == "bilinear_backprop_input") return BilinearBackpropInput(g, t, p[0], p[1], s.p, stream);
  if (op == "depthwise_backprop_filter") {
    return DepthwiseBackpropFilter(g, t, p[0], p[1], p[2], s.p, stream);
  }
  return UpsampleSoftmaxCrossEntropyGrad(g, t, p[0], static_cast<const int64_t*>(p[1]), ignore,
                                         p[2], p[3], s.p, stream);
}

}  // namespace
}  // namespace cuda
}  // namespace tfup

// Runs op (see tfupsample/cuda.py) on the device holding pointers[0], on stream. args: the 14
// values of GeometryFromArgs; dtype: 0 float16, 1 bfloat16, 2 float32, 3 float64. Returns 0, or
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
  IgnoreLabel ignore;
  const std::string bad = GeometryFromArgs(args, &g, &ignore);
  if (!bad.empty()) return fail(kInvalidArgument, bad);

  int old = 0;
  cudaGetDevice(&old);
  const cudaError_t set = cudaSetDevice(DeviceOf(pointers[0]));
  if (set != cudaSuccess) return fail(kCudaError, std::string("CUDA error: ") + cudaGetErrorString(set));
  bool known = true;
  const std::string err = Dispatch(op, g, static_cast<DType>(dtype), ignore, pointers,
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
