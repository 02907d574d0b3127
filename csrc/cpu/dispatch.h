// The public kernel entry points (kernels.h) pick, at run time, the build of the kernels for the
// best instruction set this CPU has. Included by the files that instantiate them per dtype.
#pragma once

#include "cpu/kernels.h"

namespace tfup {

// Entry points of one instruction-set build (defined in kernels_impl.h / heads_impl.h, built
// by isa.cc): template <typename T> void NameImpl(...) for every kernel of kernel_list.h.
namespace base { TFUP_KERNELS(TFUP_DECLARE_KERNEL_IMPL, T) }
namespace avx2 { TFUP_KERNELS(TFUP_DECLARE_KERNEL_IMPL, T) }
namespace avx512 { TFUP_KERNELS(TFUP_DECLARE_KERNEL_IMPL, T) }

// The build that runs on this CPU (kernels.cc): 0 baseline, 1 AVX2, 2 AVX-512.
int IsaLevel();

// Each public kernel calls its namesake in the build IsaLevel() picks.
#define TFUP_DEFINE_DISPATCH(Name, Params, Args)                       \
  template <typename T>                                                \
  void Name(TFUP_UNPAREN Params, const ParallelFor& pf) {              \
    switch (IsaLevel()) {                                              \
      case 2: return avx512::Name##Impl<T>(TFUP_UNPAREN Args, pf);     \
      case 1: return avx2::Name##Impl<T>(TFUP_UNPAREN Args, pf);       \
      default: return base::Name##Impl<T>(TFUP_UNPAREN Args, pf);      \
    }                                                                  \
  }
TFUP_KERNELS(TFUP_DEFINE_DISPATCH, T)
#undef TFUP_DEFINE_DISPATCH

// The public kernels for element type Type (kernels.cc, kernels_half.cc).
#define TFUP_INSTANTIATE_CPU_KERNELS(Type) TFUP_KERNELS(TFUP_INSTANTIATE_KERNEL, Type)

}  // namespace tfup
