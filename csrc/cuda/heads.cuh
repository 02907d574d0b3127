// Fused heads on the GPU: each output pixel's class scores are computed from the coarse NHWC
// logits by BilinearPixel (the forward's own arithmetic) and consumed on the spot.
//
// Labels outside [0, classes) give NaN loss and NaN gradients on the pixels they touch, as TF's
// GPU sparse_softmax_cross_entropy does (checking them would need a device-to-host copy).
#pragma once

#include <math.h>

#include "cuda/bodies.cuh"
#include "softmax_exp.h"

namespace tfup {
namespace cuda {

// The softmax's exp is softmax_exp.h's, as on the CPU.
template <typename A>
TFUP_HOST_DEVICE inline A Exp(A v) { return SoftmaxExp(v); }
TFUP_HOST_DEVICE inline float Log(float v) { return logf(v); }
TFUP_HOST_DEVICE inline double Log(double v) { return log(v); }
template <typename A>
TFUP_HOST_DEVICE A QuietNaN() {
  return A(NAN);
}

// Shared by the heads: geometry of the NHWC logits and a pixel's upsampled score for class c.
template <typename T>
struct HeadBase {
  using A = typename AccOf<T>::type;
  Axis ay, ax;
  Divider sy, sx;
  int64_t C;
  Strides s;  // of the logits
  const T* logits;
  TFUP_HOST_DEVICE BilinearPixel<T> Pixel(int64_t n, int64_t y, int64_t x) const {
    return BilinearPixel<T>(ay, ax, sy, sx, s, n, y, x);
  }
  // The score as the forward would store it (rounded to T), so argmax sees the same values.
  TFUP_HOST_DEVICE A Score(const BilinearPixel<T>& p, int64_t c) const {
    return ToAcc(Store<T>::From(p.Value(logits, c)));
  }
  TFUP_HOST_DEVICE int64_t MapIndex(int64_t n, int64_t y, int64_t x) const {
    return (n * ay.n_out + y) * ax.n_out + x;
  }
};

// Space (n, y, x, 1) over the output pixels.
template <typename T>
struct ArgmaxBody : HeadBase<T> {
  int64_t* labels;
  T* scores;  // may be null
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t, int64_t, int64_t) const {
    using A = typename AccOf<T>::type;
    const BilinearPixel<T> p = this->Pixel(n, y, x);
    int64_t best = 0;
    A best_v = this->Score(p, 0);
    for (int64_t c = 1; c < this->C; ++c) {
      const A v = this->Score(p, c);
      if (v > best_v) {  // ties: the lowest class, like tf.argmax
        best = c;
        best_v = v;
      }
    }
    const int64_t i = this->MapIndex(n, y, x);
    labels[i] = best;
    if (scores != nullptr) scores[i] = Store<T>::From(best_v);
  }
};

// Per pixel: the log-sum-exp of the scores, and the loss logsumexp - score[label].
template <typename T>
TFUP_HOST_DEVICE typename AccOf<T>::type LogSumExp(const HeadBase<T>& h, const BilinearPixel<T>& p) {
  using A = typename AccOf<T>::type;
  A m = h.Score(p, 0);
  for (int64_t c = 1; c < h.C; ++c) {
    const A v = h.Score(p, c);
    m = v > m ? v : m;
  }
  A sum = A(0);
  for (int64_t c = 0; c < h.C; ++c) sum += Exp(h.Score(p, c) - m);
  return m + Log(sum);
}

template <typename T>
struct CrossEntropyBody : HeadBase<T> {
  const int64_t* labels;
  IgnoreLabel ignore;
  T* loss;
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t, int64_t, int64_t) const {
    using A = typename AccOf<T>::type;
    const int64_t i = this->MapIndex(n, y, x), label = labels[i];
    A out = A(0);
    if (!ignore.Skips(label)) {
      if (label < 0 || label >= this->C) {
        out = QuietNaN<A>();
      } else {
        const BilinearPixel<T> p = this->Pixel(n, y, x);
        out = LogSumExp(*this, p) - this->Score(p, label);
      }
    }
    loss[i] = Store<T>::From(out);
  }
};

// Gradient, pass 1 (space (n, y, x, 1) over output pixels): per pixel the log-sum-exp and the
// loss gradient that scales it (0 at the ignore label, NaN for a bad label).
template <typename T>
struct PixelStatsBody : HeadBase<T> {
  using A = typename AccOf<T>::type;
  const int64_t* labels;
  IgnoreLabel ignore;
  const T* loss_grad;
  A* stats;  // [pixels, 2]: log-sum-exp, scale
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t, int64_t, int64_t) const {
    const int64_t i = this->MapIndex(n, y, x), label = labels[i];
    A lse = A(0), scale = A(0);
    if (!ignore.Skips(label)) {
      if (label < 0 || label >= this->C) {
        lse = scale = QuietNaN<A>();
      } else {
        lse = LogSumExp(*this, this->Pixel(n, y, x));
        scale = ToAcc(loss_grad[i]);
      }
    }
    stats[2 * i] = lse;
    stats[2 * i + 1] = scale;
  }
};

// Pass 2 (space (n, iy, ix, c) over the logits): gather over the output pixels this logit
// reaches of scale * weight * (softmax - onehot). Ignored pixels are skipped; every other pixel
// counts, so NaN logits give NaN even where the upstream gradient is 0 (0 * NaN), as on the CPU.
template <typename T>
struct CrossEntropyGradBody : HeadBase<T> {
  using A = typename AccOf<T>::type;
  const int64_t* labels;
  IgnoreLabel ignore;
  const A* stats;
  T* grad;
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t iy, int64_t ix, int64_t c0,
                                   int64_t cs, int64_t c_end) const {
    const Run ry = OutputsOf(this->ay, iy), rx = OutputsOf(this->ax, ix);
    A acc[kGroupLanes];
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) acc[j] = A(0);
    for (int64_t my = 0; my < ry.count; ++my) {
      const int64_t y = ry.i0 + my;
      const A wy = BilinearWeights<A>::Axis1(this->ay.stride, ry.t0 + my);
      for (int64_t mx = 0; mx < rx.count; ++mx) {
        const int64_t x = rx.i0 + mx, i = this->MapIndex(n, y, x);
        const int64_t label = labels[i];
        if (ignore.Skips(label)) continue;
        const A scale = stats[2 * i + 1];
        const A lse = stats[2 * i], wx = BilinearWeights<A>::Axis1(this->ax.stride, rx.t0 + mx);
        const A sw = scale * (wy * wx);
        const BilinearPixel<T> px = this->Pixel(n, y, x);
        TFUP_UNROLL
        for (int j = 0; j < kGroupLanes; ++j) {
          const int64_t c = c0 + j * cs;
          if (c < c_end) acc[j] += sw * (Exp(this->Score(px, c) - lse) - (label == c ? A(1) : A(0)));
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
