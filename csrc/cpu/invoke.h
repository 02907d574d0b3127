// The kernels of kernel_list.h by number, for callers that hold their arguments as an untyped
// list: the TF op kernels (one generic OpKernel per op, tf/specs.h) and the XLA custom-call
// handlers (tf_xla/ffi.cc). The pointers come in the order of the kernel's parameters; the label
// rule is passed apart. Plain C++: no TF types.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

#include "cpu/kernels.h"

namespace tfup {

#define TFUP_KERNEL_ENUM(Name, Params, Args) k##Name,
enum class Kernel : int { TFUP_KERNELS(TFUP_KERNEL_ENUM, T) kCount };
#undef TFUP_KERNEL_ENUM

// "BilinearForward", ... (the CUDA op table's names); "?" for a number out of range.
inline const char* KernelName(Kernel k) {
#define TFUP_KERNEL_NAME(Name, Params, Args) \
  if (k == Kernel::k##Name) return #Name;
  TFUP_KERNELS(TFUP_KERNEL_NAME, T)
#undef TFUP_KERNEL_NAME
  return "?";
}

namespace invoke_detail {
// What a kernel's parameter of type P gets: the geometry, the label rule, the ParallelFor, or
// the next pointer of the list.
struct Source {
  const Geometry& g;
  LabelRule rule;
  const ParallelFor& pf;
  void* const* p;
  int next = 0;
};
template <typename P>
P Pick(Source* s) {
  using Bare = std::remove_cv_t<std::remove_reference_t<P>>;
  if constexpr (std::is_same<Bare, Geometry>::value) {
    return s->g;
  } else if constexpr (std::is_same<Bare, LabelRule>::value) {
    return s->rule;
  } else if constexpr (std::is_same<Bare, ParallelFor>::value) {
    return s->pf;
  } else if constexpr (std::is_same<Bare, LabelMap>::value) {  // a pointer, of the rule's width
    return LabelMap{s->p[s->next++], s->rule.narrow};
  } else {
    static_assert(std::is_pointer<P>::value, "a kernel parameter of an unknown kind");
    return static_cast<P>(s->p[s->next++]);
  }
}
template <typename... P>
constexpr int CountPointers(void (*)(P...)) {
  return (0 + ... + (std::is_pointer<P>::value || std::is_same<P, LabelMap>::value ? 1 : 0));
}
template <typename... P>
void Call(void (*fn)(P...), Source s) {
  std::tuple<P...> args{Pick<P>(&s)...};  // braces: evaluated left to right
  std::apply(fn, args);
}
}  // namespace invoke_detail

// How many pointers kernel k takes (its inputs, then its outputs); -1 for no kernel.
template <typename T>
int KernelPointers(Kernel k) {
#define TFUP_KERNEL_COUNT(Name, Params, Args) \
  if (k == Kernel::k##Name) return invoke_detail::CountPointers(&Name<T>);
  TFUP_KERNELS(TFUP_KERNEL_COUNT, T)
#undef TFUP_KERNEL_COUNT
  return -1;
}

// Runs kernel k over element type T with pointers p (KernelPointers(k) of them).
template <typename T>
void InvokeKernel(Kernel k, const Geometry& g, LabelRule rule, void* const* p, const ParallelFor& pf) {
#define TFUP_KERNEL_CALL(Name, Params, Args) \
  if (k == Kernel::k##Name) return invoke_detail::Call(&Name<T>, {g, rule, pf, p});
  TFUP_KERNELS(TFUP_KERNEL_CALL, T)
#undef TFUP_KERNEL_CALL
  throw std::logic_error("no kernel number " + std::to_string(static_cast<int>(k)));
}

// "" or why labels[0, n) are not all in [0, classes) or the ignore label (the loss ops' check of
// values in host memory: the TF op kernel and the XLA handler give the same text).
inline std::string CheckLabelValues(LabelMap labels, int64_t n, int64_t classes, LabelRule rule) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t l = labels[i];
    if ((l < 0 || l >= classes) && !rule.Skips(l)) {
      return "labels must be in [0, " + std::to_string(classes) + ")" +
             (rule.use ? " or the ignore_label" : "") + ", got " + std::to_string(l) +
             " at flat index " + std::to_string(i);
    }
  }
  return "";
}

}  // namespace tfup
