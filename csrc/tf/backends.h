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

// What the OpKernels (kernels.cc, heads.cc) use of TensorFlow.
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

using CPUDevice = Eigen::ThreadPoolDevice;

template <typename Device> struct Backend;

// One static member template per kernel of csrc/cpu/kernel_list.h, with its parameters after the
// context: Backend<Device>::BilinearForward<T>(ctx, g, input, output), and so on.
template <>
struct Backend<CPUDevice> {
  static constexpr bool kChecksLabelValues = true;  // labels are in host memory

#define TFUP_CPU_BACKEND(Name, Params, Args)                                              \
  template <typename T>                                                                   \
  static void Name(tensorflow::OpKernelContext* ctx, TFUP_UNPAREN Params) {               \
    RunGuarded(ctx, #Name, [&] { tfup::Name<T>(TFUP_UNPAREN Args, CpuRunner(ctx)); });   \
  }
  TFUP_KERNELS(TFUP_CPU_BACKEND, T)
#undef TFUP_CPU_BACKEND
};

#if GOOGLE_CUDA
using GPUDevice = Eigen::GpuDevice;

// The arguments of a kernel call as the CUDA op table takes them: the arrays in order, the
// geometry and the ignore label apart.
struct CudaCall {
  const Geometry* g = nullptr;
  LabelRule rule;
  void* p[5] = {};
  int n = 0;
  void Add(const Geometry& geometry) { g = &geometry; }
  void Add(LabelRule label) { rule = label; }
  template <typename P>
  void Add(P* pointer) { p[n++] = const_cast<void*>(static_cast<const void*>(pointer)); }
  template <typename... A>
  explicit CudaCall(const A&... args) { (Add(args), ...); }
};

template <typename T> cuda::DType DTypeOf();
template <> inline cuda::DType DTypeOf<Eigen::half>() { return cuda::DType::kHalf; }
template <> inline cuda::DType DTypeOf<Eigen::bfloat16>() { return cuda::DType::kBFloat16; }
template <> inline cuda::DType DTypeOf<float>() { return cuda::DType::kFloat; }
template <> inline cuda::DType DTypeOf<double>() { return cuda::DType::kDouble; }

template <>
struct Backend<GPUDevice> {
  // Labels live on the device: out-of-range ones give NaN (as TF's GPU softmax cross-entropy).
  static constexpr bool kChecksLabelValues = false;

  // Launches op on the context's stream, with its scratch from TF's allocator (freed when the
  // op's step no longer needs it; stream order keeps that safe).
  template <typename T>
  static void Run(tensorflow::OpKernelContext* ctx, const char* op, const CudaCall& call) {
    const cuda::DType t = DTypeOf<T>();
    const int64_t bytes = cuda::OpScratchBytes(op, *call.g, t);
    tensorflow::Tensor holder;
    void* scratch = nullptr;
    if (bytes > 0) {
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT8, tensorflow::TensorShape({bytes}), &holder));
      scratch = holder.data();
    }
    const std::string err = cuda::RunOp(op, *call.g, t, call.rule, call.p, scratch,
                                        ctx->eigen_device<GPUDevice>().stream());
    if (!err.empty()) ctx->SetStatus(absl::InternalError(err));
  }

#define TFUP_GPU_BACKEND(Name, Params, Args)                                 \
  template <typename T>                                                      \
  static void Name(tensorflow::OpKernelContext* ctx, TFUP_UNPAREN Params) {  \
    Run<T>(ctx, #Name, CudaCall(TFUP_UNPAREN Args));                         \
  }
  TFUP_KERNELS(TFUP_GPU_BACKEND, T)
#undef TFUP_GPU_BACKEND
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
