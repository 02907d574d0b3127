// The public kernel entry points (kernels.h) pick, at run time, the build of the kernels for the
// best instruction set this CPU has. Included by the files that instantiate them per dtype.
#pragma once

#include "cpu/kernels.h"

namespace tfup {

// Entry points of one instruction-set build (defined in kernels_impl.h, built by isa.cc).
#define TFUP_DECLARE_ISA_ENTRY_POINTS                                                         \
  template <typename T>                                                                       \
  void DepthwiseForwardImpl(const Geometry&, const T*, const T*, T*, const ParallelFor&);    \
  template <typename T>                                                                       \
  void DepthwiseBackpropInputImpl(const Geometry&, const T*, const T*, T*,                    \
                                  const ParallelFor&);                                        \
  template <typename T>                                                                       \
  void DepthwiseBackpropFilterImpl(const Geometry&, const T*, const T*, T*,                   \
                                   const ParallelFor&);                                       \
  template <typename T>                                                                       \
  void BilinearForwardImpl(const Geometry&, const T*, T*, const ParallelFor&);                \
  template <typename T>                                                                       \
  void BilinearBackpropInputImpl(const Geometry&, const T*, T*, const ParallelFor&);          \
  template <typename T>                                                                       \
  void UpsampleArgmaxImpl(const Geometry&, const T*, int64_t*, T*, const ParallelFor&);       \
  template <typename T>                                                                       \
  void UpsampleSoftmaxCrossEntropyImpl(const Geometry&, const T*, const int64_t*, IgnoreLabel, \
                                       T*, const ParallelFor&);                               \
  template <typename T>                                                                       \
  void UpsampleSoftmaxCrossEntropyGradImpl(const Geometry&, const T*, const int64_t*,         \
                                           IgnoreLabel, const T*, T*, const ParallelFor&);

namespace base { TFUP_DECLARE_ISA_ENTRY_POINTS }
namespace avx2 { TFUP_DECLARE_ISA_ENTRY_POINTS }
namespace avx512 { TFUP_DECLARE_ISA_ENTRY_POINTS }

// The build that runs on this CPU (kernels.cc): 0 baseline, 1 AVX2, 2 AVX-512.
int IsaLevel();

#define TFUP_DISPATCH(fn, ...)                                                   \
  (IsaLevel() == 2   ? avx512::fn##Impl<T>(__VA_ARGS__)                          \
   : IsaLevel() == 1 ? avx2::fn##Impl<T>(__VA_ARGS__)                            \
                     : base::fn##Impl<T>(__VA_ARGS__))

template <typename T>
void DepthwiseForward(const Geometry& g, const T* input, const T* filter, T* output,
                      const ParallelFor& pf) {
  TFUP_DISPATCH(DepthwiseForward, g, input, filter, output, pf);
}
template <typename T>
void DepthwiseBackpropInput(const Geometry& g, const T* output_grad, const T* filter,
                            T* input_grad, const ParallelFor& pf) {
  TFUP_DISPATCH(DepthwiseBackpropInput, g, output_grad, filter, input_grad, pf);
}
template <typename T>
void DepthwiseBackpropFilter(const Geometry& g, const T* input, const T* output_grad,
                             T* filter_grad, const ParallelFor& pf) {
  TFUP_DISPATCH(DepthwiseBackpropFilter, g, input, output_grad, filter_grad, pf);
}
template <typename T>
void BilinearForward(const Geometry& g, const T* input, T* output, const ParallelFor& pf) {
  TFUP_DISPATCH(BilinearForward, g, input, output, pf);
}
template <typename T>
void BilinearBackpropInput(const Geometry& g, const T* output_grad, T* input_grad,
                           const ParallelFor& pf) {
  TFUP_DISPATCH(BilinearBackpropInput, g, output_grad, input_grad, pf);
}

template <typename T>
void UpsampleArgmax(const Geometry& g, const T* logits, int64_t* labels, T* scores,
                    const ParallelFor& pf) {
  TFUP_DISPATCH(UpsampleArgmax, g, logits, labels, scores, pf);
}
template <typename T>
void UpsampleSoftmaxCrossEntropy(const Geometry& g, const T* logits, const int64_t* labels,
                                 IgnoreLabel ignore, T* loss, const ParallelFor& pf) {
  TFUP_DISPATCH(UpsampleSoftmaxCrossEntropy, g, logits, labels, ignore, loss, pf);
}
template <typename T>
void UpsampleSoftmaxCrossEntropyGrad(const Geometry& g, const T* logits, const int64_t* labels,
                                     IgnoreLabel ignore, const T* loss_grad, T* logits_grad,
                                     const ParallelFor& pf) {
  TFUP_DISPATCH(UpsampleSoftmaxCrossEntropyGrad, g, logits, labels, ignore, loss_grad,
                logits_grad, pf);
}

#define TFUP_INSTANTIATE_CPU_KERNELS(T)                                                     \
  template void DepthwiseForward<T>(const Geometry&, const T*, const T*, T*,                \
                                    const ParallelFor&);                                    \
  template void DepthwiseBackpropInput<T>(const Geometry&, const T*, const T*, T*,          \
                                          const ParallelFor&);                              \
  template void DepthwiseBackpropFilter<T>(const Geometry&, const T*, const T*, T*,         \
                                           const ParallelFor&);                             \
  template void BilinearForward<T>(const Geometry&, const T*, T*, const ParallelFor&);      \
  template void BilinearBackpropInput<T>(const Geometry&, const T*, T*, const ParallelFor&);  \
  template void UpsampleArgmax<T>(const Geometry&, const T*, int64_t*, T*, const ParallelFor&); \
  template void UpsampleSoftmaxCrossEntropy<T>(const Geometry&, const T*, const int64_t*,      \
                                               IgnoreLabel, T*, const ParallelFor&);          \
  template void UpsampleSoftmaxCrossEntropyGrad<T>(const Geometry&, const T*, const int64_t*,  \
                                                   IgnoreLabel, const T*, T*, const ParallelFor&);

}  // namespace tfup
