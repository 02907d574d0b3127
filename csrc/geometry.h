// Index geometry of a per-channel transposed convolution, shared by every kernel (CPU and CUDA)
// and by every adapter (TF op, pybind11 module). Plain C++: no TF types.
//
// One axis: input length n_in, output length n_out, stride s, kernel length k, padding before p.
// Input i, tap a lands on output o = i * s - p + a. Every kernel uses the gather form: output o
// reads the inputs i with 0 <= o + p - i * s < k, so each output has one writer (no atomics).
#pragma once

#include <cmath>
#include <cstdint>
#include <climits>
#include <limits>
#include <sstream>
#include <string>

#if defined(__CUDACC__)
#define TFUP_HOST_DEVICE __host__ __device__
#else
#define TFUP_HOST_DEVICE
#endif

namespace tfup {

enum class Layout { kNHWC, kNCHW };
enum class Padding { kSame, kValid };

struct Axis {
  int64_t n_in = 0, n_out = 0, stride = 1, k = 1, pad = 0;

  // Inputs feeding output o: [first, last] (empty when first > last).
  TFUP_HOST_DEVICE int64_t FirstInput(int64_t o) const {
    const int64_t num = o + pad - k + 1;  // ceil(num / stride), num may be negative
    const int64_t q = num >= 0 ? (num + stride - 1) / stride : -((-num) / stride);
    return q > 0 ? q : 0;
  }
  TFUP_HOST_DEVICE int64_t LastInput(int64_t o) const {
    const int64_t num = o + pad;
    if (num < 0) return -1;
    const int64_t q = num / stride;
    return q < n_in - 1 ? q : n_in - 1;
  }
  TFUP_HOST_DEVICE int64_t Tap(int64_t o, int64_t i) const { return o + pad - i * stride; }
  // Outputs an input i writes to: [i*s - p, i*s - p + k) clipped to [0, n_out).
  TFUP_HOST_DEVICE int64_t FirstOutput(int64_t i) const {
    const int64_t o = i * stride - pad;
    return o > 0 ? o : 0;
  }
  TFUP_HOST_DEVICE int64_t EndOutput(int64_t i) const {
    const int64_t o = i * stride - pad + k;
    return o < n_out ? o : n_out;
  }
};

// A bilinear resize in tf.image.resize's semantics, or kNone for the transposed convolution.
// Output o of an axis n_in -> n_out samples the input at
//   kHalfPixel:    u = (o + 0.5) * scale - 0.5, scale = n_in / n_out  (tf.image.resize)
//   kAlignCorners: u = o * scale, scale = (n_in - 1) / (n_out - 1)    (align_corners=True)
//   kAsymmetric:   u = o * scale, scale = n_in / n_out                (resize_bilinear's default)
// between inputs max(floor(u), 0) and min(ceil(u), n_in - 1), the second weighted u - floor(u):
// TF's CPU kernel's arithmetic, in float (image_resizer_state.h, resize_bilinear_op.cc).
enum class Resize { kNone, kHalfPixel, kAlignCorners, kAsymmetric };

// Full problem: batch n, channels c, rows (y) and columns (x). A resize (resize != kNone) uses
// only n_in and n_out of its axes.
struct Geometry {
  int64_t n = 0, c = 0;
  Axis y, x;
  Layout layout = Layout::kNHWC;
  Resize resize = Resize::kNone;

  int64_t InputElements() const { return n * y.n_in * x.n_in * c; }
  int64_t OutputElements() const { return n * y.n_out * x.n_out * c; }
};

// How a segmentation loss reads its labels: the label it skips (loss 0, gradient 0), if any
// (use, value), the label smoothing s in [0, 1] -- the target distribution is
// (1 - s) onehot(label) + s / classes, so loss = logsumexp(v) - (1 - s) v[label] - s mean(v) --
// and whether the label map holds int32 (narrow) or int64 elements. uniform_grad: the loss
// gradients' loss_grad is one value, loss_grad[0], for every pixel (XLA passes a compile-time
// constant map of one value so, rather than materialise it: tf_xla/kernels.cc).
struct LabelRule {
  bool use = false;
  int64_t value = 0;
  double smoothing = 0;
  bool narrow = false;
  bool uniform_grad = false;
  TFUP_HOST_DEVICE bool Skips(int64_t label) const { return use && label == value; }
};

// A label map as the loss kernels read it: int64 elements, or int32 ones (narrow) -- what
// tf.nn.sparse_softmax_cross_entropy_with_logits takes, so that int32 labels need no int64 copy.
struct LabelMap {
  const void* p = nullptr;
  bool narrow = false;
  TFUP_HOST_DEVICE int64_t operator[](int64_t i) const {
    return narrow ? static_cast<const int32_t*>(p)[i] : static_cast<const int64_t*>(p)[i];
  }
  // The map from element k on.
  TFUP_HOST_DEVICE LabelMap From(int64_t k) const {
    return {narrow ? static_cast<const void*>(static_cast<const int32_t*>(p) + k)
                   : static_cast<const void*>(static_cast<const int64_t*>(p) + k),
            narrow};
  }
};

// "" or why s is no label smoothing (the TF ops and the CUDA bindings refuse it with this text).
inline std::string CheckLabelSmoothing(double s) {
  if (s >= 0 && s <= 1) return "";  // false for NaN
  std::ostringstream text;
  text << "label_smoothing must be in [0, 1], got " << s;
  return text.str();
}

// Bilinear kernel of an integer factor f: k = 2f - f % 2, centre f - 1 (odd k) or f - 0.5 (even k),
// w(a) = 1 - |a - centre| / f. The only definition of the weight: every kernel (CPU and CUDA) and,
// through the bindings, every Python path (weights, Keras initializer, stock-op lowering) uses it.
TFUP_HOST_DEVICE inline int64_t BilinearKernelSize(int64_t factor) {
  return 2 * factor - factor % 2;
}

// Tap a of the bilinear window of any length k, the kernel of factor f = (k + 1) / 2 when
// k = 2f - f % 2 (the Keras initializer uses other lengths too).
template <typename Acc>
TFUP_HOST_DEVICE inline Acc BilinearWindowWeight(int64_t k, int64_t a) {
  // Twice the distance to the centre is an integer d = |2a - (k - 1)|, so the weight is the
  // fraction (2f - d) / 2f of two exact integers: one division, correctly rounded in Acc.
  const int64_t f = (k + 1) / 2;
  int64_t twice = 2 * a - (k - 1);
  if (twice < 0) twice = -twice;
  return Acc(2 * f - twice) / Acc(2 * f);
}

template <typename Acc>
TFUP_HOST_DEVICE inline Acc BilinearWeight(int64_t factor, int64_t a) {
  return BilinearWindowWeight<Acc>(BilinearKernelSize(factor), a);
}

// One output index of a resize axis: its two inputs and the second one's weight.
template <typename I>
struct ResizeTapT {
  I lower, upper;
  float lerp;
};
using ResizeTap = ResizeTapT<int64_t>;
TFUP_HOST_DEVICE inline float ResizeScale(int64_t n_in, int64_t n_out, Resize mode) {
  if (mode == Resize::kAlignCorners && n_out > 1) {
    return static_cast<float>(n_in - 1) / static_cast<float>(n_out - 1);
  }
  return static_cast<float>(n_in) / static_cast<float>(n_out);
}
// In o's index type I (the GPU's int32 launches: the same float arithmetic and taps).
template <typename I>
TFUP_HOST_DEVICE inline ResizeTapT<I> ResizeTapOf(Resize mode, float scale, I o, int64_t n_in) {
  const float u = mode == Resize::kHalfPixel ? (static_cast<float>(o) + 0.5f) * scale - 0.5f
                                             : static_cast<float>(o) * scale;
  const float below = floorf(u);
  const I last = static_cast<I>(n_in - 1);
  I lower = static_cast<I>(below), upper = static_cast<I>(ceilf(u));
  // TF clamps the lower tap at 0 and the upper at n_in - 1; the other two bounds never bind for
  // sizes TF accepts and only keep every index inside the input.
  lower = lower < 0 ? I(0) : (lower > last ? last : lower);
  upper = upper < 0 ? I(0) : (upper > last ? last : upper);
  return {lower, upper, u - below};
}

// a * b, or -1 when it overflows int64 (both non-negative).
inline int64_t CheckedMul(int64_t a, int64_t b) {
  if (a < 0 || b < 0) return -1;
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return -1;
  return a * b;
}

// The output lengths a transposed convolution may have for (n_in, k, s, padding): those whose
// forward convolution maps back to n_in (SAME: ceil(n_out / s); VALID: ceil((n_out - k + 1) / s)),
// i.e. [lo, hi] below. The same rule as tf.nn.conv2d_transpose's.
struct OutputRange {
  int64_t lo, hi;
};
// a * b + c for non-negative operands, saturated at INT64_MAX (huge sizes then fail the checks).
TFUP_HOST_DEVICE inline int64_t SaturatedMulAdd(int64_t a, int64_t b, int64_t c) {
  const int64_t max = INT64_MAX;
  if (a != 0 && b > (max - c) / a) return max;
  return a * b + c;
}
TFUP_HOST_DEVICE inline OutputRange LegalOutputSizes(int64_t n_in, int64_t k, int64_t s,
                                                     Padding padding) {
  if (n_in == 0) return {0, padding == Padding::kSame ? 0 : k - 1};
  if (padding == Padding::kSame) return {SaturatedMulAdd(n_in - 1, s, 1), SaturatedMulAdd(n_in, s, 0)};
  return {SaturatedMulAdd(n_in - 1, s, k), SaturatedMulAdd(n_in, s, k - 1)};
}

// The output length when none is given -- keras.layers.Conv2DTranspose's rule (no output
// padding): SAME n * s, VALID n * s + max(k - s, 0). Always inside LegalOutputSizes.
TFUP_HOST_DEVICE inline int64_t DefaultOutputSize(int64_t n_in, int64_t k, int64_t s,
                                                  Padding padding) {
  return SaturatedMulAdd(n_in, s, padding == Padding::kValid && k > s ? k - s : 0);
}

// Checks n_out against LegalOutputSizes (any n_out when n_in or n_out is 0, as stock TF).
// Returns "" when it is legal and sets axis (with the
// padding before: SAME max((n_in - 1) * s + k - n_out, 0) / 2, VALID 0); otherwise the reason.
inline std::string MakeAxis(int64_t n_in, int64_t n_out, int64_t k, int64_t s, Padding padding,
                            Axis* axis) {
  if (n_in < 0 || n_out < 0) return "sizes must be non-negative";
  if (k < 1) return "kernel size must be at least 1, got " + std::to_string(k);
  if (s < 1) return "stride must be at least 1, got " + std::to_string(s);
  const OutputRange r = LegalOutputSizes(n_in, k, s, padding);
  // As in tf.nn.conv2d_transpose, an empty input or an empty output goes with any size of the
  // other: the result is zeros, or empty.
  const bool empty = n_in == 0 || n_out == 0;
  if (!empty && (n_out < r.lo || n_out > r.hi)) {
    return "output size " + std::to_string(n_out) + " is inconsistent with input size " +
           std::to_string(n_in) + ", kernel size " + std::to_string(k) + ", stride " +
           std::to_string(s) + " and padding " + (padding == Padding::kSame ? "SAME" : "VALID") +
           ": expected a value in [" + std::to_string(r.lo) + ", " + std::to_string(r.hi) + "]";
  }
  int64_t pad = 0;
  if (padding == Padding::kSame) {
    const int64_t total = (n_in > 0 ? (n_in - 1) * s : 0) + k - n_out;
    pad = total > 0 ? total / 2 : 0;
  }
  axis->n_in = n_in;
  axis->n_out = n_out;
  axis->k = k;
  axis->stride = s;
  axis->pad = pad;
  return "";
}

// Geometry of a bilinear resize of an [n, h, w, c] input to [n, out_h, out_w, c] (mode not kNone);
// "" or the reason it cannot exist, in the words of TF's ResizeBilinear checks.
inline std::string MakeResizeGeometry(int64_t n, int64_t h, int64_t w, int64_t c, int64_t out_h,
                                      int64_t out_w, Resize mode, Layout layout, Geometry* g) {
  if (mode == Resize::kNone) return "not a resize";
  if (n < 0 || h < 0 || w < 0 || c < 0) return "input dimensions must be non-negative";
  constexpr int64_t kInt32Max = 2147483647;  // TF's bound: sizes are int32 there
  if (h > kInt32Max || w > kInt32Max) return "input sizes must be between 0 and max int32";
  if (h == 0 || w == 0) return "input image must be of non-zero size";
  if (c == 0) return "image must have at least one channel";
  if (out_h <= 0 || out_w <= 0) {
    return "output dimensions must be positive, got " + std::to_string(out_h) + " x " +
           std::to_string(out_w);
  }
  if (out_h > kInt32Max || out_w > kInt32Max) return "output sizes must be at most max int32";
  g->n = n;
  g->c = c;
  g->layout = layout;
  g->resize = mode;
  g->y = Axis{h, out_h, 1, 1, 0};
  g->x = Axis{w, out_w, 1, 1, 0};
  const int64_t in = CheckedMul(CheckedMul(CheckedMul(n, h), w), c);
  if (in < 0) return "the input would have more elements than a 64-bit index can address";
  const int64_t out = CheckedMul(CheckedMul(CheckedMul(n, out_h), out_w), c);
  if (out < 0) return "the output would have more elements than a 64-bit index can address";
  // The gradient's intermediate (input rows of output width; the CUDA kernel's scratch).
  const int64_t mid = CheckedMul(CheckedMul(CheckedMul(n, h), out_w), c);
  if (mid < 0) return "the gradient's rows would have more elements than a 64-bit index can address";
  return "";
}

}  // namespace tfup
