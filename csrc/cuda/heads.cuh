// Fused heads on the GPU: each output pixel's class scores are computed from the coarse NHWC
// logits by BilinearPixel (the forward's own arithmetic) and consumed on the spot.
//
// Labels outside [0, classes) give NaN loss and NaN gradients on the pixels they touch, as TF's
// GPU sparse_softmax_cross_entropy does (checking them would need a device-to-host copy).
#pragma once

#include <float.h>
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

// upsample_argmax in two passes, with the CPU kernel's pruning (docs/DESIGN.md, "Fused heads").
// A cell is the set of output pixels that read the same taps; along an axis output o is in cell
// 2 * (its first input) + (1 if it reads two), which grows with o, so an image has
// (2 h) x (2 w) cells, some empty. Pass 1 keeps, per cell, the classes whose largest tap value
// reaches the best smallest one (less a bound on the rounding of the computed values): no other
// class can be the maximum, or tie with it, at any pixel of the cell. Pass 2 evaluates only those
// at each pixel, with the forward's arithmetic, in ascending class order.
TFUP_HOST_DEVICE inline int64_t CellOf(const Axis& a, const Divider& s, int64_t o) {
  const Run r = InputsOf(a, s, o);
  return 2 * r.i0 + (r.count > 1 ? 1 : 0);
}

// The candidate list of cell (n, cy, cx): C + 1 values (see ArgmaxCandidatesBody).
template <typename T, typename I>
TFUP_HOST_DEVICE I* CellList(const HeadBase<T>& h, I* cand, int64_t n, int64_t cy, int64_t cx) {
  return cand + ((n * 2 * h.ay.n_in + cy) * 2 * h.ax.n_in + cx) * (h.C + 1);
}

TFUP_HOST_DEVICE inline float FiniteMax(float) { return FLT_MAX; }
TFUP_HOST_DEVICE inline double FiniteMax(double) { return DBL_MAX; }

// Relative rounding of one operation in T (as std::numeric_limits<T>::epsilon()).
template <typename T> struct Epsilon;
template <> struct Epsilon<__half> { static constexpr double v = 1.0 / 1024; };
template <> struct Epsilon<__nv_bfloat16> { static constexpr double v = 1.0 / 128; };
template <> struct Epsilon<float> { static constexpr double v = 1.1920928955078125e-07; };
template <> struct Epsilon<double> { static constexpr double v = 2.220446049250313e-16; };

// Pass 1, space (n, cy, cx, 1) over the cells. cand holds per cell C + 1 values: the number of
// candidates (-1: every class, where a tap value is not finite) and their ids, ascending.
template <typename T>
struct ArgmaxCandidatesBody : HeadBase<T> {
  int64_t* cand;
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t cy, int64_t cx, int64_t, int64_t, int64_t) const {
    using A = typename AccOf<T>::type;
    const int64_t C = this->C;
    int64_t* out = CellList(*this, cand, n, cy, cx);
    const int64_t iy0 = cy / 2, iy1 = iy0 + (cy % 2), ix0 = cx / 2, ix1 = ix0 + (cx % 2);
    if (iy1 >= this->ay.n_in || ix1 >= this->ax.n_in) {  // no pixel reads past the input
      out[0] = 0;
      return;
    }
    const T* p[4] = {this->logits + this->s.At(n, iy0, ix0, 0), this->logits + this->s.At(n, iy0, ix1, 0),
                     this->logits + this->s.At(n, iy1, ix0, 0), this->logits + this->s.At(n, iy1, ix1, 0)};
    const A top = FiniteMax(A(0));
    A best_lo = -A(INFINITY), min_lo = A(INFINITY), max_up = -A(INFINITY);
    bool finite = true;
    for (int64_t c = 0; c < C; ++c) {
      const A a = ToAcc(p[0][c]), b = ToAcc(p[1][c]), d = ToAcc(p[2][c]), e = ToAcc(p[3][c]);
      finite = finite && fabs(a) <= top && fabs(b) <= top && fabs(d) <= top && fabs(e) <= top;
      const A lo = fmin(fmin(a, b), fmin(d, e)), up = fmax(fmax(a, b), fmax(d, e));
      best_lo = lo > best_lo ? lo : best_lo;
      min_lo = lo < min_lo ? lo : min_lo;
      max_up = up > max_up ? up : max_up;
    }
    if (!finite) {
      out[0] = -1;
      return;
    }
    // As on the CPU: a few roundings in A, and one of T for the stored value (which can make a
    // smaller value equal to a larger one, a tie the lowest class would win).
    const A margin = A(8 * Epsilon<A>::v + 2 * Epsilon<T>::v);
    const A big = fmax(fmax(-min_lo, max_up), A(0));
    const A cut = best_lo - A(3) * margin * big;
    int64_t k = 0;
    for (int64_t c = 0; c < C; ++c) {
      const A a = ToAcc(p[0][c]), b = ToAcc(p[1][c]), d = ToAcc(p[2][c]), e = ToAcc(p[3][c]);
      if (!(fmax(fmax(a, b), fmax(d, e)) < cut)) out[1 + k++] = c;
    }
    out[0] = k;
  }
};

// Pass 2, space (n, y, x, 1) over the output pixels: the best of the cell's candidates.
template <typename T>
struct ArgmaxBody : HeadBase<T> {
  const int64_t* cand;
  int64_t* labels;
  T* scores;  // may be null
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t, int64_t, int64_t) const {
    using A = typename AccOf<T>::type;
    const BilinearPixel<T> p = this->Pixel(n, y, x);
    const int64_t* list =
        CellList(*this, cand, n, CellOf(this->ay, this->sy, y), CellOf(this->ax, this->sx, x));
    const int64_t K = list[0] < 0 ? this->C : list[0];
    const bool all = list[0] < 0;
    int64_t best = all ? 0 : list[1];
    A best_v = this->Score(p, best);
    for (int64_t k = 1; k < K; ++k) {
      const int64_t c = all ? k : list[1 + k];
      const A v = this->Score(p, c);
      if (v > best_v) {  // ties: the lowest class, like tf.argmax (candidates ascend)
        best = c;
        best_v = v;
      }
    }
    const int64_t i = this->MapIndex(n, y, x);
    labels[i] = best;
    if (scores != nullptr) scores[i] = Store<T>::From(best_v);
  }
};

// Per pixel: the softmax statistics of the scores, max and sum of exp(score - max).
template <typename T>
struct SoftmaxStats {
  using A = typename AccOf<T>::type;
  A max, sum;
  TFUP_HOST_DEVICE SoftmaxStats(const HeadBase<T>& h, const BilinearPixel<T>& p) {
    max = h.Score(p, 0);
    for (int64_t c = 1; c < h.C; ++c) {
      const A v = h.Score(p, c);
      max = v > max ? v : max;
    }
    sum = A(0);
    for (int64_t c = 0; c < h.C; ++c) sum += Exp(h.Score(p, c) - max);
  }
};

// The loss logsumexp - score[label] and the stats (max, sum) the gradient takes; either output
// may be null. A bad label gives NaN for both, an ignored pixel 0.
template <typename T>
struct CrossEntropyBody : HeadBase<T> {
  const int64_t* labels;
  IgnoreLabel ignore;
  T* loss;
  double* stats;  // [pixels, 2]
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t, int64_t, int64_t) const {
    using A = typename AccOf<T>::type;
    const int64_t i = this->MapIndex(n, y, x), label = labels[i];
    A out = A(0), max = A(0), sum = A(0);
    if (!ignore.Skips(label)) {
      if (label < 0 || label >= this->C) {
        out = max = sum = QuietNaN<A>();
      } else {
        const BilinearPixel<T> p = this->Pixel(n, y, x);
        const SoftmaxStats<T> st(*this, p);
        max = st.max;
        sum = st.sum;
        out = (max + Log(sum)) - this->Score(p, label);
      }
    }
    if (loss != nullptr) loss[i] = Store<T>::From(out);
    if (stats != nullptr) {
      stats[2 * i] = static_cast<double>(max);
      stats[2 * i + 1] = static_cast<double>(sum);
    }
  }
};

// The gradient (space (n, iy, ix, c) over the logits): gather over the output pixels this logit
// reaches of loss_grad * weight * (softmax - onehot), the softmax exp(score - max) / sum from the
// forward's stats. Ignored pixels are skipped; every other pixel counts, so NaN logits give NaN
// even where the upstream gradient is 0 (0 * NaN), as on the CPU, and a bad label's NaN stats
// give NaN.
template <typename T>
struct CrossEntropyGradBody : HeadBase<T> {
  using A = typename AccOf<T>::type;
  const int64_t* labels;
  IgnoreLabel ignore;
  const double* stats;
  const T* loss_grad;
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
        const A max = static_cast<A>(stats[2 * i]), sum = static_cast<A>(stats[2 * i + 1]);
        const A wx = BilinearWeights<A>::Axis1(this->ax.stride, rx.t0 + mx);
        const A sw = ToAcc(loss_grad[i]) * (wy * wx), soft = sw / sum;
        const BilinearPixel<T> px = this->Pixel(n, y, x);
        TFUP_UNROLL
        for (int j = 0; j < kGroupLanes; ++j) {
          const int64_t c = c0 + j * cs;
          if (c < c_end) acc[j] += soft * Exp(this->Score(px, c) - max) - (label == c ? sw : A(0));
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
