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

// Launches through cudaLaunchKernel, whose return value is this launch's own status: an error
// that another op left in the runtime's last-error slot is neither reported here nor cleared.
// After the first failed launch the rest of the sequence is skipped.
struct DeviceExec {
  cudaStream_t stream;
  cudaError_t* status;
  template <class Fn>
  void operator()(const Shape& s, const Fn& fn) const {
    if (*status != cudaSuccess) return;
    Fn arg = fn;
    void* args[] = {&arg};
    const cudaError_t e = cudaLaunchKernel(reinterpret_cast<const void*>(&Kernel<Fn>),
                                           dim3(static_cast<unsigned>(s.grid)), dim3(s.bx, s.by),
                                           args, 0, stream);
    if (e != cudaSuccess) {
      *status = e;
      cudaGetLastError();  // this launch's own error, reported above: leave the slot clean
    }
  }
};

// Runs one op's launch sequence; "" or the error of the launch that failed, naming the op.
template <class Sequence>
std::string Launch(const char* op, void* stream, Sequence&& sequence) {
  cudaError_t status = cudaSuccess;
  sequence(DeviceExec{static_cast<cudaStream_t>(stream), &status});
  if (status == cudaSuccess) return "";
  return std::string("CUDA error launching ") + op + ": " + cudaGetErrorString(status);
}

}  // namespace

std::string BilinearForward(const Geometry& g, DType t, const void* input, void* output,
                            void* stream) {
  return Launch("bilinear_forward", stream, [&](const DeviceExec& ex) {
    RunBilinearForward(ex, g, t, input, output);
  });
}
int64_t BilinearBackpropInputScratch(const Geometry& g, DType t) {
  return BilinearScratchBytes(g, t);
}
std::string BilinearBackpropInput(const Geometry& g, DType t, const void* output_grad,
                                  void* input_grad, void* scratch, void* stream) {
  return Launch("bilinear_backprop_input", stream, [&](const DeviceExec& ex) {
    RunBilinearBackpropInput(ex, g, t, output_grad, input_grad, scratch);
  });
}
std::string DepthwiseForward(const Geometry& g, DType t, const void* input, const void* filter,
                             void* output, void* stream) {
  return Launch("depthwise_forward", stream, [&](const DeviceExec& ex) {
    RunDepthwiseForward(ex, g, t, input, filter, output);
  });
}
std::string DepthwiseBackpropInput(const Geometry& g, DType t, const void* output_grad,
                                   const void* filter, void* input_grad, void* stream) {
  return Launch("depthwise_backprop_input", stream, [&](const DeviceExec& ex) {
    RunDepthwiseBackpropInput(ex, g, t, output_grad, filter, input_grad);
  });
}
int64_t DepthwiseBackpropFilterScratch(const Geometry& g, DType t) {
  return FilterScratchBytes(g, t);
}
std::string DepthwiseBackpropFilter(const Geometry& g, DType t, const void* input,
                                    const void* output_grad, void* filter_grad, void* scratch,
                                    void* stream) {
  return Launch("depthwise_backprop_filter", stream, [&](const DeviceExec& ex) {
    RunDepthwiseBackpropFilter(ex, g, t, input, output_grad, filter_grad, scratch);
  });
}
std::string UpsampleArgmax(const Geometry& g, DType t, const void* logits, int64_t* labels,
                           void* scores, void* stream) {
  return Launch("upsample_argmax", stream, [&](const DeviceExec& ex) {
    RunUpsampleArgmax(ex, g, t, logits, labels, scores);
  });
}
std::string UpsampleSoftmaxCrossEntropy(const Geometry& g, DType t, const void* logits,
                                        const int64_t* labels, IgnoreLabel ignore, void* loss,
                                        void* stream) {
  return Launch("upsample_cross_entropy", stream, [&](const DeviceExec& ex) {
    RunUpsampleCrossEntropy(ex, g, t, logits, labels, ignore, loss);
  });
}
int64_t UpsampleSoftmaxCrossEntropyGradScratch(const Geometry& g, DType t) {
  return CrossEntropyScratchBytes(g, t);
}
std::string UpsampleSoftmaxCrossEntropyGrad(const Geometry& g, DType t, const void* logits,
                                            const int64_t* labels, IgnoreLabel ignore,
                                            const void* loss_grad, void* logits_grad,
                                            void* scratch, void* stream) {
  return Launch("upsample_cross_entropy_grad", stream, [&](const DeviceExec& ex) {
    RunUpsampleCrossEntropyGrad(ex, g, t, logits, labels, ignore, loss_grad, logits_grad,
                              scratch);
  });
}

}  // namespace cuda
}  // namespace tfup
