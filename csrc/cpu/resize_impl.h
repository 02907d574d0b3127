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
#include <cmath>
#include <limits>
#include <memory>
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

// Whether the rows of run k (SameTapRuns of t) are on one input row -- both taps on it: an exact
// tap, a clamped edge -- and run k + 1 starts on that row (its upper tap then another, or the two
// runs would be one). The forward and the gradient both let such rows join that run, as its first.
inline bool JoinsNextRun(const ResizeTaps& t, const std::vector<std::pair<int64_t, int64_t>>& runs, size_t k) {
  const int64_t y0 = runs[k].first;
  return t.lower[y0] == t.upper[y0] && k + 1 < runs.size() && t.lower[runs[k + 1].first] == t.lower[y0];
}

// The resize computes in float for every input type (TF's kernel does: a float64 input is
// rounded to float first).
template <typename T>
inline float ToFloat(T v) {
  return static_cast<float>(Widen(v));
}

// One output pixel's C values from its four input pixels (rows r0 and r1, columns jl and ju):
// TF's compute_lerp, in its order (x, then y), in float.
template <typename T>
inline void ResizeScores(const T* r0, const T* r1, int64_t jl, int64_t ju, float xl, float yl,
                         int64_t C, float* __restrict v) {
  const T *a = r0 + jl * C, *b = r0 + ju * C, *c0 = r1 + jl * C, *d = r1 + ju * C;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  if constexpr (std::is_same_v<T, float>) {  // the same operations, the last vector masked (GCC's
    using L = Lanes;                         // scalar tail: 5 of VOC's 21 classes cost 45 scalar
    const L::V xv = L::Set(xl), yv = L::Set(yl);  // operations a pixel)
    const auto lerp = [&](L::V tl, L::V tr, L::V bl, L::V br) {
      const L::V top = L::Add(tl, L::Mul(L::Sub(tr, tl), xv));
      const L::V bottom = L::Add(bl, L::Mul(L::Sub(br, bl), xv));
      return L::Add(top, L::Mul(L::Sub(bottom, top), yv));
    };
    int64_t c = 0;
    for (; c + L::kN <= C; c += L::kN) {
      L::Store(v + c, lerp(L::Load(a + c), L::Load(b + c), L::Load(c0 + c), L::Load(d + c)));
    }
    if (c < C) {
      const L::Mask m = L::Head(C - c);
      L::StoreHead(m, v + c, lerp(L::LoadHead(m, a + c), L::LoadHead(m, b + c), L::LoadHead(m, c0 + c),
                                  L::LoadHead(m, d + c)));
    }
    return;
  }
#endif
  for (int64_t c = 0; c < C; ++c) {
    const float tl = ToFloat(a[c]), tr = ToFloat(b[c]), bl = ToFloat(c0[c]), br = ToFloat(d[c]);
    const float top = tl + (tr - tl) * xl;
    const float bottom = bl + (br - bl) * xl;
    v[c] = top + (bottom - top) * yl;
  }
}

// Output elements [e0, e1) of one row: top + (bottom - top) * yl, where top and bottom are the
// row's two input rows already interpolated along x (t and b, starting at element e0). With
// `stream` (AVX2 and AVX-512 builds), whole vectors from dst's first 64-byte line on go out with
// non-temporal stores straight from registers (the callers cut rows at line boundaries, so inside
// a row a line is streamed whole; a row's last line may be part streamed, part stored plainly).
inline void LerpRows(const float* __restrict t, const float* __restrict b, float yl, int64_t n,
                     bool stream, float* __restrict dst) {
  int64_t e = 0;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  if (stream) {
    using L = Lanes;
    const typename L::V yv = L::Set(yl);
    const int64_t head = static_cast<int64_t>((64 - reinterpret_cast<uintptr_t>(dst) % 64) % 64) / 4;
    if (head < n) {
      for (; e < head; ++e) dst[e] = t[e] + (b[e] - t[e]) * yl;
      for (; e + L::kN <= n; e += L::kN) {
        const typename L::V top = L::Load(t + e), bottom = L::Load(b + e);
        L::Stream(dst + e, L::Add(top, L::Mul(L::Sub(bottom, top), yv)));
      }
    }
  }
#endif
  for (; e < n; ++e) dst[e] = t[e] + (b[e] - t[e]) * yl;
}

// Input row r interpolated along x for output pixels [p0, p1) into v: TF's first lerp.
template <typename T>
void LerpColumns(const T* __restrict r, const ResizeTaps& tx, int64_t cc, int64_t p0, int64_t p1,
                 float* __restrict v) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    // Pixels of at most two vectors: a run of output pixels reads the same two input pixels, so
    // each run loads them and forms tr - tl once (the same value TF forms per pixel: the same
    // bits). DeepLab's forward on one thread: 1.10-1.12x the write floor, against 1.15x per pixel.
    if (cc <= 32) {
      const __mmask16 m0 = cc >= 16 ? __mmask16(0xffff) : __mmask16((1u << cc) - 1);
      const __mmask16 m1 = cc > 16 ? __mmask16((1u << (cc - 16)) - 1) : __mmask16(0);
      int64_t jl = -1, ju = -1;
      __m512 tl0 = _mm512_setzero_ps(), d0 = tl0, tl1 = tl0, d1 = tl0;
      for (int64_t ox = p0; ox < p1; ++ox) {
        if (tx.lower[ox] != jl || tx.upper[ox] != ju) {
          jl = tx.lower[ox], ju = tx.upper[ox];
          const float *a = r + jl * cc, *b = r + ju * cc;
          tl0 = _mm512_maskz_loadu_ps(m0, a);
          d0 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m0, b), tl0);
          tl1 = _mm512_maskz_loadu_ps(m1, a + 16);
          d1 = _mm512_sub_ps(_mm512_maskz_loadu_ps(m1, b + 16), tl1);
        }
        const __m512 wx = _mm512_set1_ps(tx.lerp[ox]);
        float* __restrict o = v + (ox - p0) * cc;
        _mm512_mask_storeu_ps(o, m0, _mm512_add_ps(tl0, _mm512_mul_ps(d0, wx)));
        if (m1 != 0) _mm512_mask_storeu_ps(o + 16, m1, _mm512_add_ps(tl1, _mm512_mul_ps(d1, wx)));
      }
      return;
    }
  }
#endif
  for (int64_t ox = p0; ox < p1; ++ox) {
    const T* __restrict a = r + tx.lower[ox] * cc;
    const T* __restrict b = r + tx.upper[ox] * cc;
    const float xl = tx.lerp[ox];
    float* __restrict o = v + (ox - p0) * cc;
    int64_t c = 0;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX512)
    if constexpr (std::is_same_v<T, float>) {  // whole vectors, then one masked one (a pixel of 19 or
      const __m512 wx = _mm512_set1_ps(xl);    // 21 classes would leave a scalar tail of 3-5)
      for (; c < cc; c += 16) {
        const __mmask16 m = cc - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cc - c)) - 1);
        const __m512 tl = _mm512_maskz_loadu_ps(m, a + c), tr = _mm512_maskz_loadu_ps(m, b + c);
        _mm512_mask_storeu_ps(o + c, m, _mm512_add_ps(tl, _mm512_mul_ps(_mm512_sub_ps(tr, tl), wx)));
      }
    }
#endif
    for (; c < cc; ++c) {
      const float tl = ToFloat(a[c]), tr = ToFloat(b[c]);
      o[c] = tl + (tr - tl) * xl;
    }
  }
}

// Forward: a unit is a run of output rows that read the same two input rows (at most kRunRows
// of it). A thread's units go out a column chunk at a time: for each run, its two input rows
// along x for the chunk (TF's top and bottom, kept in three slots: a row the previous run lerped
// stays, and the next run's new row is lerped while this run's rows go out), then every row of
// the run from them along y -- TF's three lerps in its order, so its bits, with the x lerps done
// once per input row instead of twice per output row, and the y lerp a flat loop over the row's
// elements. Each row's pieces end on the output's 64-byte lines, so that large outputs
// (StreamOutput) are streamed line by line.
template <typename T>
void ResizeBilinearImpl(const Geometry& g, const T* input, float* output, const ParallelFor& pf) {
  const Slabs sl = MakeSlabs(g);
  const ResizeTaps ty(g.y, g.resize), tx(g.x, g.resize);
  const int64_t w = g.x.n_in, h = g.y.n_in, ow = g.x.n_out, oh = g.y.n_out, cc = sl.cc;
  const int64_t row = ow * cc;
  const int64_t bytes = static_cast<int64_t>(sizeof(float)) * sl.count * oh * row;
  PreferHugePages(output, bytes);
  const bool stream = StreamOutput(bytes);
  // Runs longer than kRunRows are cut, so that a tall upsample of few rows still makes units. Rows
  // on one input row (an exact tap: align-corners at an integer factor, every f-th row; a clamped
  // edge) join the run after them when it starts on that row: one unit reading two input rows,
  // those rows lerping the first with itself (TF's arithmetic), and the next run's new row lerped
  // along x in pieces between all of them instead of in a burst after one. DeepLab's [8,65,65,21]
  // -> 513 x 513 on one thread: 1.16-1.19x the write floor, against 1.25x with the rows alone.
  constexpr int64_t kRunRows = 16;
  std::vector<std::pair<int64_t, int64_t>> runs;
  const auto same = SameTapRuns(ty.lower, ty.upper);
  for (size_t k = 0; k < same.size(); ++k) {
    auto [y0, y1] = same[k];
    if (JoinsNextRun(ty, same, k) && same[k + 1].second - y0 <= kRunRows) y1 = same[++k].second;
    for (int64_t a = y0; a < y1; a += kRunRows) runs.emplace_back(a, std::min(y1, a + kRunRows));
  }
  const int64_t n_runs = static_cast<int64_t>(runs.size());
  // Elements per chunk: whole lines of 16 floats, 8 KB.
  constexpr int64_t kChunk = 2048;
  pf(sl.count * n_runs, (row * oh / n_runs) * 2, [&](int64_t begin, int64_t end) {
    std::vector<float> lerped[3];
    for (auto& v : lerped) v.resize(kChunk + 15 + 2 * cc);
    for (int64_t u0 = begin; u0 < end;) {  // the range's runs of one slab
      const int64_t s = u0 / n_runs, u1 = std::min(end, (s + 1) * n_runs);
      const T* in = input + s * h * w * cc;
      float* const out = output + s * oh * row;
      // Row oy's piece of chunk [e0, e1) is [cut(oy, e0), cut(oy, e1)): cut on its own 64-byte
      // lines (a row's alignment is its own), the pieces of one row tiling it, each within
      // [e0 - 15, e1).
      const auto cut = [&](int64_t oy, int64_t e) {
        if (e == 0 || e == row) return e;
        return e - static_cast<int64_t>(reinterpret_cast<uintptr_t>(out + oy * row + e) % 64) / 4;
      };
      for (int64_t e0 = 0; e0 < row; e0 += kChunk) {
        const int64_t e1 = std::min(row, e0 + kChunk);
        const int64_t p0 = std::max<int64_t>(0, e0 - 15) / cc, p1 = (e1 - 1) / cc + 1;
        int64_t held[3] = {-1, -1, -1};  // the input row in each of lerped, along x for this chunk
        const auto slot_of = [&](int64_t i) {
          for (int k = 0; k < 3; ++k) {
            if (held[k] == i) return k;
          }
          return -1;
        };
        const auto free_slot = [&](int64_t keep0, int64_t keep1) {  // one holding neither
          for (int k = 0; k < 3; ++k) {
            if (held[k] != keep0 && held[k] != keep1) return k;
          }
          return 0;  // unreachable: three slots, two kept
        };
        const auto along_x = [&](int64_t i, int64_t keep) {
          int k = slot_of(i);
          if (k < 0) {
            k = free_slot(keep, keep);
            LerpColumns(in + i * w * cc, tx, cc, p0, p1, lerped[k].data());
            held[k] = i;
          }
          return lerped[k].data();
        };
        for (int64_t u = u0; u < u1; ++u) {
          const auto [y0, y1] = runs[u % n_runs];
          if (stream && u + 1 < u1 && (e0 == 0 || e1 == row)) {
            // A row whose ends are not on lines stores its first and last line plainly, each a
            // read from memory the streamed stores behind it wait for: fetched a run ahead.
            const auto [n0, n1] = runs[(u + 1) % n_runs];
            for (int64_t oy = n0; oy < n1; ++oy) {
              const float *first = out + oy * row, *last = first + row;
              if (e0 == 0 && reinterpret_cast<uintptr_t>(first) % 64 != 0) __builtin_prefetch(first, 1);
              if (e1 == row && reinterpret_cast<uintptr_t>(last) % 64 != 0) __builtin_prefetch(last - 1, 1);
            }
          }
          const int64_t il = ty.lower[y0], iu = ty.upper[y1 - 1];
          const float* t = along_x(il, iu) - p0 * cc;
          const float* b = along_x(iu, il) - p0 * cc;
          if (u + 2 < u1) {
            // The input row the run after next lerps, for this chunk: a short read that would
            // otherwise wait on memory latency (the hardware prefetchers do not start on it).
            const int64_t later = ty.upper[runs[(u + 2) % n_runs].second - 1];
            PrefetchBytes(in + (later * w + tx.lower[p0]) * cc,
                          (tx.upper[p1 - 1] + 1 - tx.lower[p0]) * cc * static_cast<int64_t>(sizeof(T)));
          }
          // The next run's new input row is lerped along x in pieces between this run's rows, into
          // the third slot: its stores then mix with the streamed ones instead of following them
          // in a burst while memory idles (at 19-21 channels the x lerps are ~20% of the time).
          const int64_t next = u + 1 < u1 ? ty.upper[runs[(u + 1) % n_runs].second - 1] : -1;
          const int k_next = next >= 0 && slot_of(next) < 0 ? free_slot(il, iu) : -1;
          if (k_next >= 0) held[k_next] = -1;
          const int64_t n_rows = y1 - y0;
          for (int64_t oy = y0; oy < y1; ++oy) {
            const int64_t a = cut(oy, e0), z = cut(oy, e1);
            const float* bo = ty.upper[oy] == iu ? b : t;  // a lone first row: both taps on il
            LerpRows(t + a, bo + a, ty.lerp[oy], z - a, stream, out + oy * row + a);
            if (k_next >= 0) {
              const int64_t r = oy - y0, q0 = p0 + (p1 - p0) * r / n_rows, q1 = p0 + (p1 - p0) * (r + 1) / n_rows;
              LerpColumns(in + next * w * cc, tx, cc, q0, q1, lerped[k_next].data() + (q0 - p0) * cc);
            }
          }
          if (k_next >= 0) held[k_next] = next;
        }
      }
      u0 = u1;
    }
    if (stream) StreamFence();
  });
}

// The height of the gradients' bands of input rows (a band is a unit of work; the output rows two
// bands share are read -- by the loss gradient, computed -- by both): about four units per core,
// so that fewer, taller bands do less twice, at most `tallest` rows, at least 1, and a slab's bands
// as even as they divide (65 rows in two: 33 and 32, not 64 and 1). Cityscapes-like
// [2,128,256,19] -> 1024x2048 on the 2-core EPYC VM, interleaved in one process against
// tf.reduce_sum: 16 bands of 16 rows 1.11x the read floor, 8 of 32 1.07x, 4 of 64 1.06x; DeepLab's
// [8,65,65,21] -> 513x513 24 bands of 21-22 rows 1.03x, 16 of 32-33 0.99x. Sums add in the same
// order whatever the bands: the same bits. At least `shortest` rows (where h has them): the loss
// gradient computes its shared rows' softmax twice, which on many cores would otherwise be most of
// its rows.
inline int64_t GradientBand(int64_t slabs, int64_t h, int64_t tallest, int64_t shortest = 1) {
  if (h <= 0) return 1;
  const int64_t hi = std::clamp<int64_t>(tallest, 1, h), lo = std::min(hi, std::max<int64_t>(1, shortest));
  const int64_t want = std::clamp<int64_t>(slabs * h / (4 * CoreCount()), lo, hi);
  const int64_t count = (h + want - 1) / want;
  return (h + count - 1) / count;
}

// acc[c] += w * A(d[c]) for n elements.
template <typename A, typename Src>
inline void AddScaled(A* __restrict acc, A w, const Src* __restrict d, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += w * A(d[c]);
}

// AddScaled with w0, then with w1, in one pass over d.
template <typename A, typename Src>
inline void AddScaledTwice(A* __restrict acc, A w0, A w1, const Src* __restrict d, int64_t n, bool fresh) {
  if (fresh) {
    for (int64_t c = 0; c < n; ++c) acc[c] = (A(0) + w0 * A(d[c])) + w1 * A(d[c]);
  } else {
    for (int64_t c = 0; c < n; ++c) acc[c] = (acc[c] + w0 * A(d[c])) + w1 * A(d[c]);
  }
}

// ReduceRowFewChannels where this build has it and AddRunTwoColumns would take AddRunFewChannels
// (FewChannels): true. Elsewhere nothing is done (false): one channel (NCHW's slabs) or whole
// vectors go in AddRunTwoColumns' blocks, without masked loads and stores.
template <typename A, class Weights, class BeforeRun>
bool ReduceRowFewChannelsFor(const Weights& weights, const A* r, int64_t nc,
                             const std::vector<std::pair<int64_t, int64_t>>& runs, const int64_t* lower,
                             const int64_t* upper, A* xr, const BeforeRun& before_run) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  if constexpr (std::is_same_v<A, float>) {
    if (FewChannels(nc)) {
      ByVectors<void>(nc, [&](auto nv) {
        ReduceRowFewChannels<decltype(nv)::value>(weights, r, nc, runs, lower, upper, xr, before_run);
      });
      return true;
    }
  }
#endif
  (void)weights, (void)r, (void)nc, (void)runs, (void)lower, (void)upper, (void)xr, (void)before_run;
  return false;
}

// Gradient, y first: a thread owns a band of input rows. Each output-gradient row is added, with
// its y weights, into the (at most two) input rows it reaches: rows of the output full width, acc_y
// (two live at a time, the band's rows in order). Runs of output rows with the same two input rows
// are summed in registers (AddRowsRun), each element in ascending output order. When no later
// output row reaches an input row, that row is summed along x into xr (input width, in ascending
// output order again) and written. So dy is read once (the rows two bands share, twice) and the x
// pass runs once per input row, not per output row. The CUDA kernel sums in the same order: the
// same bits.
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
  // Bands of input rows of at most 64 rows (GradientBand).
  const int64_t band = GradientBand(sl.count, h, 64);
  const int64_t bands = (h + band - 1) / band;
  const int64_t rows_per_band = std::max<int64_t>(1, oh * band / h);
  pf(sl.count * bands, (rows_per_band + band) * row * 3, [&](int64_t begin, int64_t stop) {
    std::vector<A> acc(2 * row), xr(w * cc), spare;
    for (int64_t u = begin; u < stop; ++u) {
      const int64_t s = u / bands, i0 = (u % bands) * band, i1 = std::min(h, i0 + band);
      const float* dy = output_grad + s * oh * row;
      A* const live[2] = {acc.data(), acc.data() + row};
      bool fresh[2] = {true, true};  // a buffer nothing was added to yet: zeros, never zeroed
      auto rows_of = [&](int64_t i) { return live[(i - i0) % 2]; };
      auto fresh_of = [&](int64_t i) -> bool& { return fresh[(i - i0) % 2]; };
      int64_t done = i0;  // input rows [i0, done) are written
      // Row i along x, written; its buffer fresh for row i + 2. `next`: the first of the output
      // rows the y pass reads after it (or null), whose first kAheadLines lines in each of
      // kRowsAtOnce rows (the first four of a chunk of eight, or the chunk) are prefetched a few
      // per column run, so that memory keeps streaming while this pass computes from the cache
      // (Cityscapes-like: ~16% of the gradient). 128 lines (8 KB a row, 32 KB in all): with
      // twice that the gradient was slower (DeepLab's [8,65,65,21] -> 513x513 on the EPYC VM,
      // AVX-512, interleaved in one process against tf.reduce_sum: one thread 1.29-1.31x the read
      // floor against 1.35-1.37x, two 1.06-1.30x against 1.09-1.35x; Cityscapes-like and
      // ADE20K-like, both builds, within 0.04x either way), and this pass's share of the sampled
      // time (one thread) was 3x that without any prefetch.
      constexpr int64_t kRowsAtOnce = 4, kAheadLines = 128;
#if defined(TFUP_ISA_AVX512)
      const int64_t rows_at_once = 8;  // (below)
#else
      const int64_t rows_at_once = 2 * row * static_cast<int64_t>(sizeof(A)) <= (int64_t{128} << 10) ? 8 : kRowsAtOnce;
#endif
      auto finish = [&](int64_t i, const float* next) {
        A* r = rows_of(i);
        std::fill(xr.begin(), xr.end(), A(0));
        const int64_t lines = next ? std::min(kAheadLines, (row * 4 + 63) / 64) * kRowsAtOnce : 0;
        const int64_t per_run = (lines + static_cast<int64_t>(xruns.size()) - 1) / static_cast<int64_t>(xruns.size());
        int64_t q = 0;
        const auto prefetch = [&](size_t) __attribute__((always_inline)) {
          for (const int64_t q1 = std::min(lines, q + per_run); q < q1; ++q) {
            __builtin_prefetch(next + (q % kRowsAtOnce) * row + (q / kRowsAtOnce) * 16);
          }
        };
        // A row no output row reached stays zeros. Pixels of 2 to 4 float vectors, the last
        // partial: one pass over the row (ReduceRowFewChannels); others run by run.
        if (!fresh_of(i) && !ReduceRowFewChannelsFor(xweights, r, cc, xruns, tx.lower.data(), tx.upper.data(),
                                                     xr.data(), prefetch)) {
          for (size_t k = 0; k < xruns.size(); ++k) {
            prefetch(k);
            const auto [x0, x1] = xruns[k];
            const int64_t jl = tx.lower[x0], ju = tx.upper[x0];
            if (jl != ju) {
              AddRunTwoColumns(xweights, ow, r, cc, cc, x0, x1, xr.data() + jl * cc, xr.data() + ju * cc,
                               /*cached=*/true);
              continue;
            }
            for (int64_t ox = x0; ox < x1; ++ox) {  // both taps on one column (a clamped edge)
              AddScaled(xr.data() + jl * cc, A(1.0f - tx.lerp[ox]), r + ox * cc, cc);
              AddScaled(xr.data() + jl * cc, A(tx.lerp[ox]), r + ox * cc, cc);
            }
          }
        }
        NarrowRow(input_grad + (s * h + i) * w * cc, xr.data(), w * cc);
        fresh_of(i) = true;
      };
      for (size_t k = 0; k < yruns.size(); ++k) {
        auto [y0, y1] = yruns[k];
        int64_t il = ty.lower[y0], iu = ty.upper[y0];
        if (iu < i0) continue;
        if (il >= i1) break;
        while (done < std::min(il, i1)) {  // no later output row reaches them
          finish(done++, y0 + kRowsAtOnce <= oh ? dy + y0 * row : nullptr);
        }
        bool lo_in = il >= i0, up_in = iu < i1;
        // Rows whose two taps are one input row (an exact tap: align-corners at an integer
        // factor, every f-th row; a clamped edge) join the run after them when it starts on that
        // row, as its first `lone` rows (both terms to the lower row), rather than going alone:
        // a row alone reads and writes its input row's sums once per output row. DeepLab's
        // [8,65,65,21] -> 513 x 513: ~4 ms of the ~14 ms gradient was the 1 row in 8 alone.
        int64_t lone = 0;
        if (lo_in && JoinsNextRun(ty, yruns, k) && ty.upper[yruns[k + 1].first] < i1) {
          const auto [n0, n1] = yruns[k + 1];
          lone = y1 - y0, y1 = n1, iu = ty.upper[n0], up_in = true, ++k;
        }
        if (il != iu) {
          // Four output rows at a time in the AVX2 build: four streams from memory keep closer
          // to the read floor than a whole run's eight or more (ADE20K-like x8, THP-backed dy:
          // 1.23x the floor, against 1.35x for whole runs and 1.48x row by row; on a Zen 4 EPYC
          // VM 1.07x against 1.14x with eight, Cityscapes-like 1.14x against 1.19x) -- but eight
          // where the two rows of sums are small, which then stay in L1/L2 while each is loaded
          // and stored half as often (DeepLab's 513 x 21 rows, 86 KB: 1.13-1.25x against
          // 1.24-1.46x on the EPYC VM, both builds, before the AVX-512 build took eight
          // everywhere). The AVX-512 build takes eight everywhere (EPYC VM, ADE20K-like against a
          // fast read floor: 1.20x against 1.26x with four, when its blocks were 64 floats; with
          // AddRowsTwoColumns' 32, four was 0.01-0.03x faster at ADE20K-like in 4 of 4 pairs and
          // 0.01-0.04x slower at Cityscapes-like in 3 of 4). Each element still adds its outputs
          // in ascending order: the same bits.
          // A run across the band's edge has only one of its rows in the band: the other's sums
          // go to a spare row and are dropped, so that its output rows are still read a few at a
          // time rather than one by one (one read of dy and one load and store of the row of sums
          // per output row; Cityscapes-like on the EPYC VM, one process: 9.6-9.8 ms against
          // 9.8-9.9 ms, DeepLab's 5.9 against 6.1 ms).
          if (!(lo_in && up_in) && spare.empty()) spare.resize(row);
          A* const r0 = lo_in ? rows_of(il) : spare.data();
          A* const r1 = up_in ? rows_of(iu) : spare.data();
          for (int64_t a = y0; a < y1; a += rows_at_once) {
            const int64_t b = std::min(y1, a + rows_at_once);
            AddRowsRun(yweights, dy, row, a, b, r0, r1, !lo_in || fresh_of(il), !up_in || fresh_of(iu),
                       std::clamp<int64_t>(y0 + lone - a, 0, b - a));
            if (lo_in) fresh_of(il) = false;
            if (up_in) fresh_of(iu) = false;
          }
          continue;
        }
        for (int64_t oy = y0; oy < y1; ++oy) {  // both taps on one input row: both terms, lower tap's first
          AddScaledTwice(rows_of(il), A(1.0f - ty.lerp[oy]), A(ty.lerp[oy]), dy + oy * row, row, fresh_of(il));
          fresh_of(il) = false;
        }
      }
      while (done < i1) finish(done++, nullptr);
    }
  });
}

// One output pixel's values for k classes whose four taps are q00..q11 (as float): ResizeScores'
// arithmetic, so the same bits as the resize's output.
inline void ResizePixel(const float* q00, const float* q01, const float* q10, const float* q11,
                        float xl, float yl, int64_t k, float* __restrict v) {
  for (int64_t c = 0; c < k; ++c) {
    const float top = q00[c] + (q01[c] - q00[c]) * xl;
    const float bottom = q10[c] + (q11[c] - q10[c]) * xl;
    v[c] = top + (bottom - top) * yl;
  }
}

// The argmax over classes of ResizeBilinear's output, with the transposed convolution argmax's
// first pruning level (heads_impl.h): the outputs of a cell -- a run of rows by a run of columns
// reading the same four inputs -- are per class convex combinations of those four values, so a
// class whose largest is below the best smallest by more than three roundings of a value (its
// three lerps: under 16 float epsilons of the largest |value|) is never the maximum there.
// Survivors are evaluated with ResizePixel: labels and scores are the bits of tf.argmax /
// tf.reduce_max of the resize. Non-finite logits in a cell turn pruning off there.
template <typename T>
void ResizeArgmaxImpl(const Geometry& g, const T* logits, int64_t* labels, float* scores,
                      const ParallelFor& pf) {
  const ResizeTaps ty(g.y, g.resize), tx(g.x, g.resize);
  const int64_t C = g.c, h = g.y.n_in, w = g.x.n_in, oh = g.y.n_out, ow = g.x.n_out;
  const auto yruns = SameTapRuns(ty.lower, ty.upper), xruns = SameTapRuns(tx.lower, tx.upper);
  const int64_t ny = static_cast<int64_t>(yruns.size());
  const float margin = 16 * std::numeric_limits<float>::epsilon();
  // "Finite" here: small enough that no lerp can overflow (a difference of two taps stays finite).
  const float top_value = std::numeric_limits<float>::max() / 4;
  const bool stream = StreamOutput(g.n * oh * ow * static_cast<int64_t>(sizeof(int64_t)));
  // The leader shortcut where there are at least as many outputs as inputs (a shrinking resize
  // reads few of its input pixels: a pass over all of them would cost more than it saves).
  const auto leaders = oh * ow >= h * w
      ? Leaders<float>(logits, g.n * h * w, C, top_value, [](T x) { return ToFloat(x); }, pf)
      : std::vector<Leader<float>>();
  pf(g.n * ny, ow * C * 2 * std::max<int64_t>(1, oh / std::max<int64_t>(1, ny)), [&](int64_t begin, int64_t end) {
    std::vector<float> lo(C), hi(C), q(4 * C), v(C);
    std::vector<int64_t> id(C);
    UnitRows<int64_t> label_rows(labels, ow, stream);  // large outputs streamed a unit at a time
    UnitRows<float> score_rows(scores, ow, stream);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t s = u / ny;
      const auto [y0, y1] = yruns[u % ny];
      label_rows.Begin(s * oh + y0, s * oh + y1);
      score_rows.Begin(s * oh + y0, s * oh + y1);
      const T* in = logits + s * h * w * C;
      const int64_t il = ty.lower[y0], iu = ty.upper[y0];
      for (const auto& [x0, x1] : xruns) {
        const int64_t jl = tx.lower[x0], ju = tx.upper[x0];
        const T* p[4] = {in + (il * w + jl) * C, in + (il * w + ju) * C, in + (iu * w + jl) * C,
                         in + (iu * w + ju) * C};
        float *q00 = q.data(), *q01 = q00 + C, *q10 = q01 + C, *q11 = q10 + C;
        int64_t sole = -1;
        if (!leaders.empty()) {
          const Leader<float>* lead = leaders.data() + s * h * w;
          sole = SoleLeader(lead[il * w + jl], lead[il * w + ju], lead[iu * w + jl], lead[iu * w + ju], margin, 3.0f);
        }
        int64_t k = 0;
        bool finite = true;
        const auto keep = [&](int64_t c) {  // class c survives: its four taps packed
          id[k] = c;
          q00[k] = ToFloat(p[0][c]);
          q01[k] = ToFloat(p[1][c]);
          q10[k] = ToFloat(p[2][c]);
          q11[k] = ToFloat(p[3][c]);
          ++k;
        };
        if (sole >= 0) {  // what the pruning below would leave: this class alone
          keep(sole);
        } else {
          int64_t ok = 0;
          for (int64_t c = 0; c < C; ++c) {
            const float a = ToFloat(p[0][c]), b = ToFloat(p[1][c]), d = ToFloat(p[2][c]), e = ToFloat(p[3][c]);
            lo[c] = std::min(std::min(a, b), std::min(d, e));
            hi[c] = std::max(std::max(a, b), std::max(d, e));
            ok += (std::abs(a) <= top_value) & (std::abs(b) <= top_value) & (std::abs(d) <= top_value) &
                  (std::abs(e) <= top_value);
          }
          finite = ok == C;
          float best_lo, big;
          SummariseBounds(lo.data(), hi.data(), C, &best_lo, &big);
          const float delta = margin * big;
          for (int64_t c = 0; c < C; ++c) {
            if (finite && hi[c] < best_lo - 3 * delta) continue;  // never the maximum in this cell
            keep(c);
          }
        }
        for (int64_t oy = y0; oy < y1; ++oy) {
          int64_t* const label_row = label_rows.Row(s * oh + oy);
          float* const score_row = score_rows.Row(s * oh + oy);
          if (k == 1 && score_row == nullptr) {  // one class: its label (ArgmaxFirst's best is 0)
            std::fill(label_row + x0, label_row + x1, id[0]);
            continue;
          }
          for (int64_t ox = x0; ox < x1; ++ox) {
            ResizePixel(q00, q01, q10, q11, tx.lerp[ox], ty.lerp[oy], k, v.data());
            const int64_t best = ArgmaxFirst(v.data(), k, finite, std::numeric_limits<float>::lowest());
            label_row[ox] = k > 0 ? id[best] : 0;
            if (score_row != nullptr) score_row[ox] = k > 0 ? v[best] : 0.0f;
          }
        }
      }
      label_rows.End();
      score_rows.End();
    }
  });
}

// sparse_softmax_cross_entropy_with_logits of ResizeBilinear's float output, per output pixel,
// and its softmax statistics for the gradient (as the transposed convolution's loss head).
template <typename T>
void ResizeSoftmaxCrossEntropyImpl(const Geometry& g, const T* logits, LabelMap labels,
                                   LabelRule rule, float* loss, double* stats,
                                   const ParallelFor& pf) {
  const ResizeTaps ty(g.y, g.resize), tx(g.x, g.resize);
  const int64_t C = g.c, h = g.y.n_in, w = g.x.n_in, oh = g.y.n_out, ow = g.x.n_out;
  if (g.n == 0 || oh == 0) return;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  // Float logits at few classes: the scores class-major from the two input rows, where they fit
  // (the taps' b and two unused).
  const auto windows = MakeClassWindows<T>(C, ow, [&](int64_t o) {
    return ClassWindows::Taps{tx.lower[o], tx.upper[o], tx.lerp[o], 0.0f, true};
  });
#endif
  pf(g.n * oh, ow * C * 16, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
    std::unique_ptr<ClassRows> class_rows;
    if (windows != nullptr) class_rows = std::make_unique<ClassRows>(w, C);
#endif
    for (int64_t u = begin; u < end; ++u) {
      const int64_t s = u / oh, oy = u % oh;
      const T* in = logits + s * h * w * C;
      const T *r0 = in + ty.lower[oy] * w * C, *r1 = in + ty.upper[oy] * w * C;
      const int64_t base = (s * oh + oy) * ow;
      const auto scores = [&](int64_t ox, float* out) {
        ResizeScores(r0, r1, tx.lower[ox], tx.upper[ox], tx.lerp[ox], ty.lerp[oy], C, out);
      };
      float* loss_row = loss == nullptr ? nullptr : loss + base;
      double* stats_row = stats == nullptr ? nullptr : stats + 2 * base;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
      if constexpr (std::is_same_v<T, float>) {
        if (windows != nullptr) {
          const int64_t k0 = s * h + ty.lower[oy], k1 = s * h + ty.upper[oy];
          const float* t0 = class_rows->Get(k0, r0, k1);
          const float* t1 = class_rows->Get(k1, r1, k0);
          const int64_t stride = class_rows->stride();
          const Lanes::V yv = Lanes::Set(ty.lerp[oy]);
          LossRow<float>(ow, C, labels.From(base), rule, scores, [&](int64_t o0, int64_t, float* vt) {
            // ResizeScores' operations on each value, as class-major vectors of pixels
            return windows->ForWindows(o0, [&](int64_t p0, int64_t first, Lanes::Idx il, Lanes::Idx iu, Lanes::V xv,
                                               Lanes::V, Lanes::Mask) {
              using L = Lanes;
              const float *top_row = t0 + first, *bottom_row = t1 + first;
              for (int64_t c = 0; c < C; ++c) {
                const L::V a = L::Load(top_row + c * stride), d = L::Load(bottom_row + c * stride);
                const L::V tl = L::Permute(a, il), tr = L::Permute(a, iu), bl = L::Permute(d, il), br = L::Permute(d, iu);
                const L::V top = L::Add(tl, L::Mul(L::Sub(tr, tl), xv));
                const L::V bottom = L::Add(bl, L::Mul(L::Sub(br, bl), xv));
                L::Store(vt + c * kLossBlock + p0, L::Add(top, L::Mul(L::Sub(bottom, top), yv)));
              }
            });
          }, loss_row, stats_row, scratch);
          continue;
        }
      }
#endif
      LossRow<float>(ow, C, labels.From(base), rule, scores, loss_row, stats_row, scratch);
    }
  });
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
// One output row of the loss gradient below, along x, for float logits: per run of pixels with
// the same two input columns, the four input pixels are loaded and tr - tl, br - bl formed once,
// and the run's sums into its two columns of xr stay in registers; per pixel, ResizeScores,
// SoftmaxExp, the target and the two weighted adds (AddLossGradPixel), operation for operation as
// the scalar loop (the same bits). The lanes past C hold the maximum (exp(0)) and never leave the
// registers. FewClassLossGradRow keeps all of a pixel's NV vectors of classes in registers (NV at
// most 4; the last one's lanes of type Last, ClassVectors), LossGradRowByVectors any number, a
// vector at a time over the run's pixels.
template <typename L>
struct ResizeGradRegs {
  typename L::V tl, dt, bl, db, sl, su;  // a run's four inputs as tl, tr - tl, bl, br - bl; its sums
};
// A pixel's scalars for AddLossGradPixel.
struct LossGradPixel {
  int64_t y;      // its label
  float xl;       // its x lerp (the upper column's weight)
  float m;        // its scores' maximum
  float scale;    // loss_grad / the sum of its exps
  float off, on;  // the target's terms: d - off everywhere, d + on at y
};
// The pixel's terms (false where the rule skips it: an ignored pixel contributes nothing, NaN
// logits included).
// on_label, uniform: the target's 1 - s and s / C for label smoothing s.
inline bool LossGradTerms(int64_t ox, int64_t base, LabelMap labels, const LabelRule& rule, const double* stats,
                          const float* loss_grad, const ResizeTaps& tx, float on_label, float uniform,
                          LossGradPixel* p) {
  const int64_t i = base + ox, y = labels[i];
  if (rule.Skips(y)) return false;
  const float gl = loss_grad[rule.uniform_grad ? 0 : i];
  const float m = static_cast<float>(stats[2 * i]), sum = static_cast<float>(stats[2 * i + 1]);
  *p = {y, tx.lerp[ox], m, gl / sum, gl * uniform, -(rule.smoothing == 0 ? gl : gl * on_label)};
  return true;
}
// One pixel's d = scale * exp(v - m) (- off) (+ on at y) for vector vec of its classes, added into
// the run's sums with weights 1 - xl and xl (one_column: both into sl, lower's first).
template <typename Vec, typename Q>
inline void AddLossGradPixel(Vec vec, Q& q, const LossGradPixel& p, float yl, bool smoothing, bool one_column) {
  using L = typename Vec::L;
  using V = typename L::V;
  const V xv = L::Set(p.xl), mv = L::Set(p.m);
  const V top = L::Add(q.tl, L::Mul(q.dt, xv)), bottom = L::Add(q.bl, L::Mul(q.db, xv));
  const V v = vec.PastEnd(L::Add(top, L::Mul(L::Sub(bottom, top), L::Set(yl))), mv);  // past C: the max
  V d = L::Mul(SoftmaxExpLanes<L>(L::Sub(v, mv)), L::Set(p.scale));
  if (smoothing) d = L::Sub(d, L::Set(p.off));
  if (vec.Holds(p.y)) d = L::AddWhere(OneLane<L>(p.y % Lanes::kN), d, L::Set(p.on));  // d[y] - gl
  const V wlv = L::Set(1.0f - p.xl), wuv = L::Set(p.xl);
  if (one_column) {  // both weights into one column, in the scalar loop's order
    q.sl = L::Add(L::Add(q.sl, L::Mul(wlv, d)), L::Mul(wuv, d));
  } else {
    q.sl = L::Add(q.sl, L::Mul(wlv, d));
    q.su = L::Add(q.su, L::Mul(wuv, d));
  }
}
template <typename Vec, typename Q>
inline void LoadLossGradRun(Vec vec, Q& q, const float* r0, const float* r1, int64_t jl, int64_t ju, int64_t C,
                            const float* xr) {
  using L = typename Vec::L;
  q.tl = vec.Load(r0 + jl * C);
  q.dt = L::Sub(vec.Load(r0 + ju * C), q.tl);
  q.bl = vec.Load(r1 + jl * C);
  q.db = L::Sub(vec.Load(r1 + ju * C), q.bl);
  q.sl = vec.Load(xr + jl * C);
  q.su = vec.Load(xr + ju * C);
}
template <typename Vec, typename Q>
inline void StoreLossGradRun(Vec vec, const Q& q, int64_t jl, int64_t ju, int64_t C, float* xr) {
  vec.Store(xr + jl * C, q.sl);
  if (jl != ju) vec.Store(xr + ju * C, q.su);
}
template <int NV, typename Last>
void FewClassLossGradRow(const float* r0, const float* r1, float yl, int64_t C, const ResizeTaps& tx,
                         const std::vector<std::pair<int64_t, int64_t>>& xruns, int64_t base,
                         LabelMap labels, LabelRule rule, const double* stats, const float* loss_grad,
                         float* __restrict xr) {
  ClassVectors<NV, Last, ResizeGradRegs> vecs(C);
  const bool smoothing = rule.smoothing != 0;
  const float on_label = static_cast<float>(1 - rule.smoothing),
              uniform = static_cast<float>(rule.smoothing / static_cast<double>(C));
  for (const auto& [x0, x1] : xruns) {
    const int64_t jl = tx.lower[x0], ju = tx.upper[x0];
    vecs.ForEach([&](auto vec, auto& q) { LoadLossGradRun(vec, q, r0, r1, jl, ju, C, xr); });
    for (int64_t ox = x0; ox < x1; ++ox) {
      LossGradPixel p;
      if (!LossGradTerms(ox, base, labels, rule, stats, loss_grad, tx, on_label, uniform, &p)) continue;
      vecs.ForEach([&](auto vec, auto& q) { AddLossGradPixel(vec, q, p, yl, smoothing, jl == ju); });
    }
    vecs.ForEach([&](auto vec, auto& q) { StoreLossGradRun(vec, q, jl, ju, C, xr); });
  }
}
template <typename Last>
void LossGradRowByVectors(const float* r0, const float* r1, float yl, int64_t C, const ResizeTaps& tx,
                          const std::vector<std::pair<int64_t, int64_t>>& xruns, int64_t base,
                          LabelMap labels, LabelRule rule, const double* stats, const float* loss_grad,
                          float* __restrict xr) {
  const bool smoothing = rule.smoothing != 0;
  const float on_label = static_cast<float>(1 - rule.smoothing),
              uniform = static_cast<float>(rule.smoothing / static_cast<double>(C));
  LossGradPixel pixels[kGradPiece];
  for (const auto& [run0, run1] : xruns) {
    const int64_t jl = tx.lower[run0], ju = tx.upper[run0];
    for (int64_t x0 = run0; x0 < run1; x0 += kGradPiece) {
      int64_t n = 0;
      for (int64_t ox = x0; ox < std::min(run1, x0 + kGradPiece); ++ox) {
        n += LossGradTerms(ox, base, labels, rule, stats, loss_grad, tx, on_label, uniform, &pixels[n]);
      }
      if (n == 0) continue;
      ForEachClassVector<Last>(C, [&](auto vec) {
        ResizeGradRegs<typename decltype(vec)::L> q;
        LoadLossGradRun(vec, q, r0, r1, jl, ju, C, xr);
        for (int64_t k = 0; k < n; ++k) AddLossGradPixel(vec, q, pixels[k], yl, smoothing, jl == ju);
        StoreLossGradRun(vec, q, jl, ju, C, xr);
      });
    }
  }
}
#endif

// The loss gradients' sweep: bands of input rows (GradientBand), each output row that reaches a
// band reduced along x into xr by reduce_row(s, oy, xr, fs, as) (xr zeroed before; fs, as: the
// thread's float and accumulator scratch), then xr added into the band's input rows along y, as
// ResizeBilinear's gradient (x first here: a pixel's dv exists only while it is computed). A
// band's thread owns its rows; the output rows two bands share are reduced by both. Scratch: an
// input row, the band's rows and what reduce_row keeps per thread: nothing of the output's size.
template <typename T, typename ReduceRow>
void ResizeLossGradSweep(const Geometry& g, const ResizeTaps& ty, T* logits_grad, const ParallelFor& pf,
                         ReduceRow&& reduce_row) {
  using A = Acc<T>;
  const int64_t C = g.c, h = g.y.n_in, w = g.x.n_in, oh = g.y.n_out, ow = g.x.n_out;
  std::vector<int64_t> first(h, oh), end(h, 0);  // output rows reaching each input row
  for (int64_t oy = 0; oy < oh; ++oy) {
    for (const int64_t i : {ty.lower[oy], ty.upper[oy]}) {
      first[i] = std::min(first[i], oy);
      end[i] = std::max(end[i], oy + 1);
    }
  }
  // Bands (GradientBand) of at most 64 rows and 8 MB of sums, or 16 rows where those are more,
  // and at least the 16 rows (a quarter of h where fewer) of the fixed bands before, whose shared
  // output rows, computed twice, had cost: ADE20K-like loss gradient 111.5 against 107.9 ms,
  // VOC-like 26.6 against 25.5, Cityscapes-like 48.1 against 47.1 (AVX-512, same process).
  const int64_t row_bytes = std::max<int64_t>(1, w * C * static_cast<int64_t>(sizeof(A)));
  const int64_t tallest = std::min<int64_t>(64, std::max<int64_t>(16, (int64_t{8} << 20) / row_bytes));
  const int64_t band = GradientBand(g.n, h, tallest, std::min<int64_t>(16, h / 4));
  const int64_t bands = (h + band - 1) / band;
  const int64_t rows_per_band = std::max<int64_t>(1, oh * band / h);
  pf(g.n * bands, (rows_per_band + 1) * ow * C * 16, [&](int64_t begin, int64_t stop) {
    std::vector<A> acc(band * w * C), xr(w * C), as;
    std::vector<float> fs;
    for (int64_t u = begin; u < stop; ++u) {
      const int64_t s = u / bands, i0 = (u % bands) * band, i1 = std::min(h, i0 + band);
      std::fill(acc.begin(), acc.end(), A(0));
      int64_t o0 = oh, o1 = 0;
      for (int64_t i = i0; i < i1; ++i) {
        o0 = std::min(o0, first[i]);
        o1 = std::max(o1, end[i]);
      }
      for (int64_t oy = o0; oy < o1; ++oy) {
        std::fill(xr.begin(), xr.end(), A(0));
        reduce_row(s, oy, xr.data(), fs, as);
        const int64_t il = ty.lower[oy], iu = ty.upper[oy];
        if (il >= i0 && il < i1) AddScaled(acc.data() + (il - i0) * w * C, A(1.0f - ty.lerp[oy]), xr.data(), w * C);
        if (iu >= i0 && iu < i1) AddScaled(acc.data() + (iu - i0) * w * C, A(ty.lerp[oy]), xr.data(), w * C);
      }
      NarrowRow(logits_grad + (s * h + i0) * w * C, acc.data(), (i1 - i0) * w * C);
    }
  });
}

// Its gradient to the logits: per output pixel dv = loss_grad * (softmax - target) (the softmax
// from the forward's stats), folded at once into xr along x (ResizeLossGradSweep).
template <typename T>
void ResizeSoftmaxCrossEntropyGradImpl(const Geometry& g, const T* logits, LabelMap labels,
                                       LabelRule rule, const double* stats,
                                       const float* loss_grad, T* logits_grad,
                                       const ParallelFor& pf) {
  using A = Acc<T>;
  const ResizeTaps ty(g.y, g.resize), tx(g.x, g.resize);
  const int64_t C = g.c, h = g.y.n_in, w = g.x.n_in, oh = g.y.n_out, ow = g.x.n_out;
  const float on_label = static_cast<float>(1 - rule.smoothing),
              uniform = static_cast<float>(rule.smoothing / static_cast<double>(C));
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  // Float logits: one output row's pixels in vector registers, a run of pixels with the same two
  // input columns at a time, all of a pixel's classes at once up to 4 vectors (19 and 21 classes:
  // 2 on AVX-512, 3 on AVX2; FewClassLossGradRow), else a vector at a time over the run
  // (LossGradRowByVectors). The same operations in the same order as the loop below, so the same
  // bits.
  using RowFn = void (*)(const float*, const float*, float, int64_t, const ResizeTaps&,
                         const std::vector<std::pair<int64_t, int64_t>>&, int64_t, LabelMap,
                         LabelRule, const double*, const float*, float*);
  RowFn row_fn = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    row_fn = ByClassVectors<RowFn>(C, [](auto nv, auto last) -> RowFn {
      return FewClassLossGradRow<decltype(nv)::value, decltype(last)>;
    });
    if (row_fn == nullptr) {  // more vectors than registers hold
      row_fn = ByLastVector<RowFn>(C, [](auto last) -> RowFn { return LossGradRowByVectors<decltype(last)>; });
    }
  }
  const auto xruns = SameTapRuns(tx.lower, tx.upper);
#endif
  // A pixel's softmax over Cv >= C lanes, whole vectors of 16 (the values past C, set to the
  // maximum, are never used: the compiler's scalar tail of 3-5 exps would cost more than the
  // vector at 19-21 classes).
  const int64_t Cv = (C + 15) / 16 * 16;
  ResizeLossGradSweep(g, ty, logits_grad, pf, [&](int64_t s, int64_t oy, A* xr, std::vector<float>& v,
                                                   std::vector<A>& d) {
    const T* in = logits + s * h * w * C;
    const T *r0 = in + ty.lower[oy] * w * C, *r1 = in + ty.upper[oy] * w * C;
    const int64_t base = (s * oh + oy) * ow;
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
    if constexpr (std::is_same_v<T, float>) {
      if (row_fn != nullptr) return row_fn(r0, r1, ty.lerp[oy], C, tx, xruns, base, labels, rule, stats, loss_grad, xr);
    }
#endif
    v.resize(Cv);
    d.resize(Cv);
    for (int64_t ox = 0; ox < ow; ++ox) {
      const int64_t i = base + ox, y = labels[i];
      if (rule.Skips(y)) continue;  // an ignored pixel contributes nothing, NaN logits included
      const float gl = loss_grad[rule.uniform_grad ? 0 : i];
      const float m = static_cast<float>(stats[2 * i]), sum = static_cast<float>(stats[2 * i + 1]);
      ResizeScores(r0, r1, tx.lower[ox], tx.upper[ox], tx.lerp[ox], ty.lerp[oy], C, v.data());
      std::fill(v.begin() + C, v.end(), m);  // the unused lanes: exp(0), in SoftmaxExp's range
      const float scale = gl / sum;
      if (rule.smoothing == 0) {
        for (int64_t c = 0; c < Cv; ++c) d[c] = A(SoftmaxExp(v[c] - m) * scale);
        d[y] -= A(gl);  // the one-hot
      } else {  // the target (1 - s) onehot + s / C
        const float off = gl * uniform;
        for (int64_t c = 0; c < Cv; ++c) d[c] = A(SoftmaxExp(v[c] - m) * scale - off);
        d[y] -= A(gl * on_label);
      }
      AddScaled(xr + tx.lower[ox] * C, A(1.0f - tx.lerp[ox]), d.data(), C);
      AddScaled(xr + tx.upper[ox] * C, A(tx.lerp[ox]), d.data(), C);
    }
  });
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
// The loss and its gradient in one sweep (ResizeSoftmaxCrossEntropyWithGrad's row, float logits at
// kFewClasses classes or more, more than ClassVectors holds), as FcnLossWithGradRow: each pixel's
// scores (ResizeScores, the forward's values), target, max, exps (stored, kWithGradPiece pixels at
// a time) and their sum, its loss and stats as PixelLossRow writes them, then the piece's terms
// added into xr from the stored exps as LossGradRowByVectors adds them with loss_grad 1 (the same
// bits). loss and stats may be null (a row another band writes).
template <typename Last>
void LossWithGradRow(const float* r0, const float* r1, float yl, int64_t C, const ResizeTaps& tx,
                     const std::vector<std::pair<int64_t, int64_t>>& xruns, int64_t base, LabelMap labels,
                     const LabelRule& rule, float* loss, double* stats, float* __restrict xr,
                     float* __restrict exps) {
  const bool smoothing = rule.smoothing != 0;
  const float on = -(smoothing ? static_cast<float>(1 - rule.smoothing) : 1.0f),
              uniform = static_cast<float>(rule.smoothing / static_cast<double>(C));
  const int64_t stride = (C + Lanes::kN - 1) / Lanes::kN * Lanes::kN;
  LossGradPixel pixels[kWithGradPiece];
  WithGradPiece piece;
  for (const auto& [run0, run1] : xruns) {
    const int64_t jl = tx.lower[run0], ju = tx.upper[run0];
    for (int64_t x0 = run0; x0 < run1; x0 += kWithGradPiece) {
      piece.Compute(x0, std::min(run1, x0 + kWithGradPiece), base, labels, rule, C, stride, exps, loss, stats,
                    [&](int64_t ox, float* e) { ResizeScores(r0, r1, tx.lower[ox], tx.upper[ox], tx.lerp[ox], yl, C, e); });
      const int64_t n = piece.n;
      if (n == 0) continue;
      for (int64_t k = 0; k < n; ++k) {  // LossGradTerms' with loss_grad 1
        const int64_t ox = piece.at[k];
        pixels[k] = {labels[base + ox], tx.lerp[ox], piece.m[k], 1.0f / piece.sum[k], uniform, on};
      }
      ForEachClassVector<Last>(C, [&](auto vec) {
        using L = typename decltype(vec)::L;
        using V = typename L::V;
        V sl = vec.Load(xr + jl * C), su = vec.Load(xr + ju * C);
        for (int64_t k = 0; k < n; ++k) {
          const LossGradPixel& p = pixels[k];
          V d = L::Mul(vec.Load(exps + k * stride), L::Set(p.scale));
          if (smoothing) d = L::Sub(d, L::Set(p.off));
          if (vec.Holds(p.y)) d = L::AddWhere(OneLane<L>(p.y % Lanes::kN), d, L::Set(p.on));  // d[y] - gl
          const V wlv = L::Set(1.0f - p.xl), wuv = L::Set(p.xl);
          if (jl == ju) {  // both weights into one column, in the scalar loop's order
            sl = L::Add(L::Add(sl, L::Mul(wlv, d)), L::Mul(wuv, d));
          } else {
            sl = L::Add(sl, L::Mul(wlv, d));
            su = L::Add(su, L::Mul(wuv, d));
          }
        }
        vec.Store(xr + jl * C, sl);
        if (jl != ju) vec.Store(xr + ju * C, su);
      });
    }
  }
}
#endif

// The loss and, where logits_grad is not null, its gradient for a loss gradient of 1 at every
// pixel (UpsampleSoftmaxCrossEntropyWithGradImpl's rule): float logits at many classes in one
// sweep (ResizeLossGradSweep with LossWithGradRow; each output row's loss and stats written by
// the first band to reduce it), else the forward, then the gradient from its stats.
template <typename T>
void ResizeSoftmaxCrossEntropyWithGradImpl(const Geometry& g, const T* logits, LabelMap labels, LabelRule rule,
                                           float* loss, double* stats, T* logits_grad, const ParallelFor& pf) {
  std::vector<double> own_stats;
  stats = StatsForGradient(g, stats, logits_grad, &own_stats);
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    const int64_t C = g.c, h = g.y.n_in, w = g.x.n_in, oh = g.y.n_out, ow = g.x.n_out;
    if (logits_grad != nullptr && OneSweepClasses(C) && oh > 0) {
      const ResizeTaps ty(g.y, g.resize), tx(g.x, g.resize);
      using RowFn = void (*)(const float*, const float*, float, int64_t, const ResizeTaps&,
                             const std::vector<std::pair<int64_t, int64_t>>&, int64_t, LabelMap, const LabelRule&,
                             float*, double*, float*, float*);
      const RowFn row_fn = ByLastVector<RowFn>(C, [](auto last) -> RowFn { return LossWithGradRow<decltype(last)>; });
      const auto xruns = SameTapRuns(tx.lower, tx.upper);
      const int64_t stride = (C + Lanes::kN - 1) / Lanes::kN * Lanes::kN;
      const std::unique_ptr<std::atomic<bool>[]> claimed(new std::atomic<bool>[g.n * oh]());
      ResizeLossGradSweep(g, ty, logits_grad, pf, [&](int64_t s, int64_t oy, float* xr, std::vector<float>& exps,
                                                      std::vector<float>&) {
        exps.resize(kWithGradPiece * stride);
        const float* in = logits + s * h * w * C;
        const int64_t u = s * oh + oy;
        const bool first = !claimed[u].exchange(true, std::memory_order_relaxed);
        row_fn(in + ty.lower[oy] * w * C, in + ty.upper[oy] * w * C, ty.lerp[oy], C, tx, xruns, u * ow, labels, rule,
               first ? loss : nullptr, first ? stats : nullptr, xr, exps.data());
      });
      return;
    }
  }
#endif
  ResizeSoftmaxCrossEntropyImpl(g, logits, labels, rule, loss, stats, pf);
  if (logits_grad == nullptr) return;
  rule.uniform_grad = true;
  const float one = 1.0f;
  ResizeSoftmaxCrossEntropyGradImpl(g, logits, labels, rule, stats, &one, logits_grad, pf);
}

}  // namespace TFUP_ISA
}  // namespace tfup
