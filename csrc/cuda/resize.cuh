// tf.image.resize's bilinear resize on the GPU (docs/DESIGN.md, "Resize"). The forward computes
// each output element with TF's taps and arithmetic (geometry.h's ResizeTapOf, in float); the
// gradient is two gathers, along y into scratch and then along x, each destination summing the
// outputs of its range in ascending order with the lower tap's term before the upper's: the CPU
// kernel's order, so both devices give the same bits, with one writer per element (no atomics).
#pragma once

#include "cuda/device.cuh"

namespace tfup {
namespace cuda {

template <typename T>
TFUP_HOST_DEVICE inline float ResizeLoad(const T* p) {
  return static_cast<float>(ToAcc(*p));
}

template <typename T>
struct ResizeForwardBody {
  Axis ay, ax;
  Resize mode;
  float scale_y, scale_x;
  Strides in_s, out_s;
  const T* in;
  float* out;

  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t c0, int64_t cs,
                                   int64_t c_end) const {
    const ResizeTap ty = ResizeTapOf(mode, scale_y, y, ay.n_in);
    const ResizeTap tx = ResizeTapOf(mode, scale_x, x, ax.n_in);
    const T* base = in + n * in_s.n;
    const int64_t o00 = ty.lower * in_s.y + tx.lower * in_s.x, o01 = ty.lower * in_s.y + tx.upper * in_s.x;
    const int64_t o10 = ty.upper * in_s.y + tx.lower * in_s.x, o11 = ty.upper * in_s.y + tx.upper * in_s.x;
    float* dst = out + out_s.At(n, y, x, 0);
    for (int64_t c = c0; c < c_end; c += cs) {
      const T* p = base + c * in_s.c;
      const float tl = ResizeLoad(p + o00), tr = ResizeLoad(p + o01);
      const float bl = ResizeLoad(p + o10), br = ResizeLoad(p + o11);
      const float top = tl + (tr - tl) * tx.lerp;
      const float bottom = bl + (br - bl) * tx.lerp;
      dst[c * out_s.c] = top + (bottom - top) * ty.lerp;
    }
  }
};

// For each input index i of one axis, the outputs whose taps include it: [first[i], end[i]).
// Taps are monotone in the output index, so two binary searches find the range.
struct ResizeRangeBody {
  int64_t n_in, n_out;
  Resize mode;
  float scale;
  int64_t* first;
  int64_t* end;

  TFUP_HOST_DEVICE int64_t Search(int64_t i, bool upper_reaches) const {
    int64_t lo = 0, hi = n_out;  // the first o with upper(o) >= i, or with lower(o) > i
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      const ResizeTap t = ResizeTapOf(mode, scale, mid, n_in);
      if (upper_reaches ? t.upper >= i : t.lower > i) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  }
  TFUP_HOST_DEVICE void operator()(const Pos& p) const {
    for (int64_t i = p.block * p.bx + p.tx; i < n_in; i += p.grid * p.bx) {
      const int64_t f = Search(i, true), e = Search(i, false);
      first[i] = f;
      end[i] = e > f ? e : f;
    }
  }
};

// dst[n, y, x, c] (x or y an input index of the gathered axis) = the sum over that index's outputs
// o of w * src[n, y or o, o or x, c], w = 1 - lerp where o's lower tap is the index and lerp where
// its upper tap is (both when they coincide), in float, or double for double.
template <typename TS, typename TD, typename A>
struct ResizeGatherBody {
  bool along_x;
  int64_t n_in;  // of the gathered axis
  Resize mode;
  float scale;
  const int64_t* first;
  const int64_t* end;
  Strides src_s, dst_s;
  const TS* src;
  TD* dst;

  TFUP_HOST_DEVICE void operator()(int64_t n, int64_t y, int64_t x, int64_t c0, int64_t cs,
                                   int64_t c_end) const {
    const int64_t i = along_x ? x : y;
    A acc[kGroupLanes];
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) acc[j] = A(0);
    for (int64_t o = first[i]; o < end[i]; ++o) {
      const ResizeTap t = ResizeTapOf(mode, scale, o, n_in);
      const A wl = A(1.0f - t.lerp), wu = A(t.lerp);
      const TS* p = src + (along_x ? src_s.At(n, y, o, c0) : src_s.At(n, o, x, c0));
      TFUP_UNROLL
      for (int j = 0; j < kGroupLanes; ++j) {
        if (c0 + j * cs < c_end) {
          const A v = A(ToAcc(p[j * cs * src_s.c]));
          if (t.lower == i) acc[j] += wl * v;
          if (t.upper == i) acc[j] += wu * v;
        }
      }
    }
    TD* out = dst + dst_s.At(n, y, x, c0);
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) {
      if (c0 + j * cs < c_end) out[j * cs * dst_s.c] = Store<TD>::From(acc[j]);
    }
  }
};

}  // namespace cuda
}  // namespace tfup
