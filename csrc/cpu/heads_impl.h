// Fused segmentation heads: upsample + argmax, and upsample + softmax cross-entropy with its
// gradient, computed pixel by pixel from the coarse NHWC logits. The full-resolution logits never
// exist: memory is the label / loss map plus a row of scratch per thread. Included by isa.cc
// after kernels_impl.h, in the same instruction-set namespace.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
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

template <typename T>
void UpsampleArgmaxImpl(const Geometry& g, const T* logits, int64_t* labels, T* scores,
                        const ParallelFor& pf) {
  const BilinearPlan<T, Acc<T>> plan(g);
  const int64_t C = g.c;
  ForEachOutputPixel<T>(plan, logits, C * 8, pf, [&](const auto& row, int64_t ox, int64_t i, T* v) {
    plan.Pixel(row, ox, C, v);  // the very values the unfused forward writes
    int64_t best = 0;
    for (int64_t c = 1; c < C; ++c)
      if (v[c] > v[best]) best = c;  // ties: the lowest index, like tf.argmax
    labels[i] = best;
    if (scores != nullptr) scores[i] = v[best];
  });
}

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
