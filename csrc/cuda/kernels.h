// The CUDA kernels' entry points: raw device pointers, a Geometry, a dtype tag and the caller's
// stream (a cudaStream_t passed as void*, so that this header needs neither CUDA nor TF). Each
// returns "" or the CUDA error. Argument checking is the caller's (the TF op kernels, the Python
// binding): these trust the geometry.
#pragma once

#include <cstdint>
#include <string>

#include "geometry.h"

namespace tfup {
namespace cuda {

enum class DType { kHalf, kBFloat16, kFloat, kDouble };

std::string BilinearForward(const Geometry& g, DType t, const void* input, void* output,
                            void* stream);
// Scratch the input gradient needs (bytes, device memory, any alignment of 256).
int64_t BilinearBackpropInputScratch(const Geometry& g, DType t);
std::string BilinearBackpropInput(const Geometry& g, DType t, const void* output_grad,
                                  void* input_grad, void* scratch, void* stream);

// filter is [ky, kx, C] (the [kh, kw, C, 1] tensor).
std::string DepthwiseForward(const Geometry& g, DType t, const void* input, const void* filter,
                             void* output, void* stream);
std::string DepthwiseBackpropInput(const Geometry& g, DType t, const void* output_grad,
                                   const void* filter, void* input_grad, void* stream);
int64_t DepthwiseBackpropFilterScratch(const Geometry& g, DType t);
std::string DepthwiseBackpropFilter(const Geometry& g, DType t, const void* input,
                                    const void* output_grad, void* filter_grad, void* scratch,
                                    void* stream);

// Fused heads over NHWC logits (g: the bilinear geometry); label/loss maps [n, h*f, w*f].
std::string UpsampleArgmax(const Geometry& g, DType t, const void* logits, int64_t* labels,
                           void* scores, void* stream);
std::string UpsampleSoftmaxCrossEntropy(const Geometry& g, DType t, const void* logits,
                                        const int64_t* labels, IgnoreLabel ignore, void* loss,
                                        void* stream);
int64_t UpsampleSoftmaxCrossEntropyGradScratch(const Geometry& g, DType t);
std::string UpsampleSoftmaxCrossEntropyGrad(const Geometry& g, DType t, const void* logits,
                                            const int64_t* labels, IgnoreLabel ignore,
                                            const void* loss_grad, void* logits_grad,
                                            void* scratch, void* stream);

}  // namespace cuda
}  // namespace tfup
