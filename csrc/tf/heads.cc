// The fused heads (NHWC logits; label / loss maps [N, out_h, out_w]): registrations and kernels.
// Each op's checks and plan are its HeadSpec (tf/specs.h). Python: tfupsample/heads.py.
#include "tf/backends.h"
#include "tf/shapes.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfup {

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

// The loss ops' gradient for a loss gradient of 1 at every pixel: the logits' shape, or [0]
// without with_grad (the kernels skip it).
static absl::Status SetLogitsGradShape(InferenceContext* c) {
  bool with_grad = false;
  TF_RETURN_IF_ERROR(c->GetAttr("with_grad", &with_grad));
  c->set_output(2, with_grad ? c->input(1) : c->Vector(0));
  return absl::OkStatus();
}

// The loss ops' label rule (LabelRule): the ignored label, if any, the label smoothing and the
// labels' type (int32 or int64, as tf.nn.sparse_softmax_cross_entropy_with_logits takes).
#define TFUP_LOSS_ATTRS                                                    \
  Attr("ignore_label: int = 0")                                            \
      .Attr("use_ignore_label: bool = false")                              \
      .Attr("label_smoothing: float = 0")                                  \
      .Attr("Tlabels: {int32, int64} = DT_INT64")

REGISTER_OP("TfupsampleUpsampleSparseSoftmaxCrossEntropy")
    .Input("labels: Tlabels")
    .Input("logits: T")
    .Output("loss: T")
    .Output("stats: float64")
    .Output("logits_grad: T")
    .Attr("factor: int")
    .TFUP_LOSS_ATTRS
    .Attr("with_grad: bool = false")
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle map, labels, stats;
      TF_RETURN_IF_ERROR(shapes::HeadMapShape(c, 1, &map));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &labels));
      TF_RETURN_IF_ERROR(c->Merge(map, labels, &map));
      TF_RETURN_IF_ERROR(c->Concatenate(map, c->Vector(2), &stats));
      c->set_output(0, map);
      c->set_output(1, stats);
      return SetLogitsGradShape(c);
    })
    .Doc("Per-pixel sparse softmax cross-entropy of the x`factor` bilinear upsample of NHWC "
         "logits, without the upsampled logits; 0 where labels == ignore_label. With "
         "label_smoothing s the target is (1 - s) onehot + s / classes. stats: each "
         "pixel's max score and sum of exp(score - max), for the gradient. with_grad: "
         "logits_grad is the gradient to the logits for a loss gradient of 1 at every pixel (on "
         "the CPU computed in the loss's sweep for float logits of more than 64 classes); without "
         "with_grad it is empty and not computed.");

REGISTER_OP("TfupsampleUpsampleSparseSoftmaxCrossEntropyGrad")
    .Input("labels: Tlabels")
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
    .Input("labels: Tlabels")
    .Input("logits: T")
    .Output("loss: float")
    .Output("stats: float64")
    .Output("logits_grad: T")
    .TFUP_LOSS_ATTRS
    .Attr("with_grad: bool = false")
    .TFUP_RESIZE_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle map, stats;
      TF_RETURN_IF_ERROR(ResizeMapShape(c, true, &map));
      TF_RETURN_IF_ERROR(c->Concatenate(map, c->Vector(2), &stats));
      c->set_output(0, map);
      c->set_output(1, stats);
      return SetLogitsGradShape(c);
    })
    .Doc("Per-pixel sparse softmax cross-entropy of ResizeBilinear(logits, labels' height and "
         "width), without the resized logits; 0 where labels == ignore_label. with_grad: "
         "logits_grad is the gradient to the logits for a loss gradient of 1 at every pixel "
         "(else it is empty and not computed).");

REGISTER_OP("TfupsampleResizeSparseSoftmaxCrossEntropyGrad")
    .Input("labels: Tlabels")
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

#define TFUP_REGISTER_HEADS(DEV, D, T, R)                                                               \
  R(Name("TfupsampleUpsampleArgmax").Device(DEV).TypeConstraint<T>("T"),                               \
    SpecOp<HeadSpec<Head::kArgmax, false>, D, T>)                                                        \
  R(Name("TfupsampleUpsampleSparseSoftmaxCrossEntropy").Device(DEV).TypeConstraint<T>("T"),            \
    SpecOp<HeadSpec<Head::kLoss, false>, D, T>)                                                          \
  R(Name("TfupsampleUpsampleSparseSoftmaxCrossEntropyGrad").Device(DEV).TypeConstraint<T>("T"),        \
    SpecOp<HeadSpec<Head::kLossGrad, false>, D, T>)                                                      \
  R(Name("TfupsampleResizeArgmax").Device(DEV).TypeConstraint<T>("T").HostMemory("size"),              \
    SpecOp<HeadSpec<Head::kArgmax, true>, D, T>)                                                         \
  R(Name("TfupsampleResizeSparseSoftmaxCrossEntropy").Device(DEV).TypeConstraint<T>("T"),              \
    SpecOp<HeadSpec<Head::kLoss, true>, D, T>)                                                           \
  R(Name("TfupsampleResizeSparseSoftmaxCrossEntropyGrad").Device(DEV).TypeConstraint<T>("T"),          \
    SpecOp<HeadSpec<Head::kLossGrad, true>, D, T>)

TFUP_REGISTER_ON_EVERY_DEVICE(TFUP_REGISTER_HEADS)

}  // namespace tfup
