// The bilinear and depthwise ops: registrations (with their shape functions), and the OpKernels,
// which validate every argument (the raw ops must be safe to call directly), build the Geometry,
// allocate, and hand raw pointers to the kernels through tf/backends.h. The Python wrappers and
// gradients are in tfupsample/api.py and tfupsample/_ops.py.
#include <array>

#include "tf/backends.h"
#include "tf/shapes.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace tfup {
namespace {

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

absl::Status CheckRank4(const Tensor& t, const char* name) {
  if (t.dims() == 4) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, " must be 4-D, got shape ",
                                                 t.shape().DebugString()));
}

// A 1-D int32/int64 tensor of 4 non-negative sizes.
absl::Status ReadSizes(const Tensor& t, const char* name, std::array<int64_t, 4>* out) {
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

// ----------------------------------------------------------------------------------------------
// Bilinear

// The forward (kGrad false: images -> output) and its gradient (output_grad -> images_grad).
template <typename Device, typename T, bool kGrad>
class BilinearOp : public OpKernel {
 public:
  explicit BilinearOp(OpKernelConstruction* ctx) : OpKernel(ctx), layout_(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("factor", &factor_));
    OP_REQUIRES_OK(ctx, CheckFactor(factor_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& in = ctx->input(0);
    OP_REQUIRES_OK(ctx, CheckRank4(in, kGrad ? "output_grad" : "images"));
    Dims4 d = layout_.Read(in.shape());
    if (kGrad) {  // the geometry is the forward's: its input is this op's output
      OP_REQUIRES(ctx, d[1] % factor_ == 0 && d[2] % factor_ == 0,
                  absl::InvalidArgumentError(absl::StrCat(
                      "output_grad height and width must be multiples of factor ", factor_,
                      ", got shape ", in.shape().DebugString())));
      d[1] /= factor_;
      d[2] /= factor_;
    }
    Geometry g;
    const std::string err = MakeBilinearGeometry(d[0], d[1], d[2], d[3], factor_, layout_.layout, &g);
    OP_REQUIRES(ctx, err.empty(), absl::InvalidArgumentError(err));
    Tensor* out = nullptr;
    TensorShape shape;
    OP_REQUIRES_OK(ctx, layout_.Shape(kGrad ? Dims4{g.n, g.y.n_in, g.x.n_in, g.c}
                                            : Dims4{g.n, g.y.n_out, g.x.n_out, g.c}, &shape));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &out));
    if (out->NumElements() == 0) return;
    if (kGrad) {
      Backend<Device>::BilinearBackpropInput(ctx, g, in.flat<T>().data(), out->flat<T>().data());
    } else {
      Backend<Device>::BilinearForward(ctx, g, in.flat<T>().data(), out->flat<T>().data());
    }
  }

 private:
  LayoutAttr layout_;
  int64_t factor_ = 1;
};

// ----------------------------------------------------------------------------------------------
// Resize (tf.image.resize's bilinear semantics): the forward (images [T] -> float) and its
// gradient (output_grad [float] -> images_grad [T]). Input 1 is the other side's height and width.

template <typename Device, typename T, bool kGrad>
class ResizeOp : public OpKernel {
 public:
  explicit ResizeOp(OpKernelConstruction* ctx) : OpKernel(ctx), layout_(ctx) {
    OP_REQUIRES_OK(ctx, ReadResizeMode(ctx, &mode_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& in = ctx->input(0);
    const char* in_name = kGrad ? "output_grad" : "images";
    const char* size_name = kGrad ? "input_size" : "size";
    OP_REQUIRES_OK(ctx, CheckRank4(in, in_name));
    const Tensor& size = ctx->input(1);
    OP_REQUIRES(ctx, size.dims() == 1 && size.NumElements() == 2,
                absl::InvalidArgumentError(absl::StrCat(
                    size_name, " must be a 1-D tensor of 2 elements [height, width], got shape ",
                    size.shape().DebugString())));
    const int64_t sh = size.vec<int32_t>()(0), sw = size.vec<int32_t>()(1);
    const Dims4 d = layout_.Read(in.shape());
    Geometry g;
    const std::string err =
        kGrad ? MakeResizeGeometry(d[0], sh, sw, d[3], d[1], d[2], mode_, layout_.layout, &g)
              : MakeResizeGeometry(d[0], d[1], d[2], d[3], sh, sw, mode_, layout_.layout, &g);
    OP_REQUIRES(ctx, err.empty(), absl::InvalidArgumentError(absl::StrCat(
                                      kGrad ? "input_size / output_grad: " : "", err)));
    Tensor* out = nullptr;
    TensorShape shape;
    OP_REQUIRES_OK(ctx, layout_.Shape(kGrad ? Dims4{g.n, g.y.n_in, g.x.n_in, g.c}
                                            : Dims4{g.n, g.y.n_out, g.x.n_out, g.c}, &shape));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &out));
    if (out->NumElements() == 0) return;
    if (kGrad) {
      Backend<Device>::ResizeBilinearBackpropInput(ctx, g, in.flat<float>().data(), out->flat<T>().data());
    } else {
      Backend<Device>::ResizeBilinear(ctx, g, in.flat<T>().data(), out->flat<float>().data());
    }
  }

 private:
  LayoutAttr layout_;
  Resize mode_ = Resize::kHalfPixel;
};

// ----------------------------------------------------------------------------------------------
// Depthwise transposed convolution: forward, and the two gradients.

enum class Mode { kForward, kBackpropInput, kBackpropFilter };

template <typename Device, typename T, Mode kMode>
class DepthwiseOp : public OpKernel {
 public:
  explicit DepthwiseOp(OpKernelConstruction* ctx) : OpKernel(ctx), layout_(ctx) {
    std::vector<int32_t> strides;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("strides", &strides));
    OP_REQUIRES(ctx, strides.size() == 2,
                absl::InvalidArgumentError(absl::StrCat(
                    "strides must be [stride_height, stride_width], got ", strides.size(), " values")));
    OP_REQUIRES(ctx, strides[0] >= 1 && strides[1] >= 1,
                absl::InvalidArgumentError(absl::StrCat("strides must be positive, got [",
                                                        strides[0], ", ", strides[1], "]")));
    sy_ = strides[0];
    sx_ = strides[1];
    std::string padding;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding));
    padding_ = padding == "VALID" ? Padding::kValid : Padding::kSame;
  }

  void Compute(OpKernelContext* ctx) override {
    // Gather the three shapes (input, filter, output) from tensors or size vectors.
    Dims4 in, out, filter;
    const Tensor *x = nullptr, *w = nullptr, *dy = nullptr;
    if (kMode == Mode::kForward) {
      x = &ctx->input(0);
      w = &ctx->input(1);
      OP_REQUIRES_OK(ctx, CheckRank4(*x, "input"));
      OP_REQUIRES_OK(ctx, ReadSizes(ctx->input(2), "output_shape", &out));
      in = layout_.Read(x->shape());
      out = layout_.Read(out);
    } else if (kMode == Mode::kBackpropInput) {
      dy = &ctx->input(0);
      w = &ctx->input(1);
      OP_REQUIRES_OK(ctx, CheckRank4(*dy, "output_grad"));
      OP_REQUIRES_OK(ctx, ReadSizes(ctx->input(2), "input_sizes", &in));
      in = layout_.Read(in);
      out = layout_.Read(dy->shape());
    } else {
      x = &ctx->input(0);
      dy = &ctx->input(1);
      OP_REQUIRES_OK(ctx, CheckRank4(*x, "input"));
      OP_REQUIRES_OK(ctx, CheckRank4(*dy, "output_grad"));
      OP_REQUIRES_OK(ctx, ReadSizes(ctx->input(2), "filter_sizes", &filter));
      in = layout_.Read(x->shape());
      out = layout_.Read(dy->shape());
    }
    if (w != nullptr) {
      OP_REQUIRES_OK(ctx, CheckRank4(*w, "filter"));
      for (int i = 0; i < 4; ++i) filter[i] = w->dim_size(i);
    }
    OP_REQUIRES(ctx, filter[3] == 1,
                absl::InvalidArgumentError(absl::StrCat(
                    "filter must be [kernel_height, kernel_width, channels, 1] (channel multiplier "
                    "1), got last dimension ", filter[3])));
    OP_REQUIRES(ctx, filter[2] == in[3],
                absl::InvalidArgumentError(absl::StrCat("filter has ", filter[2],
                                                        " channels but input has ", in[3])));
    const char* out_name = kMode == Mode::kForward ? "output_shape" : "output_grad";
    OP_REQUIRES(ctx, out[0] == in[0] && out[3] == in[3],
                absl::InvalidArgumentError(absl::StrCat(
                    out_name, " must keep the input's batch ", in[0], " and channels ", in[3],
                    ", got batch ", out[0], " and channels ", out[3])));
    Geometry g;
    const std::string err =
        MakeDepthwiseGeometry(in[0], in[1], in[2], in[3], out[1], out[2], filter[0], filter[1],
                              sy_, sx_, padding_, layout_.layout, &g);
    OP_REQUIRES(ctx, err.empty(), absl::InvalidArgumentError(absl::StrCat(out_name, ": ", err)));

    Tensor* result = nullptr;
    TensorShape shape;
    if (kMode == Mode::kForward) OP_REQUIRES_OK(ctx, layout_.Shape(out, &shape));
    if (kMode == Mode::kBackpropInput) OP_REQUIRES_OK(ctx, layout_.Shape(in, &shape));
    if (kMode == Mode::kBackpropFilter) OP_REQUIRES_OK(ctx, TensorShape::BuildTensorShape(filter, &shape));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &result));
    if (result->NumElements() == 0) return;
    T* r = result->flat<T>().data();
    if (kMode == Mode::kForward) {
      Backend<Device>::DepthwiseForward(ctx, g, x->flat<T>().data(), w->flat<T>().data(), r);
    } else if (kMode == Mode::kBackpropInput) {
      Backend<Device>::DepthwiseBackpropInput(ctx, g, dy->flat<T>().data(), w->flat<T>().data(), r);
    } else {
      Backend<Device>::DepthwiseBackpropFilter(ctx, g, x->flat<T>().data(), dy->flat<T>().data(), r);
    }
  }

 private:
  LayoutAttr layout_;
  int64_t sy_ = 1, sx_ = 1;
  Padding padding_ = Padding::kSame;
};

// ----------------------------------------------------------------------------------------------
// The benchmark's write floor (tfupsample.tools.bench): an op that only writes its float32
// output, with non-temporal stores on every core, into memory from TF's allocator given the same
// huge-page hint as the kernels' outputs -- what the fastest op writing those bytes costs, its
// dispatch and allocation included, as the kernels' times include theirs.
class StreamFillOp : public OpKernel {
 public:
  explicit StreamFillOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("value", &value_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dims = ctx->input(0);
    OP_REQUIRES(ctx, dims.dims() == 1,
                absl::InvalidArgumentError(absl::StrCat("shape must be a 1-D tensor, got shape ",
                                                        dims.shape().DebugString())));
    TensorShape shape;
    OP_REQUIRES_OK(ctx, TensorShape::BuildTensorShape(
        absl::Span<const int64_t>(dims.flat<int64_t>().data(), dims.NumElements()), &shape));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &out));
    const int64_t n = out->NumElements();
    if (n == 0) return;
    float* data = out->flat<float>().data();
    PreferHugePages(data, n * static_cast<int64_t>(sizeof(float)));
    RunGuarded(ctx, "TfupsampleStreamFill", [&] { FillFloats(data, n, value_, true, CpuRunner(ctx)); });
  }

 private:
  float value_ = 0;
};

}  // namespace

// ---- Registrations.
using shapes::InferenceContext;
using shapes::ShapeHandle;
using shapes::DimensionHandle;

REGISTER_OP("TfupsampleBilinearUpsample")
    .Input("images: T")
    .Output("output: T")
    .Attr("factor: int")
    .TFUP_LAYOUT_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) { return shapes::BilinearShape(c, false); })
    .Doc("Bilinear upsample by an integer factor: the transposed convolution with the bilinear "
         "kernel of size 2f - f % 2, stride f, SAME padding, each channel on its own.");

REGISTER_OP("TfupsampleBilinearUpsampleGrad")
    .Input("output_grad: T")
    .Output("images_grad: T")
    .Attr("factor: int")
    .TFUP_LAYOUT_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn([](InferenceContext* c) { return shapes::BilinearShape(c, true); });

// Output: images' layout with the size's height and width (unknown where the size is not constant).
static absl::Status ResizeShape(InferenceContext* c) {
  ShapeHandle in, size, hw;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &in));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &size));
  DimensionHandle two;
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(size, 0), 2, &two));
  TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(1, &hw));
  auto d = shapes::LayoutDims(c);
  TF_RETURN_IF_ERROR(d.status());
  ShapeHandle out = in;
  TF_RETURN_IF_ERROR(c->ReplaceDim(out, d->h, c->Dim(hw, 0), &out));
  TF_RETURN_IF_ERROR(c->ReplaceDim(out, d->w, c->Dim(hw, 1), &out));
  c->set_output(0, out);
  return absl::OkStatus();
}

REGISTER_OP("TfupsampleResizeBilinear")
    .Input("images: T")
    .Input("size: int32")
    .Output("resized_images: float")
    .Attr("align_corners: bool = false")
    .Attr("half_pixel_centers: bool = false")
    .TFUP_LAYOUT_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn(ResizeShape)
    .Doc("Bilinear resize to size [height, width] with ResizeBilinear's conventions and results "
         "(float32, computed in float as TF's CPU kernel).");

REGISTER_OP("TfupsampleResizeBilinearGrad")
    .Input("output_grad: float")
    .Input("input_size: int32")
    .Output("images_grad: T")
    .Attr("align_corners: bool = false")
    .Attr("half_pixel_centers: bool = false")
    .TFUP_LAYOUT_ATTRS
    .Attr(TFUP_FLOAT_TYPES)
    .SetShapeFn(ResizeShape)
    .Doc("Gradient of TfupsampleResizeBilinear to its images of height and width input_size: a "
         "gather, each element written once.");

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
      TF_RETURN_IF_ERROR(shapes::ShapeFromTensor(c, 2, &out));
      DimensionHandle multiplier;  // [kh, kw, C, 1]: channel multiplier 1
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(filter, 3), 1, &multiplier));
      auto d = shapes::LayoutDims(c);
      TF_RETURN_IF_ERROR(d.status());
      // Batch and channels carry over from the input; a conflict is an error now.
      DimensionHandle batch, channels;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(out, 0), c->Dim(in, 0), &batch));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(out, d->c), c->Dim(in, d->c), &channels));
      TF_RETURN_IF_ERROR(c->Merge(channels, c->Dim(filter, 2), &channels));
      TF_RETURN_IF_ERROR(c->ReplaceDim(out, 0, batch, &out));
      TF_RETURN_IF_ERROR(c->ReplaceDim(out, d->c, channels, &out));
      TF_RETURN_IF_ERROR(shapes::CheckStaticGeometry(c, in, filter, out, *d));
      c->set_output(0, out);
      return absl::OkStatus();
    })
    .Doc("Depthwise (per-channel) transposed convolution with a [kh, kw, C, 1] filter; strides "
         "is [stride_h, stride_w] and may be unequal.");

// The two gradients of the depthwise op share everything but their tensors' names.
#define TFUP_DEPTHWISE_GRAD_OP(NAME, FIRST, SECOND, SIZES, OUTPUT)                    \
  REGISTER_OP(NAME)                                                                   \
      .Input(FIRST ": T")                                                             \
      .Input(SECOND ": T")                                                            \
      .Input(SIZES ": Tshape")                                                        \
      .Output(OUTPUT ": T")                                                           \
      .Attr("strides: list(int) >= 2")                                                \
      .Attr("padding: {'SAME', 'VALID'}")                                             \
      .TFUP_LAYOUT_ATTRS                                                              \
      .Attr(TFUP_FLOAT_TYPES)                                                         \
      .Attr("Tshape: {int32, int64} = DT_INT32")                                      \
      .SetShapeFn(shapes::ShapeFromSizesInput)
TFUP_DEPTHWISE_GRAD_OP("TfupsampleDepthwiseConv2dTransposeBackpropInput", "output_grad", "filter",
                       "input_sizes", "input_grad");
TFUP_DEPTHWISE_GRAD_OP("TfupsampleDepthwiseConv2dTransposeBackpropFilter", "input", "output_grad",
                       "filter_sizes", "filter_grad");

// Kernels, on every device this build has; the size vectors stay in host memory on all.
#define TFUP_REGISTER(DEV, D, T)                                                                   \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleBilinearUpsample").Device(DEV).TypeConstraint<T>("T"),                       \
      BilinearOp<D, T, false>);                                                                   \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleBilinearUpsampleGrad").Device(DEV).TypeConstraint<T>("T"),                   \
      BilinearOp<D, T, true>);                                                               \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("TfupsampleResizeBilinear").Device(DEV).TypeConstraint<T>("T").HostMemory("size"),      \
      ResizeOp<D, T, false>);                                                                      \
  REGISTER_KERNEL_BUILDER(Name("TfupsampleResizeBilinearGrad")                                     \
                              .Device(DEV)                                                         \
                              .TypeConstraint<T>("T")                                              \
                              .HostMemory("input_size"),                                           \
                          ResizeOp<D, T, true>);                                                   \
  REGISTER_KERNEL_BUILDER(Name("TfupsampleDepthwiseConv2dTranspose")                               \
                              .Device(DEV)                                                         \
                              .TypeConstraint<T>("T")                                              \
                              .HostMemory("output_shape"),                                         \
                          DepthwiseOp<D, T, Mode::kForward>);                                      \
  REGISTER_KERNEL_BUILDER(Name("TfupsampleDepthwiseConv2dTransposeBackpropInput")                  \
                              .Device(DEV)                                                         \
                              .TypeConstraint<T>("T")                                              \
                              .HostMemory("input_sizes"),                                          \
                          DepthwiseOp<D, T, Mode::kBackpropInput>);                                \
  REGISTER_KERNEL_BUILDER(Name("TfupsampleDepthwiseConv2dTransposeBackpropFilter")                 \
                              .Device(DEV)                                                         \
                              .TypeConstraint<T>("T")                                              \
                              .HostMemory("filter_sizes"),                                         \
                          DepthwiseOp<D, T, Mode::kBackpropFilter>);

TFUP_REGISTER_ON_EVERY_DEVICE(TFUP_REGISTER)

REGISTER_OP("TfupsampleStreamFill")
    .Input("shape: int64")
    .Output("output: float")
    .Attr("value: float = 0")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle out;
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(0, &out));
      c->set_output(0, out);
      return absl::OkStatus();
    })
    .Doc("A float32 tensor of `shape` set to `value` with non-temporal stores on every core: the "
         "benchmark's write floor (CPU only).");

REGISTER_KERNEL_BUILDER(Name("TfupsampleStreamFill").Device(tensorflow::DEVICE_CPU).HostMemory("shape"),
                        StreamFillOp);

}  // namespace tfup
