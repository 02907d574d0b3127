// Bilinear resize in tf.image.resize's semantics (docs/DESIGN.md, "Resize"), in the namespace
// tfup::TFUP_ISA like kernels_impl.h.
//
// Forward: TF's CPU kernel's taps (geometry.h's ResizeTapOf) and its arithmetic, x first then y,
// in float whatever the input type, so that float32 results are its bits. Gradient: each thread
// owns a band of input rows and gathers every output row that reaches them (along y first, into
// rows of output width, then along x), so each input-gradient element has one writer: no atomics,
// the same bits on every run and for every thread count.
#pragma once

#ifndef TFUP_ISA
#error "define TFUP_ISA (the instruction-set namespace) before including resize_impl.h"
#endif

#include <algorithm>
#include <vector>

#include "cpu/kernels_impl.h"

namespace tfup {
namespace TFUP_ISA {

// Per output index of one axis: its two inputs and the weight of the second, as TF computes them.
struct ResizeTaps {
  std::vector<int64_t> lower, upper;
  std::vector<float> lerp;
  ResizeTaps(const Axis& a, Resize mode) : lower(a.n_out), upper(a.n_out), lerp(a.n_out) {
    const float scale = ResizeScale(a.n_in, a.n_out, mode);
    for (int64_t o = 0; o < a.n_out; ++o) {
      const ResizeTap t = ResizeTapOf(mode, scale, o, a.n_in);
      lower[o] = t.lower;
      upper[o] = t.upper;
      lerp[o] = t.lerp;
    }
  }
};

// The resize computes in float for every input type (TF's kernel does: a float64 input is
// rounded to float first).
template <typename T>
inline float ToFloat(T v) {
  return static_cast<float>(Widen(v));
}

// One output row from input rows r0 (upper tap's weight yl: r1): TF's compute_lerp, in its order.
template <typename T>
void ResizeRow(const T* __restrict r0, const T* __restrict r1, float yl, const ResizeTaps& tx,
               int64_t cc, float* __restrict out) {
  const int64_t ow = static_cast<int64_t>(tx.lower.size());
  const int64_t* lo = tx.lower.data();
  const int64_t* up = tx.upper.data();
  const float* xl = tx.lerp.data();
  if (cc == 1) {  // NCHW planes: along the row
    for (int64_t ox = 0; ox < ow; ++ox) {
      const float tl = ToFloat(r0[lo[ox]]), tr = ToFloat(r0[up[ox]]);
      const float bl = ToFloat(r1[lo[ox]]), br = ToFloat(r1[up[ox]]);
      const float top = tl + (tr - tl) * xl[ox];
      const float bottom = bl + (br - bl) * xl[ox];
      out[ox] = top + (bottom - top) * yl;
    }
    return;
  }
  for (int64_t ox = 0; ox < ow; ++ox) {  // NHWC: along the pixel's channels
    const T* __restrict a = r0 + lo[ox] * cc;
    const T* __restrict b = r0 + up[ox] * cc;
    const T* __restrict c0 = r1 + lo[ox] * cc;
    const T* __restrict d = r1 + up[ox] * cc;
    const float x = xl[ox];
    float* __restrict o = out + ox * cc;
    for (int64_t c = 0; c < cc; ++c) {
      const float tl = ToFloat(a[c]), tr = ToFloat(b[c]), bl = ToFloat(c0[c]), br = ToFloat(d[c]);
      const float top = tl + (tr - tl) * x;
      const float bottom = bl + (br - bl) * x;
      o[c] = top + (bottom - top) * yl;
    }
  }
}

template <typename T>
void ResizeBilinearImpl(const Geometry& g, const T* input, float* output, const ParallelFor& pf) {
  const Slabs sl = MakeSlabs(g);
  const ResizeTaps ty(g.y, g.resize), tx(g.x, g.resize);
  const int64_t w = g.x.n_in, h = g.y.n_in, ow = g.x.n_out, oh = g.y.n_out, cc = sl.cc;
  PreferHugePages(output, static_cast<int64_t>(sizeof(float)) * sl.count * oh * ow * cc);
  ForEachRow(pf, sl.count, oh, ow * cc * 4, [&](int64_t s, int64_t oy) {
    const T* in = input + s * h * w * cc;
    ResizeRow(in + ty.lower[oy] * w * cc, in + ty.upper[oy] * w * cc, ty.lerp[oy], tx, cc,
              output + (s * oh + oy) * ow * cc);
  });
}

// acc[c] += w * A(d[c]) for n elements.
template <typename A, typename Src>
inline void AddScaled(A* __restrict acc, A w, const Src* __restrict d, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += w * A(d[c]);
}

// Gradient, y first: a thread owns a band of input rows. Each output-gradient row is added, with
// its y weights, into the (at most two) input rows it reaches: rows of the output full width,
// acc_y (two live at a time, the band's rows in order). Runs of output rows with the same two input
// rows are summed in registers (AddRunTwoColumns over whole rows), each element in ascending
// output order. When no later output row reaches an input row, that row is summed along x into
// xr (input width, in ascending output order again) and written. So dy is read once (the rows two
// bands share, twice) and the x pass runs once per input row, not per output row. The CUDA kernel
// sums in the same order: the same bits.
template <typename T>
void ResizeBilinearBackpropInputImpl(const Geometry& g, const float* output_grad, T* input_grad,
                                     const ParallelFor& pf) {
  using A = Acc<T>;
  const Slabs sl = MakeSlabs(g);
  const ResizeTaps ty(g.y, g.resize), tx(g.x, g.resize);
  const int64_t w = g.x.n_in, h = g.y.n_in, ow = g.x.n_out, oh = g.y.n_out, cc = sl.cc;
  const int64_t row = ow * cc;  // one output-gradient row's elements
  const auto xruns = SameTapRuns(tx.lower, tx.upper), yruns = SameTapRuns(ty.lower, ty.upper);
  const auto xweights = [&](int64_t o) { return std::pair<A, A>(A(1.0f - tx.lerp[o]), A(tx.lerp[o])); };
  const auto yweights = [&](int64_t o) { return std::pair<A, A>(A(1.0f - ty.lerp[o]), A(ty.lerp[o])); };
  const int64_t band = std::max<int64_t>(1, std::min<int64_t>(16, h / 4));
  const int64_t bands = (h + band - 1) / band;
  const int64_t rows_per_band = std::max<int64_t>(1, oh * band / h);
  pf(sl.count * bands, (rows_per_band + band) * row * 3, [&](int64_t begin, int64_t stop) {
    std::vector<A> acc(2 * row), xr(w * cc);
    for (int64_t u = begin; u < stop; ++u) {
      const int64_t s = u / bands, i0 = (u % bands) * band, i1 = std::min(h, i0 + band);
      const float* dy = output_grad + s * oh * row;
      A* const live[2] = {acc.data(), acc.data() + row};
      auto rows_of = [&](int64_t i) { return live[(i - i0) % 2]; };
      std::fill(acc.begin(), acc.end(), A(0));
      int64_t done = i0;  // input rows [i0, done) are written
      auto finish = [&](int64_t i) {  // row i along x, written; its buffer zeroed for row i + 2
        A* r = rows_of(i);
        std::fill(xr.begin(), xr.end(), A(0));
        for (const auto& [x0, x1] : xruns) {
          const int64_t jl = tx.lower[x0], ju = tx.upper[x0];
          if (jl != ju) {
            AddRunTwoColumns(xweights, ow, r, cc, cc, x0, x1, xr.data() + jl * cc, xr.data() + ju * cc);
            continue;
          }
          for (int64_t ox = x0; ox < x1; ++ox) {  // both taps on one column (a clamped edge)
            AddScaled(xr.data() + jl * cc, A(1.0f - tx.lerp[ox]), r + ox * cc, cc);
            AddScaled(xr.data() + jl * cc, A(tx.lerp[ox]), r + ox * cc, cc);
          }
        }
        NarrowRow(input_grad + (s * h + i) * w * cc, xr.data(), w * cc);
        std::fill(r, r + row, A(0));
      };
      for (const auto& [y0, y1] : yruns) {
        const int64_t il = ty.lower[y0], iu = ty.upper[y0];
        if (iu < i0) continue;
        if (il >= i1) break;
        while (done < std::min(il, i1)) finish(done++);  // no later output row reaches them
        const bool lo_in = il >= i0, up_in = iu < i1;
        if (il != iu && lo_in && up_in) {
          AddRunTwoColumns(yweights, oh, dy, row, row, y0, y1, rows_of(il), rows_of(iu));
          continue;
        }
        for (int64_t oy = y0; oy < y1; ++oy) {  // one input row of the band (or both taps on one)
          if (lo_in) AddScaled(rows_of(il), A(1.0f - ty.lerp[oy]), dy + oy * row, row);
          if (up_in) AddScaled(rows_of(iu), A(ty.lerp[oy]), dy + oy * row, row);
        }
      }
      while (done < i1) finish(done++);
    }
  });
}

}  // namespace TFUP_ISA
}  // namespace tfup
