// Fused segmentation heads: upsample + argmax, and upsample + softmax cross-entropy with its
// gradient, computed pixel by pixel from the coarse NHWC logits. The full-resolution logits never
// exist: memory is the label / loss map plus a row of scratch per thread. Included by isa.cc
// after kernels_impl.h, in the same instruction-set namespace.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>
#include <type_traits>

#include "softmax_exp.h"

namespace tfup {
namespace TFUP_ISA {


// Runs fn(row, ox, index, buffer) for every output pixel, a row of pixels per work unit; index is
// the pixel's position in the [n, h*f, w*f] map, buffer holds C values of type O for fn's use.
template <typename O, typename T, typename A, typename Fn>
void ForEachOutputPixel(const BilinearPlan<T, A>& plan, const T* logits, int64_t cost_per_pixel,
                        const ParallelFor& pf, Fn&& fn) {
  const Geometry& g = plan.g;
  const int64_t C = g.c, OH = g.y.n_out, OW = g.x.n_out;
  ForEachRow(pf, g.n, OH, OW * cost_per_pixel, [&](int64_t s, int64_t oy) {
    std::vector<O> buffer(C);
    const auto row = plan.RowTaps(logits + s * g.y.n_in * g.x.n_in * C, oy, C);
    for (int64_t ox = 0; ox < OW; ++ox) fn(row, ox, (s * OH + oy) * OW + ox, buffer.data());
  });
}

// upsample_argmax with pruning (docs/DESIGN.md, "Fused heads"). Along an output row, the pixels
// that share their taps (a block of up to f outputs) are, per class, a combination of the same
// <= 4 coarse values with weights in [0, 1] that sum to 1 inside the image (a convex
// combination: the value lies between the smallest and largest of the 4) or to less at its
// borders (then 0 joins the bounds). A class whose upper bound is below the best lower bound,
// by more than the rounding of the computed values, can be neither the maximum nor tied with it
// anywhere in the block, so only the survivors are evaluated -- with exactly the forward's
// arithmetic, so labels and scores are the bits of argmax / max of bilinear_upsample. Non-finite
// logits in a block turn pruning off there.
// Reductions over a pixel's classes with 8 partial results, combined in a fixed order: the loop
// vectorises (a single running sum would not, without reassociating floats) and every build gives
// the same bits.
template <typename A, typename Op>
inline A Reduce8(const A* v, int64_t C, A init, Op op) {
  A part[8] = {init, init, init, init, init, init, init, init};
  int64_t c = 0;
  for (; c + 8 <= C; c += 8)
    for (int k = 0; k < 8; ++k) part[k] = op(part[k], v[c + k]);
  for (int k = 0; c < C; ++c, ++k) part[k] = op(part[k], v[c]);
  A r = part[0];
  for (int k = 1; k < 8; ++k) r = op(r, part[k]);
  return r;
}

// Runs of consecutive outputs along an axis that read the same inputs: [begin, end) pairs.
inline std::vector<std::pair<int64_t, int64_t>> SameTapRuns(const AxisTaps& t, int64_t n_out) {
  std::vector<std::pair<int64_t, int64_t>> runs;
  for (int64_t o0 = 0; o0 < n_out;) {
    int64_t o1 = o0 + 1;
    while (o1 < n_out && t.first[o1] == t.first[o0] && t.count[o1] == t.count[o0]) ++o1;
    runs.emplace_back(o0, o1);
    o0 = o1;
  }
  return runs;
}

template <typename T>
void UpsampleArgmaxImpl(const Geometry& g, const T* logits, int64_t* labels, T* scores,
                        const ParallelFor& pf) {
  using A = Acc<T>;
  const BilinearPlan<T, A> plan(g);
  const int64_t C = g.c, OH = g.y.n_out, OW = g.x.n_out, W = g.x.n_in;
  const auto yruns = SameTapRuns(plan.ty, OH), xruns = SameTapRuns(plan.tx, OW);
  const int64_t ny = static_cast<int64_t>(yruns.size());
  // Bound on |computed - exact| of a value, per unit of the largest |logit| involved: a few
  // roundings in A, plus one of T for the stored value (rounding can make a smaller value equal
  // to a larger one, a tie the lowest class would win).
  const A margin = A(8) * std::numeric_limits<A>::epsilon() +
                   A(2) * static_cast<A>(std::numeric_limits<T>::epsilon());
  // Work unit: one image x one run of output rows with the same two input rows.
  pf(g.n * ny, OW * C * 2 * std::max<int64_t>(1, OH / std::max<int64_t>(1, ny)), [&](int64_t begin, int64_t end) {
    std::vector<A> hi(C), packed(4 * C), vals(C);
    std::vector<int64_t> cand(C);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t s = u / ny;
      const auto [y0, y1] = yruns[u % ny];
      const T* in = logits + s * g.y.n_in * W * C;
      const auto row0 = plan.RowTaps(in, y0, C);
      for (const auto& [x0, x1] : xruns) {
        const int64_t ix = plan.tx.first[x0], nx = plan.tx.count[x0];
        const T* p00 = row0.rows[0] + ix * C;
        const T* p01 = row0.rows[0] + (ix + nx - 1) * C;
        const T* p10 = row0.rows[1] + ix * C;
        const T* p11 = row0.rows[1] + (ix + nx - 1) * C;
        const bool inside = row0.n == 2 && nx == 2;  // weights sum to 1 in both axes
        // Bounds per class, the largest |bound|, and whether every value is finite.
        A best_lo = -std::numeric_limits<A>::infinity(), big = A(0);
        bool finite = true;
        for (int64_t c = 0; c < C; ++c) {
          const A a = Widen(p00[c]), b = Widen(p01[c]), d = Widen(p10[c]), e = Widen(p11[c]);
          A lo = std::min(std::min(a, b), std::min(d, e));
          A up = std::max(std::max(a, b), std::max(d, e));
          if (!inside) {  // a border: weights sum to less than 1, so 0 bounds too
            lo = std::min(lo, A(0));
            up = std::max(up, A(0));
          }
          finite = finite && std::abs(lo) <= std::numeric_limits<A>::max() &&
                   std::abs(up) <= std::numeric_limits<A>::max();
          big = std::max(big, std::max(std::abs(lo), std::abs(up)));
          best_lo = std::max(best_lo, lo);
          hi[c] = up;
        }
        // The survivors in ascending class order, their four taps packed contiguously.
        int64_t K = 0;
        const A cut = best_lo - A(2) * margin * big;
        for (int64_t c = 0; c < C; ++c) {
          if (!finite || !(hi[c] < cut)) cand[K++] = c;
        }
        A* __restrict q00 = packed.data();
        A* __restrict q01 = q00 + K;
        A* __restrict q10 = q01 + K;
        A* __restrict q11 = q10 + K;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t c = cand[k];
          q00[k] = Widen(p00[c]);
          q01[k] = Widen(p01[c]);
          q10[k] = Widen(p10[c]);
          q11[k] = Widen(p11[c]);
        }
        for (int64_t oy = y0; oy < y1; ++oy) {
          const auto row = plan.RowTaps(in, oy, C);
          const A wy0 = row.w[0], wy1 = row.w[1];
          const int64_t base = (s * OH + oy) * OW;
          for (int64_t ox = x0; ox < x1; ++ox) {
            const A wx0 = plan.wx[g.x.Tap(ox, ix)], wx1 = plan.wx[g.x.Tap(ox, ix + nx - 1)];
            // The forward's operations in its order (BilinearPixel), on the survivors, stored
            // as T and widened back: the values argmax of the forward compares.
            A* __restrict v = vals.data();
            for (int64_t k = 0; k < K; ++k) {
              A h0 = wx0 * q00[k];
              if (nx == 2) h0 += wx1 * q01[k];
              A r = wy0 * h0;
              if (row.n == 2) {
                A h1 = wx0 * q10[k];
                if (nx == 2) h1 += wx1 * q11[k];
                r += wy1 * h1;
              }
              v[k] = Widen(Narrow<T>(r));
            }
            int64_t best = 0;
            if (finite) {  // no NaN: the maximum, then its first (lowest class) position
              const A m = Reduce8(v, K, v[0], [](A x, A y) { return y > x ? y : x; });
              while (v[best] != m) ++best;
            } else {  // tf.argmax's order: a later value wins only when greater (NaN never)
              for (int64_t k = 1; k < K; ++k)
                if (v[k] > v[best]) best = k;
            }
            labels[base + ox] = cand[best];
            if (scores != nullptr) scores[base + ox] = Narrow<T>(v[best]);
          }
        }
      }
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

// Softmax of one pixel's upsampled logits v (in place: v becomes exp(v - max)); returns the sum.
template <typename A>
inline A ExpShifted(A* v, int64_t C, A* max_out) {
  const A m = Reduce8(v, C, v[0], [](A a, A b) { return b > a ? b : a; });
  for (int64_t c = 0; c < C; ++c) v[c] = SoftmaxExp(v[c] - m);
  *max_out = m;
  return Reduce8(v, C, A(0), [](A a, A b) { return a + b; });
}

template <typename T>
void UpsampleSoftmaxCrossEntropyImpl(const Geometry& g, const T* logits, const int64_t* labels,
                                     IgnoreLabel ignore, T* loss, const ParallelFor& pf) {
  using A = Acc<T>;
  const BilinearPlan<T, A> plan(g);
  const int64_t C = g.c;
  ForEachOutputPixel<A>(plan, logits, C * 16, pf, [&](const auto& row, int64_t ox, int64_t i, A* v) {
    const int64_t y = labels[i];
    if (ignore.Skips(y)) {
      loss[i] = T(0);
      return;
    }
    plan.Pixel(row, ox, C, v);
    ScoresAsStored<T>(v, C);
    const A target = v[y];
    A m;
    const A sum = ExpShifted(v, C, &m);
    loss[i] = Narrow<T>(std::log(sum) + m - target);  // logsumexp(v) - v[y]
  });
}

// Gradient to the coarse logits: dv = loss_grad * (softmax(v) - onehot(y)) per output pixel, one
// pixel at a time, folded at once into r (the output row reduced along x: each r[j] still sums its
// outputs in ascending order) and then into the input rows like the bilinear input gradient. The
// scratch is one pixel and one input row per thread.
template <typename T>
void UpsampleSoftmaxCrossEntropyGradImpl(const Geometry& g, const T* logits, const int64_t* labels,
                                         IgnoreLabel ignore, const T* loss_grad, T* logits_grad,
                                         const ParallelFor& pf) {
  using A = Acc<T>;
  const BilinearPlan<T, A> plan(g);
  const Axis& ax = g.x;
  const int64_t C = g.c, OH = g.y.n_out, OW = ax.n_out;
  SweepInputBands<T>(g, logits_grad, pf, 24, [&](InputBlock<A>& b, int64_t oy, int64_t lo, int64_t hi) {
    b.scratch.assign(ax.n_in * C, A(0));
    b.scratch2.resize(C);
    A* r = b.scratch.data();
    A* __restrict d = b.scratch2.data();
    const auto row = plan.RowTaps(logits + b.s * g.y.n_in * ax.n_in * C, oy, C);
    const int64_t base = (b.s * OH + oy) * OW;
    for (int64_t ox = 0; ox < OW; ++ox) {
      const int64_t y = labels[base + ox];
      if (ignore.Skips(y)) continue;  // an ignored pixel contributes nothing, NaN logits included
      const A gl = Widen(loss_grad[base + ox]);
      plan.Pixel(row, ox, C, d);
      ScoresAsStored<T>(d, C);
      A m;
      const A scale = gl / ExpShifted(d, C, &m);
      for (int64_t c = 0; c < C; ++c) d[c] *= scale;
      d[y] -= gl;
      for (int64_t j = ax.FirstInput(ox); j <= ax.LastInput(ox); ++j) {
        const A w = plan.wx[ax.Tap(ox, j)];
        A* __restrict rj = r + j * C;
        for (int64_t c = 0; c < C; ++c) rj[c] += w * d[c];
      }
    }
    AddToInputRows(g, plan.wy, static_cast<const A*>(r), b, oy, lo, hi);
  }, /*split_channels=*/false);
}

#define TFUP_INSTANTIATE_HEADS(T)                                                           \
  template void UpsampleArgmaxImpl<T>(const Geometry&, const T*, int64_t*, T*,              \
                                      const ParallelFor&);                                  \
  template void UpsampleSoftmaxCrossEntropyImpl<T>(const Geometry&, const T*, const int64_t*, \
                                                   IgnoreLabel, T*, const ParallelFor&);    \
  template void UpsampleSoftmaxCrossEntropyGradImpl<T>(const Geometry&, const T*,           \
                                                       const int64_t*, IgnoreLabel, const T*, \
                                                       T*, const ParallelFor&);

}  // namespace TFUP_ISA
}  // namespace tfup
