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

// upsample_argmax in two passes, with both levels of the CPU kernel's pruning (docs/DESIGN.md,
// "Fused heads"). A cell is the set of output pixels that read the same taps; along an axis output
// o is in cell 2 * (its first input) + (1 if it reads two), which grows with o, so an image has
// (2 h) x (2 w) cells, some empty. A cell is at most f outputs long and is cut, from its first
// output, into sub-blocks of up to kArgmaxSub outputs: SubBlocks = ceil(f / kArgmaxSub) per cell
// per axis. Pass 1, one thread per sub-block, keeps the classes that can be the maximum (or tie with
// it) at one of its pixels, as a bit mask; pass 2 evaluates only those at each pixel, with the
// forward's arithmetic, in ascending class order.
constexpr int64_t kArgmaxSub = 16;  // the CPU kernel's kSub
TFUP_HOST_DEVICE inline int64_t SubBlocks(const Axis& a) { return (a.stride + kArgmaxSub - 1) / kArgmaxSub; }
TFUP_HOST_DEVICE inline int64_t MaskWords(int64_t C) { return (C + 63) / 64; }

TFUP_HOST_DEVICE inline int64_t CellOf(const Axis& a, const Divider& s, int64_t o) {
  const Run r = InputsOf(a, s, o);
  return 2 * r.i0 + (r.count > 1 ? 1 : 0);
}

// The outputs [first, end) of cell c along an axis (first >= end: none). Two taps i0, i0 + 1: the
// outputs both reach; one tap: those i0 reaches and neither neighbour does (one range, as k <= 2s).
struct Span {
  int64_t first, end;
};
TFUP_HOST_DEVICE inline Span CellSpan(const Axis& a, int64_t c) {
  const int64_t i0 = c / 2;
  if (c % 2 == 1) {
    if (i0 + 1 >= a.n_in) return Span{0, 0};
    return Span{a.FirstOutput(i0 + 1), a.EndOutput(i0)};
  }
  int64_t first = a.FirstOutput(i0), end = a.EndOutput(i0);
  if (i0 > 0 && a.EndOutput(i0 - 1) > first) first = a.EndOutput(i0 - 1);
  if (i0 + 1 < a.n_in && a.FirstOutput(i0 + 1) < end) end = a.FirstOutput(i0 + 1);
  return Span{first, end};
}

// The index of output o's sub-block along an axis: cell * SubBlocks + its place in the cell.
TFUP_HOST_DEVICE inline int64_t SubBlockOf(const Axis& a, const Divider& s, int64_t o) {
  const int64_t c = CellOf(a, s, o);
  return c * SubBlocks(a) + (o - CellSpan(a, c).first) / kArgmaxSub;
}

// The mask of sub-block (n, by, bx): MaskWords(C) words, bit c of word c / 64 for class c.
template <typename T, typename M>
TFUP_HOST_DEVICE M* SubBlockMask(const HeadBase<T>& h, M* masks, int64_t n, int64_t by, int64_t bx) {
  const int64_t rows = 2 * h.ay.n_in * SubBlocks(h.ay), cols = 2 * h.ax.n_in * SubBlocks(h.ax);
  return masks + ((n * rows + by) * cols + bx) * MaskWords(h.C);
}

TFUP_HOST_DEVICE inline float FiniteMax(float) { return FLT_MAX; }
TFUP_HOST_DEVICE inline double FiniteMax(double) { return DBL_MAX; }

// The lowest finite value of T, as an accumulator value: tf.argmax (Eigen's ArgMax reducer) starts
// from (class 0, lowest) and takes a value only when it is greater, so NaN, -inf and lowest itself
// never win and a pixel with nothing above lowest gets class 0 (the CPU kernels' ArgmaxFirst).
template <typename T> struct Lowest;
template <> struct Lowest<__half> { static constexpr float v = -65504.0f; };
template <> struct Lowest<__nv_bfloat16> { static constexpr float v = -3.38953139e38f; };
template <> struct Lowest<float> { static constexpr float v = -FLT_MAX; };
template <> struct Lowest<double> { static constexpr double v = -DBL_MAX; };

// Relative rounding of one operation in T (as std::numeric_limits<T>::epsilon()).
template <typename T> struct Epsilon;
template <> struct Epsilon<__half> { static constexpr double v = 1.0 / 1024; };
template <> struct Epsilon<__nv_bfloat16> { static constexpr double v = 1.0 / 128; };
template <> struct Epsilon<float> { static constexpr double v = 1.1920928955078125e-07; };
template <> struct Epsilon<double> { static constexpr double v = 2.220446049250313e-16; };

// Pass 1 (docs/DESIGN.md, "Fused heads"). First level, over a cell: a class whose largest tap
// value is below the best smallest one by more than 3 delta (delta bounds the rounding of a
// computed value) is never the maximum in the cell. Second level, over a sub-block: a pixel's
// value is bilinear in its position within a cell, so the values at the sub-block's four corner
// pixels bound it to within 2 delta; a class whose largest corner value is below the best smallest
// one by more than 5 delta is dropped too. Every class is kept where a tap value is not finite.
// Pixels past the sub-block grid's cells have no sub-block, so none reads an empty one.
//
// Three launches, each over (position, mask word) with the words across lanes, so that a warp
// shares a sub-block's classes and each thread builds its mask word in a register: 1a the cells'
// statistics per word of 64 classes, 1b each sub-block's best smallest corner value per word
// (needs 1a's statistics of the whole cell), 1c the mask words (needs 1b's of the whole
// sub-block). The maxima and minima are exact, so the masks are those of one thread per
// sub-block running over every class.
template <typename T>
struct ArgmaxPass1 : HeadBase<T> {
  using A = typename AccOf<T>::type;
  uint64_t* masks;
  A* cell_stats;  // [n, 2h, 2w, words, 4]: largest lo, smallest lo, largest up, all finite (1 or 0)
  A* sub_lo;      // [n, 2h SubBlocks, 2w SubBlocks, words]

  // A cell's outputs along y and x, and its four tap pointers (channel 0).
  struct Cell {
    Span y, x;
    const T* p[4];
    TFUP_HOST_DEVICE bool Empty() const { return y.first >= y.end || x.first >= x.end; }
  };
  TFUP_HOST_DEVICE Cell CellAt(int64_t n, int64_t cy, int64_t cx) const {
    Cell c{CellSpan(this->ay, cy), CellSpan(this->ax, cx), {}};
    if (c.Empty()) return c;
    const int64_t iy0 = cy / 2, iy1 = iy0 + (cy % 2), ix0 = cx / 2, ix1 = ix0 + (cx % 2);
    c.p[0] = this->logits + this->s.At(n, iy0, ix0, 0);
    c.p[1] = this->logits + this->s.At(n, iy0, ix1, 0);
    c.p[2] = this->logits + this->s.At(n, iy1, ix0, 0);
    c.p[3] = this->logits + this->s.At(n, iy1, ix1, 0);
    return c;
  }
  TFUP_HOST_DEVICE int64_t Words() const { return MaskWords(this->C); }
  TFUP_HOST_DEVICE int64_t WordEnd(int64_t w) const { return 64 * (w + 1) < this->C ? 64 * (w + 1) : this->C; }  // its classes: [64 w, end)
  TFUP_HOST_DEVICE int64_t CellIndex(int64_t n, int64_t cy, int64_t cx) const {
    return (n * 2 * this->ay.n_in + cy) * 2 * this->ax.n_in + cx;
  }
  TFUP_HOST_DEVICE int64_t SubIndex(int64_t n, int64_t by, int64_t bx) const {
    return (n * 2 * this->ay.n_in * SubBlocks(this->ay) + by) * 2 * this->ax.n_in * SubBlocks(this->ax) + bx;
  }
  TFUP_HOST_DEVICE static A Up(const Cell& c, int64_t k) {
    return fmax(fmax(ToAcc(c.p[0][k]), ToAcc(c.p[1][k])), fmax(ToAcc(c.p[2][k]), ToAcc(c.p[3][k])));
  }

  // 1a, space (n, 2h, 2w, words).
  TFUP_HOST_DEVICE void Stats(int64_t n, int64_t cy, int64_t cx, int64_t w) const {
    A* out = cell_stats + (CellIndex(n, cy, cx) * Words() + w) * 4;
    const Cell cell = CellAt(n, cy, cx);
    if (cell.Empty()) return;  // no sub-block reads it
    const A top = FiniteMax(A(0));
    A best_lo = -A(INFINITY), min_lo = A(INFINITY), max_up = -A(INFINITY);
    bool finite = true;
    const int64_t end = WordEnd(w);
    for (int64_t k = 64 * w; k < end; ++k) {
      const A a = ToAcc(cell.p[0][k]), b = ToAcc(cell.p[1][k]), d = ToAcc(cell.p[2][k]), e = ToAcc(cell.p[3][k]);
      finite = finite && fabs(a) <= top && fabs(b) <= top && fabs(d) <= top && fabs(e) <= top;
      const A lo = fmin(fmin(a, b), fmin(d, e)), up = fmax(fmax(a, b), fmax(d, e));
      best_lo = lo > best_lo ? lo : best_lo;
      min_lo = lo < min_lo ? lo : min_lo;
      max_up = up > max_up ? up : max_up;
    }
    out[0] = best_lo;
    out[1] = min_lo;
    out[2] = max_up;
    out[3] = finite ? A(1) : A(0);
  }

  // What 1b and 1c share about a sub-block: its cell, corner pixels and the first level's cut.
  struct Sub {
    Cell cell;
    bool empty, finite;
    A delta, cut;
    int64_t y0, y1, x0, x1;
  };
  TFUP_HOST_DEVICE Sub SubAt(int64_t n, int64_t by, int64_t bx) const {
    Sub sb{};
    const int64_t cy = by / SubBlocks(this->ay), cx = bx / SubBlocks(this->ax);
    sb.cell = CellAt(n, cy, cx);
    sb.y0 = sb.cell.y.first + (by % SubBlocks(this->ay)) * kArgmaxSub;
    sb.x0 = sb.cell.x.first + (bx % SubBlocks(this->ax)) * kArgmaxSub;
    sb.y1 = sb.y0 + kArgmaxSub < sb.cell.y.end ? sb.y0 + kArgmaxSub : sb.cell.y.end;
    sb.x1 = sb.x0 + kArgmaxSub < sb.cell.x.end ? sb.x0 + kArgmaxSub : sb.cell.x.end;
    sb.empty = sb.cell.Empty() || sb.y0 >= sb.y1 || sb.x0 >= sb.x1;  // no pixel here
    if (sb.empty) return sb;
    const A* st = cell_stats + CellIndex(n, cy, cx) * Words() * 4;
    A best_lo = -A(INFINITY), min_lo = A(INFINITY), max_up = -A(INFINITY);
    sb.finite = true;
    for (int64_t w = 0; w < Words(); ++w, st += 4) {
      best_lo = st[0] > best_lo ? st[0] : best_lo;
      min_lo = st[1] < min_lo ? st[1] : min_lo;
      max_up = st[2] > max_up ? st[2] : max_up;
      sb.finite = sb.finite && st[3] != A(0);
    }
    // As on the CPU: a few roundings in A, and one of T for the stored value (which can make a
    // smaller value equal to a larger one, a tie the lowest class would win).
    const A margin = A(8 * Epsilon<A>::v + 2 * Epsilon<T>::v);
    sb.delta = margin * fmax(fmax(-min_lo, max_up), A(0));
    sb.cut = best_lo - A(3) * sb.delta;
    return sb;
  }
  // Class k's values at the sub-block's four corner pixels, in q's order.
  TFUP_HOST_DEVICE void Corners(const BilinearPixel<T> (&q)[4], int64_t k, A* lo, A* up) const {
    const A v0 = q[0].Value(this->logits, k), v1 = q[1].Value(this->logits, k);
    const A v2 = q[2].Value(this->logits, k), v3 = q[3].Value(this->logits, k);
    *lo = fmin(fmin(v0, v1), fmin(v2, v3));
    *up = fmax(fmax(v0, v1), fmax(v2, v3));
  }

  // fn(k, lo, up) for each class k of word w that survives the first level, with its smallest and
  // largest value at the sub-block's four corner pixels.
  template <class Fn>
  TFUP_HOST_DEVICE void Survivors(const Sub& sb, int64_t n, int64_t w, const Fn& fn) const {
    const BilinearPixel<T> q[4] = {this->Pixel(n, sb.y0, sb.x0), this->Pixel(n, sb.y0, sb.x1 - 1),
                                   this->Pixel(n, sb.y1 - 1, sb.x0), this->Pixel(n, sb.y1 - 1, sb.x1 - 1)};
    const int64_t end = WordEnd(w);
    for (int64_t k = 64 * w; k < end; ++k) {
      if (Up(sb.cell, k) < sb.cut) continue;
      A lo, up;
      Corners(q, k, &lo, &up);
      fn(k, lo, up);
    }
  }

  // 1b and 1c, space (n, 2h SubBlocks, 2w SubBlocks, words).
  TFUP_HOST_DEVICE void Pass(bool masks_now, int64_t n, int64_t by, int64_t bx, int64_t w) const {
    const int64_t at = SubIndex(n, by, bx) * Words() + w;
    const Sub sb = SubAt(n, by, bx);
    if (!masks_now) {
      A best = -A(INFINITY);
      if (!sb.empty && sb.finite) Survivors(sb, n, w, [&](int64_t, A lo, A) { best = lo > best ? lo : best; });
      sub_lo[at] = best;
      return;
    }
    uint64_t bits = 0;
    if (!sb.empty && !sb.finite) {
      const int64_t end = WordEnd(w);
      for (int64_t k = 64 * w; k < end; ++k) bits |= uint64_t{1} << (k % 64);
    } else if (!sb.empty) {
      const A* lows = sub_lo + SubIndex(n, by, bx) * Words();
      A best = -A(INFINITY);
      for (int64_t v = 0; v < Words(); ++v) best = lows[v] > best ? lows[v] : best;
      const A sub_cut = best - A(5) * sb.delta;
      Survivors(sb, n, w, [&](int64_t k, A, A up) {
        if (!(up < sub_cut)) bits |= uint64_t{1} << (k % 64);
      });
    }
    masks[at] = bits;
  }
};
template <typename T, int kStage>  // 0: 1a, 1: 1b, 2: 1c
struct ArgmaxPass1Body : ArgmaxPass1<T> {
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t w0, int64_t ws, int64_t w_end) const {
    for (int64_t w = w0; w < w_end; w += ws) {
      if (kStage == 0) {
        this->Stats(n, y, x, w);
      } else {
        this->Pass(kStage == 2, n, y, x, w);
      }
    }
  }
};

// Pass 2, space (n, y, x, 1) over the output pixels: the best of its sub-block's classes.
template <typename T>
struct ArgmaxBody : HeadBase<T> {
  const uint64_t* masks;
  int64_t* labels;
  T* scores;  // may be null
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t, int64_t, int64_t) const {
    using A = typename AccOf<T>::type;
    const BilinearPixel<T> p = this->Pixel(n, y, x);
    const uint64_t* mask = SubBlockMask(*this, masks, n, SubBlockOf(this->ay, this->sy, y),
                                        SubBlockOf(this->ax, this->sx, x));
    int64_t best = 0;
    A best_v = A(Lowest<T>::v);
    for (int64_t k = 0; k < MaskWords(this->C); ++k) {
      for (uint64_t bits = mask[k]; bits != 0; bits &= bits - 1) {
        const int64_t c = 64 * k + LowestBit(bits);
        const A v = this->Score(p, c);
        if (v > best_v) {  // ties: the lowest class, like tf.argmax (classes ascend)
          best = c;
          best_v = v;
        }
      }
    }
    const int64_t i = this->MapIndex(n, y, x);
    labels[i] = best;
    if (scores != nullptr) scores[i] = Store<T>::From(best_v > A(Lowest<T>::v) ? best_v : this->Score(p, 0));
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

// The loss logsumexp - score[label] (with label smoothing s, logsumexp - (1 - s) score[label] -
// s mean(score)) and the stats (max, sum) the gradient takes; either output
// may be null. A bad label gives NaN for both, an ignored pixel 0.
template <typename T>
struct CrossEntropyBody : HeadBase<T> {
  LabelMap labels;
  LabelRule rule;
  T* loss;
  double* stats;  // [pixels, 2]
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t, int64_t, int64_t) const {
    using A = typename AccOf<T>::type;
    const int64_t i = this->MapIndex(n, y, x), label = labels[i];
    A out = A(0), max = A(0), sum = A(0);
    if (!rule.Skips(label)) {
      if (label < 0 || label >= this->C) {
        out = max = sum = QuietNaN<A>();
      } else {
        const BilinearPixel<T> p = this->Pixel(n, y, x);
        const SoftmaxStats<T> st(*this, p);
        max = st.max;
        sum = st.sum;
        A target = this->Score(p, label);
        if (rule.smoothing != 0) {  // (1 - s) v[label] + s mean(v)
          A all = A(0);
          for (int64_t c = 0; c < this->C; ++c) all += this->Score(p, c);
          target = A(1 - rule.smoothing) * target + A(rule.smoothing) * (all / A(this->C));
        }
        out = (max + Log(sum)) - target;
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
// reaches of loss_grad * weight * (softmax - target), the softmax exp(score - max) / sum from the
// forward's stats. Ignored pixels are skipped; every other pixel counts, so NaN logits give NaN
// even where the upstream gradient is 0 (0 * NaN), as on the CPU, and a bad label's NaN stats
// give NaN.
template <typename T>
struct CrossEntropyGradBody : HeadBase<T> {
  using A = typename AccOf<T>::type;
  LabelMap labels;
  LabelRule rule;
  const double* stats;
  const T* loss_grad;  // null: 1 at every pixel (UpsampleSoftmaxCrossEntropyWithGrad)
  T* grad;
  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t iy, int64_t ix, int64_t c0,
                                   int64_t cs, int64_t c_end) const {
    const Run ry = OutputsOf(this->ay, iy), rx = OutputsOf(this->ax, ix);
    const A on_label = A(1 - rule.smoothing), uniform = A(rule.smoothing / static_cast<double>(this->C));
    A acc[kGroupLanes];
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) acc[j] = A(0);
    for (int64_t my = 0; my < ry.count; ++my) {
      const int64_t y = ry.i0 + my;
      const A wy = BilinearWeights<A>::Axis1(this->ay.stride, ry.t0 + my);
      for (int64_t mx = 0; mx < rx.count; ++mx) {
        const int64_t x = rx.i0 + mx, i = this->MapIndex(n, y, x);
        const int64_t label = labels[i];
        if (rule.Skips(label)) continue;
        const A max = static_cast<A>(stats[2 * i]), sum = static_cast<A>(stats[2 * i + 1]);
        const A wx = BilinearWeights<A>::Axis1(this->ax.stride, rx.t0 + mx);
        const A sw = (loss_grad == nullptr ? A(1) : ToAcc(loss_grad[rule.uniform_grad ? 0 : i])) * (wy * wx), soft = sw / sum;
        const BilinearPixel<T> px = this->Pixel(n, y, x);
        TFUP_UNROLL
        for (int j = 0; j < kGroupLanes; ++j) {
          const int64_t c = c0 + j * cs;
          if (c < c_end) {  // the target (1 - s) onehot + s / C
            // (the uniform term only with smoothing: an infinite loss_grad times 0 would be NaN)
            acc[j] += soft * Exp(this->Score(px, c) - max) - (label == c ? sw * on_label : A(0)) -
                      (rule.smoothing != 0 ? sw * uniform : A(0));
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
