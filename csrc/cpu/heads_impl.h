// Fused segmentation heads: upsample + argmax, and upsample + softmax cross-entropy with its
// gradient, computed pixel by pixel from the coarse NHWC logits. The full-resolution logits never
// exist: memory is the label / loss map plus a row of scratch per thread. Included by isa.cc
// after kernels_impl.h, in the same instruction-set namespace.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>
#include <vector>
#include <type_traits>

#include "softmax_exp.h"

namespace tfup {
namespace TFUP_ISA {

// Reductions over a pixel's classes. Eight 32-byte vectors of partial results (64 floats or 32
// doubles) are eight independent chains, so the loop runs at the machine's throughput instead of
// one operation's latency; the partials are then combined in a fixed tree. The order is the same
// in every build -- GCC's vector extension lowers a 32-byte vector to two SSE registers, one AVX
// register, or the low half of an AVX-512 one -- so every build gives the same bits. op takes two
// scalars or two vectors.
// Fewer values than the eight vectors hold (a VOC or Cityscapes pixel's 19-21 classes) take one
// vector of partials and a three-level tree instead: the 64-way tree alone would cost three
// times the work of the values. Either way the order depends on C alone.
// map (a scalar's and a vector's, lane by lane the same) is applied to each value as it is read:
// the reduction of map(v[c]) without storing the mapped values (ShiftedExp below).
// The AVX-512 build runs the eight 32-byte chains as four 64-byte vectors (chains 2i and 2i + 1
// in one: lane by lane the same partials). Zen 4 executes a 512-bit operation as two 256-bit
// halves, but holds it as one entry in its schedulers: a loop whose chains are long (map =
// ShiftedExp) keeps twice the values in flight (1000 classes: 32-byte vectors had taken 25% longer
// than the 64-byte loop of exps the map replaced).
struct Unmapped {
  template <typename V>
  V operator()(V x) const { return x; }
};
template <typename A, typename Op, typename Map = Unmapped>
inline A Reduce(const A* v, int64_t C, A init, Op op, Map map = Map()) {
  constexpr int kChains = 8, kLanes = 32 / static_cast<int>(sizeof(A)), kParts = kChains * kLanes;
  typedef A Vec __attribute__((vector_size(32)));
  using LaneInt = std::conditional_t<sizeof(A) == 4, int32_t, int64_t>;
  typedef LaneInt Lane __attribute__((vector_size(32)));
  if (C < kParts) {
    Vec one;
    for (int l = 0; l < kLanes; ++l) one[l] = init;
    int64_t c = 0;
    for (; c + kLanes <= C; c += kLanes) {
      Vec x;
      std::memcpy(&x, v + c, sizeof(x));
      one = op(one, map(x));
    }
    A part[kLanes];
    std::memcpy(part, &one, sizeof(part));
    for (int k = 0; c < C; ++c, ++k) part[k] = op(part[k], map(v[c]));
    for (int half = kLanes / 2; half >= 1; half /= 2)
      for (int k = 0; k < half; ++k) part[k] = op(part[k], part[k + half]);
    return part[0];
  }
#if defined(TFUP_ISA_AVX512)
  constexpr int kWideBytes = 64;
#else
  constexpr int kWideBytes = 32;
#endif
  constexpr int kWide = kParts * static_cast<int>(sizeof(A)) / kWideBytes, kPerWide = kChains / kWide;
  typedef A Wide __attribute__((vector_size(kWideBytes)));
  Wide wide[kWide];
  for (int j = 0; j < kWide; ++j)
    for (int l = 0; l < kLanes * kPerWide; ++l) wide[j][l] = init;
  int64_t c = 0;
  for (; c + kParts <= C; c += kParts) {
    StaticFor<kWide>([&](auto j) __attribute__((always_inline)) {
      Wide x;
      std::memcpy(&x, v + c + j * kLanes * kPerWide, sizeof(x));
      wide[j] = op(wide[j], map(x));
    });
  }
  // Every index into acc a constant (StaticFor), so the partials stay in registers (an index
  // computed at run time had put them on the stack, loop and all).
  Vec acc[kChains];
  StaticFor<kChains>([&](auto j) __attribute__((always_inline)) { std::memcpy(&acc[j], reinterpret_cast<const char*>(wide) + j * sizeof(Vec), sizeof(Vec)); });
  // The values past the last whole kParts, the k-th of them into part[k]: as whole vectors, the
  // last one partial (its lanes past C keep their partials; GCC had left this loop scalar: 22 of
  // ADE20K's 150 classes had cost as much as the 128 before them).
  StaticFor<kChains>([&](auto j) __attribute__((always_inline)) {
    const int64_t left = C - c;
    if (left <= 0) return;
    Vec x;
    if (left >= kLanes) {
      std::memcpy(&x, v + c, sizeof(x));
      acc[j] = op(acc[j], map(x));
    } else {  // the lanes past C: copies of v[c], a value map takes as it takes the others
      A tail[kLanes];
      for (int l = 0; l < kLanes; ++l) tail[l] = v[c];
      std::memcpy(tail, v + c, left * sizeof(A));
      std::memcpy(&x, tail, sizeof(x));
      Lane lanes;
      for (int l = 0; l < kLanes; ++l) lanes[l] = l;
      acc[j] = lanes < static_cast<LaneInt>(left) ? op(acc[j], map(x)) : acc[j];
    }
    c += kLanes;
  });
  // The tree, part[k] = op(part[k], part[k + half]) for half = kParts / 2 ... 1: its levels down
  // to one vector as whole vectors (lane by lane the same operations; GCC left the scalar loop
  // scalar, 63 steps per call: ~30% of the ADE20K-like resize loss forward's time).
  for (int n = kChains / 2; n >= 1; n /= 2)
    for (int j = 0; j < n; ++j) acc[j] = op(acc[j], acc[j + n]);
  A part[kLanes];
  std::memcpy(part, acc, sizeof(part));
  for (int half = kLanes / 2; half >= 1; half /= 2)
    for (int k = 0; k < half; ++k) part[k] = op(part[k], part[k + half]);
  return part[0];
}

// Below this many classes the loss forwards work on kLossBlock pixels at once, the classes the
// outer loop (LossRow), and the argmax's bounds are running values: a pixel's classes fill less
// than Reduce's eight vectors, so its horizontal reductions would dominate.
constexpr int64_t kFewClasses = 64;
// The pixels FewClassLossRow takes at a time, and PixelLossRow's pixels per batch of logs.
constexpr int64_t kLossBlock = 16;

// The maximum and minimum as Reduce's op (a NaN operand on the right is never taken).
struct MaxOp {
  template <typename V>
  V operator()(V a, V b) const { return b > a ? b : a; }
};
struct MinOp {
  template <typename V>
  V operator()(V a, V b) const { return b < a ? b : a; }
};
struct AddOp {
  template <typename V>
  V operator()(V a, V b) const { return a + b; }
};

// tf.argmax's choice among v[0, k) (Eigen's ArgMax reducer, from (0, lowest)): the first place
// of the largest value above `lowest` (the lowest finite value of the type argmax runs in), so a
// NaN, -inf or lowest itself is never chosen, and 0 when nothing is above lowest. With finite
// inputs and many values, the maximum is found as a vectorised reduction, then its first place.
template <typename A>
inline int64_t ArgmaxFirst(const A* v, int64_t k, bool finite, A lowest) {
  if (finite && k > 16) {
    const A m = Reduce(v, k, lowest, MaxOp());  // MaxOp never takes a NaN operand
    if (!(m > lowest)) return 0;
    int64_t best = 0;
    while (v[best] != m) ++best;  // m is one of v: found before k
    return best;
  }
  int64_t best = 0;
  A best_v = lowest;
  for (int64_t j = 0; j < k; ++j) {
    if (v[j] > best_v) {
      best = j;
      best_v = v[j];
    }
  }
  return best;
}

// The pruning's summary of C classes' bounds lo <= up: the best lower bound, and the largest
// |bound|, max(-min lo, max up, 0) (0 for C = 0). At few classes as four running values per
// reduction (Reduce's vector loads of values just stored one by one would stall on the store
// buffer, one chain would wait on each comparison's latency); the same values either way for
// finite bounds, max and min being exact (the pruning uses them only then).
template <typename A>
inline void SummariseBounds(const A* lo, const A* up, int64_t C, A* best_lo, A* big) {
  A best = C > 0 ? lo[0] : A(0), least = best, most = C > 0 ? up[0] : A(0);
  if (C < kFewClasses) {
    A b[4] = {best, best, best, best}, l[4] = {best, best, best, best}, m[4] = {most, most, most, most};
    for (int64_t c = 0; c < C; c += 4) {
      for (int64_t j = 0; j < 4 && c + j < C; ++j) {
        b[j] = MaxOp()(b[j], lo[c + j]);
        l[j] = MinOp()(l[j], lo[c + j]);
        m[j] = MaxOp()(m[j], up[c + j]);
      }
    }
    best = MaxOp()(MaxOp()(b[0], b[1]), MaxOp()(b[2], b[3]));
    least = MinOp()(MinOp()(l[0], l[1]), MinOp()(l[2], l[3]));
    most = MaxOp()(MaxOp()(m[0], m[1]), MaxOp()(m[2], m[3]));
  } else {
    best = Reduce(lo, C, best, MaxOp());
    least = Reduce(lo, C, least, MinOp());
    most = Reduce(up, C, most, MaxOp());
  }
  *best_lo = best;
  *big = std::max(std::max(-least, most), A(0));
}

// The pruning's shortcut for the common case, a cell one class leads everywhere. Per input pixel
// (one pass over the logits, where the cell-by-cell bounds read each pixel four times): the
// largest value `first` and its first class `id`, the largest of the other classes' values
// `second` (first itself on a tie), and the largest |value| `big` -- infinity where a value is
// not finite in the caller's sense (|v| <= top, v as `convert` gives it).
template <typename A>
struct Leader {
  A first, second, big;
  int32_t id;  // Leaders makes none past 2^31 classes
};

template <typename A, typename T, typename Convert>
std::vector<Leader<A>> Leaders(const T* logits, int64_t pixels, int64_t C, A top, Convert convert,
                               const ParallelFor& pf) {
  const bool any = C > 0 && C <= std::numeric_limits<int32_t>::max();  // else no shortcut
  std::vector<Leader<A>> out(any ? pixels : 0);
  if (!any) return out;
  const A inf = std::numeric_limits<A>::infinity();
  // Sixteen pixels at a time, classes in the outer loop: lanes across pixels, no horizontal
  // reductions (a pixel of a VOC-like head has only ~20 classes).
  constexpr int64_t kPixels = 16;
  pf((pixels + kPixels - 1) / kPixels, C * kPixels * 2, [&](int64_t begin, int64_t end) {
    for (int64_t i0 = begin * kPixels; i0 < std::min(pixels, end * kPixels); i0 += kPixels) {
      const int64_t n = std::min(kPixels, pixels - i0);
      const T* x = logits + i0 * C;
      A first[kPixels], second[kPixels], big[kPixels];
      int32_t id[kPixels], ok[kPixels];
      for (int64_t j = 0; j < kPixels; ++j) {
        first[j] = second[j] = -inf;
        big[j] = A(0);
        id[j] = ok[j] = 0;
      }
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t j = 0; j < n; ++j) {
          const A v = convert(x[j * C + c]), m = std::abs(v);
          second[j] = std::max(second[j], std::min(first[j], v));
          id[j] = v > first[j] ? static_cast<int32_t>(c) : id[j];
          first[j] = std::max(first[j], v);
          big[j] = std::max(big[j], m);
          ok[j] += m <= top;
        }
      }
      for (int64_t j = 0; j < n; ++j)
        out[i0 + j] = ok[j] == C ? Leader<A>{first[j], second[j], big[j], id[j]} : Leader<A>{-inf, -inf, inf, 0};
    }
  });
  return out;
}

// The class that survives the pruning alone in a cell whose four taps are the pixels a..d, or -1:
// where they share their leader and its smallest value exceeds every other class's largest by
// more than `slack` roundings (delta = margin x the largest |value|), the pruning's test
// `hi[c] < best_lo - slack * delta` holds for every other class c (hi[c] <= second, best_lo >=
// first, and rounding is monotonic) and fails for the leader.
template <typename A>
inline int64_t SoleLeader(const Leader<A>& a, const Leader<A>& b, const Leader<A>& c,
                          const Leader<A>& d, A margin, A slack) {
  if (a.id != b.id || a.id != c.id || a.id != d.id) return -1;
  const A lo = std::min(std::min(a.first, b.first), std::min(c.first, d.first));
  const A hi = std::max(std::max(a.second, b.second), std::max(c.second, d.second));
  const A big = std::max(std::max(a.big, b.big), std::max(c.big, d.big));
  const A delta = margin * big;
  return hi < lo - slack * delta ? a.id : -1;
}

// Classes packed for evaluation: their four taps contiguously (as A) and their class ids, in
// ascending class order.
template <typename A>
struct Packed {
  std::vector<A> q;  // [4][cap]: taps 00, 01, 10, 11
  std::vector<int64_t> id;
  int64_t k = 0, cap = 0;
  explicit Packed(int64_t c) : q(4 * c), id(c), cap(c) {}
  A* Tap(int t) { return q.data() + t * cap; }
  const A* Tap(int t) const { return q.data() + t * cap; }
};

// upsample_argmax with pruning (docs/DESIGN.md, "Fused heads"). The pixels that share their taps
// (a block of up to f x f outputs) are, per class, a convex combination of the same <= 4 coarse
// values, times a positive factor common to every class (a border's single tap weight, else 1):
// the classes' order at a pixel is that of values between the smallest and largest of their 4.
// A class whose upper bound is below the best lower bound, by more than the rounding of the
// computed values, can be neither the maximum nor tied with it anywhere in the block, so only
// the survivors are evaluated -- with exactly the forward's arithmetic, so labels and scores are
// the bits of argmax / max of bilinear_upsample. Non-finite logits in a block turn pruning off
// there.
template <typename T>
void UpsampleArgmaxImpl(const Geometry& g, const T* logits, int64_t* labels, T* scores,
                        const ParallelFor& pf) {
  using A = Acc<T>;
  const BilinearPlan<T, A> plan(g);
  const int64_t C = g.c, OH = g.y.n_out, OW = g.x.n_out, W = g.x.n_in;
  const auto yruns = SameTapRuns(plan.ty), xruns = SameTapRuns(plan.tx);
  const int64_t ny = static_cast<int64_t>(yruns.size());
  constexpr int64_t kSub = 16;  // sub-blocks of kSub x kSub outputs for the second pruning
  // Bound on |computed - exact| of a value, per unit of the largest |logit| involved: a few
  // roundings in A, plus one of T for the stored value (rounding can make a smaller value equal
  // to a larger one, a tie the lowest class would win).
  const A margin = A(8) * std::numeric_limits<A>::epsilon() +
                   A(2) * static_cast<A>(std::numeric_limits<T>::epsilon());
  const A inf = std::numeric_limits<A>::infinity();

  // Work unit: one image x one run of output rows that read the same two input rows.
  // Large outputs go out a unit's rows at a time with streaming stores (UnitRows).
  const bool stream = StreamOutput(g.n * OH * OW * static_cast<int64_t>(sizeof(int64_t)));
  const auto leaders = Leaders<A>(logits, g.n * g.y.n_in * W, C, std::numeric_limits<A>::max(),
                                  [](T x) { return Widen(x); }, pf);
  pf(g.n * ny, OW * C * 2 * std::max<int64_t>(1, OH / std::max<int64_t>(1, ny)), [&](int64_t begin, int64_t end) {
    std::vector<A> hi(C), vals(C), cols(2 * C), corner(4 * C);
    Packed<A> block(C), sub(C);
    UnitRows<int64_t> label_rows(labels, OW, stream);
    UnitRows<T> score_rows(scores, OW, stream);

    // The column values along y of output row oy for the packed classes (the forward's first
    // step, once per row) into c0 / c1.
    auto columns = [&](const Packed<A>& pk, A wy0, A wy1, bool two_y, A* c0, A* c1) {
      const A *q00 = pk.Tap(0), *q01 = pk.Tap(1), *q10 = pk.Tap(2), *q11 = pk.Tap(3);
      for (int64_t k = 0; k < pk.k; ++k) {
        A a = wy0 * q00[k];
        if (two_y) a += wy1 * q10[k];
        A b = wy0 * q01[k];
        if (two_y) b += wy1 * q11[k];
        c0[k] = a;
        c1[k] = b;
      }
    };
    // Pixel values (the forward's second step along x), stored as T and widened back: the
    // values the argmax of the forward compares.
    auto pixel = [&](int64_t n, A wx0, A wx1, bool two_x, const A* c0, const A* c1, A* v) {
      if (two_x) {
        for (int64_t k = 0; k < n; ++k) {
          A r = wx0 * c0[k];
          r += wx1 * c1[k];
          v[k] = Widen(Narrow<T>(r));
        }
      } else {
        for (int64_t k = 0; k < n; ++k) v[k] = Widen(Narrow<T>(wx0 * c0[k]));
      }
    };
    // Labels (and scores) of rows [a0, a1) x columns [b0, b1) from the packed classes.
    auto evaluate = [&](const Packed<A>& pk, bool finite, const T* in, int64_t s, int64_t ix,
                        bool two_x, int64_t a0, int64_t a1, int64_t b0, int64_t b1) {
      const int64_t K = pk.k;
      A* c0 = cols.data();
      A* c1 = c0 + K;
      for (int64_t oy = a0; oy < a1; ++oy) {
        int64_t* const label_row = label_rows.Row(s * OH + oy);
        T* const score_row = score_rows.Row(s * OH + oy);
        if (K == 1) std::fill(label_row + b0, label_row + b1, pk.id[0]);  // one class left: its label
        if (K == 1 && score_row == nullptr) continue;
        const auto row = plan.RowTaps(in, oy, C);
        columns(pk, row.w[0], row.w[1], row.n == 2, c0, c1);
        if (K == 1) {  // and its values as the scores
          for (int64_t ox = b0; ox < b1; ++ox) {
            const A wx0 = plan.wx[g.x.Tap(ox, ix)];
            const A wx1 = two_x ? plan.wx[g.x.Tap(ox, ix + 1)] : A(0);
            A v;
            pixel(1, wx0, wx1, two_x, c0, c1, &v);
            score_row[ox] = Narrow<T>(v);
          }
          continue;
        }
        for (int64_t ox = b0; ox < b1; ++ox) {
          const A wx0 = plan.wx[g.x.Tap(ox, ix)];
          const A wx1 = two_x ? plan.wx[g.x.Tap(ox, ix + 1)] : A(0);
          A* v = vals.data();
          pixel(K, wx0, wx1, two_x, c0, c1, v);
          const int64_t best = ArgmaxFirst(v, K, finite, Widen(std::numeric_limits<T>::lowest()));
          label_row[ox] = pk.id[best];
          if (score_row != nullptr) score_row[ox] = Narrow<T>(v[best]);
        }
      }
    };

    for (int64_t u = begin; u < end; ++u) {
      const int64_t s = u / ny;
      const auto [y0, y1] = yruns[u % ny];
      const T* in = logits + s * g.y.n_in * W * C;
      const auto row0 = plan.RowTaps(in, y0, C);
      label_rows.Begin(s * OH + y0, s * OH + y1);
      score_rows.Begin(s * OH + y0, s * OH + y1);
      const Leader<A>* lead[2] = {};
      if (!leaders.empty())
        for (int r = 0; r < 2; ++r) lead[r] = leaders.data() + (row0.rows[r] - logits) / C;
      for (const auto& [x0, x1] : xruns) {
        const int64_t ix = plan.tx.first[x0], nx = plan.tx.count[x0];
        const T* p[4] = {row0.rows[0] + ix * C, row0.rows[0] + (ix + nx - 1) * C,
                         row0.rows[1] + ix * C, row0.rows[1] + (ix + nx - 1) * C};
        const bool two_y = row0.n == 2, two_x = nx == 2;
        const int64_t sole = leaders.empty() ? -1 : SoleLeader(lead[0][ix], lead[0][ix + nx - 1], lead[1][ix],
                                                      lead[1][ix + nx - 1], margin, A(3));
        if (sole >= 0) {  // what the pruning below would leave: this class alone
          block.k = 1;
          block.id[0] = sole;
          for (int t = 0; t < 4; ++t) block.Tap(t)[0] = Widen(p[t][sole]);
          evaluate(block, true, in, s, ix, two_x, y0, y1, x0, x1);
          continue;
        }
        // 1. Bounds per class over the whole block (elementwise, so it vectorises), then the
        // best lower bound, the largest |bound| and finiteness as reductions.
        A* __restrict lo = vals.data();
        A* __restrict up = hi.data();
        int64_t ok = 0;  // classes whose four values are all finite
        const A top = std::numeric_limits<A>::max();
        for (int64_t c = 0; c < C; ++c) {
          const A a = Widen(p[0][c]), b = Widen(p[1][c]), d = Widen(p[2][c]), e = Widen(p[3][c]);
          const A l = std::min(std::min(a, b), std::min(d, e));
          const A u = std::max(std::max(a, b), std::max(d, e));
          lo[c] = l;
          up[c] = u;
          ok += (std::abs(a) <= top) & (std::abs(b) <= top) & (std::abs(d) <= top) & (std::abs(e) <= top);
        }
        const bool finite = ok == C;
        A best_lo, big;
        SummariseBounds(lo, up, C, &best_lo, &big);
        const A delta = margin * big;
        block.k = 0;
        for (int64_t c = 0; c < C; ++c) {
          if (finite && hi[c] < best_lo - A(3) * delta) continue;  // never the maximum here
          const int64_t k = block.k++;
          block.id[k] = c;
          for (int t = 0; t < 4; ++t) block.Tap(t)[k] = Widen(p[t][c]);
        }
        if (!finite || block.k <= 2) {
          evaluate(block, finite, in, s, ix, two_x, y0, y1, x0, x1);
          continue;
        }
        // 2. Along a run each tap's weight is affine in the output position, so a value is
        // bilinear in the position: over a sub-block its extremes are at the sub-block's corner
        // pixels. Their computed values bound every pixel's computed value to within 2 delta
        // (one for each computed value against its exact one).
        for (int64_t a0 = y0; a0 < y1; a0 += kSub) {
          const int64_t a1 = std::min(y1, a0 + kSub);
          const auto top = plan.RowTaps(in, a0, C), bottom = plan.RowTaps(in, a1 - 1, C);
          const int64_t K = block.k;
          A* t0 = corner.data();
          A* t1 = t0 + K;
          A* b0c = t1 + K;
          A* b1c = b0c + K;
          columns(block, top.w[0], top.w[1], two_y, t0, t1);
          columns(block, bottom.w[0], bottom.w[1], two_y, b0c, b1c);
          for (int64_t b0 = x0; b0 < x1; b0 += kSub) {
            const int64_t b1 = std::min(x1, b0 + kSub);
            const A l0 = plan.wx[g.x.Tap(b0, ix)], r0 = plan.wx[g.x.Tap(b1 - 1, ix)];
            const A l1 = two_x ? plan.wx[g.x.Tap(b0, ix + 1)] : A(0);
            const A r1 = two_x ? plan.wx[g.x.Tap(b1 - 1, ix + 1)] : A(0);
            A sub_lo = -inf;
            for (int64_t k = 0; k < K; ++k) {
              A v00 = l0 * t0[k];
              A v01 = r0 * t0[k];
              A v10 = l0 * b0c[k];
              A v11 = r0 * b0c[k];
              if (two_x) {
                v00 += l1 * t1[k];
                v01 += r1 * t1[k];
                v10 += l1 * b1c[k];
                v11 += r1 * b1c[k];
              }
              const A lo = std::min(std::min(v00, v01), std::min(v10, v11));
              hi[k] = std::max(std::max(v00, v01), std::max(v10, v11));
              sub_lo = std::max(sub_lo, lo);
            }
            sub.k = 0;
            for (int64_t k = 0; k < K; ++k) {
              if (hi[k] < sub_lo - A(5) * delta) continue;
              const int64_t j = sub.k++;
              sub.id[j] = block.id[k];
              for (int t = 0; t < 4; ++t) sub.Tap(t)[j] = block.Tap(t)[k];
            }
            evaluate(sub, true, in, s, ix, two_x, a0, a1, b0, b1);
          }
        }
      }
      label_rows.End();
      score_rows.End();
    }
  });
}

// A pixel's class scores for the loss: the upsampled logits as the forward stores them, i.e.
// rounded to T for the half types (the CUDA kernels do the same), then widened.
template <typename T, typename A>
inline void ScoresAsStored(A* v, int64_t C) {
  if constexpr (!std::is_same_v<T, A>) {
    for (int64_t c = 0; c < C; ++c) v[c] = Widen(Narrow<T>(v[c]));
  }
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
// f(L(), x) for a GCC vector x of 8 or (AVX-512 build) 16 floats, on it as the register of the
// lanes type L that holds as many.
template <typename Vec, typename F>
inline Vec Lanewise(Vec x, F&& f) {
  using L = std::conditional_t<sizeof(Vec) == sizeof(Lanes::V), Lanes, Lanes256>;
  static_assert(sizeof(Vec) == sizeof(typename L::V), "a vector of 8 or (AVX-512) 16 floats");
  typename L::V r;
  std::memcpy(&r, &x, sizeof(r));
  r = f(L(), r);
  std::memcpy(&x, &r, sizeof(r));
  return x;
}
#endif

// SoftmaxExp(x - m) as Reduce's map.
template <typename A>
struct ShiftedExp {
  A m;
  A operator()(A x) const { return SoftmaxExp(x - m); }
  template <typename Vec>
  Vec operator()(Vec x) const {
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
    if constexpr (std::is_same_v<A, float>) {  // SoftmaxExpLanes: SoftmaxExp's operations
      return Lanewise<Vec>(x, [&](auto lanes, auto r) {
        using L = decltype(lanes);
        return SoftmaxExpLanes<L>(L::Sub(r, L::Set(m)));
      });
    }
#endif
    for (int l = 0; l < static_cast<int>(sizeof(Vec) / sizeof(A)); ++l) x[l] = (*this)(x[l]);
    return x;
  }
};

// The softmax statistics of one pixel's upsampled logits v: returns the sum of exp(v - max), the
// max in *max_out. The exps are summed as they are computed, never stored.
template <typename A>
inline A ExpShifted(const A* v, int64_t C, A* max_out) {
  const A m = Reduce(v, C, v[0], MaxOp());
  *max_out = m;
  return Reduce(v, C, A(0), AddOp(), ShiftedExp<A>{m});
}

// The score the loss subtracts from logsumexp(v): v[y], or with label smoothing s the target
// distribution's mean score (1 - s) v[y] + s mean(v).
template <typename A>
inline A SmoothedTarget(const A* v, int64_t C, int64_t y, double s) {
  if (s == 0) return v[y];  // not 1 * v[y] + 0 * mean: an infinite score would give NaN
  return A(1 - s) * v[y] + A(s) * (Reduce(v, C, A(0), AddOp()) / A(C));
}

// LossRow (below) one pixel at a time, its reductions over the classes vectorised, and the logs of
// kLossBlock pixels' sums at once (SoftmaxLog as vectors: one pixel's alone is a chain of some 30
// dependent operations, which had cost a tenth of the ADE20K-like resize loss forward).
template <typename A, typename O, typename Scores>
void PixelLossRow(int64_t ow, int64_t C, LabelMap labels, const LabelRule& rule, Scores&& scores,
                  O* loss, double* stats, std::vector<A>& scratch) {
  constexpr int64_t P = kLossBlock;
  scratch.resize(C);
  A* v = scratch.data();
  for (int64_t o0 = 0; o0 < ow; o0 += P) {
    const int64_t np = std::min(P, ow - o0);
    A m[P], sum[P], target[P], lse[P];
    bool skip[P];
    for (int64_t p = 0; p < P; ++p) {
      const int64_t y = p < np ? labels[o0 + p] : 0;
      skip[p] = p >= np || rule.Skips(y);
      if (skip[p]) {
        m[p] = target[p] = A(0), sum[p] = A(1);
        continue;
      }
      scores(o0 + p, v);
      target[p] = SmoothedTarget(v, C, y, rule.smoothing);
      sum[p] = ExpShifted(v, C, &m[p]);
    }
    for (int64_t p = 0; p < P; ++p) lse[p] = SoftmaxLog(sum[p]);
    for (int64_t p = 0; p < np; ++p) {
      const int64_t o = o0 + p;
      if (loss != nullptr) loss[o] = skip[p] ? O(0) : Narrow<O>(lse[p] + m[p] - target[p]);  // logsumexp(v) - target
      if (stats != nullptr) {
        stats[2 * o] = skip[p] ? 0.0 : static_cast<double>(m[p]);
        stats[2 * o + 1] = skip[p] ? 0.0 : static_cast<double>(sum[p]);
      }
    }
  }
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
// dst[c * dst_stride + p] = src[p * src_stride + c] for an 8 x 8 block, in registers.
inline void Transpose8x8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 8; i += 2) t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * dst_stride, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * dst_stride, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}
#endif

// FewClassLossRow's transposition of its block's C classes: vt[c * P + p] = blk[p * C + c]. For
// float in 8 x 8 blocks in registers (the scalar copies, two memory operations a value, had cost
// a fifth of the VOC-like resize loss forward; a gather per class was no faster on Zen 4): the
// last block reads up to 7 values past blk (its caller's slack) and writes classes up to C
// rounded up to 8 (vt's rows), whose values nothing reads.
template <typename A>
inline void TransposePixels(const A* __restrict blk, int64_t C, A* __restrict vt) {
  constexpr int64_t P = kLossBlock;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  if constexpr (std::is_same_v<A, float>) {
    static_assert(P % 8 == 0, "8 x 8 blocks");
    for (int64_t p = 0; p < P; p += 8)
      for (int64_t c = 0; c < C; c += 8) Transpose8x8(blk + p * C + c, C, vt + c * P + p, P);
    return;
  }
#endif
  for (int64_t c = 0; c < C; ++c)
    for (int64_t p = 0; p < P; ++p) vt[c * P + p] = blk[p * C + c];
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
// The few-class loss forwards' scores for float logits class-major, a block of kLossBlock output
// pixels of a row at a time as FewClassLossRow reads them (vt[c * kLossBlock + p]), from input
// rows or column values transposed to class-major ([C][columns + Lanes::kN]): per window of
// Lanes::kN pixels, one load per class and row of the kN columns from the window's first lower
// column, each pixel's lower and upper column picked from it by a permutation, then each
// semantics' own operations on each value (the same bits as its per-pixel scores). Per pixel this
// replaces the per-pixel loads and stores of C values and the transposition of the block's
// scores: at 19 classes they had taken half of the loss forward's time. Blocks whose pixels'
// columns do not fit in their windows (shrinking) keep the pixel-by-pixel path.
class ClassWindows {
 public:
  static constexpr int64_t kN = Lanes::kN;
  static_assert(kLossBlock % kN == 0, "a block is whole windows");
  // An output pixel's taps: its lower and upper columns, its weights a and b (the semantics'
  // own: the resize's lerp, or the transposed convolution's two tap weights), and whether it has
  // a second tap (the transposed convolution's edge pixels have not).
  struct Taps {
    int64_t lower, upper;
    float a, b;
    bool two;
  };
  // taps(o) for the output pixels o of a row of ow.
  template <typename TapsOf>
  ClassWindows(int64_t ow, TapsOf&& taps) {
    const int64_t blocks = (ow + kLossBlock - 1) / kLossBlock, n = blocks * kLossBlock;
    first_.resize(n / kN);
    lower_.resize(n), upper_.resize(n), a_.resize(n), b_.resize(n), two_.assign(n / kN, 0), fits_.assign(blocks, 1);
    for (int64_t o = 0; o < n; ++o) {
      const Taps t = taps(std::min(o, ow - 1));  // past the row: copies of its last pixel
      const int64_t win = o / kN;
      if (o % kN == 0) first_[win] = t.lower;
      const int64_t lo = t.lower - first_[win], up = t.upper - first_[win];
      if (lo < 0 || up < 0 || lo >= kN || up >= kN) fits_[o / kLossBlock] = 0;
      lower_[o] = static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(lo, 0), kN - 1));
      upper_[o] = static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(up, 0), kN - 1));
      a_[o] = t.a, b_[o] = t.b;
      if (t.two) two_[win] |= uint32_t{1} << (o % kN);
    }
  }
  bool AnyFits() const { return std::find(fits_.begin(), fits_.end(), 1) != fits_.end(); }
  // For the block from output pixel o0 (a multiple of kLossBlock): false where it does not fit,
  // else f(p0, first, lower, upper, a, b, two) for each of its windows -- pixels o0 + p0 on, their
  // first column and, as vectors, the columns from it, the weights, and the lanes with a second
  // tap -- and true.
  template <typename F>
  bool ForWindows(int64_t o0, F&& f) const {
    if (!fits_[o0 / kLossBlock]) return false;
    for (int64_t p0 = 0; p0 < kLossBlock; p0 += kN) {
      const int64_t o = o0 + p0;
      f(p0, first_[o / kN], Lanes::LoadIdx(&lower_[o]), Lanes::LoadIdx(&upper_[o]), Lanes::Load(&a_[o]),
        Lanes::Load(&b_[o]), LaneMask(two_[o / kN]));
    }
    return true;
  }

 private:
  static Lanes::Mask LaneMask(uint32_t bits) {  // lane j in where bit j is set
#if defined(TFUP_ISA_AVX512)
    return static_cast<Lanes::Mask>(bits);
#else
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), lane), lane);
#endif
  }
  std::vector<int64_t> first_;         // per window: its first column
  std::vector<int32_t> lower_, upper_;  // per pixel: from its window's first column
  std::vector<float> a_, b_;
  std::vector<uint32_t> two_;          // per window: its lanes with a second tap
  std::vector<char> fits_;             // per block: its windows hold its pixels' columns
};

// The ClassWindows of a row of ow output pixels with taps(o) for a loss forward over T logits of
// C classes, or null where the class-major scores do not apply: other than float logits, C of
// kFewClasses or more (pixel by pixel), or no block of the row fits (its rows would be
// transposed for nothing).
template <typename T, typename TapsOf>
std::unique_ptr<ClassWindows> MakeClassWindows(int64_t C, int64_t ow, TapsOf&& taps) {
  if (!std::is_same_v<T, float> || C <= 0 || C >= kFewClasses || ow <= 0) return nullptr;
  auto windows = std::make_unique<ClassWindows>(ow, taps);
  if (!windows->AnyFits()) return nullptr;
  return windows;
}

// r, w columns of C floats ([w][C]), class-major into t: t[c * stride + x] (stride >= w).
inline void ClassMajor(const float* r, int64_t w, int64_t C, int64_t stride, float* __restrict t) {
  for (int64_t x = 0; x < w; ++x)
    for (int64_t c = 0; c < C; ++c) t[c * stride + x] = r[x * C + c];
}

// Input rows of [w][C] floats class-major, [C][w + Lanes::kN] (the columns past w: 0, loaded with
// a window, never picked), a thread's two last kept: the output rows that read the same input
// rows (8 of them at 8x) transpose them once.
class ClassRows {
 public:
  ClassRows(int64_t w, int64_t C) : w_(w), C_(C) {
    for (auto& r : rows_) r.assign(C * stride(), 0.0f);
  }
  int64_t stride() const { return w_ + Lanes::kN; }
  // Row `key` (a number naming it among the call's rows) from r, keeping the row `keep` (the
  // other one the caller holds) if it is there.
  const float* Get(int64_t key, const float* r, int64_t keep) {
    for (int j = 0; j < 2; ++j) {
      if (keys_[j] == key) return rows_[j].data();
    }
    const int j = keys_[0] == keep ? 1 : 0;
    keys_[j] = key;
    ClassMajor(r, w_, C_, stride(), rows_[j].data());
    return rows_[j].data();
  }

 private:
  int64_t w_, C_;
  int64_t keys_[2] = {-1, -1};
  std::vector<float> rows_[2];
};
#endif

// LossRow (below) at few classes, a block of P = kLossBlock pixels at a time with the classes as
// the outer loop: each pixel's max and sum of exps are running values across the block's pixels
// (one vector operation per class per block), the sums in class order (as the CUDA kernels sum);
// then each pixel's target score (and with label smoothing the sum of its scores) and its log
// (SoftmaxLog), as vectors across the block. block_scores(o0, np, vt) may write the scores of
// the pixels [o0, o0 + np) and P - np more (copies: never used) class-major itself,
// vt[c * P + p], and return true; else scores and a transposition do.
template <typename A, typename O, typename Scores, typename BlockScores>
void FewClassLossRow(int64_t ow, int64_t C, LabelMap labels, const LabelRule& rule, Scores&& scores,
                     BlockScores&& block_scores, O* loss, double* stats, std::vector<A>& scratch) {
  constexpr int64_t P = kLossBlock;
  const int64_t Cpad = (C + 7) / 8 * 8;
  scratch.resize(P * C + 8 + Cpad * P);
  A* __restrict blk = scratch.data();  // [P][C], as scores writes them (8 more read past it)
  A* __restrict vt = blk + P * C + 8;  // [Cpad][P]
  const A on_label = A(1 - rule.smoothing), uniform = A(rule.smoothing);
  for (int64_t o0 = 0; o0 < ow; o0 += P) {
    const int64_t np = std::min(P, ow - o0);
    int64_t y[P];
    for (int64_t p = 0; p < P; ++p) y[p] = p < np ? labels[o0 + p] : 0;
    if (!block_scores(o0, np, vt)) {
      for (int64_t p = 0; p < P; ++p) {
        if (p < np) {
          scores(o0 + p, blk + p * C);
        } else {
          std::fill(blk + p * C, blk + (p + 1) * C, A(0));
        }
      }
      TransposePixels(blk, C, vt);
    }
    A m[P], sum[P], target[P], all[P];
    {  // as 32-byte vectors of lanes (GCC leaves the scalar loop's compares scalar with AVX-512;
       // a 64-byte vector type is slower than the scalar loop in the AVX2 build)
      typedef A Vec __attribute__((vector_size(32)));
      constexpr int64_t kLanes = 32 / sizeof(A);
      static_assert(P % kLanes == 0, "P is whole vectors");
      for (int64_t p0 = 0; p0 < P; p0 += kLanes) {
        Vec mv, x;
        std::memcpy(&mv, vt + p0, sizeof(mv));
        for (int64_t c = 1; c < C; ++c) {
          std::memcpy(&x, vt + c * P + p0, sizeof(x));
          mv = x > mv ? x : mv;  // MaxOp: a NaN is never taken, NaN in class 0 stays
        }
        std::memcpy(m + p0, &mv, sizeof(mv));
      }
    }
    for (int64_t p = 0; p < P; ++p) sum[p] = A(0);
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t p = 0; p < P; ++p) sum[p] += SoftmaxExp(vt[c * P + p] - m[p]);
    }
    for (int64_t p = 0; p < P; ++p) target[p] = y[p] >= 0 && y[p] < C ? vt[y[p] * P + p] : A(0);
    if (rule.smoothing != 0) {
      for (int64_t p = 0; p < P; ++p) all[p] = A(0);
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t p = 0; p < P; ++p) all[p] += vt[c * P + p];
      }
    }
    A lse[P];  // log(sum), vectorised (SoftmaxLog)
    for (int64_t p = 0; p < P; ++p) lse[p] = SoftmaxLog(sum[p]);
    for (int64_t p = 0; p < np; ++p) {
      const bool skip = rule.Skips(y[p]);
      if (!skip && rule.smoothing != 0) target[p] = on_label * target[p] + uniform * (all[p] / A(C));
      if (loss != nullptr) loss[o0 + p] = skip ? O(0) : Narrow<O>(lse[p] + m[p] - target[p]);
      if (stats != nullptr) {
        stats[2 * (o0 + p)] = skip ? 0.0 : static_cast<double>(m[p]);
        stats[2 * (o0 + p) + 1] = skip ? 0.0 : static_cast<double>(sum[p]);
      }
    }
  }
}

// The loss and stats of the output pixels [0, ow) of one row, for both loss forwards: scores(o, v)
// writes pixel o's C scores as the loss reads them; labels, loss and stats point at the row's
// first pixel (loss, stats may be null). From kFewClasses classes (or with none: every pixel is
// then ignored) each pixel's classes in turn (PixelLossRow, the logs a batch at a time); below,
// kLossBlock pixels at once, class by class, where block_scores (FewClassLossRow) may take over
// from scores.
template <typename A, typename O, typename Scores, typename BlockScores>
void LossRow(int64_t ow, int64_t C, LabelMap labels, const LabelRule& rule, Scores&& scores,
             BlockScores&& block_scores, O* loss, double* stats, std::vector<A>& scratch) {
  if (C == 0 || C >= kFewClasses) return PixelLossRow(ow, C, labels, rule, scores, loss, stats, scratch);
  FewClassLossRow(ow, C, labels, rule, scores, block_scores, loss, stats, scratch);
}
template <typename A, typename O, typename Scores>
void LossRow(int64_t ow, int64_t C, LabelMap labels, const LabelRule& rule, Scores&& scores,
             O* loss, double* stats, std::vector<A>& scratch) {
  LossRow(ow, C, labels, rule, scores, [](int64_t, int64_t, A*) { return false; }, loss, stats, scratch);
}

// The forward also writes each pixel's max and sum (stats, as double: exact for every A), which
// the gradient takes instead of computing them again -- two of its passes over the classes.
template <typename T>
void UpsampleSoftmaxCrossEntropyImpl(const Geometry& g, const T* logits, LabelMap labels,
                                     LabelRule rule, T* loss, double* stats,
                                     const ParallelFor& pf) {
  using A = Acc<T>;
  const BilinearPlan<T, A> plan(g);
  const int64_t C = g.c, OH = g.y.n_out, OW = g.x.n_out, W = g.x.n_in;
  if (g.n == 0 || OH == 0) return;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  // Float logits at few classes: the scores class-major from the row's columns, where they fit.
  const auto windows = MakeClassWindows<T>(C, OW, [&](int64_t o) {
    const int64_t j = plan.tx.first[o];
    const bool two = plan.tx.count[o] == 2;
    return ClassWindows::Taps{j, two ? j + 1 : j, static_cast<float>(plan.wx[g.x.Tap(o, j)]),
                              two ? static_cast<float>(plan.wx[g.x.Tap(o, j + 1)]) : 0.0f, two};
  });
  const int64_t stride = W + Lanes::kN;  // the class-major columns' (the columns past W: 0, never picked)
#endif
  pf(g.n * OH, OW * C * 16, [&](int64_t begin, int64_t end) {
    std::vector<A> cols(W * C), scratch;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
    std::vector<float> class_cols(windows != nullptr ? C * stride : 0, 0.0f);
#endif
    for (int64_t u = begin; u < end; ++u) {
      const int64_t s = u / OH, oy = u % OH;
      plan.Columns(plan.RowTaps(logits + s * g.y.n_in * W * C, oy, C), C, cols.data());
      const int64_t base = (s * OH + oy) * OW;
      const auto scores = [&](int64_t ox, A* out) {
        plan.PixelFromColumns(cols.data(), ox, C, out);  // the forward's values
        ScoresAsStored<T>(out, C);
      };
      T* loss_row = loss == nullptr ? nullptr : loss + base;
      double* stats_row = stats == nullptr ? nullptr : stats + 2 * base;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
      if constexpr (std::is_same_v<T, float>) {
        if (windows != nullptr) {
          const float* t = class_cols.data();
          ClassMajor(cols.data(), W, C, stride, class_cols.data());
          LossRow<A>(OW, C, labels.From(base), rule, scores, [&](int64_t o0, int64_t, float* vt) {
            // PixelFromColumns' operations on each value, as class-major vectors of pixels: a
            // pixel without a second column keeps its first one's product
            return windows->ForWindows(o0, [&](int64_t p0, int64_t first, Lanes::Idx il, Lanes::Idx iu,
                                               Lanes::V w0, Lanes::V w1, Lanes::Mask two) {
              using L = Lanes;
              for (int64_t c = 0; c < C; ++c) {
                const L::V x = L::Load(t + first + c * stride);
                const L::V v = L::Mul(w0, L::Permute(x, il));
                L::Store(vt + c * kLossBlock + p0, L::AddWhere(two, v, L::Mul(w1, L::Permute(x, iu))));
              }
            });
          }, loss_row, stats_row, scratch);
          continue;
        }
      }
#endif
      LossRow<A>(OW, C, labels.From(base), rule, scores, loss_row, stats_row, scratch);
    }
  });
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
// The gradient's row below (one output row reduced along x into r) for float logits: per run of
// pixels with the same input columns, the columns' values and the run's sums into its one or two
// columns of r stay in registers; per pixel PixelFromColumns, SoftmaxExp, the target and the
// weighted adds (AddFcnLossGradPixel), operation for operation as the scalar loop (the same
// bits). The lanes past C hold the maximum (exp(0)) and never leave the registers.
// FewClassFcnLossGradRow keeps all of a pixel's NV vectors of classes in registers (NV at most 4;
// the last one's lanes of type Last, ClassVectors), FcnLossGradRowByVectors any number, a vector
// at a time over the run's pixels.
template <typename L>
struct FcnGradRegs {
  typename L::V c0, c1, s0, s1;  // a run's one or two columns' values; its sums into them
};
// A pixel's scalars for AddFcnLossGradPixel.
struct FcnLossGradPixel {
  int64_t y;                // its label
  float m, scale, off;      // its scores' maximum, loss_grad / the sum of its exps, the smoothing term
  float w0, w1, ws0, ws1;   // its columns' weights, and as they scale d
  float hot0, hot1;         // the one-hot's terms at y: -(w * gl)
};
// The pixel's terms (false where the rule skips it: an ignored pixel contributes nothing, NaN
// logits included); on_label, uniform: the target's 1 - s and s / C for label smoothing s.
inline bool FcnLossGradTerms(const BilinearPlan<float, float>& plan, int64_t ox, int64_t j0, bool two,
                             int64_t base, LabelMap labels, const LabelRule& rule, const double* stats,
                             const float* loss_grad, float on_label, float uniform, FcnLossGradPixel* p) {
  const int64_t i = base + ox, y = labels[i];
  if (rule.Skips(y)) return false;
  const bool smoothing = rule.smoothing != 0;
  const float gl = loss_grad[rule.uniform_grad ? 0 : i];
  const float m = static_cast<float>(stats[2 * i]), sum = static_cast<float>(stats[2 * i + 1]);
  const float scale = gl / sum, on = smoothing ? gl * on_label : gl;
  const float w0 = plan.wx[plan.g.x.Tap(ox, j0)], w1 = two ? plan.wx[plan.g.x.Tap(ox, j0 + 1)] : 0.0f;
  *p = {y, m, scale, gl * uniform, w0, w1, smoothing ? w0 : w0 * scale, smoothing ? w1 : w1 * scale,
        -(w0 * on), -(w1 * on)};
  return true;
}
template <typename Vec, typename Q>
inline void AddFcnLossGradPixel(Vec vec, Q& q, const FcnLossGradPixel& p, bool smoothing, bool two) {
  using L = typename Vec::L;
  using V = typename L::V;
  const V mv = L::Set(p.m);
  V v = L::Mul(L::Set(p.w0), q.c0);
  if (two) v = L::Add(v, L::Mul(L::Set(p.w1), q.c1));
  V d = SoftmaxExpLanes<L>(L::Sub(vec.PastEnd(v, mv), mv));  // past C: the maximum
  if (smoothing) d = L::Sub(L::Mul(d, L::Set(p.scale)), L::Set(p.off));
  const typename L::Mask at_y = OneLane<L>(p.y % Lanes::kN);
  q.s0 = L::Add(q.s0, L::Mul(L::Set(p.ws0), d));
  if (vec.Holds(p.y)) q.s0 = L::AddWhere(at_y, q.s0, L::Set(p.hot0));  // rj[y] -= w * on
  if (two) {
    q.s1 = L::Add(q.s1, L::Mul(L::Set(p.ws1), d));
    if (vec.Holds(p.y)) q.s1 = L::AddWhere(at_y, q.s1, L::Set(p.hot1));
  }
}
template <typename Vec, typename Q>
inline void LoadFcnLossGradRun(Vec vec, Q& q, const float* cols, const float* r, int64_t j0, bool two, int64_t C) {
  q.c0 = vec.Load(cols + j0 * C);
  q.s0 = vec.Load(r + j0 * C);
  q.c1 = two ? vec.Load(cols + (j0 + 1) * C) : q.c0;
  q.s1 = two ? vec.Load(r + (j0 + 1) * C) : q.s0;
}
template <typename Vec, typename Q>
inline void StoreFcnLossGradRun(Vec vec, const Q& q, float* r, int64_t j0, bool two, int64_t C) {
  vec.Store(r + j0 * C, q.s0);
  if (two) vec.Store(r + (j0 + 1) * C, q.s1);
}
template <int NV, typename Last>
void FewClassFcnLossGradRow(const BilinearPlan<float, float>& plan, const float* cols, int64_t C,
                            const std::vector<std::pair<int64_t, int64_t>>& xruns, int64_t base,
                            LabelMap labels, const LabelRule& rule, const double* stats,
                            const float* loss_grad, float* __restrict r) {
  ClassVectors<NV, Last, FcnGradRegs> vecs(C);
  const bool smoothing = rule.smoothing != 0;
  const float on_label = static_cast<float>(1 - rule.smoothing),
              uniform = static_cast<float>(rule.smoothing / static_cast<double>(C));
  for (const auto& [x0, x1] : xruns) {
    const int64_t j0 = plan.tx.first[x0];
    const bool two = plan.tx.count[x0] == 2;
    vecs.ForEach([&](auto vec, auto& q) { LoadFcnLossGradRun(vec, q, cols, r, j0, two, C); });
    for (int64_t ox = x0; ox < x1; ++ox) {
      FcnLossGradPixel p;
      if (!FcnLossGradTerms(plan, ox, j0, two, base, labels, rule, stats, loss_grad, on_label, uniform, &p)) continue;
      vecs.ForEach([&](auto vec, auto& q) { AddFcnLossGradPixel(vec, q, p, smoothing, two); });
    }
    vecs.ForEach([&](auto vec, auto& q) { StoreFcnLossGradRun(vec, q, r, j0, two, C); });
  }
}
template <typename Last>
void FcnLossGradRowByVectors(const BilinearPlan<float, float>& plan, const float* cols, int64_t C,
                             const std::vector<std::pair<int64_t, int64_t>>& xruns, int64_t base,
                             LabelMap labels, const LabelRule& rule, const double* stats,
                             const float* loss_grad, float* __restrict r) {
  const bool smoothing = rule.smoothing != 0;
  const float on_label = static_cast<float>(1 - rule.smoothing),
              uniform = static_cast<float>(rule.smoothing / static_cast<double>(C));
  FcnLossGradPixel pixels[kGradPiece];
  for (const auto& [run0, run1] : xruns) {
    const int64_t j0 = plan.tx.first[run0];
    const bool two = plan.tx.count[run0] == 2;
    for (int64_t x0 = run0; x0 < run1; x0 += kGradPiece) {
      int64_t n = 0;
      for (int64_t ox = x0; ox < std::min(run1, x0 + kGradPiece); ++ox) {
        n += FcnLossGradTerms(plan, ox, j0, two, base, labels, rule, stats, loss_grad, on_label, uniform, &pixels[n]);
      }
      if (n == 0) continue;
      ForEachClassVector<Last>(C, [&](auto vec) {
        FcnGradRegs<typename decltype(vec)::L> q;
        LoadFcnLossGradRun(vec, q, cols, r, j0, two, C);
        for (int64_t k = 0; k < n; ++k) AddFcnLossGradPixel(vec, q, pixels[k], smoothing, two);
        StoreFcnLossGradRun(vec, q, r, j0, two, C);
      });
    }
  }
}
#endif

// Gradient to the coarse logits: dv = loss_grad * (softmax(v) - target) per output pixel (target:
// the one-hot, or (1 - s) onehot + s / C with label smoothing), one pixel at a time (the softmax
// exp(v - max) / sum from the forward's stats, its scale folded into each tap's weight without
// smoothing: the same bits as computing max and sum here), added at once into r (the
// output row reduced along x: each r[j] still sums its outputs in ascending order) and then into
// the input rows like the bilinear input gradient. The scratch is one pixel and one input row per
// thread.
template <typename T>
void UpsampleSoftmaxCrossEntropyGradImpl(const Geometry& g, const T* logits, LabelMap labels,
                                         LabelRule rule, const double* stats,
                                         const T* loss_grad, T* logits_grad, const ParallelFor& pf) {
  using A = Acc<T>;
  const BilinearPlan<T, A> plan(g);
  const Axis& ax = g.x;
  const int64_t C = g.c, OH = g.y.n_out, OW = ax.n_out;
  const double smoothing = rule.smoothing;
  const A on_label = A(1 - smoothing), uniform = A(smoothing / static_cast<double>(C));
  // The shared-row buffer takes at most 8 bytes per output pixel, int64 labels' size, whatever
  // the labels' width (the head allocates nothing of the upsampled logits' size); beyond that the
  // bands recompute the rows they share.
  const int64_t label_bytes = g.n * OH * OW * static_cast<int64_t>(sizeof(int64_t));
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  // Float logits: a row's pixels in vector registers, a run of pixels with the same input columns
  // at a time, all of a pixel's classes at once up to 4 vectors (19 and 21 classes: 2 on AVX-512,
  // 3 on AVX2; FewClassFcnLossGradRow), else a vector at a time over the run
  // (FcnLossGradRowByVectors). The same bits as the loop below.
  using RowFn = void (*)(const BilinearPlan<float, float>&, const float*, int64_t,
                         const std::vector<std::pair<int64_t, int64_t>>&, int64_t, LabelMap,
                         const LabelRule&, const double*, const float*, float*);
  RowFn row_fn = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    row_fn = ByClassVectors<RowFn>(C, [](auto nv, auto last) -> RowFn {
      return FewClassFcnLossGradRow<decltype(nv)::value, decltype(last)>;
    });
    if (row_fn == nullptr) {  // more vectors than registers hold
      row_fn = ByLastVector<RowFn>(C, [](auto last) -> RowFn { return FcnLossGradRowByVectors<decltype(last)>; });
    }
  }
  const auto xruns = SameTapRuns(plan.tx);
#endif
  SweepSeparable<T>(g, plan.wy, logits_grad, pf, 24, /*split_channels=*/false,
                    label_bytes / static_cast<int64_t>(sizeof(A)), [&](InputBlock<A>& b, int64_t oy, A* r) {
    b.scratch2.resize(C + ax.n_in * C);
    A* __restrict d = b.scratch2.data();
    A* cols = d + C;
    plan.Columns(plan.RowTaps(logits + b.s * g.y.n_in * ax.n_in * C, oy, C), C, cols);
    const int64_t base = (b.s * OH + oy) * OW;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
    if constexpr (std::is_same_v<T, float>) {
      if (row_fn != nullptr) return row_fn(plan, cols, C, xruns, base, labels, rule, stats, loss_grad, r);
    }
#endif
    for (int64_t ox = 0; ox < OW; ++ox) {
      const int64_t y = labels[base + ox];
      if (rule.Skips(y)) continue;  // an ignored pixel contributes nothing, NaN logits included
      const A gl = Widen(loss_grad[rule.uniform_grad ? 0 : base + ox]);
      const A m = static_cast<A>(stats[2 * (base + ox)]), sum = static_cast<A>(stats[2 * (base + ox) + 1]);
      plan.PixelFromColumns(cols, ox, C, d);
      ScoresAsStored<T>(d, C);
      for (int64_t c = 0; c < C; ++c) d[c] = SoftmaxExp(d[c] - m);
      const A scale = gl / sum;  // d[c] * scale: the softmax times gl
      if (smoothing != 0) {  // the target (1 - s) onehot + s / C
        const A off = gl * uniform;
        for (int64_t c = 0; c < C; ++c) d[c] = d[c] * scale - off;
      }
      const A on = smoothing != 0 ? gl * on_label : gl;
      for (int64_t j = ax.FirstInput(ox); j <= ax.LastInput(ox); ++j) {
        const A w = plan.wx[ax.Tap(ox, j)], ws = smoothing != 0 ? w : w * scale;
        A* __restrict rj = r + j * C;
        for (int64_t c = 0; c < C; ++c) rj[c] += ws * d[c];
        rj[y] -= w * on;  // the one-hot
      }
    }
  });
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
// The loss and its gradient in one sweep (UpsampleSoftmaxCrossEntropyWithGrad's row, float logits
// at kFewClasses classes or more, more than ClassVectors holds): each pixel's scores
// (PixelFromColumns, the forward's values), its target, max and exps -- stored, a piece of
// kWithGradPiece pixels at a time -- and their sum (Reduce over the stored exps: the order and
// bits of ExpShifted's), its loss and stats as PixelLossRow writes them; then the piece's terms
// added into r a vector of classes at a time from the stored exps, as FcnLossGradRowByVectors
// adds them with loss_grad 1 (the same bits), where that function computes each exp again.
// loss and stats may be null (a row another band writes).
// Pieces of 32 pixels: their exps are 128 KB at 1000 classes (in L2), 20 KB at 150 (L1). One
// sweep alone, medians of 7 calls per process, two processes each (EPYC VM): FCN [1,16,22,1000]
// x32, pieces of 8 / 16 / 32 / 64 pixels, AVX-512 109-113 / 96-98 / 92-93 / 93-113 ms, AVX2
// 110-149 / 105-130 / 98-104 / 98-102; ADE20K-like resize 184-247 ms, no clear order.
constexpr int64_t kWithGradPiece = 32;

// e[c] = SoftmaxExp(e[c] - m), as ShiftedExp maps each value.
inline void ExpsInPlace(float* e, int64_t C, float m) {
  using L = Lanes;
  int64_t c = 0;
  for (; c + L::kN <= C; c += L::kN) L::Store(e + c, SoftmaxExpLanes<L>(L::Sub(L::Load(e + c), L::Set(m))));
  for (; c < C; ++c) e[c] = SoftmaxExp(e[c] - m);
}

// The one-sweep rows' loss part for a piece of pixels [x0, x1) of the row from map index base:
// each pixel not skipped gets its scores (scores(ox, e): C values into e, the forward's), target,
// maximum, exps (stored over its scores, exps + k * stride for the piece's k-th such pixel, at[k])
// and their sum, in PixelLossRow's and ExpShifted's order; then its loss and stats as
// PixelLossRow writes them (a skipped pixel's 0). loss and stats may be null.
struct WithGradPiece {
  float m[kWithGradPiece], sum[kWithGradPiece];
  int64_t at[kWithGradPiece];
  int64_t n = 0;
  template <typename Scores>
  void Compute(int64_t x0, int64_t x1, int64_t base, LabelMap labels, const LabelRule& rule, int64_t C,
               int64_t stride, float* exps, float* loss, double* stats, Scores&& scores) {
    float target[kWithGradPiece], lse[kWithGradPiece];
    n = 0;
    for (int64_t ox = x0; ox < x1; ++ox) {
      const int64_t i = base + ox, y = labels[i];
      if (rule.Skips(y)) {  // an ignored pixel contributes nothing, NaN logits included
        if (loss != nullptr) loss[i] = 0.0f;
        if (stats != nullptr) stats[2 * i] = stats[2 * i + 1] = 0.0;
        continue;
      }
      float* e = exps + n * stride;
      scores(ox, e);
      target[n] = SmoothedTarget(e, C, y, rule.smoothing);
      m[n] = Reduce(e, C, e[0], MaxOp());
      ExpsInPlace(e, C, m[n]);
      sum[n] = Reduce(e, C, 0.0f, AddOp());
      at[n++] = ox;
    }
    for (int64_t k = 0; k < n; ++k) lse[k] = SoftmaxLog(sum[k]);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = base + at[k];
      if (loss != nullptr) loss[i] = lse[k] + m[k] - target[k];  // logsumexp(v) - target
      if (stats != nullptr) {
        stats[2 * i] = static_cast<double>(m[k]);
        stats[2 * i + 1] = static_cast<double>(sum[k]);
      }
    }
  }
};

template <typename Last>
void FcnLossWithGradRow(const BilinearPlan<float, float>& plan, const float* cols, int64_t C,
                        const std::vector<std::pair<int64_t, int64_t>>& xruns, int64_t base, LabelMap labels,
                        const LabelRule& rule, float* loss, double* stats, float* __restrict r,
                        float* __restrict exps) {
  const bool smoothing = rule.smoothing != 0;
  const float on = smoothing ? static_cast<float>(1 - rule.smoothing) : 1.0f,
              uniform = static_cast<float>(rule.smoothing / static_cast<double>(C));
  const int64_t stride = (C + Lanes::kN - 1) / Lanes::kN * Lanes::kN;
  FcnLossGradPixel pixels[kWithGradPiece];
  WithGradPiece piece;
  for (const auto& [run0, run1] : xruns) {
    const int64_t j0 = plan.tx.first[run0];
    const bool two = plan.tx.count[run0] == 2;
    for (int64_t x0 = run0; x0 < run1; x0 += kWithGradPiece) {
      piece.Compute(x0, std::min(run1, x0 + kWithGradPiece), base, labels, rule, C, stride, exps, loss, stats,
                    [&](int64_t ox, float* e) { plan.PixelFromColumns(cols, ox, C, e); });
      const int64_t n = piece.n;
      if (n == 0) continue;
      for (int64_t k = 0; k < n; ++k) {  // FcnLossGradTerms' terms with loss_grad 1 (m unused: the exps are stored)
        const int64_t ox = piece.at[k];
        const float scale = 1.0f / piece.sum[k];
        const float w0 = plan.wx[plan.g.x.Tap(ox, j0)], w1 = two ? plan.wx[plan.g.x.Tap(ox, j0 + 1)] : 0.0f;
        pixels[k] = {labels[base + ox], piece.m[k], scale, uniform, w0, w1, smoothing ? w0 : w0 * scale,
                     smoothing ? w1 : w1 * scale, -(w0 * on), -(w1 * on)};
      }
      ForEachClassVector<Last>(C, [&](auto vec) {
        using L = typename decltype(vec)::L;
        using V = typename L::V;
        V s0 = vec.Load(r + j0 * C), s1 = two ? vec.Load(r + (j0 + 1) * C) : s0;
        for (int64_t k = 0; k < n; ++k) {
          const FcnLossGradPixel& p = pixels[k];
          V d = vec.Load(exps + k * stride);
          if (smoothing) d = L::Sub(L::Mul(d, L::Set(p.scale)), L::Set(p.off));
          const typename L::Mask at_y = OneLane<L>(p.y % Lanes::kN);
          s0 = L::Add(s0, L::Mul(L::Set(p.ws0), d));
          if (vec.Holds(p.y)) s0 = L::AddWhere(at_y, s0, L::Set(p.hot0));
          if (two) {
            s1 = L::Add(s1, L::Mul(L::Set(p.ws1), d));
            if (vec.Holds(p.y)) s1 = L::AddWhere(at_y, s1, L::Set(p.hot1));
          }
        }
        vec.Store(r + j0 * C, s0);
        if (two) vec.Store(r + (j0 + 1) * C, s1);
      });
    }
  }
}

// UpsampleSoftmaxCrossEntropyWithGrad's one sweep: the gradient's sweep (SweepSeparable), each
// output row's loss and stats written by the first to reduce it (the bands reduce the rows they
// share each on their own where SweepSeparable's buffer would exceed its budget).
inline void UpsampleLossWithGradByVectors(const Geometry& g, const float* logits, LabelMap labels,
                                          const LabelRule& rule, float* loss, double* stats,
                                          float* logits_grad, const ParallelFor& pf) {
  const BilinearPlan<float, float> plan(g);
  const Axis& ax = g.x;
  const int64_t C = g.c, OH = g.y.n_out, OW = ax.n_out;
  const int64_t stride = (C + Lanes::kN - 1) / Lanes::kN * Lanes::kN;
  using RowFn = void (*)(const BilinearPlan<float, float>&, const float*, int64_t,
                         const std::vector<std::pair<int64_t, int64_t>>&, int64_t, LabelMap, const LabelRule&,
                         float*, double*, float*, float*);
  const RowFn row_fn = ByLastVector<RowFn>(C, [](auto last) -> RowFn { return FcnLossWithGradRow<decltype(last)>; });
  const auto xruns = SameTapRuns(plan.tx);
  const std::unique_ptr<std::atomic<bool>[]> claimed(new std::atomic<bool>[g.n * OH]());
  const int64_t label_bytes = g.n * OH * OW * static_cast<int64_t>(sizeof(int64_t));
  SweepSeparable<float>(g, plan.wy, logits_grad, pf, 32, /*split_channels=*/false,
                        label_bytes / static_cast<int64_t>(sizeof(float)), [&](InputBlock<float>& b, int64_t oy, float* r) {
    b.scratch2.resize(ax.n_in * C + kWithGradPiece * stride);
    float* cols = b.scratch2.data();
    plan.Columns(plan.RowTaps(logits + b.s * g.y.n_in * ax.n_in * C, oy, C), C, cols);
    const int64_t u = b.s * OH + oy;
    const bool first = !claimed[u].exchange(true, std::memory_order_relaxed);
    row_fn(plan, cols, C, xruns, u * OW, labels, rule, first ? loss : nullptr, first ? stats : nullptr, r,
           cols + ax.n_in * C);
  });
}
#endif

// The WithGrad kernels' stats: the caller's, or where it asks for the gradient without them, own
// (the map's size).
inline double* StatsForGradient(const Geometry& g, double* stats, const void* logits_grad, std::vector<double>* own) {
  if (stats != nullptr || logits_grad == nullptr) return stats;
  own->resize(2 * g.n * g.y.n_out * g.x.n_out);
  return own->data();
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
// Whether the WithGrad kernels take the one sweep at C classes (float logits): the forward's pixel
// by pixel rows, past the gradient's few-class rows (ClassVectors' 4 vectors).
inline bool OneSweepClasses(int64_t C) { return C >= kFewClasses && C > 4 * Lanes::kN; }
#endif

// The loss and, where logits_grad is not null, its gradient for a loss gradient of 1 at every
// pixel -- what the registered gradient scales when the upstream gradient is one value (Keras'
// mean), so that a training step computes each score's exp once. Float logits at many classes in
// one sweep (UpsampleLossWithGradByVectors); else the forward, then the gradient from its stats.
template <typename T>
void UpsampleSoftmaxCrossEntropyWithGradImpl(const Geometry& g, const T* logits, LabelMap labels,
                                             LabelRule rule, T* loss, double* stats, T* logits_grad,
                                             const ParallelFor& pf) {
  std::vector<double> own_stats;
  stats = StatsForGradient(g, stats, logits_grad, &own_stats);
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    if (logits_grad != nullptr && OneSweepClasses(g.c)) {
      return UpsampleLossWithGradByVectors(g, logits, labels, rule, loss, stats, logits_grad, pf);
    }
  }
#endif
  UpsampleSoftmaxCrossEntropyImpl(g, logits, labels, rule, loss, stats, pf);
  if (logits_grad == nullptr) return;
  rule.uniform_grad = true;
  const T one(1.0f);
  UpsampleSoftmaxCrossEntropyGradImpl(g, logits, labels, rule, stats, &one, logits_grad, pf);
}

}  // namespace TFUP_ISA
}  // namespace tfup
