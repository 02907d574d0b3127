// The kernels, listed once. TFUP_KERNELS(X, T) calls X(Name, (parameters), (arguments)) for
// each, its parameters written over the element type T. From this list come the CPU declarations
// (kernels.h: each takes a ParallelFor after these parameters), each instruction-set build's
// declarations and explicit instantiations and the run-time dispatch (dispatch.h, isa.cc), and
// the TF op kernels' per-device calls (tf/backends.h). The CUDA op table (cuda/launch.cuh) uses
// the same names and takes the pointers in the same order. docs/DESIGN.md, "Adding an op".
//
// NHWC or NCHW per g.layout unless an entry says otherwise; raw pointers, sizes from g. Filters
// are [ky, kx, C] (the [kh, kw, C, 1] tensor, multiplier dropped).
#pragma once

#define TFUP_KERNELS(X, T)                                                                  \
  /* Depthwise transposed convolution, and its gradients to the input and to the filter. */ \
  X(DepthwiseForward, (const Geometry& g, const T* input, const T* filter, T* output),      \
    (g, input, filter, output))                                                             \
  X(DepthwiseBackpropInput,                                                                 \
    (const Geometry& g, const T* output_grad, const T* filter, T* input_grad),              \
    (g, output_grad, filter, input_grad))                                                   \
  X(DepthwiseBackpropFilter,                                                                \
    (const Geometry& g, const T* input, const T* output_grad, T* filter_grad),              \
    (g, input, output_grad, filter_grad))                                                   \
  /* Bilinear upsample (g: stride = factor, k = BilinearKernelSize(factor), SAME); the      \
     kernel is computed on the fly, no filter tensor exists. */                             \
  X(BilinearForward, (const Geometry& g, const T* input, T* output), (g, input, output))    \
  X(BilinearBackpropInput, (const Geometry& g, const T* output_grad, T* input_grad),        \
    (g, output_grad, input_grad))                                                           \
  /* Bilinear resize in tf.image.resize's semantics (g.resize the convention; g.y, g.x: n_in \
     and n_out): a float output computed in float, as TF's CPU kernel; its input gradient.   \
     */                                                                                     \
  X(ResizeBilinear, (const Geometry& g, const T* input, float* output), (g, input, output)) \
  X(ResizeBilinearBackpropInput, (const Geometry& g, const float* output_grad, T* input_grad), \
    (g, output_grad, input_grad))                                                           \
  /* Fused heads in the resize's semantics (g.resize; NHWC logits; maps [n, out_h, out_w]):     \
     the argmax and the softmax cross-entropy of ResizeBilinear's float output, as the       \
     heads below of the transposed convolution's. */                                        \
  X(ResizeArgmax, (const Geometry& g, const T* logits, int64_t* labels, float* scores),    \
    (g, logits, labels, scores))                                                            \
  X(ResizeSoftmaxCrossEntropy,                                                              \
    (const Geometry& g, const T* logits, LabelMap labels, LabelRule rule,                \
     float* loss, double* stats),                                                           \
    (g, logits, labels, rule, loss, stats))                                               \
  X(ResizeSoftmaxCrossEntropyGrad,                                                          \
    (const Geometry& g, const T* logits, LabelMap labels, LabelRule rule,                \
     const double* stats, const float* loss_grad, T* logits_grad),                          \
    (g, logits, labels, rule, stats, loss_grad, logits_grad))                             \
  /* ResizeSoftmaxCrossEntropy, and where logits_grad is not null the gradient to the logits \
     for a loss gradient of 1 at every pixel, as UpsampleSoftmaxCrossEntropyWithGrad. */       \
  X(ResizeSoftmaxCrossEntropyWithGrad,                                                      \
    (const Geometry& g, const T* logits, LabelMap labels, LabelRule rule,                \
     float* loss, double* stats, T* logits_grad),                                           \
    (g, logits, labels, rule, loss, stats, logits_grad))                                  \
  /* Fused heads over NHWC logits [n, h, w, c] (g: the bilinear geometry); label and loss   \
     maps [n, h*f, w*f]; labels in [0, c) or the ignore label (the CPU caller checks).      \
     Argmax: ties to the lowest class; scores (may be null) the maximum, the bits           \
     BilinearForward writes. */                                                             \
  X(UpsampleArgmax, (const Geometry& g, const T* logits, int64_t* labels, T* scores),       \
    (g, logits, labels, scores))                                                            \
  /* loss = logsumexp(v) - v[label] per output pixel, 0 at the ignore label; stats        \
     [n, h*f, w*f, 2] the pixel's softmax statistics (max v, sum of exp(v - max)), 0 at the \
     ignore label. Either output may be null (the CUDA gradient asks for stats alone). */   \
  X(UpsampleSoftmaxCrossEntropy,                                                            \
    (const Geometry& g, const T* logits, LabelMap labels, LabelRule rule,                \
     T* loss, double* stats),                                                               \
    (g, logits, labels, rule, loss, stats))                                               \
  /* Its gradient to the logits, given the forward's stats and the loss map's gradient. */  \
  X(UpsampleSoftmaxCrossEntropyGrad,                                                        \
    (const Geometry& g, const T* logits, LabelMap labels, LabelRule rule,                \
     const double* stats, const T* loss_grad, T* logits_grad),                              \
    (g, logits, labels, rule, stats, loss_grad, logits_grad))                             \
  /* UpsampleSoftmaxCrossEntropy, and where logits_grad is not null the gradient to the      \
     logits for a loss gradient of 1 at every pixel (UpsampleSoftmaxCrossEntropyGrad's bits; \
     on the CPU for float logits past 64 classes (OneSweepClasses) in one sweep, each exp once;\
     stats may then be null on the CPU, never on the GPU). */                                \
  X(UpsampleSoftmaxCrossEntropyWithGrad,                                                    \
    (const Geometry& g, const T* logits, LabelMap labels, LabelRule rule,                \
     T* loss, double* stats, T* logits_grad),                                               \
    (g, logits, labels, rule, loss, stats, logits_grad))

#define TFUP_UNPAREN(...) __VA_ARGS__

// The CPU kernels: template <typename T> void Name(parameters, const ParallelFor& pf);
#define TFUP_DECLARE_KERNEL(Name, Params, Args) \
  template <typename T>                         \
  void Name(TFUP_UNPAREN Params, const ParallelFor& pf);
// Of one instruction-set build: NameImpl, the same parameters.
#define TFUP_DECLARE_KERNEL_IMPL(Name, Params, Args) \
  template <typename T>                              \
  void Name##Impl(TFUP_UNPAREN Params, const ParallelFor& pf);
// Explicit instantiations for the T the list was expanded with (deduced from the parameters).
#define TFUP_INSTANTIATE_KERNEL(Name, Params, Args) \
  template void Name(TFUP_UNPAREN Params, const ParallelFor& pf);
#define TFUP_INSTANTIATE_KERNEL_IMPL(Name, Params, Args) \
  template void Name##Impl(TFUP_UNPAREN Params, const ParallelFor& pf);
