// OpKernels of the fused heads: check logits, labels and factor, then run the kernels.
#include "tf/backends.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfup {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;


class HeadOp : public OpKernel {
 public:
  explicit HeadOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("factor", &factor_));
    OP_REQUIRES(ctx, factor_ >= 1,
                absl::InvalidArgumentError(absl::StrCat("factor must be a positive integer, got ", factor_)));
    if (ctx->HasAttr("ignore_label")) {
      OP_REQUIRES_OK(ctx, ctx->GetAttr("ignore_label", &ignore_.value));
      OP_REQUIRES_OK(ctx, ctx->GetAttr("use_ignore_label", &ignore_.use));
    }
  }

 protected:
  // Geometry of the logits; the label / loss map shape.
  absl::Status Prepare(const Tensor& logits, Geometry* g, TensorShape* map) const {
    if (logits.dims() != 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          "logits must be 4-D [N, H, W, classes], got shape ", logits.shape().DebugString()));
    }
    const auto d = logits.shape().dim_sizes();
    const std::string err = MakeBilinearGeometry(d[0], d[1], d[2], d[3], factor_, Layout::kNHWC, g);
    if (!err.empty()) return absl::InvalidArgumentError(err);
    const int64_t dims[] = {g->n, g->y.n_out, g->x.n_out};
    return TensorShape::BuildTensorShape(dims, map);
  }
  // Labels: the map's shape, each in [0, classes) or the ignore label.
  // (Values only where they are in host memory: on the GPU a bad label gives NaN, as in TF.)
  absl::Status CheckLabels(const Tensor& labels, const TensorShape& map, int64_t classes,
                           bool values) const {
    if (labels.shape() != map) {
      return absl::InvalidArgumentError(absl::StrCat("labels must have shape ", map.DebugString(),
                                                     " (the upsampled map), got ",
                                                     labels.shape().DebugString()));
    }
    if (!values) return absl::OkStatus();
    const auto l = labels.flat<int64_t>();
    for (int64_t i = 0; i < l.size(); ++i) {
      if ((l(i) < 0 || l(i) >= classes) && !ignore_.Skips(l(i))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "labels must be in [0, ", classes, ")", ignore_.use ? " or the ignore_label" : "",
            ", got ", l(i), " at flat index ", i));
      }
    }
    return absl::OkStatus();
  }
  int64_t factor_ = 1;
  IgnoreLabel ignore_;
};

template <typename Device, typename T>
class UpsampleArgmaxOp : public HeadOp {
 public:
  using HeadOp::HeadOp;
  void Compute(OpKernelContext* ctx) override {
    const Tensor& logits = ctx->input(0);
    Geometry g;
    TensorShape map;
    OP_REQUIRES_OK(ctx, Prepare(logits, &g, &map));
    OP_REQUIRES(ctx, g.c > 0 || map.num_elements() == 0,
                absl::InvalidArgumentError("logits must have at least one class"));
    Tensor *labels = nullptr, *scores = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, map, &labels));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, map, &scores));
    if (map.num_elements() == 0) return;
    Backend<Device>::Argmax(ctx, g, logits.flat<T>().data(), labels->flat<int64_t>().data(),
                            scores->flat<T>().data());
  }
};

template <typename Device, typename T>
class UpsampleCrossEntropyOp : public HeadOp {
 public:
  using HeadOp::HeadOp;
  void Compute(OpKernelContext* ctx) override {
    const Tensor &labels = ctx->input(0), &logits = ctx->input(1);
    Geometry g;
    TensorShape map;
    OP_REQUIRES_OK(ctx, Prepare(logits, &g, &map));
    OP_REQUIRES_OK(ctx, CheckLabels(labels, map, g.c, Backend<Device>::kChecksLabelValues));
    Tensor* loss = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, map, &loss));
    if (map.num_elements() == 0) return;
    Backend<Device>::CrossEntropy(ctx, g, logits.flat<T>().data(), labels.flat<int64_t>().data(),
                                  ignore_, loss->flat<T>().data());
  }
};

template <typename Device, typename T>
class UpsampleCrossEntropyGradOp : public HeadOp {
 public:
  using HeadOp::HeadOp;
  void Compute(OpKernelContext* ctx) override {
    const Tensor &labels = ctx->input(0), &logits = ctx->input(1), &loss_grad = ctx->input(2);
    Geometry g;
    TensorShape map;
    OP_REQUIRES_OK(ctx, Prepare(logits, &g, &map));
    OP_REQUIRES_OK(ctx, CheckLabels(labels, map, g.c, Backend<Device>::kChecksLabelValues));
    OP_REQUIRES(ctx, loss_grad.shape() == map,
                absl::InvalidArgumentError(absl::StrCat("loss_grad must have shape ", map.DebugString(),
                                                        ", got ", loss_grad.shape().DebugString())));
    Tensor* grad = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, logits.shape(), &grad));
    if (grad->NumElements() == 0) return;
    Backend<Device>::CrossEntropyGrad(ctx, g, logits.flat<T>().data(), labels.flat<int64_t>().data(),
                                      ignore_, loss_grad.flat<T>().data(), grad->flat<T>().data());
  }
};

}  // namespace

#define TFUP_REGISTER_HEADS(DEV, D, T)                                                             \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleUpsampleArgmax").Device(DEV).TypeConstraint<T>("T"),                         \
      UpsampleArgmaxOp<D, T>);                                                                     \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleUpsampleSparseSoftmaxCrossEntropy").Device(DEV).TypeConstraint<T>("T"),      \
      UpsampleCrossEntropyOp<D, T>);                                                               \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleUpsampleSparseSoftmaxCrossEntropyGrad").Device(DEV).TypeConstraint<T>("T"),  \
      UpsampleCrossEntropyGradOp<D, T>);

TFUP_REGISTER_ON_EVERY_DEVICE(TFUP_REGISTER_HEADS)

}  // namespace tfup
