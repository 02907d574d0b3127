// What every op does before a kernel runs, written once for the TF op kernels (tf/kernels.cc,
// tf/heads.cc) and the XLA kernels (tf_xla/kernels.cc): read the attributes, check the inputs' shapes and
// the size vectors, and make a Plan -- the kernel, its geometry and label rule, which inputs it
// reads in which order, and the outputs' shapes. A Spec sees its inputs through PlanInputs: the
// tensors of a running op, or the static shapes and compile-time constants of an XLA compilation.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "cpu/invoke.h"
#include "tf/shapes.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace tfup {

using ::tensorflow::OpKernelConstruction;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

// An op's inputs as a Spec sees them: every input's shape, and the values of the small int
// inputs that size the output (size, output_shape, ...), which live in host memory.
class PlanInputs {
 public:
  virtual ~PlanInputs() = default;
  virtual TensorShape Shape(int i) const = 0;
  virtual absl::StatusOr<Tensor> Host(int i) const = 0;
};

struct Plan {
  Kernel kernel = Kernel::kCount;
  Geometry g;
  LabelRule rule;
  std::vector<int> args;              // op inputs, in the kernel's pointer order
  std::vector<TensorShape> outputs;   // op outputs, which follow them in that order
  int absent_output = -1;             // an output the kernel skips (null pointer; shape [0])
  int labels_arg = -1;                // the position in args of labels whose values need checking
  int loss_grad_arg = -1;             // the position in args of the loss map's gradient (loss gradients)
};

using Dims4 = std::array<int64_t, 4>;  // always (n, h, w, c), whatever the layout

struct LayoutAttr {
  Layout layout = Layout::kNHWC;
  explicit LayoutAttr(OpKernelConstruction* ctx) {
    std::string fmt;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("data_format", &fmt));
    layout = fmt == "NCHW" ? Layout::kNCHW : Layout::kNHWC;
  }
  // Layout order -> (n, h, w, c).
  Dims4 Read(const Dims4& s) const {
    if (layout == Layout::kNCHW) return {s[0], s[2], s[3], s[1]};
    return s;
  }
  Dims4 Read(const TensorShape& s) const {
    return Read(Dims4{s.dim_size(0), s.dim_size(1), s.dim_size(2), s.dim_size(3)});
  }
  // (n, h, w, c) -> a shape in layout order; an error (never a crash) if it is too large.
  absl::Status Shape(const Dims4& d, TensorShape* out) const {
    const Dims4 s = layout == Layout::kNCHW ? Dims4{d[0], d[3], d[1], d[2]} : d;
    return TensorShape::BuildTensorShape(s, out);
  }
};

inline absl::Status CheckRank4(const TensorShape& t, const char* name) {
  if (t.dims() == 4) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, " must be 4-D, got shape ", t.DebugString()));
}

// A 1-D int32/int64 tensor of 4 non-negative sizes.
inline absl::Status ReadSizes(const Tensor& t, const char* name, Dims4* out) {
  if (t.dims() != 1 || t.NumElements() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " must be a 1-D tensor of 4 elements, got shape ", t.shape().DebugString()));
  }
  for (int i = 0; i < 4; ++i) {
    (*out)[i] = t.dtype() == tensorflow::DT_INT32 ? t.vec<int32_t>()(i) : t.vec<int64_t>()(i);
    if ((*out)[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be non-negative, got ", t.DebugString(4)));
    }
  }
  return absl::OkStatus();
}

// A 1-D int32 tensor [height, width].
inline absl::Status ReadHeightWidth(const PlanInputs& in, int i, const char* name, int64_t* h, int64_t* w) {
  TF_ASSIGN_OR_RETURN(const Tensor size, in.Host(i));
  if (size.dims() != 1 || size.NumElements() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " must be a 1-D tensor of 2 elements [height, width], got shape ", size.shape().DebugString()));
  }
  *h = size.vec<int32_t>()(0);
  *w = size.vec<int32_t>()(1);
  return absl::OkStatus();
}

inline absl::Status GeometryError(const std::string& err, absl::string_view prefix = "") {
  return err.empty() ? absl::OkStatus() : absl::InvalidArgumentError(absl::StrCat(prefix, err));
}

// ----------------------------------------------------------------------------------------------
// Bilinear upsample: the forward (kGrad false: images -> output) and its gradient
// (output_grad -> images_grad).
template <bool kGrad>
struct BilinearSpec {
  LayoutAttr layout;
  int64_t factor = 1;
  explicit BilinearSpec(OpKernelConstruction* ctx) : layout(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("factor", &factor));
    OP_REQUIRES_OK(ctx, CheckFactor(factor));
  }
  absl::Status Make(const PlanInputs& in, Plan* p) const {
    const TensorShape s = in.Shape(0);
    TF_RETURN_IF_ERROR(CheckRank4(s, kGrad ? "output_grad" : "images"));
    Dims4 d = layout.Read(s);
    if (kGrad) {  // the geometry is the forward's: its input is this op's output
      if (d[1] % factor != 0 || d[2] % factor != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "output_grad height and width must be multiples of factor ", factor, ", got shape ", s.DebugString()));
      }
      d[1] /= factor;
      d[2] /= factor;
    }
    Geometry& g = p->g;
    TF_RETURN_IF_ERROR(GeometryError(MakeBilinearGeometry(d[0], d[1], d[2], d[3], factor, layout.layout, &g)));
    p->kernel = kGrad ? Kernel::kBilinearBackpropInput : Kernel::kBilinearForward;
    p->args = {0};
    p->outputs.resize(1);
    return layout.Shape(kGrad ? Dims4{g.n, g.y.n_in, g.x.n_in, g.c} : Dims4{g.n, g.y.n_out, g.x.n_out, g.c},
                        &p->outputs[0]);
  }
};

// ----------------------------------------------------------------------------------------------
// Resize (tf.image.resize's bilinear semantics): the forward (images [T] -> float) and its
// gradient (output_grad [float] -> images_grad [T]). Input 1 is the other side's height and width.
template <bool kGrad>
struct ResizeSpec {
  LayoutAttr layout;
  Resize mode = Resize::kHalfPixel;
  explicit ResizeSpec(OpKernelConstruction* ctx) : layout(ctx) { OP_REQUIRES_OK(ctx, ReadResizeMode(ctx, &mode)); }
  absl::Status Make(const PlanInputs& in, Plan* p) const {
    const TensorShape s = in.Shape(0);
    TF_RETURN_IF_ERROR(CheckRank4(s, kGrad ? "output_grad" : "images"));
    int64_t sh = 0, sw = 0;
    TF_RETURN_IF_ERROR(ReadHeightWidth(in, 1, kGrad ? "input_size" : "size", &sh, &sw));
    const Dims4 d = layout.Read(s);
    Geometry& g = p->g;
    TF_RETURN_IF_ERROR(GeometryError(
        kGrad ? MakeResizeGeometry(d[0], sh, sw, d[3], d[1], d[2], mode, layout.layout, &g)
              : MakeResizeGeometry(d[0], d[1], d[2], d[3], sh, sw, mode, layout.layout, &g),
        kGrad ? "input_size / output_grad: " : ""));
    p->kernel = kGrad ? Kernel::kResizeBilinearBackpropInput : Kernel::kResizeBilinear;
    p->args = {0};
    p->outputs.resize(1);
    return layout.Shape(kGrad ? Dims4{g.n, g.y.n_in, g.x.n_in, g.c} : Dims4{g.n, g.y.n_out, g.x.n_out, g.c},
                        &p->outputs[0]);
  }
};

// ----------------------------------------------------------------------------------------------
// Depthwise transposed convolution: forward, and the two gradients.
enum class Mode { kForward, kBackpropInput, kBackpropFilter };

template <Mode kMode>
struct DepthwiseSpec {
  LayoutAttr layout;
  int64_t sy = 1, sx = 1;
  Padding padding = Padding::kSame;
  explicit DepthwiseSpec(OpKernelConstruction* ctx) : layout(ctx) {
    std::vector<int32_t> strides;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("strides", &strides));
    OP_REQUIRES(ctx, strides.size() == 2,
                absl::InvalidArgumentError(absl::StrCat(
                    "strides must be [stride_height, stride_width], got ", strides.size(), " values")));
    OP_REQUIRES(ctx, strides[0] >= 1 && strides[1] >= 1,
                absl::InvalidArgumentError(absl::StrCat("strides must be positive, got [",
                                                        strides[0], ", ", strides[1], "]")));
    sy = strides[0];
    sx = strides[1];
    std::string pad;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &pad));
    padding = pad == "VALID" ? Padding::kValid : Padding::kSame;
  }
  absl::Status Make(const PlanInputs& inputs, Plan* p) const {
    // The three shapes (input, filter, output) from tensors or size vectors.
    Dims4 in, out, filter;
    const char* sizes_name = kMode == Mode::kForward         ? "output_shape"
                             : kMode == Mode::kBackpropInput ? "input_sizes"
                                                             : "filter_sizes";
    if (kMode == Mode::kForward) {
      TF_RETURN_IF_ERROR(CheckRank4(inputs.Shape(0), "input"));
    } else if (kMode == Mode::kBackpropInput) {
      TF_RETURN_IF_ERROR(CheckRank4(inputs.Shape(0), "output_grad"));
    } else {
      TF_RETURN_IF_ERROR(CheckRank4(inputs.Shape(0), "input"));
      TF_RETURN_IF_ERROR(CheckRank4(inputs.Shape(1), "output_grad"));
    }
    TF_ASSIGN_OR_RETURN(const Tensor sizes, inputs.Host(2));
    Dims4 read;
    TF_RETURN_IF_ERROR(ReadSizes(sizes, sizes_name, &read));
    if (kMode == Mode::kForward) {
      in = layout.Read(inputs.Shape(0));
      out = layout.Read(read);
    } else if (kMode == Mode::kBackpropInput) {
      in = layout.Read(read);
      out = layout.Read(inputs.Shape(0));
    } else {
      filter = read;
      in = layout.Read(inputs.Shape(0));
      out = layout.Read(inputs.Shape(1));
    }
    if (kMode != Mode::kBackpropFilter) {
      const TensorShape w = inputs.Shape(1);
      TF_RETURN_IF_ERROR(CheckRank4(w, "filter"));
      for (int i = 0; i < 4; ++i) filter[i] = w.dim_size(i);
    }
    if (filter[3] != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "filter must be [kernel_height, kernel_width, channels, 1] (channel multiplier 1), got last dimension ",
          filter[3]));
    }
    if (filter[2] != in[3]) {
      return absl::InvalidArgumentError(
          absl::StrCat("filter has ", filter[2], " channels but input has ", in[3]));
    }
    const char* out_name = kMode == Mode::kForward ? "output_shape" : "output_grad";
    if (out[0] != in[0] || out[3] != in[3]) {
      return absl::InvalidArgumentError(absl::StrCat(out_name, " must keep the input's batch ", in[0],
                                                     " and channels ", in[3], ", got batch ", out[0],
                                                     " and channels ", out[3]));
    }
    TF_RETURN_IF_ERROR(GeometryError(
        MakeDepthwiseGeometry(in[0], in[1], in[2], in[3], out[1], out[2], filter[0], filter[1], sy, sx,
                              padding, layout.layout, &p->g),
        absl::StrCat(out_name, ": ")));
    p->kernel = kMode == Mode::kForward         ? Kernel::kDepthwiseForward
                : kMode == Mode::kBackpropInput ? Kernel::kDepthwiseBackpropInput
                                                : Kernel::kDepthwiseBackpropFilter;
    p->args = {0, 1};
    p->outputs.resize(1);
    if (kMode == Mode::kForward) return layout.Shape(out, &p->outputs[0]);
    if (kMode == Mode::kBackpropInput) return layout.Shape(in, &p->outputs[0]);
    return TensorShape::BuildTensorShape(filter, &p->outputs[0]);
  }
};

// ----------------------------------------------------------------------------------------------
// The fused heads (NHWC logits; label / loss maps [N, out_h, out_w]).

// The loss forward's softmax statistics: (max, sum) per pixel of the map.
inline TensorShape StatsShape(TensorShape map) {
  map.AddDim(2);
  return map;
}

// The loss gradient's inputs from the forward: stats [map, 2] (its second output) and loss_grad [map].
inline absl::Status CheckStatsAndLossGrad(const TensorShape& stats, const TensorShape& loss_grad,
                                          const TensorShape& map) {
  const TensorShape stats_shape = StatsShape(map);
  if (stats != stats_shape) {
    return absl::InvalidArgumentError(absl::StrCat("stats must have shape ", stats_shape.DebugString(),
                                                   " (the forward's second output), got ", stats.DebugString()));
  }
  if (loss_grad != map) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss_grad must have shape ", map.DebugString(), ", got ", loss_grad.DebugString()));
  }
  return absl::OkStatus();
}

// The loss ops' ignore_label, use_ignore_label, label_smoothing and Tlabels attributes (the argmax
// has none).
inline absl::Status ReadLabelRule(OpKernelConstruction* ctx, LabelRule* rule) {
  if (!ctx->HasAttr("ignore_label")) return absl::OkStatus();
  TF_RETURN_IF_ERROR(ctx->GetAttr("ignore_label", &rule->value));
  TF_RETURN_IF_ERROR(ctx->GetAttr("use_ignore_label", &rule->use));
  float smoothing = 0;
  TF_RETURN_IF_ERROR(ctx->GetAttr("label_smoothing", &smoothing));
  rule->smoothing = smoothing;
  tensorflow::DataType labels = tensorflow::DT_INT64;
  TF_RETURN_IF_ERROR(ctx->GetAttr("Tlabels", &labels));
  rule->narrow = labels == tensorflow::DT_INT32;
  return GeometryError(CheckLabelSmoothing(smoothing));
}

// The heads' common part: the geometry, the map's shape, the label rule; which op of four
// (argmax, loss, loss gradient) and semantics (kResize: tf.image.resize's, else the transposed
// convolution's) is given by the template.
enum class Head { kArgmax, kLoss, kLossGrad };

template <Head kHead, bool kResize>
struct HeadSpec {
  int64_t factor = 1;
  Resize mode = Resize::kHalfPixel;
  LabelRule rule;
  bool with_scores = true;
  bool with_grad = false;  // the loss: also its gradient for a loss gradient of 1 at every pixel
  explicit HeadSpec(OpKernelConstruction* ctx) {
    if (kResize) {
      OP_REQUIRES_OK(ctx, ReadResizeMode(ctx, &mode));
    } else {
      OP_REQUIRES_OK(ctx, ctx->GetAttr("factor", &factor));
      OP_REQUIRES_OK(ctx, CheckFactor(factor));
    }
    OP_REQUIRES_OK(ctx, ReadLabelRule(ctx, &rule));
    if (kHead == Head::kArgmax) OP_REQUIRES_OK(ctx, ctx->GetAttr("with_scores", &with_scores));
    if (kHead == Head::kLoss) OP_REQUIRES_OK(ctx, ctx->GetAttr("with_grad", &with_grad));
  }

  absl::Status Make(const PlanInputs& in, Plan* p) const {
    const int logits_input = kHead == Head::kArgmax ? 0 : 1;
    const TensorShape logits = in.Shape(logits_input);
    Geometry& g = p->g;
    TensorShape map;
    if (kResize) {
      int64_t oh = 0, ow = 0;
      if (kHead == Head::kArgmax) {
        TF_RETURN_IF_ERROR(ReadHeightWidth(in, 1, "size", &oh, &ow));
      } else {  // the map's size from the labels [N, out_h, out_w], with the logits' batch
        const TensorShape labels = in.Shape(0);
        if (labels.dims() != 3 || (logits.dims() == 4 && labels.dim_size(0) != logits.dim_size(0))) {
          return absl::InvalidArgumentError(absl::StrCat(
              "labels must be 3-D [N, height, width] with the logits' batch, got shape ",
              labels.DebugString(), " for logits ", logits.DebugString()));
        }
        oh = labels.dim_size(1);
        ow = labels.dim_size(2);
      }
      TF_RETURN_IF_ERROR(LogitsRank(logits));
      const auto d = logits.dim_sizes();
      TF_RETURN_IF_ERROR(GeometryError(MakeResizeGeometry(d[0], d[1], d[2], d[3], oh, ow, mode, Layout::kNHWC, &g),
                                       "logits / output size: "));
    } else {
      TF_RETURN_IF_ERROR(LogitsRank(logits));
      const auto d = logits.dim_sizes();
      TF_RETURN_IF_ERROR(GeometryError(MakeBilinearGeometry(d[0], d[1], d[2], d[3], factor, Layout::kNHWC, &g)));
    }
    const int64_t dims[] = {g.n, g.y.n_out, g.x.n_out};
    TF_RETURN_IF_ERROR(TensorShape::BuildTensorShape(dims, &map));
    p->rule = rule;
    if (kHead == Head::kArgmax) {
      if (!kResize && g.c == 0 && map.num_elements() != 0) {
        return absl::InvalidArgumentError("logits must have at least one class");
      }
      p->kernel = kResize ? Kernel::kResizeArgmax : Kernel::kUpsampleArgmax;
      p->args = {0};
      p->outputs = {map, with_scores ? map : TensorShape({0})};
      if (!with_scores) p->absent_output = 1;
      return absl::OkStatus();
    }
    // The loss and its gradient: labels (input 0) have the map's shape (the transposed
    // convolution's; the resize's takes its size from them), each in [0, classes) or the ignore label.
    const TensorShape labels = in.Shape(0);
    if (!kResize && labels != map) {
      return absl::InvalidArgumentError(absl::StrCat("labels must have shape ", map.DebugString(),
                                                     " (the upsampled map), got ", labels.DebugString()));
    }
    p->labels_arg = 1;
    if (kHead == Head::kLoss) {
      p->kernel = kResize ? Kernel::kResizeSoftmaxCrossEntropyWithGrad : Kernel::kUpsampleSoftmaxCrossEntropyWithGrad;
      p->args = {1, 0};
      p->outputs = {map, StatsShape(map), with_grad ? logits : TensorShape({0})};
      if (!with_grad) p->absent_output = 2;
      return absl::OkStatus();
    }
    TF_RETURN_IF_ERROR(CheckStatsAndLossGrad(in.Shape(2), in.Shape(3), map));
    p->kernel = kResize ? Kernel::kResizeSoftmaxCrossEntropyGrad : Kernel::kUpsampleSoftmaxCrossEntropyGrad;
    p->args = {1, 0, 2, 3};
    p->loss_grad_arg = 3;
    p->outputs = {logits};
    return absl::OkStatus();
  }

 private:
  static absl::Status LogitsRank(const TensorShape& logits) {
    if (logits.dims() == 4) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("logits must be 4-D [N, H, W, classes], got shape ", logits.DebugString()));
  }
};

}  // namespace tfup
