// Kernel registration that can wait for a run-time condition: the GPU kernels (the TF ops' and,
// in tf_xla, XLA:GPU's) register at load only where the driver can run what the toolkit
// compiled.
#pragma once

#include <string>

#include "tensorflow/core/framework/op_kernel.h"

#if GOOGLE_CUDA
#include "cuda/kernels.h"
#endif

namespace tfup {

// A kernel registration run when called (REGISTER_KERNEL_BUILDER's, as a statement): the GPU
// kernels register only where the driver can run them.
template <class K>
void RegisterKernelNow(::tensorflow::KernelDefBuilder& builder, const char* class_name) {
  ::tensorflow::kernel_factory::OpKernelRegistrar registrar(
      builder.Build(), class_name,
      [](::tensorflow::OpKernelConstruction* c) -> ::tensorflow::OpKernel* { return new K(c); });
  (void)registrar;
}
#define TFUP_KERNEL_STATIC(BUILDER, ...) REGISTER_KERNEL_BUILDER(BUILDER, __VA_ARGS__);
#define TFUP_KERNEL_NOW(BUILDER, ...) \
  ::tfup::RegisterKernelNow<__VA_ARGS__>(::tensorflow::register_kernel::BUILDER, #__VA_ARGS__);

// "" where the GPU kernels are registered (or there are none: no CUDA build), else why not:
// the driver cannot run what the toolkit compiled (cuda::CheckDriver).
inline std::string CudaStatus() {
#if GOOGLE_CUDA
  return cuda::CheckDriver();
#else
  return "";
#endif
}

#define TFUP_CONCAT_(a, b) a##b
#define TFUP_CONCAT(a, b) TFUP_CONCAT_(a, b)
// Runs the registration statements STATEMENTS at load where the GPU kernels can run.
#define TFUP_AT_LOAD_IF_CUDA_RUNS(STATEMENTS)                  \
  static const bool TFUP_CONCAT(tfup_gpu_kernels_, __LINE__) = [] { \
    if (!::tfup::CudaStatus().empty()) return false;           \
    STATEMENTS                                                 \
    return true;                                               \
  }();

}  // namespace tfup
