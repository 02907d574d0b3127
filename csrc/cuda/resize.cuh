// tf.image.resize's bilinear resize on the GPU (docs/DESIGN.md, "Resize"). The forward computes
// each output element with TF's taps and arithmetic (geometry.h's ResizeTapOf, in float); the
// gradient is two gathers, along y into scratch and then along x, each destination summing the
// outputs of its range in ascending order with the lower tap's term before the upper's: the CPU
// kernel's order, so both devices give the same bits, with one writer per element (no atomics).
#pragma once

#include "cuda/heads.cuh"

namespace tfup {
namespace cuda {

template <typename T>
TFUP_HOST_DEVICE inline float ResizeLoad(const T* p) {
  return static_cast<float>(ToAcc(*p));
}

template <typename T>
struct ResizeForwardBody {
  Axis ay, ax;
  Resize mode;
  float scale_y, scale_x;
  Strides in_s, out_s;
  const T* in;
  float* out;

  template <typename I>  // the launch's index type (WithIndexType)
  TFUP_HOST_DEVICE void operator()(I n, I y, I x, I c0, I cs, I c_end) const {
    const ResizeTapT<I> ty = ResizeTapOf(mode, scale_y, y, ay.n_in);
    const ResizeTapT<I> tx = ResizeTapOf(mode, scale_x, x, ax.n_in);
    const T* base = in + in_s.At(n, I(0), I(0), I(0));
    const I sy = static_cast<I>(in_s.y), sx = static_cast<I>(in_s.x), sc = static_cast<I>(in_s.c);
    const I o00 = ty.lower * sy + tx.lower * sx, o01 = ty.lower * sy + tx.upper * sx;
    const I o10 = ty.upper * sy + tx.lower * sx, o11 = ty.upper * sy + tx.upper * sx;
    float* dst = out + out_s.At(n, y, x, I(0));
    for (I c = c0; c < c_end; c += cs) {
      const T* p = base + c * sc;
      const float tl = ResizeLoad(p + o00), tr = ResizeLoad(p + o01);
      const float bl = ResizeLoad(p + o10), br = ResizeLoad(p + o11);
      const float top = tl + (tr - tl) * tx.lerp;
      const float bottom = bl + (br - bl) * tx.lerp;
      dst[c * static_cast<I>(out_s.c)] = top + (bottom - top) * ty.lerp;
    }
  }
};

// For each input index i of one axis, the outputs whose taps include it: [first[i], end[i]).
// Taps are monotone in the output index, so two binary searches find the range.
struct ResizeRangeBody {
  int64_t n_in, n_out;
  Resize mode;
  float scale;
  int64_t* first;
  int64_t* end;

  TFUP_HOST_DEVICE int64_t Search(int64_t i, bool upper_reaches) const {
    int64_t lo = 0, hi = n_out;  // the first o with upper(o) >= i, or with lower(o) > i
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      const ResizeTap t = ResizeTapOf(mode, scale, mid, n_in);
      if (upper_reaches ? t.upper >= i : t.lower > i) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  }
  TFUP_HOST_DEVICE void operator()(const Pos& p) const {
    for (int64_t i = p.block * p.bx + p.tx; i < n_in; i += p.grid * p.bx) {
      const int64_t f = Search(i, true), e = Search(i, false);
      first[i] = f;
      end[i] = e > f ? e : f;
    }
  }
};

// dst[n, y, x, c] (x or y an input index of the gathered axis) = the sum over that index's outputs
// o of w * src[n, y or o, o or x, c], w = 1 - lerp where o's lower tap is the index and lerp where
// its upper tap is (both when they coincide), in float, or double for double.
template <typename TS, typename TD, typename A>
struct ResizeGatherBody {
  bool along_x;
  int64_t n_in;  // of the gathered axis
  Resize mode;
  float scale;
  const int64_t* first;
  const int64_t* end;
  Strides src_s, dst_s;
  const TS* src;
  TD* dst;

  template <typename I>  // the launch's index type (WithIndexType)
  TFUP_HOST_DEVICE void operator()(I n, I y, I x, I c0, I cs, I c_end) const {
    const I i = along_x ? x : y, step = cs * static_cast<I>(src_s.c);
    A acc[kGroupLanes];
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) acc[j] = A(0);
    for (I o = static_cast<I>(first[i]); o < static_cast<I>(end[i]); ++o) {
      const ResizeTapT<I> t = ResizeTapOf(mode, scale, o, n_in);
      const A wl = A(1.0f - t.lerp), wu = A(t.lerp);
      const TS* p = src + (along_x ? src_s.At(n, y, o, c0) : src_s.At(n, o, x, c0));
      TFUP_UNROLL
      for (int j = 0; j < kGroupLanes; ++j) {
        if (c0 + j * cs < c_end) {
          const A v = A(ToAcc(p[j * step]));
          if (t.lower == i) acc[j] += wl * v;
          if (t.upper == i) acc[j] += wu * v;
        }
      }
    }
    TD* out = dst + dst_s.At(n, y, x, c0);
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) {
      if (c0 + j * cs < c_end) out[j * cs * static_cast<I>(dst_s.c)] = Store<TD>::From(acc[j]);
    }
  }
};

// The heads in the resize's semantics (NHWC logits; maps [n, out_h, out_w]). A pixel's four input
// pixels and its lerps; Value is ResizeForwardBody's arithmetic, so scores are the resize's bits.
template <typename T>
struct ResizeHeadBase {
  Axis ay, ax;
  Resize mode;
  float scale_y, scale_x;
  int64_t C;
  Strides s;  // of the logits
  const T* logits;
  struct Pixel {
    const T *p00, *p01, *p10, *p11;
    float xl, yl;
    TFUP_HOST_DEVICE float Value(int64_t c) const {
      const float tl = ResizeLoad(p00 + c), tr = ResizeLoad(p01 + c);
      const float bl = ResizeLoad(p10 + c), br = ResizeLoad(p11 + c);
      const float top = tl + (tr - tl) * xl;
      const float bottom = bl + (br - bl) * xl;
      return top + (bottom - top) * yl;
    }
  };
  TFUP_HOST_DEVICE Pixel At(int64_t n, int64_t y, int64_t x) const {
    const ResizeTap ty = ResizeTapOf(mode, scale_y, y, ay.n_in), tx = ResizeTapOf(mode, scale_x, x, ax.n_in);
    const T* b = logits + n * s.n;
    return Pixel{b + ty.lower * s.y + tx.lower * s.x, b + ty.lower * s.y + tx.upper * s.x,
                 b + ty.upper * s.y + tx.lower * s.x, b + ty.upper * s.y + tx.upper * s.x, tx.lerp, ty.lerp};
  }
  TFUP_HOST_DEVICE int64_t MapIndex(int64_t n, int64_t y, int64_t x) const {
    return (n * ay.n_out + y) * ax.n_out + x;
  }
};

// Argmax per output pixel over every class, tf.argmax's rule on float32 (Lowest: from class 0
// and the lowest float, a value wins only when greater).
template <typename T>
struct ResizeArgmaxBody : ResizeHeadBase<T> {
  int64_t* labels;
  float* scores;
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t, int64_t, int64_t) const {
    const auto p = this->At(n, y, x);
    float best = Lowest<float>::v;
    int64_t label = 0;
    for (int64_t c = 0; c < this->C; ++c) {
      const float v = p.Value(c);
      if (v > best) {
        best = v;
        label = c;
      }
    }
    const int64_t i = this->MapIndex(n, y, x);
    labels[i] = label;
    if (scores != nullptr) scores[i] = label == 0 ? p.Value(0) : best;
  }
};

// The loss per output pixel: max, then the sum of exp(v - max), then logsumexp - v[label] (with
// label smoothing s, - (1 - s) v[label] - s mean(v)); NaN
// at a label out of range (as TF's GPU kernel), 0 at the ignore label.
template <typename T>
struct ResizeCrossEntropyBody : ResizeHeadBase<T> {
  LabelMap labels;
  LabelRule rule;
  float* loss;
  double* stats;
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t, int64_t, int64_t) const {
    const int64_t i = this->MapIndex(n, y, x), label = labels[i];
    float out = 0.0f, max = 0.0f, sum = 0.0f;
    if (!rule.Skips(label)) {
      if (label < 0 || label >= this->C) {
        out = max = sum = QuietNaN<float>();
      } else {
        const auto p = this->At(n, y, x);
        max = p.Value(0);
        for (int64_t c = 1; c < this->C; ++c) {
          const float v = p.Value(c);
          max = v > max ? v : max;
        }
        for (int64_t c = 0; c < this->C; ++c) sum += Exp(p.Value(c) - max);
        float target = p.Value(label);
        if (rule.smoothing != 0) {  // (1 - s) v[label] + s mean(v)
          float all = 0.0f;
          for (int64_t c = 0; c < this->C; ++c) all += p.Value(c);
          target = float(1 - rule.smoothing) * target + float(rule.smoothing) * (all / float(this->C));
        }
        out = (max + Log(sum)) - target;
      }
    }
    if (loss != nullptr) loss[i] = out;
    if (stats != nullptr) {
      stats[2 * i] = static_cast<double>(max);
      stats[2 * i + 1] = static_cast<double>(sum);
    }
  }
};

// Its gradient (space (n, iy, ix, c) over the logits): a gather over the output pixels this
// logit reaches ([first, end) per axis, from ResizeRangeBody's tables) of its weight times
// loss_grad * (softmax - target), the softmax from the forward's stats.
template <typename T>
struct ResizeCrossEntropyGradBody : ResizeHeadBase<T> {
  using A = typename AccOf<T>::type;
  const int64_t *first_y, *end_y, *first_x, *end_x;
  LabelMap labels;
  LabelRule rule;
  const double* stats;
  const float* loss_grad;  // null: 1 at every pixel (ResizeSoftmaxCrossEntropyWithGrad)
  T* grad;
  // The weight of input i in output o's interpolation along one axis (both taps when they meet).
  TFUP_HOST_DEVICE static float Weight(const ResizeTap& t, int64_t i) {
    return (t.lower == i ? 1.0f - t.lerp : 0.0f) + (t.upper == i ? t.lerp : 0.0f);
  }
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t iy, int64_t ix, int64_t c0, int64_t cs,
                                   int64_t c_end) const {
    const float on_label = float(1 - rule.smoothing), uniform = float(rule.smoothing / static_cast<double>(this->C));
    A acc[kGroupLanes];
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) acc[j] = A(0);
    for (int64_t y = first_y[iy]; y < end_y[iy]; ++y) {
      const float wy = Weight(ResizeTapOf(this->mode, this->scale_y, y, this->ay.n_in), iy);
      for (int64_t x = first_x[ix]; x < end_x[ix]; ++x) {
        const int64_t i = this->MapIndex(n, y, x), label = labels[i];
        if (rule.Skips(label)) continue;
        const float max = static_cast<float>(stats[2 * i]), sum = static_cast<float>(stats[2 * i + 1]);
        const float wx = Weight(ResizeTapOf(this->mode, this->scale_x, x, this->ax.n_in), ix);
        const float gl = loss_grad == nullptr ? 1.0f : loss_grad[rule.uniform_grad ? 0 : i], scale = gl / sum;
        const auto p = this->At(n, y, x);
        TFUP_UNROLL
        for (int j = 0; j < kGroupLanes; ++j) {
          const int64_t c = c0 + j * cs;
          if (c < c_end) {
            // the target (1 - s) onehot + s / C
            // (the uniform term only with smoothing: an infinite loss_grad times 0 would be NaN)
            const float d = Exp(p.Value(c) - max) * scale - (label == c ? gl * on_label : 0.0f) -
                            (rule.smoothing != 0 ? gl * uniform : 0.0f);
            acc[j] += A(wy) * (A(wx) * A(d));
          }
        }
      }
    }
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) {
      if (c0 + j * cs < c_end) grad[this->s.At(n, iy, ix, c0 + j * cs)] = Store<T>::From(acc[j]);
    }
  }
};

}  // namespace cuda
}  // namespace tfup
