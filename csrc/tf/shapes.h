// Shape functions and attributes the op registrations share (kernels.cc, heads.cc).
#pragma once

#include <string>
#include <vector>

#include "cpu/kernels.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfup {

// The factor attribute of the bilinear ops and the heads: a positive integer.
inline absl::Status CheckFactor(int64_t factor) {
  if (factor >= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("factor must be a positive integer, got ", factor));
}

// ResizeBilinear's align_corners / half_pixel_centers attributes as a Resize mode (the resize
// op and its heads); both true is TF's error.
inline absl::Status ReadResizeMode(::tensorflow::OpKernelConstruction* ctx, Resize* mode) {
  bool align_corners = false, half_pixel_centers = false;
  TF_RETURN_IF_ERROR(ctx->GetAttr("align_corners", &align_corners));
  TF_RETURN_IF_ERROR(ctx->GetAttr("half_pixel_centers", &half_pixel_centers));
  if (align_corners && half_pixel_centers) {
    return absl::InvalidArgumentError("If half_pixel_centers is True, align_corners must be False.");
  }
  *mode = half_pixel_centers ? Resize::kHalfPixel : (align_corners ? Resize::kAlignCorners : Resize::kAsymmetric);
  return absl::OkStatus();
}

namespace shapes {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Positions of (height, width, channels) in a 4-D shape.
struct Dims {
  int h, w, c;
};
inline absl::StatusOr<Dims> LayoutDims(InferenceContext* c) {
  std::string fmt;
  TF_RETURN_IF_ERROR(c->GetAttr("data_format", &fmt));
  if (fmt == "NHWC") return Dims{1, 2, 3};
  return Dims{2, 3, 1};
}

// Bilinear: spatial dims scaled by factor (forward) or divided by it (gradient).
inline absl::Status BilinearShape(InferenceContext* c, bool grad) {
  ShapeHandle in;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &in));
  int64_t factor;
  TF_RETURN_IF_ERROR(c->GetAttr("factor", &factor));
  TF_RETURN_IF_ERROR(CheckFactor(factor));
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
inline absl::Status ShapeFromTensor(InferenceContext* c, int shape_input, ShapeHandle* out) {
  ShapeHandle s;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(shape_input), 1, &s));
  TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(shape_input, out));
  return c->WithRank(*out, 4, out);
}

// With every size known at graph-building time, the output shape is checked against the input,
// filter, strides and padding now (a ValueError when tracing) rather than when the op runs.
inline absl::Status CheckStaticGeometry(InferenceContext* c, ShapeHandle in, ShapeHandle filter,
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


// The depthwise gradients: the output's shape is the value of input 2 (input_sizes / filter_sizes).
inline absl::Status ShapeFromSizesInput(InferenceContext* c) {
  ShapeHandle out;
  TF_RETURN_IF_ERROR(ShapeFromTensor(c, 2, &out));
  c->set_output(0, out);
  return absl::OkStatus();
}

// Logits [n, h, w, c] (input logits_input) -> the label / loss map [n, h*f, w*f].
inline absl::Status HeadMapShape(InferenceContext* c, int logits_input, ShapeHandle* map) {
  ShapeHandle logits;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(logits_input), 4, &logits));
  int64_t factor;
  TF_RETURN_IF_ERROR(c->GetAttr("factor", &factor));
  TF_RETURN_IF_ERROR(CheckFactor(factor));
  DimensionHandle h, w;
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(logits, 1), factor, &h));
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(logits, 2), factor, &w));
  *map = c->MakeShape({c->Dim(logits, 0), h, w});
  return absl::OkStatus();
}

}  // namespace shapes
}  // namespace tfup

#define TFUP_FLOAT_TYPES "T: {half, bfloat16, float, double}"
#define TFUP_LAYOUT_ATTRS                    \
  Attr("data_format: {'NHWC', 'NCHW'} = 'NHWC'")
