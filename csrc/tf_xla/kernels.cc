// The ops under XLA (tf.function(jit_compile=True), Keras' jit_compile): one XlaOpKernel per op,
// generic over the op's Spec (tf/specs.h), which makes the same checks and plan as the TF op
// kernel from the static shapes and the compile-time-constant size inputs. The plan becomes a
// custom call to the kernel's typed-FFI handler (tf_xla/ffi.cc): the same CPU kernel runs inside
// the XLA program, on XLA's buffers and threads (XLA:CPU; XLA:GPU too in CUDA builds).
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "tf/registration.h"
#include "tf/specs.h"
#include "tf_xla/call.h"
#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/platform/logging.h"
#include "xla/hlo/builder/xla_builder.h"
#include "xla/service/hlo.pb.h"
#include "xla/shape_util.h"

namespace tfup {

std::string RegisterXlaHandlers();  // tf_xla/ffi.cc

namespace {

using ::tensorflow::DataType;
using ::tensorflow::XlaOpKernel;
using ::tensorflow::XlaOpKernelContext;

absl::StatusOr<xla_call::DType> CallType(DataType t) {
  switch (t) {
    case tensorflow::DT_HALF: return xla_call::DType::kHalf;
    case tensorflow::DT_BFLOAT16: return xla_call::DType::kBFloat16;
    case tensorflow::DT_FLOAT: return xla_call::DType::kFloat;
    case tensorflow::DT_DOUBLE: return xla_call::DType::kDouble;
    default: return absl::InvalidArgumentError(absl::StrCat("T must be a float type, got ", tensorflow::DataTypeString(t)));
  }
}

// The Spec's view at compile time: static shapes; size inputs as compile-time constants.
class XlaInputs : public PlanInputs {
 public:
  explicit XlaInputs(XlaOpKernelContext* ctx) : ctx_(ctx) {}
  TensorShape Shape(int i) const override {
    const absl::StatusOr<xla::Shape> s = ctx_->InputXlaShape(i);
    return s.ok() ? TensorShape(s->dimensions()) : TensorShape();
  }
  absl::StatusOr<Tensor> Host(int i) const override { return ctx_->ConstantInputTensor(i); }

 private:
  XlaOpKernelContext* ctx_;
};

// Whether input i is a compile-time constant with at least one element, all of them the same bits.
bool UniformConstant(XlaOpKernelContext* ctx, int i) {
  absl::StatusOr<Tensor> t = ctx->ConstantInputTensor(i);  // an error where it depends on the data
  if (!t.ok() || t->NumElements() == 0) return false;
  const absl::string_view bytes = t->tensor_data();
  const size_t element = tensorflow::DataTypeSize(t->dtype());
  if (element == 0 || bytes.size() % element != 0) return false;
  for (size_t at = element; at < bytes.size(); at += element) {
    if (bytes.compare(at, element, bytes.substr(0, element)) != 0) return false;
  }
  return true;
}

std::string IntArray(const int64_t* v, int n) {
  return absl::StrCat("array<i64: ", absl::StrJoin(v, v + n, ", "), ">");
}

template <class Spec>
class SpecXlaOp : public XlaOpKernel {
 public:
  explicit SpecXlaOp(OpKernelConstruction* ctx) : XlaOpKernel(ctx), spec_(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("T", &dtype_));
  }

  void Compile(XlaOpKernelContext* ctx) override {
    const int inputs = ctx->num_inputs();
    for (int i = 0; i < inputs; ++i) {
      absl::StatusOr<xla::Shape> s = ctx->InputXlaShape(i);
      OP_REQUIRES_OK(ctx, s.status());
      OP_REQUIRES(ctx, s->is_static(),
                  absl::UnimplementedError(absl::StrCat(
                      name(), ": input ", i, " has a dynamic shape, which tfupsample's XLA kernels do not take")));
    }
    Plan plan;
    OP_REQUIRES_OK(ctx, spec_.Make(XlaInputs(ctx), &plan));
    OP_REQUIRES(ctx, static_cast<int>(plan.args.size() + plan.outputs.size()) == KernelPointers<float>(plan.kernel),
                absl::InternalError(absl::StrCat(name(), ": the plan's buffers do not match kernel ",
                                                 KernelName(plan.kernel))));
    absl::StatusOr<xla_call::DType> dtype = CallType(dtype_);
    OP_REQUIRES_OK(ctx, dtype.status());

    std::vector<xla::XlaOp> operands;
    std::vector<xla::Shape> operand_shapes, result_shapes;
    std::vector<int64_t> sizes;
    for (int k = 0; k < static_cast<int>(plan.args.size()); ++k) {
      const int a = plan.args[k];
      absl::StatusOr<xla::Shape> s = ctx->InputXlaShape(a);
      OP_REQUIRES_OK(ctx, s.status());
      if (k == plan.loss_grad_arg && UniformConstant(ctx, a)) {
        // The loss map's gradient is one compile-time value everywhere (Keras' mean of the losses
        // without weights): its first element alone, read for every pixel (rule.uniform_grad).
        // The map itself, which XLA would materialise (and schedule early, beside the forward's
        // outputs), is then never built.
        const std::vector<int64_t> zeros(s->dimensions().size(), 0), ones(s->dimensions().size(), 1);
        operands.push_back(xla::Reshape(xla::Slice(ctx->Input(a), zeros, ones, ones), {1}));
        operand_shapes.push_back(xla::ShapeUtil::MakeShapeWithDescendingLayout(s->element_type(), {1}));
        sizes.push_back(1);
        plan.rule.uniform_grad = true;
        continue;
      }
      operands.push_back(ctx->Input(a));
      operand_shapes.push_back(xla::ShapeUtil::MakeShapeWithDescendingLayout(s->element_type(), s->dimensions()));
      sizes.push_back(xla::ShapeUtil::ElementsIn(*s));
    }
    for (int o = 0; o < static_cast<int>(plan.outputs.size()); ++o) {
      result_shapes.push_back(
          xla::ShapeUtil::MakeShapeWithDescendingLayout(ctx->output_xla_type(o), plan.outputs[o].dim_sizes()));
      sizes.push_back(plan.outputs[o].num_elements());
    }
    int64_t geometry[xla_call::kGeometryInts], rule[xla_call::kRuleInts];
    xla_call::GeometryToInts(plan.g, geometry);
    xla_call::RuleToInts(plan.rule, rule);
    const std::string attrs = absl::StrCat(
        "{dtype = ", static_cast<int64_t>(*dtype), " : i64, geometry = ", IntArray(geometry, xla_call::kGeometryInts),
        ", rule = ", IntArray(rule, xla_call::kRuleInts), ", sizes = ", IntArray(sizes.data(), sizes.size()),
        ", labels = ", plan.labels_arg, " : i64, absent = ", plan.absent_output, " : i64}");
    const bool tuple = result_shapes.size() > 1;
    const xla::Shape result = tuple ? xla::ShapeUtil::MakeTupleShape(result_shapes) : result_shapes[0];
    const xla::XlaOp call = xla::CustomCallWithLayout(
        ctx->builder(), xla_call::Target(plan.kernel), operands, result, operand_shapes, attrs,
        /*has_side_effect=*/false, /*output_operand_aliasing=*/{}, /*literal=*/nullptr,
        xla::CustomCallSchedule::SCHEDULE_NONE, xla::CustomCallApiVersion::API_VERSION_TYPED_FFI);
    for (int o = 0; o < static_cast<int>(result_shapes.size()); ++o) {
      ctx->SetOutput(o, tuple ? xla::GetTupleElement(call, o) : call);
    }
  }

 private:
  Spec spec_;
  DataType dtype_ = tensorflow::DT_FLOAT;
};

const DataType kFloatTypes[] = {tensorflow::DT_HALF, tensorflow::DT_BFLOAT16, tensorflow::DT_FLOAT,
                                tensorflow::DT_DOUBLE};

// The handlers, registered with XLA when the library loads: "" or what failed.
const std::string& HandlerStatus() {
  static const std::string failed = RegisterXlaHandlers();
  return failed;
}
const bool kHandlers = [] {
  if (!HandlerStatus().empty()) LOG(ERROR) << "tfupsample: XLA custom-call handlers not registered: " << HandlerStatus();
  return HandlerStatus().empty();
}();

}  // namespace

// For tfupsample/api.py (ctypes): "" when every handler is registered, else what failed; where it
// is not "", tfupsample lowers to stock ops under XLA instead of emitting calls nothing would run.
extern "C" __attribute__((visibility("default"))) const char* tfupsample_xla_status() {
  return HandlerStatus().c_str();
}

// Each op twice: with XLA's op registry (which records its compile-time-constant inputs and
// makes the kernel at the process's first XLA compilation) and directly as a kernel on each XLA
// compilation device, so that a library loaded after that first compilation is seen too
// (priority 1: above the registry's own copy when both exist). XLA:GPU only in CUDA builds,
// which have the CUDA handlers (tf_xla/ffi.cc).
// XLA:GPU only in CUDA builds, and there only where the driver can run the CUDA kernels
// (tf/registration.h), as the GPU ops: both the registry's devices and the direct kernel.
const std::vector<absl::string_view>& XlaDevices() {
  static const std::vector<absl::string_view> devices = [] {
    std::vector<absl::string_view> d = {tensorflow::DEVICE_CPU_XLA_JIT};
#if GOOGLE_CUDA
    if (CudaStatus().empty()) d.push_back(tensorflow::DEVICE_GPU_XLA_JIT);
#endif
    return d;
  }();
  return devices;
}
#if GOOGLE_CUDA
#define TFUP_XLA_GPU_KERNEL(NAME, CLASS) \
  TFUP_AT_LOAD_IF_CUDA_RUNS(             \
      TFUP_KERNEL_NOW(Name(NAME).Device(tensorflow::DEVICE_GPU_XLA_JIT).TypeConstraint("T", kFloatTypes).Priority(1), CLASS))
#else
#define TFUP_XLA_GPU_KERNEL(NAME, CLASS)
#endif
#define TFUP_XLA_OP(NAME, CLASS, ...)                                                                      \
  REGISTER_XLA_OP(Name(NAME).Device(XlaDevices()).TypeConstraint("T", kFloatTypes) __VA_ARGS__, CLASS);   \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(tensorflow::DEVICE_CPU_XLA_JIT).TypeConstraint("T", kFloatTypes) \
                              .Priority(1), CLASS);                                                        \
  TFUP_XLA_GPU_KERNEL(NAME, CLASS)

using BilinearXla = SpecXlaOp<BilinearSpec<false>>;
using BilinearGradXla = SpecXlaOp<BilinearSpec<true>>;
using ResizeXla = SpecXlaOp<ResizeSpec<false>>;
using ResizeGradXla = SpecXlaOp<ResizeSpec<true>>;
using DepthwiseXla = SpecXlaOp<DepthwiseSpec<Mode::kForward>>;
using DepthwiseInputXla = SpecXlaOp<DepthwiseSpec<Mode::kBackpropInput>>;
using DepthwiseFilterXla = SpecXlaOp<DepthwiseSpec<Mode::kBackpropFilter>>;
using ArgmaxXla = SpecXlaOp<HeadSpec<Head::kArgmax, false>>;
using LossXla = SpecXlaOp<HeadSpec<Head::kLoss, false>>;
using LossGradXla = SpecXlaOp<HeadSpec<Head::kLossGrad, false>>;
using ResizeArgmaxXla = SpecXlaOp<HeadSpec<Head::kArgmax, true>>;
using ResizeLossXla = SpecXlaOp<HeadSpec<Head::kLoss, true>>;
using ResizeLossGradXla = SpecXlaOp<HeadSpec<Head::kLossGrad, true>>;

TFUP_XLA_OP("TfupsampleBilinearUpsample", BilinearXla)
TFUP_XLA_OP("TfupsampleBilinearUpsampleGrad", BilinearGradXla)
TFUP_XLA_OP("TfupsampleResizeBilinear", ResizeXla, .CompileTimeConstantInput("size"))
TFUP_XLA_OP("TfupsampleResizeBilinearGrad", ResizeGradXla, .CompileTimeConstantInput("input_size"))
TFUP_XLA_OP("TfupsampleDepthwiseConv2dTranspose", DepthwiseXla, .CompileTimeConstantInput("output_shape"))
TFUP_XLA_OP("TfupsampleDepthwiseConv2dTransposeBackpropInput", DepthwiseInputXla,
            .CompileTimeConstantInput("input_sizes"))
TFUP_XLA_OP("TfupsampleDepthwiseConv2dTransposeBackpropFilter", DepthwiseFilterXla,
            .CompileTimeConstantInput("filter_sizes"))
TFUP_XLA_OP("TfupsampleUpsampleArgmax", ArgmaxXla)
TFUP_XLA_OP("TfupsampleUpsampleSparseSoftmaxCrossEntropy", LossXla)
TFUP_XLA_OP("TfupsampleUpsampleSparseSoftmaxCrossEntropyGrad", LossGradXla)
TFUP_XLA_OP("TfupsampleResizeArgmax", ResizeArgmaxXla, .CompileTimeConstantInput("size"))
TFUP_XLA_OP("TfupsampleResizeSparseSoftmaxCrossEntropy", ResizeLossXla)
TFUP_XLA_OP("TfupsampleResizeSparseSoftmaxCrossEntropyGrad", ResizeLossGradXla)

}  // namespace tfup
