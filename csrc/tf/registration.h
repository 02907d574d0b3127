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
// the driver cannot run what the toolkit compiled (cuda::CheckDriver). Read once.
inline const std::string& CudaStatus() {
#if GOOGLE_CUDA
  static const std::string status = cuda::CheckDriver();
#else
  static const std::string status;
#endif
  return status;
}

}  // namespace tfup
