// What an OpKernel does once its arguments are checked, per device: the CPU backend runs the
// kernels of csrc/cpu on TF's intra-op pool, the GPU backend (GOOGLE_CUDA builds only) launches
// csrc/cuda's on the op's stream with scratch from TF's allocator. The OpKernels are templates
// over these, so every check is written once for both devices.
#pragma once

#include "cpu/kernels.h"
#include "tf/runner.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#include "cuda/kernels.h"
#include "unsupported/Eigen/CXX11/Tensor"
#endif

namespace tfup {

using CPUDevice = Eigen::ThreadPoolDevice;

template <typename Device> struct Backend;

template <>
struct Backend<CPUDevice> {
  static constexpr bool kChecksLabelValues = true;  // labels are in host memory
  using Ctx = tensorflow::OpKernelContext;
  template <typename T>
  static void BilinearForward(Ctx* ctx, const Geometry& g, const T* in, T* out) {
    PreferHugePages(out, g.OutputElements() * static_cast<int64_t>(sizeof(T)));
    RunGuarded(ctx, "BilinearForward", [&] { tfup::BilinearForward<T>(g, in, out, CpuRunner(ctx)); });
  }
  template <typename T>
  static void BilinearBackpropInput(Ctx* ctx, const Geometry& g, const T* dy, T* dx) {
    RunGuarded(ctx, "BilinearBackpropInput", [&] { tfup::BilinearBackpropInput<T>(g, dy, dx, CpuRunner(ctx)); });
  }
  template <typename T>
  static void DepthwiseForward(Ctx* ctx, const Geometry& g, const T* in, const T* w, T* out) {
    PreferHugePages(out, g.OutputElements() * static_cast<int64_t>(sizeof(T)));
    RunGuarded(ctx, "DepthwiseForward", [&] { tfup::DepthwiseForward<T>(g, in, w, out, CpuRunner(ctx)); });
  }
  template <typename T>
  static void DepthwiseBackpropInput(Ctx* ctx, const Geometry& g, const T* dy, const T* w, T* dx) {
    RunGuarded(ctx, "DepthwiseBackpropInput", [&] { tfup::DepthwiseBackpropInput<T>(g, dy, w, dx, CpuRunner(ctx)); });
  }
  template <typename T>
  static void DepthwiseBackpropFilter(Ctx* ctx, const Geometry& g, const T* in, const T* dy, T* dw) {
    RunGuarded(ctx, "DepthwiseBackpropFilter", [&] { tfup::DepthwiseBackpropFilter<T>(g, in, dy, dw, CpuRunner(ctx)); });
  }
  template <typename T>
  static void Argmax(Ctx* ctx, const Geometry& g, const T* logits, int64_t* labels, T* scores) {
    RunGuarded(ctx, "UpsampleArgmax", [&] { UpsampleArgmax<T>(g, logits, labels, scores, CpuRunner(ctx)); });
  }
  template <typename T>
  static void CrossEntropy(Ctx* ctx, const Geometry& g, const T* logits, const int64_t* labels,
                           IgnoreLabel ignore, T* loss) {
    RunGuarded(ctx, "UpsampleSoftmaxCrossEntropy", [&] { UpsampleSoftmaxCrossEntropy<T>(g, logits, labels, ignore, loss, CpuRunner(ctx)); });
  }
  template <typename T>
  static void CrossEntropyGrad(Ctx* ctx, const Geometry& g, const T* logits, const int64_t* labels,
                               IgnoreLabel ignore, const T* loss_grad, T* grad) {
    RunGuarded(ctx, "UpsampleSoftmaxCrossEntropyGrad", [&] { UpsampleSoftmaxCrossEntropyGrad<T>(g, logits, labels, ignore, loss_grad, grad, CpuRunner(ctx)); });
  }
};

#if GOOGLE_CUDA
using GPUDevice = Eigen::GpuDevice;

template <typename T> cuda::DType DTypeOf();
template <> inline cuda::DType DTypeOf<Eigen::half>() { return cuda::DType::kHalf; }
template <> inline cuda::DType DTypeOf<Eigen::bfloat16>() { return cuda::DType::kBFloat16; }
template <> inline cuda::DType DTypeOf<float>() { return cuda::DType::kFloat; }
template <> inline cuda::DType DTypeOf<double>() { return cuda::DType::kDouble; }

template <>
struct Backend<GPUDevice> {
  // Labels live on the device: out-of-range ones give NaN (as TF's GPU softmax cross-entropy).
  static constexpr bool kChecksLabelValues = false;
  using Ctx = tensorflow::OpKernelContext;

  static void* Stream(Ctx* ctx) { return ctx->eigen_device<GPUDevice>().stream(); }
  static void Check(Ctx* ctx, const std::string& err) {
    if (!err.empty()) ctx->SetStatus(absl::InternalError(err));
  }
  // Device scratch from TF's allocator, freed when the op's step no longer needs it (stream
  // order keeps that safe).
  static void* Scratch(Ctx* ctx, int64_t bytes, tensorflow::Tensor* holder) {
    const tensorflow::Status s =
        ctx->allocate_temp(tensorflow::DT_INT8, tensorflow::TensorShape({bytes > 0 ? bytes : 1}), holder);
    if (!s.ok()) {
      ctx->SetStatus(s);
      return nullptr;
    }
    return holder->data();
  }

  template <typename T>
  static void BilinearForward(Ctx* ctx, const Geometry& g, const T* in, T* out) {
    Check(ctx, cuda::BilinearForward(g, DTypeOf<T>(), in, out, Stream(ctx)));
  }
  template <typename T>
  static void BilinearBackpropInput(Ctx* ctx, const Geometry& g, const T* dy, T* dx) {
    tensorflow::Tensor holder;
    void* s = Scratch(ctx, cuda::BilinearBackpropInputScratch(g, DTypeOf<T>()), &holder);
    if (s != nullptr) Check(ctx, cuda::BilinearBackpropInput(g, DTypeOf<T>(), dy, dx, s, Stream(ctx)));
  }
  template <typename T>
  static void DepthwiseForward(Ctx* ctx, const Geometry& g, const T* in, const T* w, T* out) {
    Check(ctx, cuda::DepthwiseForward(g, DTypeOf<T>(), in, w, out, Stream(ctx)));
  }
  template <typename T>
  static void DepthwiseBackpropInput(Ctx* ctx, const Geometry& g, const T* dy, const T* w, T* dx) {
    Check(ctx, cuda::DepthwiseBackpropInput(g, DTypeOf<T>(), dy, w, dx, Stream(ctx)));
  }
  template <typename T>
  static void DepthwiseBackpropFilter(Ctx* ctx, const Geometry& g, const T* in, const T* dy, T* dw) {
    tensorflow::Tensor holder;
    void* s = Scratch(ctx, cuda::DepthwiseBackpropFilterScratch(g, DTypeOf<T>()), &holder);
    if (s != nullptr) {
      Check(ctx, cuda::DepthwiseBackpropFilter(g, DTypeOf<T>(), in, dy, dw, s, Stream(ctx)));
    }
  }
  template <typename T>
  static void Argmax(Ctx* ctx, const Geometry& g, const T* logits, int64_t* labels, T* scores) {
    Check(ctx, cuda::UpsampleArgmax(g, DTypeOf<T>(), logits, labels, scores, Stream(ctx)));
  }
  template <typename T>
  static void CrossEntropy(Ctx* ctx, const Geometry& g, const T* logits, const int64_t* labels,
                           IgnoreLabel ignore, T* loss) {
    Check(ctx, cuda::UpsampleSoftmaxCrossEntropy(g, DTypeOf<T>(), logits, labels, ignore, loss,
                                                 Stream(ctx)));
  }
  template <typename T>
  static void CrossEntropyGrad(Ctx* ctx, const Geometry& g, const T* logits, const int64_t* labels,
                               IgnoreLabel ignore, const T* loss_grad, T* grad) {
    tensorflow::Tensor holder;
    void* s = Scratch(ctx, cuda::UpsampleSoftmaxCrossEntropyGradScratch(g, DTypeOf<T>()), &holder);
    if (s != nullptr) {
      Check(ctx, cuda::UpsampleSoftmaxCrossEntropyGrad(g, DTypeOf<T>(), logits, labels, ignore,
                                                       loss_grad, grad, s, Stream(ctx)));
    }
  }
};
#endif  // GOOGLE_CUDA

// Expands REG(DEVICE_NAME, Device, T) for every dtype on every device this build has.
#define TFUP_FOR_EACH_TYPE(REG, DEV, D) \
  REG(DEV, D, Eigen::half) REG(DEV, D, Eigen::bfloat16) REG(DEV, D, float) REG(DEV, D, double)
#if GOOGLE_CUDA
#define TFUP_REGISTER_ON_EVERY_DEVICE(REG)                    \
  TFUP_FOR_EACH_TYPE(REG, tensorflow::DEVICE_CPU, CPUDevice) \
  TFUP_FOR_EACH_TYPE(REG, tensorflow::DEVICE_GPU, GPUDevice)
#else
#define TFUP_REGISTER_ON_EVERY_DEVICE(REG) TFUP_FOR_EACH_TYPE(REG, tensorflow::DEVICE_CPU, CPUDevice)
#endif

}  // namespace tfup
