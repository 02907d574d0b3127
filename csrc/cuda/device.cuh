// Building blocks of the CUDA kernels, written as __host__ __device__ code so that the whole
// launch (grid, blocks, threads) can also be run on the CPU by a plain loop: the tests do that on
// machines with nvcc but no GPU (tests/cuda_host), exercising the exact index code the GPU runs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "geometry.h"

#if defined(__CUDA_ARCH__)
#define TFUP_UNROLL _Pragma("unroll")
#define TFUP_NO_UNROLL _Pragma("unroll 1")
#else
#define TFUP_UNROLL
#define TFUP_NO_UNROLL
#endif

namespace tfup {
namespace cuda {

// Half types are stored as such and accumulated in float.
template <typename T> struct AccOf { using type = T; };
template <> struct AccOf<__half> { using type = float; };
template <> struct AccOf<__nv_bfloat16> { using type = float; };

TFUP_HOST_DEVICE inline float ToAcc(__half v) { return __half2float(v); }
TFUP_HOST_DEVICE inline float ToAcc(__nv_bfloat16 v) { return __bfloat162float(v); }
TFUP_HOST_DEVICE inline float ToAcc(float v) { return v; }
TFUP_HOST_DEVICE inline double ToAcc(double v) { return v; }

template <typename T> struct Store;
template <> struct Store<float> { TFUP_HOST_DEVICE static float From(float v) { return v; } };
template <> struct Store<double> { TFUP_HOST_DEVICE static double From(double v) { return v; } };
template <> struct Store<__half> {
  TFUP_HOST_DEVICE static __half From(float v) { return __float2half_rn(v); }
};
template <> struct Store<__nv_bfloat16> {
  TFUP_HOST_DEVICE static __nv_bfloat16 From(float v) { return __float2bfloat16_rn(v); }
};

TFUP_HOST_DEVICE inline uint32_t MulHi(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}
TFUP_HOST_DEVICE inline uint64_t MulHi(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

// The index of the lowest set bit of v != 0.
TFUP_HOST_DEVICE inline int LowestBit(uint64_t v) {
#if defined(__CUDA_ARCH__)
  return __ffsll(static_cast<long long>(v)) - 1;
#else
  return __builtin_ctzll(v);
#endif
}

// Division of non-negative values by a divisor fixed at launch: a multiply-high and two shifts
// instead of the GPU's ~100-instruction 64-bit division (Granlund & Montgomery 1994). Div takes
// int64 values; Div(int32_t) the 32-bit indices of smaller tensors, with a 32-bit multiply-high.
struct Divider {
  uint64_t d = 1, m = 0;
  uint32_t m32 = 0;
  int s = 0;
  Divider() = default;
  explicit Divider(int64_t divisor) : d(static_cast<uint64_t>(divisor)) {
    if (d <= 1) return;
    while ((uint64_t{1} << s) < d) ++s;
    const unsigned __int128 one = 1;
    m = static_cast<uint64_t>(((one << 64) * ((one << s) - d)) / d + 1);
    if (s <= 32) m32 = static_cast<uint32_t>(((uint64_t{1} << 32) * ((one << s) - d)) / d + 1);
  }
  TFUP_HOST_DEVICE int64_t Div(int64_t n) const {
    if (d == 1) return n;
    const uint64_t u = static_cast<uint64_t>(n), t = MulHi(m, u);
    return static_cast<int64_t>((t + ((u - t) >> 1)) >> (s - 1));
  }
  TFUP_HOST_DEVICE int32_t Div(int32_t n) const {
    if (d == 1) return n;
    const uint32_t u = static_cast<uint32_t>(n), t = MulHi(m32, u);
    return static_cast<int32_t>((t + ((u - t) >> 1)) >> (s - 1));
  }
};

// p, hidden from the compiler's address arithmetic (still known to be global memory): p[i] then
// costs one wide multiply-add from the pointer, not a 64-bit sum of the offsets that led to p and
// i (four instructions per access).
template <typename P>
TFUP_HOST_DEVICE inline P* Opaque(P* p) {
#if defined(__CUDA_ARCH__)
  asm("mov.b64 %0, %0;" : "+l"(p));
  __builtin_assume(__isGlobal(p));
#endif
  return p;
}

// Division of values n < 2^32 / d by d >= 2: one multiply-high by ceil(2^32 / d) (exact there:
// the error n (ceil(2^32 / d) - 2^32 / d) / 2^32 stays below 1 / d). The per-element division of
// the bilinear forward's NHWC row runs, where n is an index in a row of w * C / V elements. Made
// with a divisor below 2 it is no divider (Div gives 0): one vector per position (C / V = 1) runs
// without a division.
struct ShortDivider {
  uint32_t m = 0;
  ShortDivider() = default;
  explicit ShortDivider(int64_t divisor) {
    if (divisor > 1) m = static_cast<uint32_t>(((uint64_t{1} << 32) + divisor - 1) / divisor);
  }
  static bool Fits(int64_t n_end, int64_t divisor) { return n_end <= ((int64_t{1} << 32) - 1) / divisor; }
  TFUP_HOST_DEVICE int32_t Div(int32_t n) const { return static_cast<int32_t>(MulHi(m, static_cast<uint32_t>(n))); }
};

// The index type of a launch: int32 when every tensor it touches has fewer than 2^31 - 2^28
// elements (so that a grid-stride step, at most 2^20 blocks of 256, stays in range), else int64.
// The 64-bit products and divisions cost several instructions each on the GPU, and signed 32-bit
// offsets let the compiler keep a row's pointer and add each element's offset in one instruction.
// TFUP_INDEX32_LIMIT lowers the bound (the tests build an emulation that takes the 64-bit path).
#ifndef TFUP_INDEX32_LIMIT
#define TFUP_INDEX32_LIMIT ((int64_t{1} << 31) - (int64_t{1} << 28))
#endif
inline bool Fits32(int64_t elements) { return elements < TFUP_INDEX32_LIMIT; }

// Element strides of an (n, y, x, c) tensor in its layout.
struct Strides {
  int64_t n = 0, y = 0, x = 0, c = 0;
  TFUP_HOST_DEVICE int64_t At(int64_t in, int64_t iy, int64_t ix, int64_t ic) const {
    return in * n + iy * y + ix * x + ic * c;
  }
  template <typename I>  // in a launch's index type (int32: its tensors fit, Fits32)
  TFUP_HOST_DEVICE I At(I in, I iy, I ix, I ic) const {
    return in * static_cast<I>(n) + iy * static_cast<I>(y) + ix * static_cast<I>(x) + ic * static_cast<I>(c);
  }
};
inline Strides StridesOf(Layout layout, int64_t h, int64_t w, int64_t c) {
  if (layout == Layout::kNCHW) return {c * h * w, w, 1, h * w};
  return {h * w * c, w * c, c, 1};
}

// Splits a flat index i into (i / d, i % d), in i's type.
template <typename I>
struct QuotRemT {
  I q, r;
};
using QuotRem = QuotRemT<int64_t>;
template <typename I>
TFUP_HOST_DEVICE inline QuotRemT<I> Split(const Divider& d, I i) {
  const I q = d.Div(i);
  return QuotRemT<I>{q, i - q * static_cast<I>(d.d)};
}
// ... by three extents, innermost first: r[0] = i % d0, r[1] = i / d0 % d1, r[2] = i / (d0 d1) % d2,
// q = i / (d0 d1 d2).
template <typename I>
struct Split3 {
  I r[3], q;
};
template <typename I>
TFUP_HOST_DEVICE inline Split3<I> SplitBy3(I i, const Divider& d0, const Divider& d1, const Divider& d2) {
  const QuotRemT<I> a = Split(d0, i), b = Split(d1, a.q), c = Split(d2, b.q);
  return Split3<I>{{a.r, b.r, c.r}, c.q};
}

// A thread's place in a launch (what blockIdx / threadIdx / blockDim / gridDim say on the GPU).
struct Pos {
  int64_t block, grid;
  int tx, ty, bx, by;
};
struct Shape {
  int64_t grid = 1;
  int bx = 1, by = 1;
  // Blocks of bx x by threads, enough for `work` units of `per_block` each, at most 2^20 blocks
  // (the launches loop grid-stride, so any grid covers all the work).
  static Shape Of(int bx, int by, int64_t work, int64_t per_block) {
    constexpr int64_t kMaxBlocks = int64_t{1} << 20;
    const int64_t blocks = (work + per_block - 1) / per_block;
    return Shape{blocks < kMaxBlocks ? (blocks > 0 ? blocks : 1) : kMaxBlocks, bx, by};
  }
};

// Work over an (n, y, x, c) space where c is the innermost dimension in memory: threads of a warp
// run along c (coalesced); a thread takes one (n, y, x) and every bx-th channel of a group of
// kGroupLanes * bx channels, so the per-position index work (taps, weights) is done once per up to
// kGroupLanes elements, while wide C still splits into enough warps to fill the card.
constexpr int kGroupLanes = 8;

// Lanes along the channels: the power of two >= C, at most a warp.
inline int ChannelLanesFor(int64_t C) {
  int lanes = 1;
  while (lanes < 32 && lanes < C) lanes *= 2;
  return lanes;
}

template <class Body, typename I = int64_t>
struct ChannelLanes {
  Body body;
  I items, C, group;     // items = positions * groups; group = channels per group
  Divider groups, w, h;  // by the group count, the x and the y extents

  TFUP_HOST_DEVICE void operator()(const Pos& p) const {
    const I step = static_cast<I>(p.grid) * p.by;
    for (I i = static_cast<I>(p.block) * p.by + p.ty; i < items; i += step) {
      const Split3<I> at = SplitBy3(i, groups, w, h);  // group, x, y; n
      const I g = at.r[0], c_end = (g + 1) * group < C ? (g + 1) * group : C;
      body(at.q, at.r[2], at.r[1], g * group + p.tx, static_cast<I>(p.bx), c_end);
    }
  }
  static ChannelLanes Make(const Body& body, int64_t positions, int64_t w, int64_t h, int64_t C,
                           Shape* s) {
    const int lanes = ChannelLanesFor(C);
    const int64_t group = int64_t{lanes} * kGroupLanes, count = (C + group - 1) / group;
    const int64_t items = positions * count;
    *s = Shape::Of(lanes, 256 / lanes, items, 256 / lanes);
    return ChannelLanes{body, static_cast<I>(items), static_cast<I>(C), static_cast<I>(group),
                        Divider(count), Divider(w), Divider(h)};
  }
};

// Runs along rows: the output is planes of h rows of row_len elements, each row cut into pieces of
// kRunLanes * kRun elements; the rows of a plane go in pairs (y, y + 1) from y = -shift (a pair's
// row outside the plane is its other row: that row alone). A warp takes a piece of a pair, lane l
// its elements l, l + 32, ... (coalesced), so the body's per-row work (a division, the row's taps)
// is done once for up to kRun elements, and its per-element work once for both rows where they
// can share it. For NCHW (a row is one channel's output row) and NHWC with few channels (a row is
// w * C elements: every lane busy whatever C).
constexpr int kRunLanes = 32, kRun = 16;

template <class Body, typename I>
struct RowRuns {
  Body body;
  I items, h, shift, per_plane, row_len, per_row;  // items = planes * per_plane * per_row
  Divider pieces, pairs;                // by per_row, by pairs per plane

  TFUP_HOST_DEVICE void operator()(const Pos& p) const {
    const I step = static_cast<I>(p.grid) * p.by;
    for (I i = static_cast<I>(p.block) * p.by + p.ty; i < items; i += step) {
      const I pair = pieces.Div(i), piece = i - pair * per_row;
      const I q = pairs.Div(pair), y = 2 * (pair - q * per_plane) - shift;
      const I ya = y < 0 ? y + 1 : y, yb = y + 1 < h ? y + 1 : y;
      body(q, ya, yb, piece * (kRunLanes * kRun) + p.tx, row_len);
    }
  }
  static RowRuns Make(const Body& body, int64_t planes, int64_t h, int shift, int64_t row_len, Shape* s) {
    const int64_t per_row = (row_len + kRunLanes * kRun - 1) / (kRunLanes * kRun);
    const int64_t per_plane = (h + shift + 1) / 2;
    const int64_t items = planes * per_plane * per_row;
    *s = Shape::Of(kRunLanes, 256 / kRunLanes, items, 256 / kRunLanes);
    return RowRuns{body, static_cast<I>(items), static_cast<I>(h), static_cast<I>(shift), static_cast<I>(per_plane),
                   static_cast<I>(row_len), static_cast<I>(per_row), Divider(per_row), Divider(per_plane)};
  }
};

// NCHW (n, c, y, x) spaces with int32 indices: each row (n, c, y) cut into pieces of kRunLanes *
// kRun elements along x; a warp takes a piece, lane l its elements x = l, l + 32, ... (coalesced),
// one channel each,
// so the row's index work (three divisions; the body's per-row terms, hoisted out of the run) is
// done once per up to kRun elements rather than per element. (With int64 indices the bodies that
// keep 8 channels' sums spilled registers in it.)
template <class Body, typename I = int64_t>
struct ColumnRuns {
  Body body;
  I items, w;            // items = rows * pieces per row
  Divider pieces, h, c;  // by the pieces per row, the y and the channel extents

  TFUP_HOST_DEVICE void operator()(const Pos& p) const {
    const I step = static_cast<I>(p.grid) * p.by;
    for (I i = static_cast<I>(p.block) * p.by + p.ty; i < items; i += step) {
      const Split3<I> at = SplitBy3(i, pieces, h, c);  // piece, y, channel; n
      const I n = at.q, y = at.r[1], ch = at.r[2], x0 = at.r[0] * (kRunLanes * kRun) + p.tx;
      TFUP_NO_UNROLL
      for (int j = 0; j < kRun; ++j) {
        const I x = x0 + j * kRunLanes;
        if (x >= w) break;
        body(n, y, x, ch, I(1), static_cast<I>(ch + 1));
      }
    }
  }
  static ColumnRuns Make(const Body& body, int64_t n, int64_t h, int64_t w, int64_t c, Shape* s) {
    const int64_t per_row = (w + kRunLanes * kRun - 1) / (kRunLanes * kRun), items = n * c * h * per_row;
    *s = Shape::Of(kRunLanes, 256 / kRunLanes, items, 256 / kRunLanes);
    return ColumnRuns{body, static_cast<I>(items), static_cast<I>(w), Divider(per_row), Divider(h), Divider(c)};
  }
};

// One thread per element, in memory order, threads along the innermost dimension (coalesced):
// NCHW (n, c, y, x) with int64 indices (ColumnRuns takes the int32 launches), and NHWC pixels of
// fewer than 32 channels, where ChannelLanes' warps across a pixel's channels leave lanes idle (21
// channels: 11 of 32) and give each thread one element anyway.
template <class Body, typename I, bool kNHWC>
struct ElementLanes {
  Body body;
  I elements;
  Divider inner, middle, outer;  // by the extents innermost first: NCHW w, h, c; NHWC c, w, h

  TFUP_HOST_DEVICE void operator()(const Pos& p) const {
    const I step = static_cast<I>(p.grid) * p.bx;
    for (I i = static_cast<I>(p.block) * p.bx + p.tx; i < elements; i += step) {
      const Split3<I> at = SplitBy3(i, inner, middle, outer);
      const I x = at.r[kNHWC ? 1 : 0], y = at.r[kNHWC ? 2 : 1], ch = at.r[kNHWC ? 0 : 2];
      body(at.q, y, x, ch, I(1), static_cast<I>(ch + 1));  // one channel
    }
  }
  static ElementLanes Make(const Body& body, int64_t n, int64_t h, int64_t w, int64_t c, Shape* s) {
    *s = Shape::Of(256, 1, n * h * w * c, 256);
    return kNHWC ? ElementLanes{body, static_cast<I>(n * h * w * c), Divider(c), Divider(w), Divider(h)}
                 : ElementLanes{body, static_cast<I>(n * h * w * c), Divider(w), Divider(h), Divider(c)};
  }
};
constexpr int64_t kElementLanesBelow = 32;  // channels under which ForEach runs ElementLanes

// Runs a body over an (n, y, x, c) space in the layout's natural order, its indices of type I
// (int32 where every tensor the body touches fits, Fits32: the body then takes int32 indices).
// ForEachNHWC: the NHWC order only (bodies that only ever run on NHWC data: no NCHW kernel built).
template <typename I = int64_t, class Exec, class Body>
void ForEachNHWC(const Exec& exec, int64_t n, int64_t h, int64_t w, int64_t c, const Body& body) {
  if (n * h * w * c == 0) return;
  Shape s;
  const ChannelLanes<Body, I> k = ChannelLanes<Body, I>::Make(body, n * h * w, w, h, c, &s);
  exec(s, k);
}
template <typename I = int64_t, class Exec, class Body>
void ForEach(const Exec& exec, Layout layout, int64_t n, int64_t h, int64_t w, int64_t c,
             const Body& body) {
  if (n * h * w * c == 0) return;
  Shape s;
  if (layout == Layout::kNHWC && c < kElementLanesBelow) {
    const auto k = ElementLanes<Body, I, true>::Make(body, n, h, w, c, &s);
    exec(s, k);
  } else if (layout == Layout::kNHWC) {
    ForEachNHWC<I>(exec, n, h, w, c, body);
  } else if constexpr (std::is_same<I, int64_t>::value) {
    const auto k = ElementLanes<Body, I, false>::Make(body, n, h, w, c, &s);
    exec(s, k);
  } else {
    const auto k = ColumnRuns<Body, I>::Make(body, n, h, w, c, &s);
    exec(s, k);
  }
}

// Runs the same launch as the GPU would, one thread after another, on the CPU.
struct HostExec {
  template <class Fn>
  void operator()(const Shape& s, const Fn& fn) const {
    for (int64_t b = 0; b < s.grid; ++b)
      for (int ty = 0; ty < s.by; ++ty)
        for (int tx = 0; tx < s.bx; ++tx) fn(Pos{b, s.grid, tx, ty, s.bx, s.by});
  }
};

}  // namespace cuda
}  // namespace tfup
