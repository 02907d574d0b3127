// One build of the CPU kernels for one instruction set. CMake compiles this file as tfup::base
// (any x86-64 / the host's baseline), tfup::avx2 (TFUP_ISA_AVX2: GCC's target pragma) and
// tfup::avx512 (TFUP_ISA_AVX512), with TFUP_HALF_TYPES choosing float/double or the Eigen half
// types.
// Every kernel symbol lives in its build's namespace, and the standard library is included
// before the pragma, so the AVX2 build never lends a function to the baseline one.
// Floating-point contraction is off in all (CMake), so every build gives the same bits.
#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu/kernels.h"
#ifdef TFUP_HALF_TYPES
#include <Eigen/Core>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>  // its functions carry their own target attributes
#endif

#if defined(TFUP_ISA_AVX512)
#if defined(__x86_64__) || defined(__i386__)
// AVX-512 (F, BW, VL, DQ) with 512-bit vectors preferred; it keeps the AVX2 build's intrinsics
// (TFUP_ISA_AVX2 is defined too), so float16 goes through F16C the same way.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,prefer-vector-width=512")
#endif
#define TFUP_ISA avx512
#elif defined(TFUP_ISA_AVX2)
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2,fma,f16c")  // F16C: float16 conversions; FMA: the softmax's exp (both on every AVX2 CPU)
#endif
#define TFUP_ISA avx2
#else
#define TFUP_ISA base
#endif

#include "cpu/kernels_impl.h"
#include "cpu/heads_impl.h"
#include "cpu/resize_impl.h"

// This build's NameImpl of every kernel of kernel_list.h, for each element type.
namespace tfup {
namespace TFUP_ISA {
#ifdef TFUP_HALF_TYPES
TFUP_KERNELS(TFUP_INSTANTIATE_KERNEL_IMPL, Eigen::half)
TFUP_KERNELS(TFUP_INSTANTIATE_KERNEL_IMPL, Eigen::bfloat16)
#else
TFUP_KERNELS(TFUP_INSTANTIATE_KERNEL_IMPL, float)
TFUP_KERNELS(TFUP_INSTANTIATE_KERNEL_IMPL, double)
#endif
}  // namespace TFUP_ISA
}  // namespace tfup
