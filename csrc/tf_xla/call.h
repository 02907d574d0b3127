// The contract between the XLA kernels (tf_xla/kernels.cc, which plan each op at compile time and
// emit a custom call) and the custom-call handlers (tf_xla/ffi.cc, which run the CPU kernels):
// the target names and how the plan travels as attributes. Plain C++: no TF or XLA types.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "cpu/invoke.h"

namespace tfup {
namespace xla_call {

// The custom-call target of a kernel: "tfupsample_BilinearForward", ...
inline std::string Target(Kernel k) { return std::string("tfupsample_") + KernelName(k); }

// Element types, as the attribute "dtype" numbers them.
enum class DType : int64_t { kHalf = 0, kBFloat16 = 1, kFloat = 2, kDouble = 3 };

// The attribute "geometry": a Geometry as 14 integers.
constexpr int kGeometryInts = 14;
inline void GeometryToInts(const Geometry& g, int64_t* v) {
  const int64_t all[kGeometryInts] = {g.n, g.c, g.y.n_in, g.y.n_out, g.y.stride, g.y.k, g.y.pad,
                                      g.x.n_in, g.x.n_out, g.x.stride, g.x.k, g.x.pad,
                                      static_cast<int64_t>(g.layout), static_cast<int64_t>(g.resize)};
  std::memcpy(v, all, sizeof(all));
}
inline Geometry GeometryFromInts(const int64_t* v) {
  Geometry g;
  g.n = v[0];
  g.c = v[1];
  g.y = Axis{v[2], v[3], v[4], v[5], v[6]};
  g.x = Axis{v[7], v[8], v[9], v[10], v[11]};
  g.layout = static_cast<Layout>(v[12]);
  g.resize = static_cast<Resize>(v[13]);
  return g;
}

// The attribute "rule": a LabelRule as 5 integers (use, value, the bits of the smoothing, narrow,
// uniform_grad).
constexpr int kRuleInts = 5;
inline void RuleToInts(const LabelRule& r, int64_t* v) {
  int64_t bits;
  std::memcpy(&bits, &r.smoothing, sizeof(bits));
  v[0] = r.use ? 1 : 0;
  v[1] = r.value;
  v[2] = bits;
  v[3] = r.narrow ? 1 : 0;
  v[4] = r.uniform_grad ? 1 : 0;
}
inline LabelRule RuleFromInts(const int64_t* v) {
  LabelRule r;
  r.use = v[0] != 0;
  r.value = v[1];
  std::memcpy(&r.smoothing, &v[2], sizeof(r.smoothing));
  r.narrow = v[3] != 0;
  r.uniform_grad = v[4] != 0;
  return r;
}

}  // namespace xla_call
}  // namespace tfup
