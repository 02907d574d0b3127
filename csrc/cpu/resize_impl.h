// Bilinear resize in tf.image.resize's semantics (docs/DESIGN.md, "Resize"), in the namespace
// tfup::TFUP_ISA like kernels_impl.h.
//
// Forward: TF's CPU kernel's taps (geometry.h's ResizeTapOf) and its arithmetic, x first then y,
// in float whatever the input type, so that float32 results are its bits. Gradient: each thread
// owns a band of input rows and gathers every output row that reaches them (along x first, into a
// row of input width, then along y), so each input-gradient element has one writer: no atomics,
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

// acc[c] += w * A(d[c]) for n channels.
template <typename A>
inline void AddScaledFloats(A* __restrict acc, A w, const float* __restrict d, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += w * A(d[c]);
}

// Gradient: for a band of input rows, each output row that reaches it is summed along x into xr
// (input width; (1 - lerp) to the lower column, lerp to the upper, TF's weights), then added to
// the band's rows along y. An output row that reaches two bands is summed by both (one row per
// band boundary).
template <typename T>
void ResizeBilinearBackpropInputImpl(const Geometry& g, const float* output_grad, T* input_grad,
                                     const ParallelFor& pf) {
  using A = Acc<T>;
  const Slabs sl = MakeSlabs(g);
  const ResizeTaps ty(g.y, g.resize), tx(g.x, g.resize);
  const int64_t w = g.x.n_in, h = g.y.n_in, ow = g.x.n_out, oh = g.y.n_out, cc = sl.cc;
  // Output rows reaching input row i: [first[i], end[i]) (taps are monotone in the output index).
  std::vector<int64_t> first(h, oh), end(h, 0);
  for (int64_t oy = 0; oy < oh; ++oy) {
    for (const int64_t i : {ty.lower[oy], ty.upper[oy]}) {
      first[i] = std::min(first[i], oy);
      end[i] = std::max(end[i], oy + 1);
    }
  }
  // Runs of output columns with the same two input columns (about ow / w long when upsampling).
  const auto xruns = SameTapRuns(tx.lower, tx.upper);
  const auto xweights = [&](int64_t o) { return std::pair<A, A>(A(1.0f - tx.lerp[o]), A(tx.lerp[o])); };
  const int64_t band = std::max<int64_t>(1, std::min<int64_t>(16, h / 4));
  const int64_t bands = (h + band - 1) / band;
  const int64_t rows_per_band = std::max<int64_t>(1, oh * band / std::max<int64_t>(h, 1));
  pf(sl.count * bands, (rows_per_band * ow + band * w) * cc * 4, [&](int64_t begin, int64_t stop) {
    std::vector<A> acc(band * w * cc), xr(w * cc);
    for (int64_t u = begin; u < stop; ++u) {
      const int64_t s = u / bands, i0 = (u % bands) * band, i1 = std::min(h, i0 + band);
      std::fill(acc.begin(), acc.end(), A(0));
      int64_t o0 = oh, o1 = 0;
      for (int64_t i = i0; i < i1; ++i) {
        o0 = std::min(o0, first[i]);
        o1 = std::max(o1, end[i]);
      }
      for (int64_t oy = o0; oy < o1; ++oy) {
        const float* __restrict dy = output_grad + (s * oh + oy) * ow * cc;
        std::fill(xr.begin(), xr.end(), A(0));
        for (const auto& [x0, x1] : xruns) {
          const int64_t jl = tx.lower[x0], ju = tx.upper[x0];
          if (jl != ju) {  // the run's sums in registers, each element's terms in output order
            AddRunTwoColumns(xweights, ow, dy, cc, cc, x0, x1, xr.data() + jl * cc, xr.data() + ju * cc);
            continue;
          }
          for (int64_t ox = x0; ox < x1; ++ox) {  // both taps on one column (a clamped edge)
            AddScaledFloats(xr.data() + jl * cc, A(1.0f - tx.lerp[ox]), dy + ox * cc, cc);
            AddScaledFloats(xr.data() + jl * cc, A(tx.lerp[ox]), dy + ox * cc, cc);
          }
        }
        const int64_t il = ty.lower[oy], iu = ty.upper[oy];
        if (il >= i0 && il < i1) {
          const A wl = A(1.0f - ty.lerp[oy]);
          A* __restrict r = acc.data() + (il - i0) * w * cc;
          for (int64_t e = 0; e < w * cc; ++e) r[e] += wl * xr[e];
        }
        if (iu >= i0 && iu < i1) {
          const A wu = A(ty.lerp[oy]);
          A* __restrict r = acc.data() + (iu - i0) * w * cc;
          for (int64_t e = 0; e < w * cc; ++e) r[e] += wu * xr[e];
        }
      }
      NarrowRow(input_grad + (s * h + i0) * w * cc, acc.data(), (i1 - i0) * w * cc);
    }
  });
}

}  // namespace TFUP_ISA
}  // namespace tfup
