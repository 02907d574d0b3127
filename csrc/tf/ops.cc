// Op registrations and shape functions. Kernels live in kernels.cc; the Python wrappers and
// gradients in tfupsample/_ops.py.
#include "cpu/kernels.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfup {
namespace {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Positions of (height, width, channels) in a 4-D shape.
struct Dims {
  int h, w, c;
};
absl::StatusOr<Dims> LayoutDims(InferenceContext* c) {
  std::string fmt;
  TF_RETURN_IF_ERROR(c->GetAttr("data_format", &fmt));
  if (fmt == "NHWC") return Dims{1, 2, 3};
  return Dims{2, 3, 1};
}

// Bilinear: spatial dims scaled by factor (forward) or divided by it (gradient).
absl::Status BilinearShape(InferenceContext* c, bool grad) {
  ShapeHandle in;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &in));
  int64_t factor;
  TF_RETURN_IF_ERROR(c->GetAttr("factor", &factor));
  if (factor < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("factor must be a positive integer, got ", factor));
  }
  auto d = LayoutDims(c);
  TF_RETURN_IF_ERROR(d.status());
  ShapeHandle out = in;
  for (int axis : {d->h, d->w}) {
    DimensionHandle dim;
    if (grad) {
      TF_RETURN_IF_ERROR(c->Divide(c->Dim(in, axis), factor, /*evenly_divisible=*/true, &dim));
    } else {
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(in, axis), factor, &dim));
    }
    TF_RETURN_IF_ERROR(c->ReplaceDim(out, axis, dim, &out));
  }
  c->set_output(0, out);
  return absl::OkStatus();
}

// Output shape read from a 1-D shape tensor input, rank 4, merged with what is known.
absl::Status ShapeFromTensor(InferenceContext* c, int shape_input, ShapeHandle* out) {
  ShapeHandle s;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(shape_input), 1, &s));
  TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(shape_input, out));
  return c->WithRank(*out, 4, out);
}

// With every size known at graph-building time, the output shape is checked against the input,
// filter, strides and padding now (a ValueError when tracing) rather than when the op runs.
absl::Status CheckStaticGeometry(InferenceContext* c, ShapeHandle in, ShapeHandle filter,
                                 ShapeHandle out, const Dims& d) {
  std::vector<int32_t> strides;
  std::string padding;
  TF_RETURN_IF_ERROR(c->GetAttr("strides", &strides));
  TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
  if (strides.size() != 2 || strides[0] < 1 || strides[1] < 1) {
    return absl::InvalidArgumentError("strides must be two positive integers [stride_height, stride_width]");
  }
  const int idx[] = {0, d.h, d.w, d.c};
  int64_t vin[4], vout[4];
  for (int i = 0; i < 4; ++i) {
    vin[i] = c->Value(c->Dim(in, idx[i]));
    vout[i] = c->Value(c->Dim(out, idx[i]));
  }
  const int64_t ky = c->Value(c->Dim(filter, 0)), kx = c->Value(c->Dim(filter, 1));
  for (int64_t v : {vin[0], vin[1], vin[2], vin[3], vout[1], vout[2], ky, kx}) {
    if (v == InferenceContext::kUnknownDim) return absl::OkStatus();
  }
  Geometry g;
  const std::string err = MakeDepthwiseGeometry(
      vin[0], vin[1], vin[2], vin[3], vout[1], vout[2], ky, kx, strides[0], strides[1],
      padding == "VALID" ? Padding::kValid : Padding::kSame, Layout::kNHWC, &g);
  if (!err.empty()) return absl::InvalidArgumentError(absl::StrCat("output_shape: ", err));
  return absl::OkStatus();
}

}  // namespace

#define TFUP_FLOAT_TYPES "T: {half, bfloat16, float, double}"
#define TFUP_LAYOUT_ATTRS                    \
  Attr("data_format: {'NHWC', 'NCHW'} = 'NHWC'")

REGISTER_OP("TfupsampleBilinearUpsample")
    .Input("images: T")
    .Output("output: T")
    .Attr("factor: int")
    .TFUP_LAYOUT_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) { return BilinearShape(c, false); })
    .Doc("Bilinear upsample by an integer factor: the transposed convolution with the bilinear "
         "kernel of size 2f - f % 2, stride f, SAME padding, each channel on its own.");

REGISTER_OP("TfupsampleBilinearUpsampleGrad")
    .Input("output_grad: T")
    .Output("images_grad: T")
    .Attr("factor: int")
    .TFUP_LAYOUT_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) { return BilinearShape(c, true); });

REGISTER_OP("TfupsampleDepthwiseConv2dTranspose")
    .Input("input: T")
    .Input("filter: T")
    .Input("output_shape: Tshape")
    .Output("output: T")
    .Attr("strides: list(int) >= 2")
    .Attr("padding: {'SAME', 'VALID'}")
    .TFUP_LAYOUT_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .Attr("Tshape: {int32, int64} = DT_INT32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle in, filter, out;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &in));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &filter));
      TF_RETURN_IF_ERROR(ShapeFromTensor(c, 2, &out));
      DimensionHandle multiplier;  // [kh, kw, C, 1]: channel multiplier 1
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(filter, 3), 1, &multiplier));
      auto d = LayoutDims(c);
      TF_RETURN_IF_ERROR(d.status());
      // Batch and channels carry over from the input; a conflict is an error now.
      DimensionHandle batch, channels;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(out, 0), c->Dim(in, 0), &batch));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(out, d->c), c->Dim(in, d->c), &channels));
      TF_RETURN_IF_ERROR(c->Merge(channels, c->Dim(filter, 2), &channels));
      TF_RETURN_IF_ERROR(c->ReplaceDim(out, 0, batch, &out));
      TF_RETURN_IF_ERROR(c->ReplaceDim(out, d->c, channels, &out));
      TF_RETURN_IF_ERROR(CheckStaticGeometry(c, in, filter, out, *d));
      c->set_output(0, out);
      return absl::OkStatus();
    })
    .Doc("Depthwise (per-channel) transposed convolution with a [kh, kw, C, 1] filter; strides "
         "is [stride_h, stride_w] and may be unequal.");

REGISTER_OP("TfupsampleDepthwiseConv2dTransposeBackpropInput")
    .Input("output_grad: T")
    .Input("filter: T")
    .Input("input_sizes: Tshape")
    .Output("input_grad: T")
    .Attr("strides: list(int) >= 2")
    .Attr("padding: {'SAME', 'VALID'}")
    .TFUP_LAYOUT_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .Attr("Tshape: {int32, int64} = DT_INT32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle out;
      TF_RETURN_IF_ERROR(ShapeFromTensor(c, 2, &out));
      c->set_output(0, out);
      return absl::OkStatus();
    });

REGISTER_OP("TfupsampleDepthwiseConv2dTransposeBackpropFilter")
    .Input("input: T")
    .Input("output_grad: T")
    .Input("filter_sizes: Tshape")
    .Output("filter_grad: T")
    .Attr("strides: list(int) >= 2")
    .Attr("padding: {'SAME', 'VALID'}")
    .TFUP_LAYOUT_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .Attr("Tshape: {int32, int64} = DT_INT32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle out;
      TF_RETURN_IF_ERROR(ShapeFromTensor(c, 2, &out));
      c->set_output(0, out);
      return absl::OkStatus();
    });

}  // namespace tfup

// ---- Fused segmentation heads (NHWC logits; labels / loss [N, H*f, W*f]).
namespace tfup {
namespace {
absl::Status HeadMapShape(InferenceContext* c, int logits_input, ShapeHandle* map) {
  ShapeHandle logits;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(logits_input), 4, &logits));
  int64_t factor;
  TF_RETURN_IF_ERROR(c->GetAttr("factor", &factor));
  if (factor < 1) {
    return absl::InvalidArgumentError(absl::StrCat("factor must be a positive integer, got ", factor));
  }
  DimensionHandle h, w;
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(logits, 1), factor, &h));
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(logits, 2), factor, &w));
  *map = c->MakeShape({c->Dim(logits, 0), h, w});
  return absl::OkStatus();
}
}  // namespace

REGISTER_OP("TfupsampleUpsampleArgmax")
    .Input("logits: T")
    .Output("labels: int64")
    .Output("scores: T")
    .Attr("factor: int")
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle map;
      TF_RETURN_IF_ERROR(HeadMapShape(c, 0, &map));
      c->set_output(0, map);
      c->set_output(1, map);
      return absl::OkStatus();
    })
    .Doc("argmax over classes of the x`factor` bilinear upsample of NHWC logits, and that "
         "maximum, without the upsampled logits.");

REGISTER_OP("TfupsampleUpsampleSparseSoftmaxCrossEntropy")
    .Input("labels: int64")
    .Input("logits: T")
    .Output("loss: T")
    .Attr("factor: int")
    .Attr("ignore_label: int = 0")
    .Attr("use_ignore_label: bool = false")
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle map, labels;
      TF_RETURN_IF_ERROR(HeadMapShape(c, 1, &map));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &labels));
      TF_RETURN_IF_ERROR(c->Merge(map, labels, &map));
      c->set_output(0, map);
      return absl::OkStatus();
    })
    .Doc("Per-pixel sparse softmax cross-entropy of the x`factor` bilinear upsample of NHWC "
         "logits, without the upsampled logits; 0 where labels == ignore_label.");

REGISTER_OP("TfupsampleUpsampleSparseSoftmaxCrossEntropyGrad")
    .Input("labels: int64")
    .Input("logits: T")
    .Input("loss_grad: T")
    .Output("logits_grad: T")
    .Attr("factor: int")
    .Attr("ignore_label: int = 0")
    .Attr("use_ignore_label: bool = false")
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    });

}  // namespace tfup
