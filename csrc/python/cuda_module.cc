// pybind11 binding of the CUDA kernels over raw device pointers, for GPU arrays of any framework
// (tfupsample/cuda.py reads CuPy / torch arrays through __cuda_array_interface__ or DLPack and
// checks them; the sizes are checked again here). No TensorFlow.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/kernels.h"

namespace py = pybind11;

namespace tfup {
namespace {

void Ok(cudaError_t e) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(e));
}
void Ok(const std::string& err) {
  if (!err.empty()) throw std::runtime_error(err);
}

// Scratch from the stream-ordered allocator, freed in stream order after the kernels.
struct Scratch {
  void* p = nullptr;
  cudaStream_t s;
  Scratch(int64_t bytes, cudaStream_t stream) : s(stream) {
    Ok(cudaMallocAsync(&p, bytes > 0 ? bytes : 1, s));
  }
  ~Scratch() { cudaFreeAsync(p, s); }
};

// Runs op on the device that holds the first pointer, on `stream` (a cudaStream_t as an int).
void Run(const std::string& op, const std::vector<int64_t>& args, int dtype,
         const std::vector<uintptr_t>& ptrs, uintptr_t stream_handle) {
  if (args.size() != 14) throw std::invalid_argument("args must have 14 values");
  if (dtype < 0 || dtype > 3) throw std::invalid_argument("dtype must be 0..3");
  Geometry g;
  IgnoreLabel ignore;
  const std::string err = cuda::GeometryFromArgs(args.data(), &g, &ignore);
  if (!err.empty()) throw std::invalid_argument(err);
  std::vector<void*> p(4, nullptr);
  for (size_t i = 0; i < ptrs.size() && i < 4; ++i) p[i] = reinterpret_cast<void*>(ptrs[i]);
  const auto t = static_cast<cuda::DType>(dtype);
  auto* stream = reinterpret_cast<cudaStream_t>(stream_handle);

  py::gil_scoped_release release;
  int old = 0, device = 0;
  Ok(cudaGetDevice(&old));
  cudaPointerAttributes attr{};
  if (p[0] != nullptr && cudaPointerGetAttributes(&attr, p[0]) == cudaSuccess &&
      attr.type == cudaMemoryTypeDevice) {
    device = attr.device;
  } else {
    cudaGetLastError();
    device = old;
  }
  Ok(cudaSetDevice(device));
  struct Restore {
    int d;
    ~Restore() { cudaSetDevice(d); }
  } restore{old};

  if (op == "bilinear_forward") {
    Ok(cuda::BilinearForward(g, t, p[0], p[1], stream));
  } else if (op == "bilinear_backprop_input") {
    Scratch s(cuda::BilinearBackpropInputScratch(g, t), stream);
    Ok(cuda::BilinearBackpropInput(g, t, p[0], p[1], s.p, stream));
  } else if (op == "depthwise_forward") {
    Ok(cuda::DepthwiseForward(g, t, p[0], p[1], p[2], stream));
  } else if (op == "depthwise_backprop_input") {
    Ok(cuda::DepthwiseBackpropInput(g, t, p[0], p[1], p[2], stream));
  } else if (op == "depthwise_backprop_filter") {
    Scratch s(cuda::DepthwiseBackpropFilterScratch(g, t), stream);
    Ok(cuda::DepthwiseBackpropFilter(g, t, p[0], p[1], p[2], s.p, stream));
  } else if (op == "argmax") {
    Ok(cuda::UpsampleArgmax(g, t, p[0], static_cast<int64_t*>(p[1]), p[2], stream));
  } else if (op == "cross_entropy") {
    Ok(cuda::UpsampleSoftmaxCrossEntropy(g, t, p[0], static_cast<const int64_t*>(p[1]), ignore,
                                         p[2], stream));
  } else if (op == "cross_entropy_grad") {
    Scratch s(cuda::UpsampleSoftmaxCrossEntropyGradScratch(g, t), stream);
    Ok(cuda::UpsampleSoftmaxCrossEntropyGrad(g, t, p[0], static_cast<const int64_t*>(p[1]),
                                             ignore, p[2], p[3], s.p, stream));
  } else {
    throw std::invalid_argument("unknown op " + op);
  }
}

}  // namespace
}  // namespace tfup

PYBIND11_MODULE(_cuda_ext, m) {
  m.doc() = "tfupsample's CUDA kernels over raw device pointers (see tfupsample.cuda)";
  m.def("run", &tfup::Run, py::arg("op"), py::arg("args"), py::arg("dtype"), py::arg("pointers"),
        py::arg("stream"));
  m.def("device_count", [] {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
  });
}
