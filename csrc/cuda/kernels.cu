// The CUDA entry points: launch launch.cuh's sequences on the caller's stream.
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdlib>
#include <string>

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

// The driver's CUDA version (1000 * major + 10 * minor), from the driver library itself (not
// through a CUDA runtime, which in the TF op library is TF's, and may be missing); 0 without one.
// TFUPSAMPLE_CUDA_DRIVER_VERSION stands in for it (the tests' old driver).
int DriverVersion() {
  if (const char* fake = std::getenv("TFUPSAMPLE_CUDA_DRIVER_VERSION")) return std::atoi(fake);
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) return 0;
  using GetVersion = int (*)(int*);
  const auto get = reinterpret_cast<GetVersion>(dlsym(lib, "cuDriverGetVersion"));
  int version = 0;
  if (get == nullptr || get(&version) != 0) version = 0;
  return version;  // (the library stays loaded: the kernels will need it)
}

namespace {
std::string DriverVerdict() {
  const int driver = DriverVersion();
  if (driver == 0) return "";  // no driver: no GPU either
  const int toolkit = CUDART_VERSION;  // the toolkit that compiled the kernels
  if (driver / 1000 >= toolkit / 1000) return "";  // same major or newer: SASS runs (minor-version compatibility)
  const auto version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  return "the NVIDIA driver supports CUDA " + version(driver) + " but tfupsample's CUDA kernels were compiled by the "
         "CUDA " + version(toolkit) + " toolkit, which needs a driver for CUDA " + std::to_string(toolkit / 1000) +
         ".x or newer" + (toolkit / 1000 >= 13 ? " (R580 or newer)" : "") + ". Update the driver, or rebuild "
         "tfupsample with a CUDA " + std::to_string(driver / 1000) + " toolkit (CUDACXX=/path/to/nvcc pip install "
         "--force-reinstall --no-deps <tfupsample source>)";
}
}  // namespace

std::string CheckDriver() {
  static const std::string verdict = DriverVerdict();  // asked once: the GPU ops, XLA:GPU and its handlers
  return verdict;
}

}  // namespace cuda
}  // namespace tfup
