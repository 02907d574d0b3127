// Template definitions of the CPU kernels, in the namespace tfup::TFUP_ISA: isa.cc includes this
// once per instruction set (see there), so each build's functions are its own.
//
// Both layouts run the same code over "slabs": in NHWC a slab is one image and the pixel holds C
// contiguous channels; in NCHW a slab is one (image, channel) plane and the pixel holds 1. The
// innermost loop always runs over a pixel's channels, which are contiguous: that is the loop the
// compiler vectorises.
#pragma once

#ifndef TFUP_ISA
#error "define TFUP_ISA (the instruction-set namespace) before including kernels_impl.h"
#endif

#include <algorithm>
#include <array>
#include <cstring>
#include <new>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/stream.h"

namespace tfup {
namespace TFUP_ISA {

// Half types accumulate in float; float in float; double in double.
template <typename T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Stored type <-> accumulator. isa.cc overloads them for Eigen::half in the AVX2 build (F16C),
// where Eigen's own conversion is scalar bit manipulation several times slower than the kernel.
template <typename T>
inline Acc<T> Widen(T v) {
  return static_cast<Acc<T>>(v);
}
template <typename T>
inline T Narrow(Acc<T> v) {
  return static_cast<T>(v);
}

// Whether an output of `bytes` is written with non-temporal stores (WriteOutputs): when it is
// larger than the cores' caches (StreamThresholdBytes, kernels.h), where a plain store would
// first read each line it fills and the output would not stay cached for its consumer anyway.
// At [1,16,22,1000] x32 (1.44 GB) on a 2-core Xeon, the forward took 118 ms with plain stores
// and 45 ms streamed.
inline bool StreamOutput(int64_t bytes) { return bytes > StreamThresholdBytes(); }

// StreamBytes with this build's widest vectors: whole 64-byte lines of dst with non-temporal
// stores, the partial lines at its ends with plain ones.
inline void StreamLines(void* dst, const void* src, int64_t bytes) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  const int64_t head = std::min<int64_t>(bytes, (64 - reinterpret_cast<uintptr_t>(d) % 64) % 64);
  std::memcpy(d, s, static_cast<size_t>(head));
  int64_t i = head;
  for (; i + 64 <= bytes; i += 64) {
#if defined(TFUP_ISA_AVX512)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + i), _mm512_loadu_si512(s + i));
#else
    _mm256_stream_si256(reinterpret_cast<__m256i*>(d + i), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(d + i + 32), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i + 32)));
#endif
  }
  std::memcpy(d + i, s + i, static_cast<size_t>(bytes - i));
#else
  StreamBytes(dst, src, bytes);
#endif
}

// Writes outputs [0, n), `width` elements of T each, at out: produce(o0, o1, dst) writes outputs
// [o0, o1) at dst. With `stream`, about 16 KB at a time into the cache and then out with
// StreamLines, the pieces cut on out's 64-byte lines where the output's width allows; the values
// are the same either way.
template <typename T, typename Produce>
void WriteOutputs(T* out, int64_t n, int64_t width, bool stream, std::vector<T>& buf, Produce&& produce) {
  if (!stream) {
    produce(0, n, out);
    return;
  }
  const int64_t pixel = std::max<int64_t>(1, width * static_cast<int64_t>(sizeof(T)));
  // Outputs per piece: a multiple of the count whose bytes are whole lines (when that is small).
  const int64_t lines = 64 / std::gcd<int64_t>(pixel, 64);
  const int64_t chunk = std::max<int64_t>(1, (16 << 10) / pixel / lines * lines);
  buf.resize(chunk * width);
  for (int64_t o0 = 0; o0 < n; o0 += chunk) {
    const int64_t o1 = std::min(n, o0 + chunk);
    produce(o0, o1, buf.data());
    StreamLines(out + o0 * width, buf.data(), (o1 - o0) * pixel);
  }
  StreamFence();
}

// An output of rows `width` elements wide that units write a run of rows [r0, r1) at a time, in
// any order within the run: in place, or (stream) into a buffer that goes out with StreamLines
// when the unit ends -- for outputs such as the argmax's labels, whose cells write a few elements
// of a row at a time.
template <typename T>
class UnitRows {
 public:
  UnitRows(T* out, int64_t width, bool stream) : out_(out), width_(width), stream_(stream && out != nullptr) {}
  UnitRows(const UnitRows&) = delete;
  UnitRows& operator=(const UnitRows&) = delete;
  ~UnitRows() {
    if (stream_) StreamFence();
  }
  void Begin(int64_t r0, int64_t r1) {
    r0_ = r0, r1_ = r1;
    if (stream_) buf_.resize((r1 - r0) * width_);
  }
  // Row r's start; null for a null output (scores not asked for).
  T* Row(int64_t r) {
    if (out_ == nullptr) return nullptr;
    return stream_ ? buf_.data() + (r - r0_) * width_ : out_ + r * width_;
  }
  void End() {
    if (stream_) StreamLines(out_ + r0_ * width_, buf_.data(), (r1_ - r0_) * width_ * static_cast<int64_t>(sizeof(T)));
  }

 private:
  T* out_;
  int64_t width_, r0_ = 0, r1_ = 0;
  bool stream_;
  std::vector<T> buf_;
};

#if defined(TFUP_HALF_TYPES) && defined(TFUP_ISA_AVX2) && (defined(__x86_64__) || defined(__i386__))
inline float Widen(Eigen::half v) { return _cvtsh_ss(Eigen::numext::bit_cast<uint16_t>(v)); }
template <>
inline Eigen::half Narrow<Eigen::half>(float v) {
  // Round to nearest even, as Eigen does (the ISA test compares the two builds bit for bit).
  return Eigen::numext::bit_cast<Eigen::half>(
      static_cast<uint16_t>(_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT)));
}
#endif

// The channel loops, as row primitives: plain loops the compiler vectorises, and for float16 in
// the AVX2 build 8 channels at a time through F16C. Same operations in the same order (a product,
// then a sum; contraction is off), so the same bits either way.
template <typename A, typename T>
inline void MulAddRow(A* __restrict acc, const A* __restrict w, const T* __restrict x, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += w[c] * Widen(x[c]);
}
template <typename A, typename T>
inline void ScaleAddRow(A* __restrict acc, A w, const T* __restrict x, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += w * Widen(x[c]);
}
template <typename A, typename T>
inline void ProductAddRow(A* __restrict acc, const T* __restrict x, const T* __restrict y,
                          int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += Widen(x[c]) * Widen(y[c]);
}
template <typename T, typename A>
inline void NarrowRow(T* __restrict out, const A* __restrict in, int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] = Narrow<T>(in[c]);
}
// f(std::integral_constant<int, j>()) for j = 0 ... N - 1, in order, inlined (f's indices into
// an array of vectors then constants, so the array can live in registers).
template <typename F, int... J>
__attribute__((always_inline)) inline void StaticForEach(F&& f, std::integer_sequence<int, J...>) {
  (f(std::integral_constant<int, J>()), ...);
}
template <int N, typename F>
__attribute__((always_inline)) inline void StaticFor(F&& f) {
  StaticForEach(f, std::make_integer_sequence<int, N>());
}

// Asks for the cache lines of [p, p + bytes) ahead of their use (a hint: no fault, no effect on
// the results).
// kLocality: __builtin_prefetch's (3: into L1; 1, the T2 hint: the outer caches, for data needed a
// whole pass of other work later).
template <int kLocality = 3>
inline void PrefetchBytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t e = 0; e < bytes; e += 64) __builtin_prefetch(c + e, 0, kLocality);
}

// How far ahead along each of its rows the resize gradient's y pass prefetches the output
// gradient (AddRunBlock, AddRowsTwoColumns): 512 bytes, four of AVX2's 32-float blocks. None in
// the AVX-512 build: on a Zen 4 EPYC VM the ADE20K-like resize gradient ([8,64,64,150] ->
// 512x512) without it, interleaved in one process against tf.reduce_sum, 1.08-1.11x the read
// floor against 1.11-1.27x, and 1.26-1.30x against 1.31-1.37x where the floor ran in its fast
// mode (Cityscapes-like and DeepLab 1.12 / 1.07x against 1.16 / 1.09x); the AVX2 build needs it
// (1.14x against 1.26x without; fast floor 1.56x against 1.76-1.84x).
#if defined(TFUP_ISA_AVX512)
constexpr int64_t kRowAheadBytes = 0;
#else
constexpr int64_t kRowAheadBytes = 512;
#endif
#if defined(TFUP_HALF_TYPES) && defined(TFUP_ISA_AVX2) && (defined(__x86_64__) || defined(__i386__))
inline __m256 Load8(const Eigen::half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline void MulAddRow(float* acc, const float* w, const Eigen::half* x, int64_t n) {
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(w + c), Load8(x + c));
    _mm256_storeu_ps(acc + c, _mm256_add_ps(_mm256_loadu_ps(acc + c), p));
  }
  for (; c < n; ++c) acc[c] += w[c] * Widen(x[c]);
}
inline void ScaleAddRow(float* acc, float w, const Eigen::half* x, int64_t n) {
  const __m256 wv = _mm256_set1_ps(w);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    _mm256_storeu_ps(acc + c, _mm256_add_ps(_mm256_loadu_ps(acc + c), _mm256_mul_ps(wv, Load8(x + c))));
  }
  for (; c < n; ++c) acc[c] += w * Widen(x[c]);
}
inline void ProductAddRow(float* acc, const Eigen::half* x, const Eigen::half* y, int64_t n) {
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256 p = _mm256_mul_ps(Load8(x + c), Load8(y + c));
    _mm256_storeu_ps(acc + c, _mm256_add_ps(_mm256_loadu_ps(acc + c), p));
  }
  for (; c < n; ++c) acc[c] += Widen(x[c]) * Widen(y[c]);
}
inline void NarrowRow(Eigen::half* out, const float* in, int64_t n) {
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + c), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), h);
  }
  for (; c < n; ++c) out[c] = Narrow<Eigen::half>(in[c]);
}
#endif

struct Slabs {
  int64_t count;  // number of slabs
  int64_t cc;     // channels per pixel inside a slab (C in NHWC, 1 in NCHW)
  int64_t c;      // channels of the tensor
  bool planar;    // NCHW
  // Offset of slab s's channel 0 in the filter's channel axis.
  int64_t FilterChannel(int64_t s) const { return planar ? s % c : 0; }
};

inline Slabs MakeSlabs(const Geometry& g) {
  if (g.layout == Layout::kNCHW) return {g.n * g.c, 1, g.c, true};
  return {g.n, g.c, g.c, false};
}

// Per output index of one axis: first input and how many inputs feed it.
struct AxisTaps {
  std::vector<int64_t> first, count;
  explicit AxisTaps(const Axis& a) : first(a.n_out), count(a.n_out) {
    for (int64_t o = 0; o < a.n_out; ++o) {
      first[o] = a.FirstInput(o);
      count[o] = std::max<int64_t>(a.LastInput(o) - first[o] + 1, 0);
    }
  }
};

// Runs of consecutive outputs along an axis that read the same inputs -- whose two per-output
// descriptions (first input and count; or lower and upper input) are equal: [begin, end) pairs.
inline std::vector<std::pair<int64_t, int64_t>> SameTapRuns(const std::vector<int64_t>& a,
                                                           const std::vector<int64_t>& b) {
  const int64_t n_out = static_cast<int64_t>(a.size());
  std::vector<std::pair<int64_t, int64_t>> runs;
  for (int64_t o0 = 0; o0 < n_out;) {
    int64_t o1 = o0 + 1;
    while (o1 < n_out && a[o1] == a[o0] && b[o1] == b[o0]) ++o1;
    runs.emplace_back(o0, o1);
    o0 = o1;
  }
  return runs;
}
inline std::vector<std::pair<int64_t, int64_t>> SameTapRuns(const AxisTaps& t) {
  return SameTapRuns(t.first, t.count);
}

template <typename A>
std::vector<A> BilinearTable(const Axis& a) {
  std::vector<A> w(a.k);
  for (int64_t t = 0; t < a.k; ++t) w[t] = BilinearWeight<A>(a.stride, t);
  return w;
}

template <typename T, typename A>
std::vector<A> ConvertFilter(const Geometry& g, const T* filter) {
  std::vector<A> f(g.y.k * g.x.k * g.c);
  for (size_t i = 0; i < f.size(); ++i) f[i] = Widen(filter[i]);
  return f;
}

// Splits slabs x rows into units for the parallel runner.
template <typename Fn>
void ForEachRow(const ParallelFor& pf, int64_t slabs, int64_t rows, int64_t cost_per_row,
                Fn&& fn) {
  if (slabs == 0 || rows == 0) return;
  pf(slabs * rows, cost_per_row, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) fn(u / rows, u % rows);
  });
}

// ---------------------------------------------------------------------------------------------
// Forward (gather): each output pixel sums its taps.

// Bilinear pixel with CY x CX taps, in the bilinear order of operations (docs/DESIGN.md, "The
// bilinear kernel"): each input column along y, then the columns along x:
// wx0 * (wy0 * x00 + wy1 * x10) + wx1 * (wy0 * x01 + wy1 * x11). Templated so that the 2x2
// interior case is one fused pass over the channels with a single write per output element;
// __restrict lets the compiler vectorise it without alias checks.
template <int CY, int CX, typename T, typename A, typename O>
inline void BilinearPixel(const T* const* rows, const int64_t* cols, const A* wy, const A* wx,
                          int64_t cc, O* __restrict out) {
  const T* __restrict p00 = rows[0] + cols[0];
  const T* __restrict p01 = rows[0] + cols[CX - 1];
  const T* __restrict p10 = rows[CY - 1] + cols[0];
  const T* __restrict p11 = rows[CY - 1] + cols[CX - 1];
  const A wy0 = wy[0], wy1 = wy[CY - 1], wx0 = wx[0], wx1 = wx[CX - 1];
  for (int64_t c = 0; c < cc; ++c) {
    A col0 = wy0 * Widen(p00[c]);
    if (CY == 2) col0 += wy1 * Widen(p10[c]);
    A v = wx0 * col0;
    if (CX == 2) {
      A col1 = wy0 * Widen(p01[c]);
      if (CY == 2) col1 += wy1 * Widen(p11[c]);
      v += wx1 * col1;
    }
    out[c] = Narrow<O>(v);
  }
}

// The taps of a bilinear upsample, for computing any output pixel on its own: the forward and
// the fused heads (heads_impl.h) share it, so their per-pixel values are the same bits.
template <typename T, typename A>
struct BilinearPlan {
  struct Row {
    const T* rows[2];
    A w[2];
    int64_t n;
  };
  const Geometry& g;
  AxisTaps ty, tx;
  std::vector<A> wy, wx;
  explicit BilinearPlan(const Geometry& geometry)
      : g(geometry), ty(g.y), tx(g.x), wy(BilinearTable<A>(g.y)), wx(BilinearTable<A>(g.x)) {}

  // Output row oy of the slab whose input starts at `in` (pixels of cc channels).
  Row RowTaps(const T* in, int64_t oy, int64_t cc) const {
    const int64_t iy = ty.first[oy], ny = ty.count[oy], W = g.x.n_in;
    return Row{{in + iy * W * cc, in + (iy + ny - 1) * W * cc},
               {wy[g.y.Tap(oy, iy)], wy[g.y.Tap(oy, iy + ny - 1)]}, ny};
  }
  // The row's column values along y, once for the whole row: cols[j * cc + c] for the W input
  // columns (the first step of BilinearPixel's order).
  void Columns(const Row& r, int64_t cc, A* __restrict cols) const {
    const T* __restrict r0 = r.rows[0];
    const T* __restrict r1 = r.rows[1];
    const A wy0 = r.w[0], wy1 = r.w[1];
    const int64_t n = g.x.n_in * cc;
    if (r.n == 2) {
      for (int64_t e = 0; e < n; ++e) {
        A v = wy0 * Widen(r0[e]);
        v += wy1 * Widen(r1[e]);
        cols[e] = v;
      }
    } else {
      for (int64_t e = 0; e < n; ++e) cols[e] = wy0 * Widen(r0[e]);
    }
  }
  // Pixel ox from those columns (the second step): cc values written to out (as O). The same
  // operations in the same order as Pixel, so the same bits.
  template <typename O>
  void PixelFromColumns(const A* cols, int64_t ox, int64_t cc, O* __restrict out) const {
    const int64_t ix = tx.first[ox];
    const A* __restrict c0 = cols + ix * cc;
    const A wx0 = wx[g.x.Tap(ox, ix)];
    if (tx.count[ox] == 2) {
      const A* __restrict c1 = c0 + cc;
      const A wx1 = wx[g.x.Tap(ox, ix + 1)];
      for (int64_t c = 0; c < cc; ++c) {
        A v = wx0 * c0[c];
        v += wx1 * c1[c];
        out[c] = Narrow<O>(v);
      }
    } else {
      for (int64_t c = 0; c < cc; ++c) out[c] = Narrow<O>(wx0 * c0[c]);
    }
  }
  // Pixel ox of that row: cc values written to out (as O).
  template <typename O>
  void Pixel(const Row& r, int64_t ox, int64_t cc, O* out) const {
    const int64_t ix = tx.first[ox], nx = tx.count[ox];
    const int64_t cols[2] = {ix * cc, (ix + nx - 1) * cc};
    const A wcol[2] = {wx[g.x.Tap(ox, ix)], wx[g.x.Tap(ox, ix + nx - 1)]};
    // Bilinear kernels have k <= 2 * stride: one or two taps per axis, never none.
    if (r.n == 2 && nx == 2) BilinearPixel<2, 2>(r.rows, cols, r.w, wcol, cc, out);
    else if (r.n == 2) BilinearPixel<2, 1>(r.rows, cols, r.w, wcol, cc, out);
    else if (nx == 2) BilinearPixel<1, 2>(r.rows, cols, r.w, wcol, cc, out);
    else BilinearPixel<1, 1>(r.rows, cols, r.w, wcol, cc, out);
  }
};

// One pixel per channel (NCHW planes, or C = 1): vectorising over channels is impossible, so
// each output row is done separably instead -- its two input rows combined along y once (r, one
// input row long), then each output pixel is wx0 * r[ix] + wx1 * r[ix + 1], a contiguous pass.
// The same operations in the same order as BilinearPixel: both layouts agree bitwise.
template <typename T>
void BilinearForwardPlanar(const Geometry& g, const T* input, T* output, const ParallelFor& pf) {
  using A = Acc<T>;
  const Slabs sl = MakeSlabs(g);
  const BilinearPlan<T, A> plan(g);
  const AxisTaps& tx = plan.tx;
  const std::vector<A>& wx = plan.wx;
  const int64_t W = g.x.n_in, OW = g.x.n_out, OH = g.y.n_out;
  const int64_t band = std::max<int64_t>(1, std::min<int64_t>(64, OH / 4));
  const int64_t bands = (OH + band - 1) / band;
  pf(sl.count * bands, band * OW * 4, [&](int64_t begin, int64_t end) {
    std::vector<A> r(W);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t s = u / bands, o0 = (u % bands) * band, o1 = std::min(OH, o0 + band);
      const T* in = input + s * g.y.n_in * W;
      for (int64_t oy = o0; oy < o1; ++oy) {
        plan.Columns(plan.RowTaps(in, oy, 1), 1, r.data());  // along y, once per row
        T* __restrict o = output + (s * OH + oy) * OW;
        for (int64_t ox = 0; ox < OW; ++ox) {  // then along x: PixelFromColumns, inlined
          const int64_t ix = tx.first[ox];
          A v = wx[g.x.Tap(ox, ix)] * r[ix];
          if (tx.count[ox] == 2) v += wx[g.x.Tap(ox, ix + 1)] * r[ix + 1];
          o[ox] = Narrow<T>(v);
        }
      }
    }
  });
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
// Vectors of float lanes with a lane mask `Mask` (the first k lanes: Head(k)): 8 lanes (AVX2) and,
// in the AVX-512 build, 16. `Lanes` is this build's widest (for the streamed outputs:
// StreamedColumns, the resize's LerpRows, and most row loops); AddPixelsTwoColumns keeps 8.
struct Lanes256 {
  static constexpr int64_t kN = 8;
  using V = __m256;
  using Mask = __m256i;  // all ones in a lane that is in
  static Mask Head(int64_t k) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(k)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Mask Not(Mask m) { return _mm256_xor_si256(m, _mm256_set1_epi32(-1)); }
  static Mask And(Mask a, Mask b) { return _mm256_and_si256(a, b); }
  static Mask Or(Mask a, Mask b) { return _mm256_or_si256(a, b); }
  static Mask None() { return _mm256_setzero_si256(); }
  static bool Any(Mask m) { return !_mm256_testz_si256(m, m); }
  static V Load(const float* p) { return _mm256_loadu_ps(p); }
  static V LoadHead(Mask m, const float* p) { return _mm256_maskload_ps(p, m); }  // others +0
  static void StoreHead(Mask m, float* p, V v) { _mm256_maskstore_ps(p, m, v); }
  static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V LoadSplit(Mask ma, Mask mb, const float* a, const float* b) {  // others load as +0
    return _mm256_or_ps(_mm256_maskload_ps(a, ma), _mm256_maskload_ps(b, mb));
  }
  static V Pick(Mask m, float in_m, float rest) {
    return _mm256_blendv_ps(_mm256_set1_ps(rest), _mm256_set1_ps(in_m), _mm256_castsi256_ps(m));
  }
  static V Set(float v) { return _mm256_set1_ps(v); }
  static V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V Add(V a, V b) { return _mm256_add_ps(a, b); }
  static V Sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V AddWhere(Mask m, V a, V b) { return _mm256_blendv_ps(a, _mm256_add_ps(a, b), _mm256_castsi256_ps(m)); }
  static V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V Max(V a, V b) { return _mm256_max_ps(a, b); }  // b where either is NaN
  static V Blend(Mask m, V a, V b) { return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(m)); }
  static V Pow2Of(V t) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(127 - 0x4B400000)), 23));
  }
  static void Stream(float* p, V v) { _mm256_stream_ps(p, v); }
  using Idx = __m256i;  // a lane index per lane (Permute)
  static Idx LoadIdx(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static V Permute(V v, Idx i) { return _mm256_permutevar8x32_ps(v, i); }  // lane j: v[i[j]]
};
#if defined(TFUP_ISA_AVX512)
struct Lanes512 {
  static constexpr int64_t kN = 16;
  using V = __m512;
  using Mask = __mmask16;
  static Mask Head(int64_t k) { return Mask((1u << k) - 1); }
  static Mask Not(Mask m) { return Mask(~m); }
  static Mask And(Mask a, Mask b) { return Mask(a & b); }
  static Mask Or(Mask a, Mask b) { return Mask(a | b); }
  static Mask None() { return 0; }
  static bool Any(Mask m) { return m != 0; }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static V LoadHead(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }  // others +0
  static void StoreHead(Mask m, float* p, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  // Lanes of ma from a, of mb from b (disjoint), the others +0; nothing read outside them.
  static V LoadSplit(Mask ma, Mask mb, const float* a, const float* b) {
    return _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(ma, a), mb, b);
  }
  static V Pick(Mask m, float in_m, float rest) { return _mm512_mask_blend_ps(m, _mm512_set1_ps(rest), _mm512_set1_ps(in_m)); }
  static V Set(float v) { return _mm512_set1_ps(v); }
  static V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V Add(V a, V b) { return _mm512_add_ps(a, b); }
  static V Sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V AddWhere(Mask m, V a, V b) { return _mm512_mask_add_ps(a, m, a, b); }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V Max(V a, V b) { return _mm512_max_ps(a, b); }  // b where either is NaN
  static V Blend(Mask m, V a, V b) { return _mm512_mask_blend_ps(m, a, b); }  // b in m, else a
  // 2^n from t = x / ln 2 + 1.5 * 2^23 (n in t's low bits): SoftmaxExp's scale.
  static V Pow2Of(V t) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(127 - 0x4B400000)), 23));
  }
  static void Stream(float* p, V v) { _mm512_stream_ps(p, v); }
  using Idx = __m512i;
  static Idx LoadIdx(const int32_t* p) { return _mm512_loadu_si512(p); }
  static V Permute(V v, Idx i) { return _mm512_permutexvar_ps(i, v); }  // lane j: v[i[j]]
};
using Lanes = Lanes512;
// 8 float lanes with AVX-512VL's k-masks: the last vector of a pixel's classes where 8 or fewer
// are left (19 classes: 16 + 3, 21: 16 + 5; ClassVectors below). Zen 4 executes a 512-bit
// operation as two 256-bit halves, so a 256-bit last vector does half the work of a masked 512-bit
// one for the same lanes. Lanes256's members that take its own vector masks (Or, None, Any,
// LoadSplit, Pick) are not for this type.
struct Lanes256k : Lanes256 {
  using Mask = __mmask8;
  static Mask Or(Mask, Mask) = delete;
  static Mask None() = delete;
  static bool Any(Mask) = delete;
  static V LoadSplit(Mask, Mask, const float*, const float*) = delete;
  static V Pick(Mask, float, float) = delete;
  static Mask Head(int64_t k) { return Mask((1u << k) - 1); }
  static Mask Not(Mask m) { return Mask(~m); }
  static Mask And(Mask a, Mask b) { return Mask(a & b); }
  static V LoadHead(Mask m, const float* p) { return _mm256_maskz_loadu_ps(m, p); }  // others +0
  static void StoreHead(Mask m, float* p, V v) { _mm256_mask_storeu_ps(p, m, v); }
  static V AddWhere(Mask m, V a, V b) { return _mm256_mask_add_ps(a, m, a, b); }
  static V Blend(Mask m, V a, V b) { return _mm256_mask_blend_ps(m, a, b); }  // b in m, else a
};
#else
using Lanes = Lanes256;
#endif

// SoftmaxExp (softmax_exp.h) on a vector, operation for operation: the same bits in every lane.
template <typename L = Lanes>
inline typename L::V SoftmaxExpLanes(typename L::V x) {
  using V = typename L::V;
  x = L::Max(L::Set(-87.0f), x);  // x < -87 ? -87 : x, NaN staying NaN
  constexpr float kRound = 12582912.0f;
  const V t = L::Fma(x, L::Set(1.44269504088896341f), L::Set(kRound));
  const V n = L::Sub(t, L::Set(kRound));
  const V r = L::Fma(n, L::Set(2.12194440e-4f), L::Fma(n, L::Set(-0.693359375f), x));
  const V r2 = L::Mul(r, r);
  const V p01 = L::Fma(L::Set(1.9875691500e-4f), r, L::Set(1.3981999507e-3f));
  const V p23 = L::Fma(L::Set(8.3334519073e-3f), r, L::Set(4.1665795894e-2f));
  const V p45 = L::Fma(L::Set(1.6666665459e-1f), r, L::Set(5.0000001201e-1f));
  const V p = L::Fma(L::Fma(p01, r2, p23), r2, p45);
  const V e = L::Add(L::Fma(r2, p, r), L::Set(1.0f));
  return L::Mul(e, L::Pow2Of(t));
}

// The mask of lane j alone (a one-hot's lane: the target class in the loss gradients' rows).
template <typename L = Lanes>
inline typename L::Mask OneLane(int64_t j) { return L::And(L::Head(j + 1), L::Not(L::Head(j))); }

// n floats as NV vectors, the last one partial (its lanes past n masked: loaded as 0, never
// stored): vector k of p (AddRunFewChannels' channels; the loss gradients' rows, whose last vector
// may be narrower, take ClassVectors below).
template <int NV>
struct MaskedVectors {
  Lanes::Mask last;
  explicit MaskedVectors(int64_t n) : last(Lanes::Head(n - (NV - 1) * Lanes::kN)) {}
  Lanes::V Load(const float* p, int k) const {
    return k + 1 < NV ? Lanes::Load(p + k * Lanes::kN) : Lanes::LoadHead(last, p + k * Lanes::kN);
  }
  void Store(float* p, int k, Lanes::V v) const {
    if (k + 1 < NV) {
      Lanes::Store(p + k * Lanes::kN, v);
    } else {
      Lanes::StoreHead(last, p + k * Lanes::kN, v);
    }
  }
};

// pick(std::integral_constant<int, NV>()) for the NV vectors that hold n floats, 1 to 4 of them
// (a row function's instantiation for n classes; ByClassVectors below), else a default Fn (none).
template <typename Fn, typename Pick>
Fn ByVectors(int64_t n, Pick&& pick) {
  switch ((n + Lanes::kN - 1) / Lanes::kN) {
    case 1: return pick(std::integral_constant<int, 1>());
    case 2: return pick(std::integral_constant<int, 2>());
    case 3: return pick(std::integral_constant<int, 3>());
    case 4: return pick(std::integral_constant<int, 4>());
    default: return Fn();
  }
}

// One of ClassVectors' vectors: classes [k * Lanes::kN, that + L::kN) of a pixel in lanes of type
// L, whole (kWhole) or the last one with its lanes past the pixel's classes masked (`in`: loaded
// as 0, never stored).
template <typename L_, bool kWhole>
struct ClassVector {
  using L = L_;
  using V = typename L::V;
  int k;
  typename L::Mask in;
  const float* At(const float* p) const { return p + k * Lanes::kN; }
  V Load(const float* p) const { return kWhole ? L::Load(At(p)) : L::LoadHead(in, At(p)); }
  void Store(float* p, V v) const {
    if constexpr (kWhole) {
      L::Store(p + k * Lanes::kN, v);
    } else {
      L::StoreHead(in, p + k * Lanes::kN, v);
    }
  }
  V PastEnd(V v, V fill) const { return kWhole ? v : L::Blend(L::Not(in), v, fill); }  // lanes past n: fill
  bool Holds(int64_t c) const { return c / Lanes::kN == k; }  // class c in this vector (c < n)
};

// A pixel's n float classes as NV vectors, each with its registers R<its lanes> (a row function's
// state, per vector): NV - 1 whole vectors of Lanes, then the last of Last (Lanes, or in the
// AVX-512 build Lanes256k where it holds 8 classes or fewer), whose lanes past n are masked.
// ForEach(f) calls f(vector, its registers) for each in order.
template <int NV, typename Last, template <typename> class R>
struct ClassVectors {
  std::array<R<Lanes>, NV - 1> whole;
  R<Last> last;
  typename Last::Mask in;
  explicit ClassVectors(int64_t n) : in(Last::Head(n - (NV - 1) * Lanes::kN)) {}
  template <typename F>
  void ForEach(F&& f) {
    for (int k = 0; k + 1 < NV; ++k) f(ClassVector<Lanes, true>{k, typename Lanes::Mask()}, whole[k]);
    f(ClassVector<Last, false>{NV - 1, in}, last);
  }
};

// f(vector) for each of the vectors that hold n floats, as ClassVectors' (whole vectors of Lanes,
// then the last of lanes type Last, masked past n) where their number is not fixed: the loss
// gradients' rows a vector at a time.
template <typename Last, typename F>
inline void ForEachClassVector(int64_t n, F&& f) {
  const int64_t nv = (n + Lanes::kN - 1) / Lanes::kN;
  for (int k = 0; k + 1 < nv; ++k) f(ClassVector<Lanes, true>{k, typename Lanes::Mask()});
  f(ClassVector<Last, false>{static_cast<int>(nv - 1), Last::Head(n - (nv - 1) * Lanes::kN)});
}

// The loss gradients' rows a vector at a time take a run's pixels in pieces of at most this
// many, their terms on the stack.
constexpr int64_t kGradPiece = 64;

// pick(Last()) for the last of the vectors that hold n floats: Lanes, or in the AVX-512 build
// Lanes256k where it holds 8 or fewer (ClassVectors).
template <typename Fn, typename Pick>
Fn ByLastVector(int64_t n, Pick&& pick) {
#if defined(TFUP_ISA_AVX512)
  if (n > 0 && (n - 1) % Lanes::kN < Lanes256k::kN) return pick(Lanes256k());
#endif
  return pick(Lanes());
}

// ByVectors for a ClassVectors row function: pick(std::integral_constant<int, NV>(), Last()).
template <typename Fn, typename Pick>
Fn ByClassVectors(int64_t n, Pick&& pick) {
  return ByLastVector<Fn>(n, [&](auto last) { return ByVectors<Fn>(n, [&](auto nv) { return pick(nv, last); }); });
}

// One output row of float pixels (at least Lanes::kN channels) from the row's column values
// straight to out with non-temporal stores, a vector at a time (out's 64-byte lines are whole
// vectors): a vector holds the end of one pixel and the start of the next at most, each lane
// computed with its own pixel's columns and weights -- PixelFromColumns' operations, so the same
// bits -- without a pass through the cache and a copy out. The elements before the row's first
// line and after its last whole vector are stored plainly.
struct StreamedColumns {
  std::vector<int64_t> first;  // per output pixel: its first column's offset in cols (ix * cc)
  std::vector<float> w0, w1;   // its weights; w1 only where two
  std::vector<uint8_t> two;    // whether it has a second column
  StreamedColumns(const BilinearPlan<float, float>& plan, int64_t cc) {
    const int64_t ow = plan.g.x.n_out;
    first.resize(ow), w0.resize(ow), w1.resize(ow), two.resize(ow);
    for (int64_t ox = 0; ox < ow; ++ox) {
      const int64_t ix = plan.tx.first[ox];
      first[ox] = ix * cc;
      w0[ox] = plan.wx[plan.g.x.Tap(ox, ix)];
      two[ox] = plan.tx.count[ox] == 2;
      w1[ox] = two[ox] ? plan.wx[plan.g.x.Tap(ox, ix + 1)] : 0.0f;
    }
  }
  float Element(const float* cols, int64_t cc, int64_t e) const {  // PixelFromColumns' one value
    const int64_t p = e / cc, c = e % cc;
    float v = w0[p] * cols[first[p] + c];
    if (two[p]) v += w1[p] * cols[first[p] + cc + c];
    return v;
  }
  void Row(const float* cols, int64_t ow, int64_t cc, float* out) const {
    using L = Lanes;
    constexpr int64_t N = L::kN;
    const int64_t n = ow * cc;
    int64_t e = std::min<int64_t>(n, static_cast<int64_t>((64 - reinterpret_cast<uintptr_t>(out) % 64) % 64) / 4);
    for (int64_t i = 0; i < e; ++i) out[i] = Element(cols, cc, i);
    int64_t p = e / cc, c = e % cc;  // the pixel and channel of element e
    while (e + N <= n) {
      if (c + N <= cc) {  // whole vectors inside pixel p
        const float* a = cols + first[p];
        const typename L::V wa = L::Set(w0[p]), wb = L::Set(w1[p]);
        const int64_t vectors = std::min(cc - c, n - e) / N;
        if (two[p]) {
          for (int64_t i = 0; i < vectors; ++i, c += N, e += N) {
            L::Stream(out + e, L::Add(L::Mul(wa, L::Load(a + c)), L::Mul(wb, L::Load(a + cc + c))));
          }
        } else {
          for (int64_t i = 0; i < vectors; ++i, c += N, e += N) L::Stream(out + e, L::Mul(wa, L::Load(a + c)));
        }
        if (c == cc) ++p, c = 0;
        continue;
      }
      // The vector holds pixel p's last k channels and pixel p + 1's first N - k.
      const int64_t k = cc - c, q = p + 1;
      const typename L::Mask here = L::Head(k), there = L::Not(here);
      const float* a = cols + first[p] + c;
      const float* b = cols + first[q] - k;  // lane k is its channel 0
      typename L::V v = L::Mul(L::Pick(here, w0[p], w0[q]), L::LoadSplit(here, there, a, b));
      const typename L::Mask m2 = L::Or(two[p] ? here : L::None(), two[q] ? there : L::None());
      if (L::Any(m2)) {
        // Lanes without a second column read it as +0 and keep their value (AddWhere).
        const typename L::V x1 = L::LoadSplit(L::And(here, m2), L::And(there, m2), a + cc, b + cc);
        v = L::AddWhere(m2, v, L::Mul(L::Pick(here, w1[p], w1[q]), x1));
      }
      L::Stream(out + e, v);
      e += N, p = q, c = N - k;
    }
    for (; e < n; ++e) out[e] = Element(cols, cc, e);
  }
};
#endif

template <typename T>
void BilinearForwardImpl(const Geometry& g, const T* input, T* output, const ParallelFor& pf) {
  using A = Acc<T>;
  PreferHugePages(output, g.OutputElements() * static_cast<int64_t>(sizeof(T)));
  const Slabs sl = MakeSlabs(g);
  if (sl.cc == 1) return BilinearForwardPlanar(g, input, output, pf);
  const BilinearPlan<T, A> plan(g);
  const int64_t cc = sl.cc, OW = g.x.n_out, W = g.x.n_in;
  // The row's column values along y once, then each pixel from them (BilinearPlan::Columns /
  // PixelFromColumns): the operations of BilinearPixel in its order, so the same bits, without
  // its per-pixel set-up (which dominates for narrow pixels).
  const bool stream = StreamOutput(g.OutputElements() * static_cast<int64_t>(sizeof(T)));
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    if (stream && cc >= Lanes::kN) {
      const StreamedColumns sc(plan, cc);
      ForEachRow(pf, sl.count, g.y.n_out, OW * cc * 4, [&](int64_t s, int64_t oy) {
        std::vector<A> cols(W * cc);
        plan.Columns(plan.RowTaps(input + s * g.y.n_in * W * cc, oy, cc), cc, cols.data());
        sc.Row(cols.data(), OW, cc, output + (s * g.y.n_out + oy) * OW * cc);
        StreamFence();
      });
      return;
    }
  }
#endif
  ForEachRow(pf, sl.count, g.y.n_out, OW * cc * 4, [&](int64_t s, int64_t oy) {
    std::vector<A> cols(W * cc);
    std::vector<T> buf;
    plan.Columns(plan.RowTaps(input + s * g.y.n_in * W * cc, oy, cc), cc, cols.data());
    WriteOutputs(output + (s * g.y.n_out + oy) * OW * cc, OW, cc, stream, buf, [&](int64_t o0, int64_t o1, T* out) {
      for (int64_t ox = o0; ox < o1; ++ox) plan.PixelFromColumns(cols.data(), ox, cc, out + (ox - o0) * cc);
    });
  });
}

template <typename T>
void DepthwiseForwardImpl(const Geometry& g, const T* input, const T* filter, T* output,
                          const ParallelFor& pf) {
  using A = Acc<T>;
  PreferHugePages(output, g.OutputElements() * static_cast<int64_t>(sizeof(T)));
  const Slabs sl = MakeSlabs(g);
  const AxisTaps ty(g.y), tx(g.x);
  const std::vector<A> f = ConvertFilter<T, A>(g, filter);
  const int64_t cc = sl.cc, C = g.c, kx = g.x.k, W = g.x.n_in, OW = g.x.n_out;
  const int64_t taps = ((g.y.k + g.y.stride - 1) / g.y.stride) * ((kx + g.x.stride - 1) / g.x.stride);
  ForEachRow(pf, sl.count, g.y.n_out, OW * cc * 2 * taps, [&](int64_t s, int64_t oy) {
    std::vector<A> acc(cc);
    const T* in = input + s * g.y.n_in * W * cc;
    const A* fs = f.data() + sl.FilterChannel(s);
    T* out = output + (s * g.y.n_out + oy) * OW * cc;
    for (int64_t ox = 0; ox < OW; ++ox) {
      std::fill(acc.begin(), acc.end(), A(0));
      for (int64_t iy = ty.first[oy]; iy < ty.first[oy] + ty.count[oy]; ++iy) {
        const int64_t a = g.y.Tap(oy, iy);
        for (int64_t ix = tx.first[ox]; ix < tx.first[ox] + tx.count[ox]; ++ix) {
          const A* fp = fs + (a * kx + g.x.Tap(ox, ix)) * C;
          const T* xp = in + (iy * W + ix) * cc;
          MulAddRow(acc.data(), fp, xp, cc);
        }
      }
      NarrowRow(out + ox * cc, acc.data(), cc);
    }
  });
}

// Scratch whose first element sits on a 64-byte boundary. The input gradients' sums are rows of
// such buffers (columns nc elements apart), loaded and stored once per vector of dy where the x
// pass goes pixel by pixel: at the heap's 16-byte alignment half of those 32-byte accesses cross
// a cache line. The FCN input gradient at [1,16,22,1000] x32 on the 2-core EPYC VM, in one
// process against tf.reduce_sum (same bits): 1.21-1.30x the read floor in its fast mode with the
// sums 64 (or 32) bytes aligned, 1.51-1.61x with them 16 bytes off; one thread 1.27-1.29x against
// 1.55-1.89x.
template <typename T>
struct AlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlign); }
  template <typename U>
  bool operator==(const AlignedAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const AlignedAllocator<U>&) const { return false; }
};
template <typename T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

// ---------------------------------------------------------------------------------------------
// Input gradient (gather over outputs): dx[i] = sum over the outputs i feeds of w(tap) * dy.
// Each unit owns a band of input rows and sweeps the output rows that band reads once, in
// ascending order; every dx element is summed in the same order whatever the banding.

// A unit's share of the input gradient: slab s, input rows [i0, i1), channels [c0, c0 + nc) of
// each pixel. Its accumulator is [i1 - i0][W][nc]; scratch is the callback's to use.
template <typename A>
struct InputBlock {
  int64_t s, i0, i1, c0, nc;
  AlignedVector<A> acc, scratch, scratch2;
};

// How an input gradient is cut into units: slabs x bands of `band` input rows x channel blocks.
// Units are numbered slab-major, then band, then channel block.
struct InputBands {
  int64_t slabs, H, cc, band, bands, cblock, cblocks;
  int64_t Units() const { return slabs * bands * cblocks; }
  template <typename A>
  void Set(int64_t u, InputBlock<A>& b) const {
    b.s = u / (bands * cblocks);
    b.i0 = (u / cblocks % bands) * band;
    b.i1 = std::min(H, b.i0 + band);
    b.c0 = (u % cblocks) * cblock;
    b.nc = std::min(cblock, cc - b.c0);
  }
};

// Channel blocks where a slab has many channels, so a batch-1 image still splits finely; bands
// of at most `max_band` input rows (adjacent bands both read the k - s output rows they share).
// Measured at [1,16,22,1000] x32: splitting channels with a whole-height sweep was 2x slower
// than row bands (each unit then strides through every row of dy). Up to `whole_up_to` channels
// the pixels stay whole and the bands shrink instead, toward as many units as the channel blocks
// would have made (bands of at least one row): the x pass pixel by pixel (XPassByPixel) reads a
// unit's rows as one stream, where a block of a pixel skips the rest of it.
inline InputBands MakeInputBands(const Geometry& g, const Slabs& sl, bool split_channels,
                                 int64_t max_band, int64_t whole_up_to = 0) {
  InputBands ib;
  ib.slabs = sl.count;
  ib.H = g.y.n_in;
  ib.cc = sl.cc;
  ib.cblock = split_channels && ib.cc >= 1024 ? 512 : std::max<int64_t>(ib.cc, 1);
  ib.cblocks = (ib.cc + ib.cblock - 1) / ib.cblock;
  int64_t per = 2;  // units per band's worth of rows
  if (ib.cblocks > 1 && ib.cc <= whole_up_to) {  // toward as many units, as bands of whole pixels
    per = 2 * ib.cblocks;
    ib.cblock = ib.cc;
    ib.cblocks = 1;
  }
  ib.band = std::max<int64_t>(1, std::min<int64_t>(max_band, ib.H / per));
  ib.bands = (ib.H + ib.band - 1) / ib.band;
  return ib;
}

// Sweeps every unit: add_output_row(block, oy, lo, hi) adds output row oy to the block's input
// rows [lo, hi], for the output rows oy the band reads in ascending order; then the block's
// accumulator is narrowed into input_grad.
template <typename T, typename RowFn>
void SweepBands(const Geometry& g, const InputBands& ib, T* input_grad, const ParallelFor& pf,
                int64_t cost_per_element, RowFn&& add_output_row) {
  using A = Acc<T>;
  const int64_t H = ib.H, W = g.x.n_in, cc = ib.cc;
  if (ib.slabs == 0 || H == 0 || cc == 0) return;
  const int64_t cost = cost_per_element * g.y.stride * g.x.stride * ib.band * W * ib.cblock;
  pf(ib.Units(), cost, [&](int64_t begin, int64_t end) {
    InputBlock<A> blk;
    for (int64_t u = begin; u < end; ++u) {
      ib.Set(u, blk);
      const int64_t row = W * blk.nc;
      blk.acc.assign((blk.i1 - blk.i0) * row, A(0));
      const int64_t oy_end = g.y.EndOutput(blk.i1 - 1);
      for (int64_t oy = g.y.FirstOutput(blk.i0); oy < oy_end; ++oy) {
        const int64_t lo = std::max(blk.i0, g.y.FirstInput(oy));
        const int64_t hi = std::min(blk.i1 - 1, g.y.LastInput(oy));
        add_output_row(blk, oy, lo, hi);
      }
      for (int64_t i = blk.i0; i < blk.i1; ++i) {
        T* dx = input_grad + ((blk.s * H + i) * W) * cc + blk.c0;
        const A* a = blk.acc.data() + (i - blk.i0) * row;
        for (int64_t j = 0; j < W; ++j)
          NarrowRow(dx + j * cc, a + j * blk.nc, blk.nc);
      }
    }
  });
}

template <typename T, typename RowFn>
void SweepInputBands(const Geometry& g, T* input_grad, const ParallelFor& pf,
                     int64_t cost_per_element, RowFn&& add_output_row) {
  const InputBands ib = MakeInputBands(g, MakeSlabs(g), true, 16);
  SweepBands(g, ib, input_grad, pf, cost_per_element, add_output_row);
}

// Adds r (one input row's worth, the output row oy reduced along x) to the input rows [lo, hi]
// that row oy belongs to, with their row weight.
template <typename A>
void AddToInputRows(const Geometry& g, const std::vector<A>& wy, const A* r, InputBlock<A>& b,
                    int64_t oy, int64_t lo, int64_t hi) {
  const int64_t row = g.x.n_in * b.nc;
  A* acc = b.acc.data() + (lo - b.i0) * row;
  for (int64_t i = lo; i <= hi; ++i, acc += row) {
    const A w = wy[g.y.Tap(oy, i)];
    for (int64_t e = 0; e < row; ++e) acc[e] += w * r[e];
  }
}

// A separable input gradient: dx[i] = sum over the output rows oy that input row i feeds, in
// ascending order, of wy(tap) * r(oy), where r(oy) = reduce_row(block, oy, r) is output row oy
// reduced along x (one input row long: W x b.nc, zeroed before the call; it may use the block's
// scratch2). The k - s output rows two adjacent bands share are reduced once, first, into a
// buffer both bands read (each r is the same bits wherever it is computed), so the output
// gradient is read -- or, for the fused loss, recomputed -- once, and bands can be few rows
// tall: at [1,16,22,1000] x32 re-reading them cost ~10% of the input gradient's time. Where the
// buffer would exceed max_buffer elements (the caller's memory budget), the bands reduce them
// each on their own instead.
template <typename T, typename ReduceFn>
void SweepSeparable(const Geometry& g, const std::vector<Acc<T>>& wy, T* input_grad,
                    const ParallelFor& pf, int64_t cost_per_element, bool split_channels,
                    int64_t max_buffer, ReduceFn&& reduce_row) {
  using A = Acc<T>;
  const Slabs sl = MakeSlabs(g);
  const int64_t W = g.x.n_in;
  // Bands of up to 8 rows where the shared rows are buffered (more units cost no re-reading),
  // of up to 16 where they are not (fewer shared rows to reduce twice).
  // Whole pixels up to 2048 channels where the x pass goes pixel by pixel (two rows of sums, 16 KB,
  // stay in L1). [1,16,22,C] x32, EPYC VM, interleaved against tf.reduce_sum: C = 1024 88-107 ->
  // 44-59 ms (2.0-3.3x -> 1.2-1.7x the read floor), 1500 117-153 -> 89-97 ms, 2048 no clear change
  // (160-206 against 168-189 ms); bands of whole pixels without shrinking (half the units) measured
  // between.
  const int64_t whole = XPassByPixel() ? 2048 : 0;
  InputBands ib = MakeInputBands(g, sl, split_channels, 8, whole);
  // Shared rows of the boundary above band b (b = 1 .. bands-1): [FirstOutput(i0), EndOutput(i0
  // - 1)), i0 = b * band, stored from first[b] on; one row holds W x cblock elements.
  std::vector<int64_t> first(ib.bands + 1, 0);
  for (int64_t b = 1; b < ib.bands; ++b) {
    const int64_t i0 = b * ib.band;
    first[b + 1] = first[b] + std::max<int64_t>(0, g.y.EndOutput(i0 - 1) - g.y.FirstOutput(i0));
  }
  const int64_t shared = first[ib.bands], row = W * ib.cblock;
  const bool buffered = shared > 0 && sl.count * ib.cblocks * shared * row <= max_buffer;
  if (!buffered) ib = MakeInputBands(g, sl, split_channels, 16, whole);
  AlignedVector<A> rows(buffered ? sl.count * ib.cblocks * shared * row : 0);
  auto stored = [&](int64_t s, int64_t cb, int64_t b, int64_t oy) {
    return rows.data() + ((s * ib.cblocks + cb) * shared + first[b] + oy - g.y.FirstOutput(b * ib.band)) * row;
  };
  if (buffered) {
    // One unit per (slab, channel block, shared row).
    pf(sl.count * ib.cblocks * shared, cost_per_element * g.x.stride * row, [&](int64_t begin, int64_t end) {
      InputBlock<A> blk;
      for (int64_t u = begin; u < end; ++u) {
        const int64_t t = u % shared, cb = u / shared % ib.cblocks;
        blk.s = u / (shared * ib.cblocks);
        blk.c0 = cb * ib.cblock;
        blk.nc = std::min(ib.cblock, ib.cc - blk.c0);
        const int64_t b = std::upper_bound(first.begin() + 1, first.end(), t) - first.begin() - 1;
        const int64_t oy = g.y.FirstOutput(b * ib.band) + t - first[b];
        A* r = stored(blk.s, cb, b, oy);
        std::fill(r, r + W * blk.nc, A(0));
        reduce_row(blk, oy, r);
      }
    });
  }
  SweepBands(g, ib, input_grad, pf, cost_per_element, [&](InputBlock<A>& blk, int64_t oy, int64_t lo, int64_t hi) {
    const A* r = nullptr;
    if (buffered) {
      const int64_t cb = blk.c0 / ib.cblock;
      if (blk.i0 > 0 && oy < g.y.EndOutput(blk.i0 - 1)) r = stored(blk.s, cb, blk.i0 / ib.band, oy);
      if (blk.i1 < ib.H && oy >= g.y.FirstOutput(blk.i1)) r = stored(blk.s, cb, blk.i1 / ib.band, oy);
    }
    if (r == nullptr) {
      blk.scratch.assign(W * blk.nc, A(0));
      reduce_row(blk, oy, blk.scratch.data());
      r = blk.scratch.data();
    }
    AddToInputRows(g, wy, r, blk, oy, lo, hi);
  });
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
// AddRunTwoColumns for float pixels of at most kVectors vectors of channels: every channel's two
// sums in registers, the last vector masked, in one pass over the run with one pair of weights per
// pixel, where AddRunTwoColumns' blocks would pass over it once per block, each taking the weights
// again (21 classes: blocks of 16, 4 and 1). Each lane adds w * d to its sum in ascending pixel
// order: the same bits. The bilinear input gradient at [8,64,64,21] x8 NHWC, interleaved in one
// process on the 2-core VM (AVX-512): 17.6 ms against 20.0 ms (blocks), at [8,128,128,21] x4 22.6
// against 26.8, at [2,128,256,19] x8 29.8 against 33.4; AVX2 alike (17.7 / 19.4 and 29.8 / 32.3).
// The vectors are indexed through StaticFor: as plain loops, the AVX2 build (16 registers) kept
// the sums of 19 channels (three vectors) on the stack, a load and a store per vector and pixel.
// In the Cityscapes-like resize gradient ([2,128,256,19] -> 1024x2048, whose x pass this was
// before ReduceRowFewChannels; AVX2 build, EPYC VM) that halved this function's share of the
// profile (6.0% -> 3.1% of the samples beside the y pass's 37%); in one process against the plain
// loops, 13.1 against 13.3 ms a call (within the noise).
// The float pixels AddRunFewChannels and ReduceRowFewChannels take: at least two channels, in
// at most four vectors, the last one partial.
inline bool FewChannels(int64_t nc) { return nc >= 2 && nc % Lanes::kN != 0 && nc <= 4 * Lanes::kN; }

template <int kVectors, class Weights>
void AddRunFewChannels(const Weights& weights, int64_t n_out, const float* dy, int64_t stride, int64_t nc,
                       int64_t o0, int64_t o1, float* __restrict r0, float* __restrict r1) {
  using L = Lanes;
  const MaskedVectors<kVectors> vecs(nc);
  L::V a0[kVectors], a1[kVectors];
  StaticFor<kVectors>([&](auto v) __attribute__((always_inline)) {
    a0[v] = vecs.Load(r0, v), a1[v] = vecs.Load(r1, v);
  });
  const int64_t len = o1 - o0, prefetch_end = std::min(n_out, o1 + len);
  for (int64_t o = o0; o < o1; ++o) {
    const auto [w0, w1] = weights(o);
    const float* d = dy + o * stride;
    if (o + len < prefetch_end) PrefetchBytes(d + len * stride, nc * static_cast<int64_t>(sizeof(float)));
    const L::V v0 = L::Set(w0), v1 = L::Set(w1);
    StaticFor<kVectors>([&](auto v) __attribute__((always_inline)) {
      const L::V x = vecs.Load(d, v);
      a0[v] = L::Add(a0[v], L::Mul(v0, x));
      a1[v] = L::Add(a1[v], L::Mul(v1, x));
    });
  }
  StaticFor<kVectors>([&](auto v) __attribute__((always_inline)) {
    vecs.Store(r0, v, a0[v]), vecs.Store(r1, v, a1[v]);
  });
}

// The resize input gradient's pass along x over one row of sums r (pixels of nc float channels,
// at most kVectors vectors, in the cache) into xr (nc per input column, zeroed): the runs
// [x0, x1) of `runs` in order, each reading the columns lower[x0] and upper[x0], with
// AddRunFewChannels' arithmetic -- but the sums of the column a run shares with the next one (its
// upper, the next one's lower) stay in registers from one run to the next, where run by run they
// were stored and at once loaded back (the last vector masked both times: a load the store cannot
// forward to). Both taps on one column (a clamped edge): both terms into it, w0's first, as two
// AddScaled do. Each element adds its outputs in ascending order: the same bits. before_run(k) is
// called first for each run k. Cityscapes-like [2,128,256,19] -> 1024x2048 on the EPYC VM, one
// process against the runs one at a time: one thread 12.7 against 13.2 ms (AVX-512; AVX2 16.0
// against 16.1), DeepLab's [8,65,65,21] -> 513x513 on two threads against a fast read floor 4.7
// against 5.0 ms (1.25x against 1.31x it).
template <int kVectors, class Weights, class BeforeRun>
void ReduceRowFewChannels(const Weights& weights, const float* r, int64_t nc,
                          const std::vector<std::pair<int64_t, int64_t>>& runs, const int64_t* lower,
                          const int64_t* upper, float* __restrict xr, const BeforeRun& before_run) {
  using L = Lanes;
  const MaskedVectors<kVectors> vecs(nc);
  L::V carry[kVectors], a0[kVectors], a1[kVectors];
  int64_t held = -1;  // the column whose sums are in carry, not stored yet
  const auto store = [&](int64_t j, const L::V* a) __attribute__((always_inline)) {
    StaticFor<kVectors>([&](auto v) __attribute__((always_inline)) { vecs.Store(xr + j * nc, v, a[v]); });
  };
  for (size_t k = 0; k < runs.size(); ++k) {
    before_run(k);
    const auto [x0, x1] = runs[k];
    const int64_t jl = lower[x0], ju = upper[x0];
    if (held >= 0 && held != jl) store(held, carry), held = -1;
    StaticFor<kVectors>([&](auto v) __attribute__((always_inline)) {
      a0[v] = held == jl ? carry[v] : vecs.Load(xr + jl * nc, v);
    });
    if (jl == ju) {
      for (int64_t o = x0; o < x1; ++o) {
        const auto [w0, w1] = weights(o);
        const L::V v0 = L::Set(w0), v1 = L::Set(w1);
        StaticFor<kVectors>([&](auto v) __attribute__((always_inline)) {
          const L::V x = vecs.Load(r + o * nc, v);
          a0[v] = L::Add(L::Add(a0[v], L::Mul(v0, x)), L::Mul(v1, x));
        });
      }
      StaticFor<kVectors>([&](auto v) __attribute__((always_inline)) { carry[v] = a0[v]; });
      held = jl;
      continue;
    }
    StaticFor<kVectors>([&](auto v) __attribute__((always_inline)) { a1[v] = vecs.Load(xr + ju * nc, v); });
    for (int64_t o = x0; o < x1; ++o) {
      const auto [w0, w1] = weights(o);
      const L::V v0 = L::Set(w0), v1 = L::Set(w1);
      StaticFor<kVectors>([&](auto v) __attribute__((always_inline)) {
        const L::V x = vecs.Load(r + o * nc, v);
        a0[v] = L::Add(a0[v], L::Mul(v0, x));
        a1[v] = L::Add(a1[v], L::Mul(v1, x));
      });
    }
    store(jl, a0);
    StaticFor<kVectors>([&](auto v) __attribute__((always_inline)) { carry[v] = a1[v]; });
    held = ju;
  }
  if (held >= 0) store(held, carry);
}
#endif

// Adds the outputs [o0, o1) of one output-gradient row, which all read the same two input
// columns, into r0 and r1 with the weights weights(o) = (w0, w1), kBlock channels: the 2 x kBlock
// sums stay in registers over the whole run, so r is loaded and stored once per run rather than
// once per pixel, and each element still adds its outputs in ascending order (same bits as
// one pixel at a time). While a block sums, the same channels of the run after it are prefetched.
// Measured at [1,16,22,1000] x32, one thread, interleaved: 1.33x the read floor pixel by pixel,
// 1.07x so; without the prefetch 1.30x. Used by the bilinear and the resize input gradients.
// fresh0 / fresh1: r0 / r1 hold nothing yet and are read as zeros (so need no zeroing first).
// lone (the resize's y pass, n_out < 0): the run's first `lone` outputs read r0's row twice (a
// clamped or exact tap): both of their terms go to r0, w0's first, as a pixel's two terms do
// everywhere.
template <int64_t kBlock, bool kLone, typename A, typename Src, class Weights>
void AddRunBlock(const Weights& weights, int64_t n_out, const Src* dy, int64_t stride, int64_t c0,
                 int64_t o0, int64_t o1, A* __restrict r0, A* __restrict r1, bool fresh0, bool fresh1,
                 int64_t lone) {
  const int64_t len = o1 - o0, prefetch_end = n_out < 0 ? 0 : std::min(n_out, o1 + len);
  // Blocks ahead along the row (n_out < 0; in the AVX2 and AVX-512 builds up to eight float rows
  // go through AddRowsTwoColumns instead, with the same rule): kRowAheadBytes.
  constexpr bool kRowAhead = kRowAheadBytes > 0;
  constexpr int64_t kAhead = std::max<int64_t>(2, kRowAheadBytes / (kBlock * static_cast<int64_t>(sizeof(Src))));
  A a0[kBlock], a1[kBlock];
  for (int64_t c = 0; c < kBlock; ++c) {
    a0[c] = fresh0 ? A(0) : r0[c0 + c];
    a1[c] = fresh1 ? A(0) : r1[c0 + c];
  }
  int64_t o = o0;
  if constexpr (kLone) {  // the first `lone` outputs: both weights into r0, w0's term first
    for (; o < o0 + lone; ++o) {
      const auto [w0, w1] = weights(o);
      const Src* __restrict d = dy + o * stride + c0;
      if (kRowAhead && kBlock >= 16 && n_out < 0 && c0 + kAhead * kBlock < stride) {  // (lone: n_out < 0)
        PrefetchBytes(d + kAhead * kBlock, kBlock * static_cast<int64_t>(sizeof(Src)));
      }
      for (int64_t c = 0; c < kBlock; ++c) a0[c] = (a0[c] + w0 * A(d[c])) + w1 * A(d[c]);
    }
  }
  // (The runs without such outputs keep this loop to themselves: with the loop above in every
  // instantiation the bilinear input gradient at [1,16,22,1000] x32 took 10% longer.)
  for (; o < o1; ++o) {
    const auto [w0, w1] = weights(o);
    const Src* __restrict d = dy + o * stride + c0;
    // The prefetch rule written out in each loop: as one lambda called from both, the bilinear
    // input gradient at [1,16,22,1000] x32 measured 92 ms against 72-75 ms.
    if (kBlock >= 16 && o + len < prefetch_end) {
      PrefetchBytes(d + len * stride, kBlock * static_cast<int64_t>(sizeof(Src)));
    } else if (kRowAhead && kBlock >= 16 && n_out < 0 && c0 + kAhead * kBlock < stride) {
      PrefetchBytes(d + kAhead * kBlock, kBlock * static_cast<int64_t>(sizeof(Src)));
    }
    for (int64_t c = 0; c < kBlock; ++c) {
      a0[c] += w0 * A(d[c]);
      a1[c] += w1 * A(d[c]);
    }
  }
  for (int64_t c = 0; c < kBlock; ++c) {
    r0[c0 + c] = a0[c];
    r1[c0 + c] = a1[c];
  }
}

// AddRunBlock over channels [c0, nc): blocks of kWide while they fit, then one each of 32, 16,
// 8, 4, 2 and 1 where they fit (lone or not, as AddRunBlock takes it).
template <int64_t kWide, typename A, typename Src, class Weights>
void AddRunBlocksFrom(int64_t c0, const Weights& weights, int64_t n_out, const Src* dy, int64_t stride,
                      int64_t nc, int64_t o0, int64_t o1, A* __restrict r0, A* __restrict r1, bool fresh0,
                      bool fresh1, int64_t lone) {
  const auto block = [&](auto k) {
    constexpr int64_t kBlock = decltype(k)::value;
    if (lone > 0) {
      AddRunBlock<kBlock, true>(weights, n_out, dy, stride, c0, o0, o1, r0, r1, fresh0, fresh1, lone);
    } else {
      AddRunBlock<kBlock, false>(weights, n_out, dy, stride, c0, o0, o1, r0, r1, fresh0, fresh1, 0);
    }
    c0 += kBlock;
  };
  while (c0 + kWide <= nc) block(std::integral_constant<int64_t, kWide>());
  if (nc - c0 >= 32) block(std::integral_constant<int64_t, 32>());
  if (nc - c0 >= 16) block(std::integral_constant<int64_t, 16>());
  if (nc - c0 >= 8) block(std::integral_constant<int64_t, 8>());
  if (nc - c0 >= 4) block(std::integral_constant<int64_t, 4>());
  if (nc - c0 >= 2) block(std::integral_constant<int64_t, 2>());
  if (nc - c0 >= 1) block(std::integral_constant<int64_t, 1>());
}

// AddRunTwoColumns pixel by pixel (XPassByPixel): each pixel's nc channels in one pass, both
// columns' sums loaded and stored per pixel (from L1: two rows of nc), so the run is read as one
// sequential stream. Each element adds w * d to its sum in ascending pixel order: the same bits as
// the blocks. The bilinear input gradient at [1,16,22,1000] x32 on a 2-core AMD EPYC (Zen 4) VM,
// interleaved against tf.reduce_sum: 1.13-1.15x the read floor, against 1.61-1.62x block by block
// (AVX-512 build; one thread: 76 against 122 ms). 8-lane vectors in the AVX-512 build too: Zen 4
// splits a 16-lane store in two, and this loop, two stores per vector of dy, is store-bound from
// L3; interleaved in one process, 16 against 8 lanes: 1.19-1.40x against 1.17-1.27x the read floor
// (two threads), 68-97 ms against 64-90 ms (one thread).
template <typename A, typename Src, class Weights>
void AddPixelsTwoColumns(const Weights& weights, const Src* dy, int64_t stride, int64_t nc, int64_t o0,
                         int64_t o1, A* __restrict r0, A* __restrict r1) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  if constexpr (std::is_same_v<A, float> && std::is_same_v<Src, float>) {
    using L = Lanes256;
    const int64_t full = nc / L::kN * L::kN;
    for (int64_t o = o0; o < o1; ++o) {
      const auto [w0, w1] = weights(o);
      const L::V v0 = L::Set(w0), v1 = L::Set(w1);
      const float* d = dy + o * stride;
      for (int64_t c = 0; c < full; c += L::kN) {
        const L::V x = L::Load(d + c);
        L::Store(r0 + c, L::Add(L::Load(r0 + c), L::Mul(v0, x)));
        L::Store(r1 + c, L::Add(L::Load(r1 + c), L::Mul(v1, x)));
      }
      // The last nc % 8 channels: AVX-512's masked 256-bit loads and stores, else scalar (AVX2's
      // vmaskmovps store is microcoded on AMD CPUs). [1,32,44,150] x32, one process, same bits:
      // 1.49-1.54x the read floor against 1.71-1.80x with vmaskmovps; AVX2 2.26-2.39x against
      // 2.54-2.59x (fast floor); [1,16,22,300] 1.24-1.29x against 1.33-1.36x.
      if (full < nc) {
#if defined(TFUP_ISA_AVX512)
        const __mmask8 k = static_cast<__mmask8>((1u << (nc - full)) - 1);
        const L::V x = _mm256_maskz_loadu_ps(k, d + full);
        _mm256_mask_storeu_ps(r0 + full, k, L::Add(_mm256_maskz_loadu_ps(k, r0 + full), L::Mul(v0, x)));
        _mm256_mask_storeu_ps(r1 + full, k, L::Add(_mm256_maskz_loadu_ps(k, r1 + full), L::Mul(v1, x)));
#else
        for (int64_t c = full; c < nc; ++c) {
          r0[c] += w0 * d[c];
          r1[c] += w1 * d[c];
        }
#endif
      }
    }
    return;
  }
#endif
  for (int64_t o = o0; o < o1; ++o) {
    const auto [w0, w1] = weights(o);
    const Src* __restrict d = dy + o * stride;
    for (int64_t c = 0; c < nc; ++c) {
      r0[c] += w0 * A(d[c]);
      r1[c] += w1 * A(d[c]);
    }
  }
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
// AddRunBlock's n_out < 0 case (the resize gradient's y pass: whole float rows, at most kMaxRows
// of them) with the sums of each block of 32 floats in registers across the whole row: one
// function, the rows' weights broadcast once, no per-block call or copy of the sums through the
// stack (as separate calls per block, GCC kept AddRunBlock's arrays of sums on the stack and the
// AVX2 build did not inline it: ~60 instructions of call and copies per block of 32 floats and
// 4 rows). The same operations per element in the same order: the same bits. Past the last whole
// block, AddRunBlock. Returns false (nothing done) for more than kMaxRows rows.
// 32 floats (128 bytes of each row per block) in both builds: the AVX-512 build's 64 were slower
// on two cores (EPYC VM, interleaved in one process against tf.reduce_sum, 18 pairs over the
// three target shapes: 32 floats better in 13, by up to 0.17x the read floor, equal in 2, worse
// in 3 by at most 0.03x; medians per shape ADE20K-like 1.21x against 1.27x, Cityscapes-like 1.15x
// against 1.18x, DeepLab's 1.21x against 1.29x), though mostly faster on one thread (12 pairs: 64
// better in 8 by up to 0.12x, worse in 2). 16 floats: up to 0.06x better than 32 on two threads
// (12 of 18), 0.03-0.11x worse on one at ADE20K-like and Cityscapes-like. docs/performance.md.
template <class Weights>
bool AddRowsTwoColumns(const Weights& weights, const float* dy, int64_t stride, int64_t n, int64_t o0,
                       int64_t o1, float* __restrict r0, float* __restrict r1, bool fresh0, bool fresh1,
                       int64_t lone) {
  using L = Lanes;
  constexpr int kMaxRows = 8, kV = static_cast<int>(32 / L::kN);
  constexpr int64_t kBlock = kV * L::kN;
  const int64_t rows = o1 - o0;
  if (rows > kMaxRows || rows <= 0) return false;
  lone = std::clamp<int64_t>(lone, 0, rows);
  L::V w0[kMaxRows], w1[kMaxRows];
  for (int64_t k = 0; k < rows; ++k) {
    const auto [a, b] = weights(o0 + k);
    w0[k] = L::Set(a), w1[k] = L::Set(b);
  }
  constexpr int64_t kAheadFloats = kRowAheadBytes / static_cast<int64_t>(sizeof(float));
  const float* d0 = dy + o0 * stride;
  int64_t c = 0;
  for (; c + kBlock <= n; c += kBlock) {
    L::V a0[kV], a1[kV];
    StaticFor<kV>([&](auto v) __attribute__((always_inline)) {
      a0[v] = fresh0 ? L::Set(0.0f) : L::Load(r0 + c + v * L::kN);
      a1[v] = fresh1 ? L::Set(0.0f) : L::Load(r1 + c + v * L::kN);
    });
    for (int64_t k = 0; k < rows; ++k) {
      const float* d = d0 + k * stride + c;
      if (kAheadFloats > 0 && c + kAheadFloats + kBlock <= n) {
        PrefetchBytes(d + kAheadFloats, kBlock * static_cast<int64_t>(sizeof(float)));
      }
      if (k < lone) {  // both terms into r0, w0's first
        StaticFor<kV>([&](auto v) __attribute__((always_inline)) {
          const L::V x = L::Load(d + v * L::kN);
          a0[v] = L::Add(L::Add(a0[v], L::Mul(w0[k], x)), L::Mul(w1[k], x));
        });
      } else {
        StaticFor<kV>([&](auto v) __attribute__((always_inline)) {
          const L::V x = L::Load(d + v * L::kN);
          a0[v] = L::Add(a0[v], L::Mul(w0[k], x));
          a1[v] = L::Add(a1[v], L::Mul(w1[k], x));
        });
      }
    }
    StaticFor<kV>([&](auto v) __attribute__((always_inline)) {
      L::Store(r0 + c + v * L::kN, a0[v]);
      L::Store(r1 + c + v * L::kN, a1[v]);
    });
  }
  // The rest: 32, 16, ..., 1 floats.
  if (c < n) AddRunBlocksFrom<32>(c, weights, -1, dy, stride, n, o0, o1, r0, r1, fresh0, fresh1, lone);
  return true;
}
#endif

// The widest block of AddRunBlock: four of this build's vectors per sum, so that a run's two
// columns of sums (eight registers) and their operands fit AVX2's sixteen (64 floats there
// spilled: the resize gradient at DeepLab's [8,513,513,21] took 13.3 ms, against 11.6 ms in the
// AVX-512 build).
template <typename A>
constexpr int64_t WideBlock() {
#if defined(TFUP_ISA_AVX512)
  return 256 / static_cast<int64_t>(sizeof(A));
#elif defined(TFUP_ISA_AVX2)
  return 128 / static_cast<int64_t>(sizeof(A));
#else
  return 64 / static_cast<int64_t>(sizeof(A));
#endif
}

// Adds the outputs [o0, o1) of one output-gradient row, which all read the same two input
// columns, into r0 and r1 with the weights weights(o) = (w0, w1) (the input gradients' x passes:
// n_out outputs along the row, pixels `stride` apart, nc channels each). Channels go four
// vectors at a time (64 floats on AVX-512, 32 on AVX2), the rest in blocks of 32, 16, ..., 1: a
// block's 2 x kBlock sums stay in registers over the whole run, so r is loaded and stored once per
// run rather than once per pixel, and each element still adds its outputs in ascending order
// (same bits as one pixel at a time). While a block sums, the same channels of the run after it
// are prefetched. Measured at [1,16,22,1000] x32, one thread, interleaved: 1.33x the read floor
// pixel by pixel, 1.07x so; without the prefetch 1.30x. Used by the bilinear and the resize input
// gradients (float pixels of at most 4 vectors, the last one partial: AddRunFewChannels, or for the
// resize's whole row ReduceRowFewChannels; pixels wider than the widest block on AMD CPUs:
// AddPixelsTwoColumns, see XPassByPixel). `cached`: dy is a row of sums in the cache (the resize's
// x pass): blocks, never pixel by pixel.
template <typename A, typename Src, class Weights>
void AddRunTwoColumns(const Weights& weights, int64_t n_out, const Src* dy, int64_t stride,
                      int64_t nc, int64_t o0, int64_t o1, A* __restrict r0, A* __restrict r1,
                      bool cached = false) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  if constexpr (std::is_same_v<A, float> && std::is_same_v<Src, float>) {
    if (FewChannels(nc)) {
      return ByVectors<void>(nc, [&](auto nv) {
        AddRunFewChannels<decltype(nv)::value>(weights, n_out, dy, stride, nc, o0, o1, r0, r1);
      });
    }
  }
#endif
  constexpr int64_t kWide = WideBlock<A>();
  // Pixel by pixel only where the pixels are whole (nc == stride), so that the run is one stream:
  // a slab's channel block (1024 channels or more are split into blocks of 512) read pixel by pixel
  // skips half of each pixel and measured slower than the blocks (1500 channels, EPYC: 153 ms
  // against 104 ms). And only where dy streams from memory: `cached` (the resize gradient's x
  // pass over a row of sums in L2) takes the blocks, a store per run and block instead of two per
  // pixel and vector (ADE20K-like resize gradient, EPYC VM, AVX-512, fast read floor: 1.20-1.27x
  // it against 1.25-1.32x).
  if (!cached && nc > kWide && nc == stride && XPassByPixel()) {
    return AddPixelsTwoColumns(weights, dy, stride, nc, o0, o1, r0, r1);
  }
  AddRunBlocksFrom<kWide>(0, weights, n_out, dy, stride, nc, o0, o1, r0, r1, false, false, 0);
}

// The resize gradient's y pass: adds the output-gradient rows [o0, o1) (`row` elements each, one
// after another in dy), which all read the same two input rows, into the rows of sums r0 and r1
// with the weights weights(o) = (w0, w1); AddRunBlock's fresh0 / fresh1 and lone. A row's
// elements are AddRunBlock's channels: the next run's rows lie megabytes ahead, gone from the
// cache before they are used, so each row's next blocks are prefetched instead, kRowAheadBytes
// ahead (none in the AVX-512 build; ADE20K-like x8, AVX2: 1.36x the read floor against 1.56x with
// the next run's rows). In the AVX2 and AVX-512 builds float rows, at most eight, go through
// AddRowsTwoColumns.
template <typename A, typename Src, class Weights>
void AddRowsRun(const Weights& weights, const Src* dy, int64_t row, int64_t o0, int64_t o1,
                A* __restrict r0, A* __restrict r1, bool fresh0, bool fresh1, int64_t lone) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(TFUP_ISA_AVX2)
  if constexpr (std::is_same_v<A, float> && std::is_same_v<Src, float>) {
    if (AddRowsTwoColumns(weights, dy, row, row, o0, o1, r0, r1, fresh0, fresh1, lone)) return;
  }
#endif
  AddRunBlocksFrom<WideBlock<A>()>(0, weights, -1, dy, row, row, o0, o1, r0, r1, fresh0, fresh1, lone);
}

// Output row oy reduced along x into r (W x nc, zeroed): pixels `stride` apart, nc channels
// each; each r[j] sums its outputs in ascending order. Consecutive outputs that read the same
// input columns form a run (about a factor long; xruns = SameTapRuns of the x axis, the same for
// every row); float and double runs over two columns go
// through AddRunTwoColumns, the rest (edges, half types) pixel by pixel, each pixel used at once
// for its input columns, with the pixels ~16 KB ahead prefetched where a pixel spans whole
// cache lines (measured in five interleaved runs each: 1.56x the read floor without, 1.37x with).
template <typename A, typename Src>
void ReduceBilinearRow(const Geometry& g, const std::vector<A>& wx,
                       const std::vector<std::pair<int64_t, int64_t>>& xruns, const Src* dy,
                       int64_t stride, int64_t nc, A* r) {
  constexpr int64_t kAheadBytes = int64_t{16} << 10;
  const Axis& ax = g.x;
  const int64_t OW = ax.n_out, bytes = nc * static_cast<int64_t>(sizeof(Src));
  const int64_t ahead = bytes >= 64 ? (kAheadBytes + bytes - 1) / bytes : 0;
  for (const auto& [o0, o1] : xruns) {
    const int64_t j0 = ax.FirstInput(o0), j1 = ax.LastInput(o0);
    if constexpr (std::is_same_v<A, Src>) {
      if (j1 == j0 + 1) {
        const auto weights = [&](int64_t o) { return std::pair<A, A>(wx[ax.Tap(o, j0)], wx[ax.Tap(o, j1)]); };
        AddRunTwoColumns(weights, ax.n_out, dy, stride, nc, o0, o1, r + j0 * nc, r + j1 * nc);
        continue;
      }
    }
    for (int64_t ox = o0; ox < o1; ++ox) {
      const Src* __restrict d = dy + ox * stride;
      if (ahead > 0 && ox + ahead < OW) PrefetchBytes(dy + (ox + ahead) * stride, bytes);
      for (int64_t j = j0; j <= j1; ++j) ScaleAddRow(r + j * nc, wx[ax.Tap(ox, j)], d, nc);
    }
  }
}

template <typename T>
void BilinearBackpropInputImpl(const Geometry& g, const T* output_grad, T* input_grad,
                               const ParallelFor& pf) {
  using A = Acc<T>;
  const Slabs sl = MakeSlabs(g);
  const std::vector<A> wy = BilinearTable<A>(g.y), wx = BilinearTable<A>(g.x);
  const auto xruns = SameTapRuns(AxisTaps(g.x));
  const int64_t cc = sl.cc, OW = g.x.n_out;
  // Per tap, in the definition's terms: every (output, input) pair is one multiply-add with its
  // kernel weight, which is never 0 inside the kernel, so an inf or NaN in dy reaches exactly the
  // inputs whose taps touch it, with the definition's sign. (A block-moment shortcut -- S0 = sum
  // dy, S1 = sum a * dy -- read dy once but turned inf into NaN through 0 * inf and inf - inf.)
  // The buffer: at most 1/16 of dy, which is in memory anyway (small factors, whose shared rows
  // are a large part of each band, go without).
  SweepSeparable<T>(g, wy, input_grad, pf, 4, true, g.OutputElements() / 16, [&](InputBlock<A>& b, int64_t oy, A* r) {
    ReduceBilinearRow(g, wx, xruns, output_grad + (b.s * g.y.n_out + oy) * OW * cc + b.c0, cc, b.nc, r);
  });
}

template <typename T>
void DepthwiseBackpropInputImpl(const Geometry& g, const T* output_grad, const T* filter,
                                T* input_grad, const ParallelFor& pf) {
  using A = Acc<T>;
  const Slabs sl = MakeSlabs(g);
  const std::vector<A> f = ConvertFilter<T, A>(g, filter);
  const int64_t cc = sl.cc, C = g.c, kx = g.x.k, W = g.x.n_in, OW = g.x.n_out;
  const int64_t taps = g.y.k * kx;
  SweepInputBands<T>(g, input_grad, pf, 2 * taps, [&](InputBlock<A>& b, int64_t oy, int64_t lo, int64_t hi) {
    const int64_t nc = b.nc, row = W * nc;
    const T* dy = output_grad + (b.s * g.y.n_out + oy) * OW * cc + b.c0;
    const A* fs = f.data() + sl.FilterChannel(b.s) + b.c0;
    A* acc = b.acc.data() + (lo - b.i0) * row;
    for (int64_t i = lo; i <= hi; ++i, acc += row) {
      const A* fa = fs + g.y.Tap(oy, i) * kx * C;
      for (int64_t j = 0; j < W; ++j) {
        A* __restrict aj = acc + j * nc;
        for (int64_t ox = g.x.FirstOutput(j); ox < g.x.EndOutput(j); ++ox) {
          const A* __restrict fp = fa + g.x.Tap(ox, j) * C;
          const T* __restrict d = dy + ox * cc;
          MulAddRow(aj, fp, d, nc);
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Filter gradient: dw[a, b, c] = sum over (n, i, j) of dy[n, i*sy - py + a, j*sx - px + b, c] *
// x[n, i, j, c]. One owner per (residue of the filter row modulo sy, channel block) sums in a
// fixed (n, i, j) order: deterministic, no atomics. The filter rows a, a + sy, a + 2 sy, ... of
// one residue read the same output-gradient rows (with input rows one apart), so an owner takes
// each of its output-gradient rows once and adds it to all of them at once: dy comes from memory
// once, not once per filter row. Every dw element still adds its terms in ascending (n, i, j)
// order, so the bits are those of one running sum per element.

// One output-gradient row of the filter gradient (float, double; nc channels from dr / x0 / x1
// on, pixels cc apart; the accumulators' taps nc apart) paired with two input rows x0 (filter row
// acc0) and x1 (the next filter row, acc1): acc_m[b] += dy[ox] * x_m[j] for every tap b = ox + px
// - j sx. The outputs of one x residue bx (ox = u sx - px + bx) meet the taps bx + t sx at input
// column u - t; for bx with two taps, the interior pixels are summed in blocks of 32, then 8,
// then 1 channel with the 2 x 2 sums held in registers, u ascending, so the accumulators are loaded and stored once
// per pass rather than once per pixel; each element still adds its terms in ascending j (the
// same bits as one pixel at a time). While the passes run, `next` (the next row this owner reads,
// or null) is prefetched into the outer caches in address order, one pass's share of it per pass
// (min(sx, kx) passes, one per x residue): the passes read each row's pixels sx apart, which the
// hardware prefetchers do not follow. Measured at
// [1,16,22,100] x32, interleaved: 2.6x the read floor pixel by pixel, 1.95x so (Intel Xeon VM); NCHW
// 3x faster than pixel by pixel. On a Zen 4 EPYC VM, interleaved: prefetching each pass's own
// pixels of `next` into L1 (before) 2.9-3.8x, none 2.4-3.1x, in address order into L1 3.0-3.1x,
// T1 2.1-2.7x, T2 2.1-2.3x (later rounds of T2: 1.9-2.4x).
template <typename A>
void AddFilterRowTwoInputRows(const Axis& ax, const A* dr, const A* next, const A* x0, const A* x1,
                              int64_t cc, int64_t nc, A* acc0, A* acc1) {
  constexpr int64_t kBlock = 32;
  const int64_t sx = ax.stride, kx = ax.k, px = ax.pad, W = ax.n_in, OW = ax.n_out;
  const int64_t bytes = nc * static_cast<int64_t>(sizeof(A));
  for (int64_t bx = 0; bx < std::min(sx, kx); ++bx) {
    const int64_t nt = (kx - bx + sx - 1) / sx;
    // Pixels u: ox = u sx - px + bx in [0, OW).
    const int64_t u0 = px - bx > 0 ? (px - bx + sx - 1) / sx : 0;
    const int64_t u1 = OW + px - bx > 0 ? (OW + px - bx + sx - 1) / sx : 0;
    auto pixel = [&](int64_t u) {  // one pixel, all its taps
      const A* d = dr + (u * sx - px + bx) * cc;
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t j = u - t;
        if (j < 0 || j >= W) continue;
        ProductAddRow(acc0 + (bx + t * sx) * nc, d, x0 + j * cc, nc);
        ProductAddRow(acc1 + (bx + t * sx) * nc, d, x1 + j * cc, nc);
      }
    };
    if (next != nullptr) {  // this pass's share of `next`, in address order
      const int64_t passes = std::min(sx, kx), per = (OW + passes - 1) / passes;
      const int64_t p0 = std::min(OW, bx * per), p1 = std::min(OW, p0 + per);
      if (nc == cc) {
        PrefetchBytes<1>(next + p0 * cc, (p1 - p0) * bytes);
      } else {
        for (int64_t o = p0; o < p1; ++o) PrefetchBytes<1>(next + o * cc, bytes);
      }
    }
    // Interior: both taps' columns inside the image (nt == 2 and 1 <= u <= W - 1).
    const int64_t i0 = nt == 2 ? std::max<int64_t>(u0, 1) : u1, i1 = nt == 2 ? std::min(u1, W) : u1;
    for (int64_t u = u0; u < std::min(i0, u1); ++u) pixel(u);
    if (i0 < i1) {
      A* __restrict r00 = acc0 + bx * nc;
      A* __restrict r01 = acc0 + (bx + sx) * nc;
      A* __restrict r10 = acc1 + bx * nc;
      A* __restrict r11 = acc1 + (bx + sx) * nc;
      int64_t c0 = 0;
      auto pass = [&](auto block) {  // channels [c0, c0 + B), B a compile-time constant
        constexpr int64_t B = decltype(block)::value;
        A a00[B], a01[B], a10[B], a11[B];
        for (int64_t c = 0; c < B; ++c) {
          a00[c] = r00[c0 + c];
          a01[c] = r01[c0 + c];
          a10[c] = r10[c0 + c];
          a11[c] = r11[c0 + c];
        }
        for (int64_t u = i0; u < i1; ++u) {
          const A* __restrict d = dr + (u * sx - px + bx) * cc + c0;
          const A* __restrict xa = x0 + u * cc + c0;
          const A* __restrict xb = x1 + u * cc + c0;
          for (int64_t c = 0; c < B; ++c) {
            const A v = d[c];
            a00[c] += v * xa[c];
            a10[c] += v * xb[c];
            a01[c] += v * xa[c - cc];
            a11[c] += v * xb[c - cc];
          }
        }
        for (int64_t c = 0; c < B; ++c) {
          r00[c0 + c] = a00[c];
          r01[c0 + c] = a01[c];
          r10[c0 + c] = a10[c];
          r11[c0 + c] = a11[c];
        }
        c0 += B;
      };
      while (c0 + kBlock <= nc) pass(std::integral_constant<int64_t, kBlock>());
      while (c0 + 8 <= nc) pass(std::integral_constant<int64_t, 8>());
      while (c0 < nc) pass(std::integral_constant<int64_t, 1>());
    }
    for (int64_t u = std::max(i1, u0); u < u1; ++u) pixel(u);
  }
}

template <typename T>
void DepthwiseBackpropFilterImpl(const Geometry& g, const T* input, const T* output_grad,
                                 T* filter_grad, const ParallelFor& pf) {
  using A = Acc<T>;
  const Slabs sl = MakeSlabs(g);
  const int64_t C = g.c, ky = g.y.k, kx = g.x.k, H = g.y.n_in, W = g.x.n_in;
  const int64_t OH = g.y.n_out, OW = g.x.n_out, sy = g.y.stride;
  if (ky * kx * C == 0) return;
  const int64_t block = sl.planar ? 1 : std::min<int64_t>(C, 256);
  const int64_t blocks = (C + block - 1) / block;
  const int64_t residues = std::min(sy, ky);
  const int64_t per_residue = (ky + sy - 1) / sy;  // filter rows of a residue, at most
  pf(residues * blocks, g.n * H * W * block * 4 * per_residue, [&](int64_t begin, int64_t end) {
    std::vector<A> acc;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t r = u / blocks, c0 = (u % blocks) * block, nc = std::min(block, C - c0);
      const int64_t rows = (ky - r + sy - 1) / sy;  // filter rows r, r + sy, ... below ky
      acc.assign(rows * kx * nc, A(0));              // [rows][kx][nc]
      for (int64_t n = 0; n < g.n; ++n) {
        for (int64_t c = 0; c < (sl.planar ? nc : 1); ++c) {
          // The slab and the channel offset inside its pixels for this (n, channel block).
          const int64_t s = sl.planar ? n * C + c0 + c : n;
          const int64_t coff = sl.planar ? 0 : c0, cnt = sl.planar ? 1 : nc, cc = sl.cc;
          A* accc = acc.data() + (sl.planar ? c : 0);
          // Filter row a = r + m sy pairs input row i with output row (i + m) sy - py + r: the
          // output rows of this residue in ascending order q = i + m, each read once and paired
          // with its input rows i = q - m. A row with two input rows goes through
          // AddFilterRowTwoInputRows; any other, pixel by pixel, each used at once for all its
          // taps. For every tap, (i, j) ascends: the definition's order.
          auto row_of = [&](int64_t q) -> const T* {  // output-gradient row of q, or null
            const int64_t oy = q * sy - g.y.pad + r;
            return oy < 0 || oy >= OH ? nullptr : output_grad + (s * OH + oy) * OW * cc + coff;
          };
          for (int64_t q = 0; q < H + rows - 1; ++q) {
            const T* dr = row_of(q);
            if (dr == nullptr) continue;
            const int64_t m0 = std::max<int64_t>(0, q - (H - 1)), m1 = std::min(rows - 1, q);
            if constexpr (std::is_same_v<T, A>) {
              if (m1 == m0 + 1) {  // every row but the first and last, for a kernel k <= 2s
                const T* next = nullptr;
                for (int64_t qn = q + 1; qn < H + rows - 1 && next == nullptr; ++qn) next = row_of(qn);
                AddFilterRowTwoInputRows(g.x, dr, next, input + (s * H + q - m0) * W * cc + coff,
                                         input + (s * H + q - m1) * W * cc + coff, cc, cnt,
                                         accc + m0 * kx * nc, accc + m1 * kx * nc);
                continue;
              }
            }
            for (int64_t ox = 0; ox < OW; ++ox) {
              const T* d = dr + ox * cc;
              const int64_t j0 = g.x.FirstInput(ox), j1 = g.x.LastInput(ox);
              for (int64_t j = j0; j <= j1; ++j) {
                const int64_t b = g.x.Tap(ox, j);
                for (int64_t m = m0; m <= m1; ++m) {
                  const T* xp = input + ((s * H + q - m) * W + j) * cc + coff;
                  ProductAddRow(accc + (m * kx + b) * nc, d, xp, cnt);
                }
              }
            }
          }
        }
      }
      for (int64_t m = 0; m < rows; ++m) {
        const int64_t a = r + m * sy;
        for (int64_t bx = 0; bx < kx; ++bx) {
          NarrowRow(filter_grad + (a * kx + bx) * C + c0, acc.data() + (m * kx + bx) * nc, nc);
        }
      }
    }
  });
}

}  // namespace TFUP_ISA
}  // namespace tfup
