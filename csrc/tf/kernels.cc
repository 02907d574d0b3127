// The bilinear, resize and depthwise ops: registrations (with their shape functions) and
// kernels. Each op's checks and plan are its Spec (tf/specs.h; the raw ops must be safe to call
// directly); SpecOp allocates and runs the kernel through tf/backends.h. The Python wrappers and
// gradients are in tfupsample/api.py, tfupsample/image.py and tfupsample/_ops.py.

#include "tf/backends.h"
#include "tf/shapes.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace tfup {
namespace {

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

// Kernels, on every device this build has (R registers one: tf/backends.h); the size vectors
// stay in host memory on all.
#define TFUP_REGISTER(DEV, D, T, R)                                                                     \
  R(Name("TfupsampleBilinearUpsample").Device(DEV).TypeConstraint<T>("T"), SpecOp<BilinearSpec<false>, D, T>) \
  R(Name("TfupsampleBilinearUpsampleGrad").Device(DEV).TypeConstraint<T>("T"), SpecOp<BilinearSpec<true>, D, T>) \
  R(Name("TfupsampleResizeBilinear").Device(DEV).TypeConstraint<T>("T").HostMemory("size"),            \
    SpecOp<ResizeSpec<false>, D, T>)                                                                     \
  R(Name("TfupsampleResizeBilinearGrad").Device(DEV).TypeConstraint<T>("T").HostMemory("input_size"),  \
    SpecOp<ResizeSpec<true>, D, T>)                                                                      \
  R(Name("TfupsampleDepthwiseConv2dTranspose").Device(DEV).TypeConstraint<T>("T").HostMemory("output_shape"), \
    SpecOp<DepthwiseSpec<Mode::kForward>, D, T>)                                                         \
  R(Name("TfupsampleDepthwiseConv2dTransposeBackpropInput").Device(DEV).TypeConstraint<T>("T")         \
        .HostMemory("input_sizes"), SpecOp<DepthwiseSpec<Mode::kBackpropInput>, D, T>)                   \
  R(Name("TfupsampleDepthwiseConv2dTransposeBackpropFilter").Device(DEV).TypeConstraint<T>("T")        \
        .HostMemory("filter_sizes"), SpecOp<DepthwiseSpec<Mode::kBackpropFilter>, D, T>)

TFUP_REGISTER_ON_EVERY_DEVICE(TFUP_REGISTER)

// For tfupsample/_ops.py (ctypes): "" when the GPU kernels are registered (or this build has
// none), else why they are not -- the driver, the toolkit and the fix, for its warning.
extern "C" __attribute__((visibility("default"))) const char* tfupsample_cuda_status() {
  static const std::string status = CudaStatus();
  return status.c_str();
}

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
