// The exp of the fused softmax cross-entropy, one definition for the CPU and CUDA kernels (see
// docs/DESIGN.md, "Fused heads"), and the CPU loss forwards' log. float: Cephes' single-precision polynomial in fused
// multiply-adds, branch-free so the CPU loop over classes vectorises (a libm exp per element would
// not); within 2 ulp of the correctly rounded exp on [-87, 0], the only arguments it gets (scores
// minus their maximum), tested through the NumPy binding. NaN in, NaN out. double: the C
// library's exp.
#pragma once

#include <cmath>
#include <math.h>  // fmaf, on the host and in CUDA device code
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "geometry.h"

namespace tfup {

// The bits of a float as int32 and back (std::memcpy on the host, the intrinsics on a device).
template <typename To, typename From>
TFUP_HOST_DEVICE inline To BitCast(From v) {
  static_assert(sizeof(To) == sizeof(From), "same size");
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<To, int32_t>) {
    return __float_as_int(v);
  } else {
    return __int_as_float(v);
  }
#else
  To out;
  std::memcpy(&out, &v, sizeof(out));
  return out;
#endif
}

TFUP_HOST_DEVICE inline float SoftmaxExp(float x) {
  x = x < -87.0f ? -87.0f : x;  // exp underflows below; NaN stays NaN (the comparison is false)
  // n = round(x / ln 2) by adding and removing 1.5 * 2^23; the integer n is then also in the low
  // bits of t. No floor() and no float-to-int conversion: both would stop the loop vectorising.
  constexpr float kRound = 12582912.0f;  // bits 0x4B400000
  // Fused multiply-adds throughout: one rounding each, the same bits on every CPU build (hardware
  // FMA in the AVX2 / AVX-512 builds, the C library's exact fmaf in the baseline one) and on the
  // GPU. The loss rows' time is this function's chain of dependent operations (their loops keep
  // as many in flight as the CPU's schedulers hold), so it is kept short: t in one rounding, and
  // the polynomial in Estrin's form (three levels of fused multiply-adds, not Horner's five).
  const float t = fmaf(x, 1.44269504088896341f, kRound);
  const float n = t - kRound;
  // r = x - n ln 2 in two parts; n * 0.693359375 is exact, so the inner fmaf is x - n * 0.693359375
  // rounded once.
  const float r = fmaf(n, 2.12194440e-4f, fmaf(n, -0.693359375f, x));
  const float r2 = r * r;
  const float p01 = fmaf(1.9875691500e-4f, r, 1.3981999507e-3f);
  const float p23 = fmaf(8.3334519073e-3f, r, 4.1665795894e-2f);
  const float p45 = fmaf(1.6666665459e-1f, r, 5.0000001201e-1f);
  const float p = fmaf(fmaf(p01, r2, p23), r2, p45);
  const float e = fmaf(r2, p, r) + 1.0f;
  const int32_t bits = (BitCast<int32_t>(t) - 0x4B400000 + 127) * (1 << 23);  // 2^n
  const float scale = BitCast<float>(bits);
  return e * scale;
}
TFUP_HOST_DEVICE inline double SoftmaxExp(double x) { return exp(x); }

// The log of the CPU loss forwards, log(sum of a pixel's exps), float: Cephes' single-precision
// logf, branch-free so that the few-class loss rows' loop over their block of pixels vectorises
// (a libm log per pixel had taken a tenth of the few-class loss forward's time). Within 1 ulp of
// the correctly rounded log for every positive float (the loss gives it sums in [1, classes]),
// tested through the NumPy binding; log(0) = -inf, log(inf) = inf, a NaN x itself, NaN for
// negative x.
// Products and sums rounded separately (the kernels are compiled without contraction), so every
// CPU build gives the same bits. (The CUDA kernels take the device's logf.) double: the C
// library's log.
TFUP_HOST_DEVICE inline float SoftmaxLog(float x) {
  // A subnormal x scaled by 2^23 into the normal range first (its exponent corrected below).
  const bool tiny = x < 1.17549435e-38f;
  const float xn = tiny ? x * 8388608.0f : x;
  // xn = 2^e * m with m in [sqrt(1/2), sqrt(2)): e from the exponent bits, m from the mantissa's.
  const int32_t bits = BitCast<int32_t>(xn);
  int32_t e = ((bits >> 23) & 0xFF) - (tiny ? 127 + 23 : 127);
  float m = BitCast<float>((bits & 0x007FFFFF) | 0x3F800000);  // [1, 2)
  const bool high = m > 1.41421356f;
  m = high ? m * 0.5f : m;  // exact
  e = high ? e + 1 : e;
  const float f = m - 1.0f;  // exact
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  const float fe = static_cast<float>(e);
  y = y - 2.12194440e-4f * fe;  // ln 2 = 0.693359375 - 2.12194440e-4 (to float), the first exact
  y = y - 0.5f * z;
  const float r = (f + y) + 0.693359375f * fe;
  // x = inf: inf; 0: -inf; NaN: x itself (as the C library's log: a NaN sum's sign then reaches
  // the loss whatever order the compiler adds it in, the same bits in every build); negative: NaN.
  const float inf = BitCast<float>(int32_t{0x7F800000}), nan = BitCast<float>(int32_t{0x7FC00000});
  const float special = x == inf ? inf : (x == 0.0f ? -inf : (x != x ? x : nan));
  return x > 0.0f && x < inf ? r : special;
}
TFUP_HOST_DEVICE inline double SoftmaxLog(double x) { return log(x); }

}  // namespace tfup
