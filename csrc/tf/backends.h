// What an OpKernel does once its arguments are checked, per device: the CPU backend runs the
// kernels of csrc/cpu on TF's intra-op pool, the GPU backend (GOOGLE_CUDA builds only) launches
// csrc/cuda's on the op's stream with scratch from TF's allocator. The OpKernels are templates
// over these, so every check is written once for both devices.
#pragma once

#include "cpu/kernels.h"
#include "tf/registration.h"
#include "tf/runner.h"
#include "tf/specs.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#include "cuda/kernels.h"
#include "unsupported/Eigen/CXX11/Tensor"
#endif

namespace tfup {

// What the OpKernels (kernels.cc, heads.cc) use of TensorFlow.
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

using CPUDevice = Eigen::ThreadPoolDevice;

template <typename Device> struct Backend;

// Backend<Device>::Run<T>(ctx, kernel, g, rule, pointers) runs one kernel of
// csrc/cpu/kernel_list.h, its pointers in the kernel's parameter order (cpu/invoke.h).
template <>
struct Backend<CPUDevice> {
  static constexpr bool kChecksLabelValues = true;  // labels are in host memory

  template <typename T>
  static void Run(OpKernelContext* ctx, Kernel k, const Geometry& g, LabelRule rule, void* const* p) {
    RunGuarded(ctx, KernelName(k), [&] { InvokeKernel<T>(k, g, rule, p, CpuRunner(ctx)); });
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

  // Launches the kernel on the context's stream, with its scratch from TF's allocator (freed
  // when the op's step no longer needs it; stream order keeps that safe).
  template <typename T>
  static void Run(OpKernelContext* ctx, Kernel k, const Geometry& g, LabelRule rule, void* const* p) {
    const char* op = KernelName(k);
    const cuda::DType t = DTypeOf<T>();
    const int64_t bytes = cuda::OpScratchBytes(op, g, t);
    tensorflow::Tensor holder;
    void* scratch = nullptr;
    if (bytes > 0) {
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT8, tensorflow::TensorShape({bytes}), &holder));
      scratch = holder.data();
    }
    const std::string err = cuda::RunOp(op, g, t, rule, p, scratch, ctx->eigen_device<GPUDevice>().stream());
    if (!err.empty()) ctx->SetStatus(absl::InternalError(err));
  }
};
#endif  // GOOGLE_CUDA

// An op's inputs as its Spec sees them (tf/specs.h), from the running op's tensors.
class TensorInputs : public PlanInputs {
 public:
  explicit TensorInputs(OpKernelContext* ctx) : ctx_(ctx) {}
  TensorShape Shape(int i) const override { return ctx_->input(i).shape(); }
  absl::StatusOr<Tensor> Host(int i) const override { return ctx_->input(i); }

 private:
  OpKernelContext* ctx_;
};

// The OpKernel of every op: its Spec checks the inputs and plans, then the outputs are allocated
// and the kernel runs (nothing to run when the first output is empty).
template <class Spec, typename Device, typename T>
class SpecOp : public OpKernel {
 public:
  explicit SpecOp(OpKernelConstruction* ctx) : OpKernel(ctx), spec_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Plan plan;
    OP_REQUIRES_OK(ctx, spec_.Make(TensorInputs(ctx), &plan));
    void* p[8] = {};
    int n = 0;
    for (int a : plan.args) p[n++] = const_cast<char*>(ctx->input(a).tensor_data().data());
    if (plan.labels_arg >= 0 && Backend<Device>::kChecksLabelValues) {
      const Tensor& labels = ctx->input(plan.args[plan.labels_arg]);
      const std::string bad = CheckLabelValues(LabelMap{labels.tensor_data().data(), plan.rule.narrow}, labels.NumElements(),
                                               plan.g.c, plan.rule);
      OP_REQUIRES(ctx, bad.empty(), absl::InvalidArgumentError(bad));
    }
    int64_t elements = 0;
    for (int o = 0; o < static_cast<int>(plan.outputs.size()); ++o) {
      Tensor* out = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(o, plan.outputs[o], &out));
      p[n++] = o == plan.absent_output ? nullptr : const_cast<char*>(out->tensor_data().data());
      if (o == 0) elements = out->NumElements();
    }
    if (elements == 0) return;
    Backend<Device>::template Run<T>(ctx, plan.kernel, plan.g, plan.rule, p);
  }

 private:
  Spec spec_;
};

// Expands REG(DEVICE_NAME, Device, T, R) for every dtype on every device this build has: static
// registrations on the CPU, and on the GPU registrations made at load where CudaStatus() is "".
#define TFUP_FOR_EACH_TYPE(REG, DEV, D, R) \
  REG(DEV, D, Eigen::half, R) REG(DEV, D, Eigen::bfloat16, R) REG(DEV, D, float, R) REG(DEV, D, double, R)
#if GOOGLE_CUDA
#define TFUP_REGISTER_ON_EVERY_DEVICE(REG)                                       \
  TFUP_FOR_EACH_TYPE(REG, tensorflow::DEVICE_CPU, CPUDevice, TFUP_KERNEL_STATIC) \
  TFUP_AT_LOAD_IF_CUDA_RUNS(TFUP_FOR_EACH_TYPE(REG, tensorflow::DEVICE_GPU, GPUDevice, TFUP_KERNEL_NOW))
#else
#define TFUP_REGISTER_ON_EVERY_DEVICE(REG) \
  TFUP_FOR_EACH_TYPE(REG, tensorflow::DEVICE_CPU, CPUDevice, TFUP_KERNEL_STATIC)
#endif

}  // namespace tfup
