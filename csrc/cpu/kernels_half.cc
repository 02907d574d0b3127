// float16 and bfloat16 entry points (the kernels accumulate in float). Eigen's half types are
// the ones TF tensors hold, so the TF adapter passes its buffers straight through.
#include <Eigen/Core>

#include "cpu/dispatch.h"

namespace tfup {
TFUP_INSTANTIATE_CPU_KERNELS(Eigen::half)
TFUP_INSTANTIATE_CPU_KERNELS(Eigen::bfloat16)
}  // namespace tfup
