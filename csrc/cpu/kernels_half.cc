// float16 and bfloat16 instantiations (accumulate in float). Eigen's half types are the ones TF
// tensors hold, so the TF adapter can pass its buffers straight through.
#include <Eigen/Core>

#include "cpu/kernels_impl.h"

namespace tfup {
TFUP_INSTANTIATE_CPU_KERNELS(Eigen::half)
TFUP_INSTANTIATE_CPU_KERNELS(Eigen::bfloat16)
}  // namespace tfup
