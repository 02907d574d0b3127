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

int64_t OpScratchBytes(const char* op, const Geometry& g, DType t) {
  const Op<DeviceExec>* found = FindOp<DeviceExec>(op);
  return found == nullptr ? -1 : found->scratch_bytes(g, t);
}

std::string RunOp(const char* op, const Geometry& g, DType t, LabelRule rule,
                  void* const* pointers, void* scratch, void* stream) {
  const Op<DeviceExec>* found = FindOp<DeviceExec>(op);
  if (found == nullptr) return std::string("unknown op ") + op;
  return Launch(op, stream, [&](const DeviceExec& ex) {
    found->run(ex, OpCall{g, t, rule, pointers, scratch});
  });
}

}  // namespace cuda
}  // namespace tfup
