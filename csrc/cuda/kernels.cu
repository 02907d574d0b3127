// The CUDA entry points: launch launch.cuh's sequences on the caller's stream.
#include <cuda_runtime.h>

#include "cuda/launch.cuh"

namespace tfup {
namespace cuda {
namespace {

template <class Fn>
__global__ void __launch_bounds__(256) Kernel(const Fn fn) {
  fn(Pos{static_cast<int64_t>(blockIdx.x), static_cast<int64_t>(gridDim.x),
         static_cast<int>(threadIdx.x), static_cast<int>(threadIdx.y),
         static_cast<int>(blockDim.x), static_cast<int>(blockDim.y)});
}

struct DeviceExec {
  cudaStream_t stream;
  template <class Fn>
  void operator()(const Shape& s, const Fn& fn) const {
    Kernel<Fn><<<dim3(static_cast<unsigned>(s.grid)), dim3(s.bx, s.by), 0, stream>>>(fn);
  }
};

std::string Status() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("CUDA error: ") + cudaGetErrorString(e);
}
DeviceExec On(void* stream) { return DeviceExec{static_cast<cudaStream_t>(stream)}; }

}  // namespace

std::string BilinearForward(const Geometry& g, DType t, const void* input, void* output,
                            void* stream) {
  RunBilinearForward(On(stream), g, t, input, output);
  return Status();
}
int64_t BilinearBackpropInputScratch(const Geometry& g, DType t) {
  return BilinearScratchBytes(g, t);
}
std::string BilinearBackpropInput(const Geometry& g, DType t, const void* output_grad,
                                  void* input_grad, void* scratch, void* stream) {
  RunBilinearBackpropInput(On(stream), g, t, output_grad, input_grad, scratch);
  return Status();
}
std::string DepthwiseForward(const Geometry& g, DType t, const void* input, const void* filter,
                             void* output, void* stream) {
  RunDepthwiseForward(On(stream), g, t, input, filter, output);
  return Status();
}
std::string DepthwiseBackpropInput(const Geometry& g, DType t, const void* output_grad,
                                   const void* filter, void* input_grad, void* stream) {
  RunDepthwiseBackpropInput(On(stream), g, t, output_grad, filter, input_grad);
  return Status();
}
int64_t DepthwiseBackpropFilterScratch(const Geometry& g, DType t) {
  return FilterScratchBytes(g, t);
}
std::string DepthwiseBackpropFilter(const Geometry& g, DType t, const void* input,
                                    const void* output_grad, void* filter_grad, void* scratch,
                                    void* stream) {
  RunDepthwiseBackpropFilter(On(stream), g, t, input, output_grad, filter_grad, scratch);
  return Status();
}
std::string UpsampleArgmax(const Geometry& g, DType t, const void* logits, int64_t* labels,
                           void* scores, void* stream) {
  RunUpsampleArgmax(On(stream), g, t, logits, labels, scores);
  return Status();
}
std::string UpsampleSoftmaxCrossEntropy(const Geometry& g, DType t, const void* logits,
                                        const int64_t* labels, IgnoreLabel ignore, void* loss,
                                        void* stream) {
  RunUpsampleCrossEntropy(On(stream), g, t, logits, labels, ignore, loss);
  return Status();
}
int64_t UpsampleSoftmaxCrossEntropyGradScratch(const Geometry& g, DType t) {
  return CrossEntropyScratchBytes(g, t);
}
std::string UpsampleSoftmaxCrossEntropyGrad(const Geometry& g, DType t, const void* logits,
                                            const int64_t* labels, IgnoreLabel ignore,
                                            const void* loss_grad, void* logits_grad,
                                            void* scratch, void* stream) {
  RunUpsampleCrossEntropyGrad(On(stream), g, t, logits, labels, ignore, loss_grad, logits_grad,
                              scratch);
  return Status();
}

}  // namespace cuda
}  // namespace tfup
