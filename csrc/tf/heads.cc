// The fused heads (NHWC logits; labels / loss [N, H*f, W*f]): registrations, and the OpKernels,
// which check logits, labels and factor, then run the kernels. Python: tfupsample/heads.py.
#include "tf/backends.h"
#include "tf/shapes.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfup {
namespace {

// The loss forward's softmax statistics: (max, sum) per pixel of the map.
TensorShape StatsShape(TensorShape map) {
  map.AddDim(2);
  return map;
}

// The loss gradient's inputs from the forward: stats [map, 2] (its second output) and loss_grad
// [map].
absl::Status CheckStatsAndLossGrad(const Tensor& stats, const Tensor& loss_grad, const TensorShape& map) {
  const TensorShape stats_shape = StatsShape(map);
  if (stats.shape() != stats_shape) {
    return absl::InvalidArgumentError(absl::StrCat("stats must have shape ", stats_shape.DebugString(),
                                                   " (the forward's second output), got ",
                                                   stats.shape().DebugString()));
  }
  if (loss_grad.shape() != map) {
    return absl::InvalidArgumentError(absl::StrCat("loss_grad must have shape ", map.DebugString(),
                                                   ", got ", loss_grad.shape().DebugString()));
  }
  return absl::OkStatus();
}

// Each label in [0, classes) or the ignore label.
absl::Status CheckLabelValues(const Tensor& labels, int64_t classes, LabelRule rule) {
  const auto l = labels.flat<int64_t>();
  for (int64_t i = 0; i < l.size(); ++i) {
    if ((l(i) < 0 || l(i) >= classes) && !rule.Skips(l(i))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "labels must be in [0, ", classes, ")", rule.use ? " or the ignore_label" : "",
          ", got ", l(i), " at flat index ", i));
    }
  }
  return absl::OkStatus();
}

// The loss ops' ignore_label, use_ignore_label and label_smoothing attributes (the argmax has none).
absl::Status ReadLabelRule(OpKernelConstruction* ctx, LabelRule* rule) {
  if (!ctx->HasAttr("ignore_label")) return absl::OkStatus();
  TF_RETURN_IF_ERROR(ctx->GetAttr("ignore_label", &rule->value));
  TF_RETURN_IF_ERROR(ctx->GetAttr("use_ignore_label", &rule->use));
  float smoothing = 0;
  TF_RETURN_IF_ERROR(ctx->GetAttr("label_smoothing", &smoothing));
  rule->smoothing = smoothing;
  const std::string bad = CheckLabelSmoothing(smoothing);
  return bad.empty() ? absl::OkStatus() : absl::InvalidArgumentError(bad);
}

// The argmax ops' with_scores attribute and outputs: the labels, and the scores too with
// with_scores (else an empty tensor, and a null pointer for the kernel, which then skips them).
struct ArgmaxOutputs {
  bool with_scores = true;
  absl::Status Read(OpKernelConstruction* ctx) { return ctx->GetAttr("with_scores", &with_scores); }
  template <typename S>
  absl::Status Allocate(OpKernelContext* ctx, const TensorShape& map, int64_t** labels, S** scores) const {
    Tensor *l = nullptr, *s = nullptr;
    TF_RETURN_IF_ERROR(ctx->allocate_output(0, map, &l));
    TF_RETURN_IF_ERROR(ctx->allocate_output(1, with_scores ? map : TensorShape({0}), &s));
    *labels = l->flat<int64_t>().data();
    *scores = with_scores ? s->flat<S>().data() : nullptr;
    return absl::OkStatus();
  }
};

class HeadOp : public OpKernel {
 public:
  explicit HeadOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("factor", &factor_));
    OP_REQUIRES_OK(ctx, CheckFactor(factor_));
    OP_REQUIRES_OK(ctx, ReadLabelRule(ctx, &rule_));
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
    return values ? CheckLabelValues(labels, classes, rule_) : absl::OkStatus();
  }
  int64_t factor_ = 1;
  LabelRule rule_;
};

template <typename Device, typename T>
class UpsampleArgmaxOp : public HeadOp {
 public:
  explicit UpsampleArgmaxOp(OpKernelConstruction* ctx) : HeadOp(ctx) { OP_REQUIRES_OK(ctx, outputs_.Read(ctx)); }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& logits = ctx->input(0);
    Geometry g;
    TensorShape map;
    OP_REQUIRES_OK(ctx, Prepare(logits, &g, &map));
    OP_REQUIRES(ctx, g.c > 0 || map.num_elements() == 0,
                absl::InvalidArgumentError("logits must have at least one class"));
    int64_t* labels = nullptr;
    T* scores = nullptr;
    OP_REQUIRES_OK(ctx, outputs_.Allocate(ctx, map, &labels, &scores));
    if (map.num_elements() == 0) return;
    Backend<Device>::UpsampleArgmax(ctx, g, logits.flat<T>().data(), labels, scores);
  }

 private:
  ArgmaxOutputs outputs_;
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
    Tensor *loss = nullptr, *stats = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, map, &loss));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, StatsShape(map), &stats));
    if (map.num_elements() == 0) return;
    Backend<Device>::UpsampleSoftmaxCrossEntropy(ctx, g, logits.flat<T>().data(), labels.flat<int64_t>().data(),
                                  rule_, loss->flat<T>().data(), stats->flat<double>().data());
  }
};

template <typename Device, typename T>
class UpsampleCrossEntropyGradOp : public HeadOp {
 public:
  using HeadOp::HeadOp;
  void Compute(OpKernelContext* ctx) override {
    const Tensor &labels = ctx->input(0), &logits = ctx->input(1), &stats = ctx->input(2),
                 &loss_grad = ctx->input(3);
    Geometry g;
    TensorShape map;
    OP_REQUIRES_OK(ctx, Prepare(logits, &g, &map));
    OP_REQUIRES_OK(ctx, CheckLabels(labels, map, g.c, Backend<Device>::kChecksLabelValues));
    OP_REQUIRES_OK(ctx, CheckStatsAndLossGrad(stats, loss_grad, map));
    Tensor* grad = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, logits.shape(), &grad));
    if (grad->NumElements() == 0) return;
    Backend<Device>::UpsampleSoftmaxCrossEntropyGrad(ctx, g, logits.flat<T>().data(), labels.flat<int64_t>().data(),
                                      rule_, stats.flat<double>().data(), loss_grad.flat<T>().data(),
                                      grad->flat<T>().data());
  }
};

// The heads in the resize's semantics: the map's size is an input (the argmax's size) or the
// labels' shape (the loss); the conventions are ResizeBilinear's attributes.
class ResizeHeadOp : public OpKernel {
 public:
  explicit ResizeHeadOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadResizeMode(ctx, &mode_));
    OP_REQUIRES_OK(ctx, ReadLabelRule(ctx, &rule_));
  }

 protected:
  // Geometry of logits resized to out_h x out_w; the map's shape.
  absl::Status Prepare(const Tensor& logits, int64_t out_h, int64_t out_w, Geometry* g,
                       TensorShape* map) const {
    if (logits.dims() != 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          "logits must be 4-D [N, H, W, classes], got shape ", logits.shape().DebugString()));
    }
    const auto d = logits.shape().dim_sizes();
    const std::string err = MakeResizeGeometry(d[0], d[1], d[2], d[3], out_h, out_w, mode_, Layout::kNHWC, g);
    if (!err.empty()) return absl::InvalidArgumentError(absl::StrCat("logits / output size: ", err));
    const int64_t dims[] = {g->n, g->y.n_out, g->x.n_out};
    return TensorShape::BuildTensorShape(dims, map);
  }
  // The map's size from the labels [N, out_h, out_w], which must match the logits' batch.
  static absl::Status LabelsSize(const Tensor& labels, const Tensor& logits, int64_t* out_h, int64_t* out_w) {
    if (labels.dims() != 3 || (logits.dims() == 4 && labels.dim_size(0) != logits.dim_size(0))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "labels must be 3-D [N, height, width] with the logits' batch, got shape ",
          labels.shape().DebugString(), " for logits ", logits.shape().DebugString()));
    }
    *out_h = labels.dim_size(1);
    *out_w = labels.dim_size(2);
    return absl::OkStatus();
  }
  absl::Status CheckLabels(const Tensor& labels, int64_t classes, bool values) const {
    return values ? CheckLabelValues(labels, classes, rule_) : absl::OkStatus();
  }
  Resize mode_ = Resize::kHalfPixel;
  LabelRule rule_;
};

template <typename Device, typename T>
class ResizeArgmaxOp : public ResizeHeadOp {
 public:
  explicit ResizeArgmaxOp(OpKernelConstruction* ctx) : ResizeHeadOp(ctx) { OP_REQUIRES_OK(ctx, outputs_.Read(ctx)); }
  void Compute(OpKernelContext* ctx) override {
    const Tensor &logits = ctx->input(0), &size = ctx->input(1);
    OP_REQUIRES(ctx, size.dims() == 1 && size.NumElements() == 2,
                absl::InvalidArgumentError(absl::StrCat(
                    "size must be a 1-D tensor of 2 elements [height, width], got shape ",
                    size.shape().DebugString())));
    Geometry g;
    TensorShape map;
    OP_REQUIRES_OK(ctx, Prepare(logits, size.vec<int32_t>()(0), size.vec<int32_t>()(1), &g, &map));
    int64_t* labels = nullptr;
    float* scores = nullptr;
    OP_REQUIRES_OK(ctx, outputs_.Allocate(ctx, map, &labels, &scores));
    if (map.num_elements() == 0) return;
    Backend<Device>::ResizeArgmax(ctx, g, logits.flat<T>().data(), labels, scores);
  }

 private:
  ArgmaxOutputs outputs_;
};

template <typename Device, typename T>
class ResizeCrossEntropyOp : public ResizeHeadOp {
 public:
  using ResizeHeadOp::ResizeHeadOp;
  void Compute(OpKernelContext* ctx) override {
    const Tensor &labels = ctx->input(0), &logits = ctx->input(1);
    int64_t oh = 0, ow = 0;
    OP_REQUIRES_OK(ctx, LabelsSize(labels, logits, &oh, &ow));
    Geometry g;
    TensorShape map;
    OP_REQUIRES_OK(ctx, Prepare(logits, oh, ow, &g, &map));
    OP_REQUIRES_OK(ctx, CheckLabels(labels, g.c, Backend<Device>::kChecksLabelValues));
    Tensor *loss = nullptr, *stats = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, map, &loss));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, StatsShape(map), &stats));
    if (map.num_elements() == 0) return;
    Backend<Device>::ResizeSoftmaxCrossEntropy(ctx, g, logits.flat<T>().data(), labels.flat<int64_t>().data(),
                                               rule_, loss->flat<float>().data(), stats->flat<double>().data());
  }
};

template <typename Device, typename T>
class ResizeCrossEntropyGradOp : public ResizeHeadOp {
 public:
  using ResizeHeadOp::ResizeHeadOp;
  void Compute(OpKernelContext* ctx) override {
    const Tensor &labels = ctx->input(0), &logits = ctx->input(1), &stats = ctx->input(2),
                 &loss_grad = ctx->input(3);
    int64_t oh = 0, ow = 0;
    OP_REQUIRES_OK(ctx, LabelsSize(labels, logits, &oh, &ow));
    Geometry g;
    TensorShape map;
    OP_REQUIRES_OK(ctx, Prepare(logits, oh, ow, &g, &map));
    OP_REQUIRES_OK(ctx, CheckLabels(labels, g.c, Backend<Device>::kChecksLabelValues));
    OP_REQUIRES_OK(ctx, CheckStatsAndLossGrad(stats, loss_grad, map));
    Tensor* grad = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, logits.shape(), &grad));
    if (grad->NumElements() == 0) return;
    Backend<Device>::ResizeSoftmaxCrossEntropyGrad(ctx, g, logits.flat<T>().data(), labels.flat<int64_t>().data(),
                                                   rule_, stats.flat<double>().data(),
                                                   loss_grad.flat<float>().data(), grad->flat<T>().data());
  }
};

}  // namespace

// ---- Registrations.
using shapes::InferenceContext;
using shapes::ShapeHandle;

// The argmax ops' scores: the map's shape, or [0] without with_scores (the kernels skip them).
static absl::Status SetScoresShape(InferenceContext* c, ShapeHandle map) {
  bool with_scores = true;
  TF_RETURN_IF_ERROR(c->GetAttr("with_scores", &with_scores));
  c->set_output(1, with_scores ? map : c->Vector(0));
  return absl::OkStatus();
}

REGISTER_OP("TfupsampleUpsampleArgmax")
    .Input("logits: T")
    .Output("labels: int64")
    .Output("scores: T")
    .Attr("factor: int")
    .Attr("with_scores: bool = true")
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle map;
      TF_RETURN_IF_ERROR(shapes::HeadMapShape(c, 0, &map));
      c->set_output(0, map);
      return SetScoresShape(c, map);
    })
    .Doc("argmax over classes of the x`factor` bilinear upsample of NHWC logits, and that "
         "maximum (with_scores; else scores is empty and not computed), without the upsampled "
         "logits.");

// The loss ops' label rule (LabelRule): the ignored label, if any, and the label smoothing.
#define TFUP_LOSS_ATTRS                                                    \
  Attr("ignore_label: int = 0")                                            \
      .Attr("use_ignore_label: bool = false")                              \
      .Attr("label_smoothing: float = 0")

REGISTER_OP("TfupsampleUpsampleSparseSoftmaxCrossEntropy")
    .Input("labels: int64")
    .Input("logits: T")
    .Output("loss: T")
    .Output("stats: float64")
    .Attr("factor: int")
    .TFUP_LOSS_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle map, labels, stats;
      TF_RETURN_IF_ERROR(shapes::HeadMapShape(c, 1, &map));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &labels));
      TF_RETURN_IF_ERROR(c->Merge(map, labels, &map));
      TF_RETURN_IF_ERROR(c->Concatenate(map, c->Vector(2), &stats));
      c->set_output(0, map);
      c->set_output(1, stats);
      return absl::OkStatus();
    })
    .Doc("Per-pixel sparse softmax cross-entropy of the x`factor` bilinear upsample of NHWC "
         "logits, without the upsampled logits; 0 where labels == ignore_label. With "
         "label_smoothing s the target is (1 - s) onehot + s / classes. stats: each "
         "pixel's max score and sum of exp(score - max), for the gradient.");

REGISTER_OP("TfupsampleUpsampleSparseSoftmaxCrossEntropyGrad")
    .Input("labels: int64")
    .Input("logits: T")
    .Input("stats: float64")
    .Input("loss_grad: T")
    .Output("logits_grad: T")
    .Attr("factor: int")
    .TFUP_LOSS_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    });

// The resize-semantics heads: the map's height and width from size (argmax) or labels (loss).
static absl::Status ResizeMapShape(InferenceContext* c, bool from_labels, ShapeHandle* map) {
  ShapeHandle logits;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(from_labels ? 1 : 0), 4, &logits));
  if (from_labels) {
    ShapeHandle labels;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &labels));
    shapes::DimensionHandle batch;
    TF_RETURN_IF_ERROR(c->Merge(c->Dim(labels, 0), c->Dim(logits, 0), &batch));
    return c->ReplaceDim(labels, 0, batch, map);
  }
  ShapeHandle hw;
  TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(1, &hw));
  *map = c->MakeShape({c->Dim(logits, 0), c->Dim(hw, 0), c->Dim(hw, 1)});
  return absl::OkStatus();
}

#define TFUP_RESIZE_ATTRS Attr("align_corners: bool = false").Attr("half_pixel_centers: bool = false")

REGISTER_OP("TfupsampleResizeArgmax")
    .Input("logits: T")
    .Input("size: int32")
    .Output("labels: int64")
    .Output("scores: float")
    .TFUP_RESIZE_ATTRS
    .Attr("with_scores: bool = true")
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle map;
      TF_RETURN_IF_ERROR(ResizeMapShape(c, false, &map));
      c->set_output(0, map);
      return SetScoresShape(c, map);
    })
    .Doc("argmax over classes of ResizeBilinear(logits, size), and that maximum (with_scores; "
         "else scores is empty and not computed), without the resized logits.");

REGISTER_OP("TfupsampleResizeSparseSoftmaxCrossEntropy")
    .Input("labels: int64")
    .Input("logits: T")
    .Output("loss: float")
    .Output("stats: float64")
    .TFUP_LOSS_ATTRS
    .TFUP_RESIZE_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle map, stats;
      TF_RETURN_IF_ERROR(ResizeMapShape(c, true, &map));
      TF_RETURN_IF_ERROR(c->Concatenate(map, c->Vector(2), &stats));
      c->set_output(0, map);
      c->set_output(1, stats);
      return absl::OkStatus();
    })
    .Doc("Per-pixel sparse softmax cross-entropy of ResizeBilinear(logits, labels' height and "
         "width), without the resized logits; 0 where labels == ignore_label.");

REGISTER_OP("TfupsampleResizeSparseSoftmaxCrossEntropyGrad")
    .Input("labels: int64")
    .Input("logits: T")
    .Input("stats: float64")
    .Input("loss_grad: float")
    .Output("logits_grad: T")
    .TFUP_LOSS_ATTRS
    .TFUP_RESIZE_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    });

#define TFUP_REGISTER_HEADS(DEV, D, T)                                                             \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleUpsampleArgmax").Device(DEV).TypeConstraint<T>("T"),                         \
      UpsampleArgmaxOp<D, T>);                                                                     \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleUpsampleSparseSoftmaxCrossEntropy").Device(DEV).TypeConstraint<T>("T"),      \
      UpsampleCrossEntropyOp<D, T>);                                                               \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleUpsampleSparseSoftmaxCrossEntropyGrad").Device(DEV).TypeConstraint<T>("T"),  \
      UpsampleCrossEntropyGradOp<D, T>);                                                           \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleResizeArgmax").Device(DEV).TypeConstraint<T>("T").HostMemory("size"),        \
      ResizeArgmaxOp<D, T>);                                                                       \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleResizeSparseSoftmaxCrossEntropy").Device(DEV).TypeConstraint<T>("T"),        \
      ResizeCrossEntropyOp<D, T>);                                                                 \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleResizeSparseSoftmaxCrossEntropyGrad").Device(DEV).TypeConstraint<T>("T"),    \
      ResizeCrossEntropyGradOp<D, T>);

TFUP_REGISTER_ON_EVERY_DEVICE(TFUP_REGISTER_HEADS)

}  // namespace tfup
