// The CUDA launch sequences of csrc/cuda run on the CPU (HostExec: every block and thread of the
// same grid, one after another), for tests on machines with nvcc and no GPU. Built by
// tests/test_cuda_host.py with nvcc as host code; called through ctypes.
#include <cstring>
#include <string>
#include <vector>

#include "cuda/launch.cuh"

namespace {
std::string last_error;
}

// dims: n, h, w, c, out_h, out_w, ky, kx, sy, sx, padding (0 SAME, 1 VALID), layout (0 NHWC,
// 1 NCHW), ignore.use, ignore.value. dtype: 0 half, 1 bfloat16, 2 float, 3 double.
extern "C" int tfup_emu_run(const char* op, const int64_t* d, int dtype, void* a, void* b, void* c,
                            void* e) {
  using namespace tfup;
  using namespace tfup::cuda;
  Geometry g;
  IgnoreLabel ignore;
  last_error = GeometryFromArgs(d, &g, &ignore);
  if (!last_error.empty()) return -1;
  const DType t = static_cast<DType>(dtype);
  const HostExec ex;
  const std::string name(op);
  std::vector<char> scratch;
  if (name == "bilinear_forward") {
    RunBilinearForward(ex, g, t, a, b);
  } else if (name == "bilinear_backprop_input") {
    scratch.resize(BilinearScratchBytes(g, t) + 8);
    RunBilinearBackpropInput(ex, g, t, a, b, scratch.data());
  } else if (name == "depthwise_forward") {
    RunDepthwiseForward(ex, g, t, a, b, c);
  } else if (name == "depthwise_backprop_input") {
    RunDepthwiseBackpropInput(ex, g, t, a, b, c);
  } else if (name == "depthwise_backprop_filter") {
    scratch.resize(FilterScratchBytes(g, t) + 8);
    RunDepthwiseBackpropFilter(ex, g, t, a, b, c, scratch.data());
  } else if (name == "argmax") {
    RunUpsampleArgmax(ex, g, t, a, static_cast<int64_t*>(b), c);
  } else if (name == "cross_entropy") {
    RunUpsampleCrossEntropy(ex, g, t, a, static_cast<const int64_t*>(b), ignore, c);
  } else if (name == "cross_entropy_grad") {
    scratch.resize(CrossEntropyScratchBytes(g, t) + 8);
    RunUpsampleCrossEntropyGrad(ex, g, t, a, static_cast<const int64_t*>(b), ignore, c, e,
                                scratch.data());
  } else {
    last_error = "unknown op " + name;
    return -1;
  }
  return 0;
}

extern "C" const char* tfup_emu_error() { return last_error.c_str(); }

// The divider against plain division, over the values given.
extern "C" int64_t tfup_emu_divide(int64_t n, int64_t d) {
  return tfup::cuda::Divider(d).Div(n);
}

// geometry.h's rules, as binding.cu exports them.
extern "C" int64_t tfup_emu_bilinear_kernel_size(int64_t factor) {
  return tfup::BilinearKernelSize(factor);
}
extern "C" int64_t tfup_emu_default_output_size(int64_t n, int64_t k, int64_t s, int valid) {
  return tfup::DefaultOutputSize(n, k, s, valid ? tfup::Padding::kValid : tfup::Padding::kSame);
}
