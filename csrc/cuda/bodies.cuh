// Per-position work of every CUDA kernel. Each body computes whole output elements from its
// inputs in a fixed order (docs/DESIGN.md, "Index geometry": gather form): one writer per element, no atomics, so the
// results are the same bits on every run.
#pragma once

#include "cuda/device.cuh"

namespace tfup {
namespace cuda {

// A run of taps along one axis: source index i0 + m * di, tap t0 + m * dt, for m in [0, count),
// in a launch's index type I.
template <typename I>
struct RunT {
  I i0 = 0, di = 0, t0 = 0, dt = 0, count = 0;
};
using Run = RunT<int64_t>;

// Forward: the inputs that output o reads, in ascending order like the CPU kernels (so that
// sums of more than two taps are added in the same order, the same bits): the last one is
// q = (o + pad) / s (clipped to the input) with tap r; the run starts count - 1 inputs before it,
// at tap r + (count - 1) * s, while taps stay inside the kernel and inputs inside the input.
// In o's type: int32 where the launch's axes fit (AxisFits32).
template <typename I>
TFUP_HOST_DEVICE inline RunT<I> InputsOf(const Axis& a, const Divider& by_stride, I o) {
  const I stride = static_cast<I>(a.stride), last = static_cast<I>(a.n_in - 1), k = static_cast<I>(a.k);
  const I num = o + static_cast<I>(a.pad);
  I i = by_stride.Div(num), t = num - i * stride;
  if (i > last) {  // taps of inputs past the end
    t += (i - last) * stride;
    i = last;
  }
  RunT<I> r{i, 1, t, static_cast<I>(-stride), 0};
  if (t < k && i >= 0) {
    const I taps = by_stride.Div(static_cast<I>(k - 1 - t)) + 1;
    r.count = taps < i + 1 ? taps : i + 1;
    r.i0 = i - (r.count - 1);
    r.t0 = t + (r.count - 1) * stride;
  }
  return r;
}

// Gradient to the input: the outputs input i wrote, [i*s - pad, i*s - pad + k) clipped, in i's type
// (Axis::FirstOutput and EndOutput's rule, written out: through the two calls, templated on I, the
// NCHW runs' pass along x counted 127 SASS instructions per element before its tap loop, here 83).
template <typename I>
TFUP_HOST_DEVICE inline RunT<I> OutputsOf(const Axis& a, I i) {
  const I at = i * static_cast<I>(a.stride) - static_cast<I>(a.pad);
  const I first = at > 0 ? at : 0, end_k = at + static_cast<I>(a.k), n_out = static_cast<I>(a.n_out);
  const I end = end_k < n_out ? end_k : n_out;
  return RunT<I>{first, 1, first - at, 1, end > first ? static_cast<I>(end - first) : I(0)};
}

// Whether an axis' indices and the sums OutputsOf and InputsOf form (i * s + k, o + pad) fit the
// int32 index path (with Fits32 of every tensor a launch touches).
inline bool AxisFits32(const Axis& a) {
  const bool each = Fits32(a.n_in) && Fits32(a.n_out) && Fits32(a.stride) && Fits32(a.k) && Fits32(a.pad);
  return each && Fits32(a.n_in * a.stride + a.k + a.pad) && Fits32(a.n_out + a.pad + a.k);  // (no overflow)
}

// Weights of tap (ty, tx): At(ty, tx) gives a per-channel weight function. A [ky, kx, C] filter ...
template <typename T>
struct FilterWeights {
  using A = typename AccOf<T>::type;
  const T* w;
  int64_t kx, C;
  struct Tap {
    const T* p;
    template <typename I>
    TFUP_HOST_DEVICE A operator()(I c) const { return ToAcc(p[c]); }
  };
  template <typename I>  // (int32: the filter fits too)
  TFUP_HOST_DEVICE Tap At(I ty, I tx) const { return Tap{w + (ty * static_cast<I>(kx) + tx) * static_cast<I>(C)}; }
};

// ... or the bilinear kernel, computed per axis by geometry.h's BilinearWeight (the one
// definition the CPU kernels use too). A factor-1 axis (k = 1) has weight 1, which makes the
// one-axis passes of the bilinear gradient.
template <typename A>
struct BilinearWeights {
  int64_t fy, fx;
  TFUP_HOST_DEVICE static A Axis1(int64_t f, int64_t t) { return BilinearWeight<A>(f, t); }
  struct Tap {
    A v;
    TFUP_HOST_DEVICE A operator()(int64_t) const { return v; }
  };
  TFUP_HOST_DEVICE Tap At(int64_t ty, int64_t tx) const { return Tap{Axis1(fy, ty) * Axis1(fx, tx)}; }
};

// ... or one axis' table of them (the bilinear input gradient's one-axis passes: the other axis'
// weight is 1, which the product with it would keep exactly), filled once per launch by
// WeightTableBody: a load per tap instead of the division that computes one; the same bits as
// BilinearWeights.
template <typename A, bool kAlongY>
struct AxisTableWeights {
  const A* w;
  struct Tap {
    A v;
    template <typename I>
    TFUP_HOST_DEVICE A operator()(I) const { return v; }
  };
  template <typename I>
  TFUP_HOST_DEVICE Tap At(I ty, I tx) const { return Tap{w[kAlongY ? ty : tx]}; }
};
template <typename A>
struct WeightTableBody {  // table[0, ky): y's weights, [ky, ky + kx): x's
  int64_t fy, ky, fx, kx;
  A* table;
  TFUP_HOST_DEVICE void operator()(const Pos& p) const {
    for (int64_t t = p.block * p.bx + p.tx; t < ky + kx; t += p.grid * p.bx) {
      table[t] = t < ky ? BilinearWeights<A>::Axis1(fy, t) : BilinearWeights<A>::Axis1(fx, t - ky);
    }
  }
};

// dst[n, y, x, c] = sum over the taps of src[n, iy, ix, c] * weight(ty, tx, c): the forward
// (runs from InputsOf) and the gradient to the input (runs from OutputsOf) of every op. A thread
// keeps its (up to kGroupLanes) channels' sums in registers, so each tap's indices and weight are
// worked out once for all of them; each channel still adds its taps in the same fixed order.
template <typename TS, typename TD, class Weights, bool kToInput>
struct GatherBody {
  Axis ay, ax;
  Divider sy, sx;  // by the strides (forward only)
  int64_t C;
  Strides src_s, dst_s;
  const TS* src;
  TD* dst;
  Weights weights;

  // I: the launch's index type (int32 where every tensor and axis fits; the same addresses).
  template <typename I>
  TFUP_HOST_DEVICE void operator()(I n, I y, I x, I c0, I cs, I c_end) const {
    using A = typename AccOf<TD>::type;
    const RunT<I> ry = kToInput ? OutputsOf(ay, y) : InputsOf(ay, sy, y);
    const RunT<I> rx = kToInput ? OutputsOf(ax, x) : InputsOf(ax, sx, x);
    const I src_y = static_cast<I>(src_s.y), src_x = static_cast<I>(src_s.x);
    const TS* base = src + src_s.At(n, I(0), I(0), c0);
    if (c0 + cs >= c_end) {  // one channel (ElementLanes, ColumnRuns, or a channel lane's last one): no array of sums
      if (c0 >= c_end) return;
      A sum = A(0);
      if (ry.count > 0 && rx.count > 0) {  // pointers stepped to each tap, never past the last
        const I ystep = ry.di * src_y, xstep = rx.di * src_x;
        const TS* row = base + (ry.i0 * src_y + rx.i0 * src_x);
        for (I my = 0; my < ry.count; ++my) {
          if (my > 0) row += ystep;
          const TS* p = row;
          for (I mx = 0; mx < rx.count; ++mx) {
            if (mx > 0) p += xstep;
            sum += A(ToAcc(*p)) * weights.At(static_cast<I>(ry.t0 + my * ry.dt), static_cast<I>(rx.t0 + mx * rx.dt))(c0);
          }
        }
      }
      dst[dst_s.At(n, y, x, c0)] = Store<TD>::From(sum);
      return;
    }
    const I step = cs * static_cast<I>(src_s.c);
    A acc[kGroupLanes];
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) acc[j] = A(0);
    for (I my = 0; my < ry.count; ++my) {
      const I iy = ry.i0 + my * ry.di, ty = ry.t0 + my * ry.dt;
      for (I mx = 0; mx < rx.count; ++mx) {
        const I ix = rx.i0 + mx * rx.di, tx = rx.t0 + mx * rx.dt;
        const auto w = weights.At(ty, tx);
        const TS* p = base + (iy * src_y + ix * src_x);
        TFUP_UNROLL
        for (int j = 0; j < kGroupLanes; ++j) {
          if (c0 + j * cs < c_end) acc[j] += A(ToAcc(p[j * step])) * w(c0 + j * cs);
        }
      }
    }
    TD* out = dst + dst_s.At(n, y, x, c0);
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) {
      if (c0 + j * cs < c_end) out[j * cs * static_cast<I>(dst_s.c)] = Store<TD>::From(acc[j]);
    }
  }
};

// The bilinear forward: at most two inputs per axis, so the four weights and offsets are worked
// out once per output position and the channel loop is four loads and a few multiply-adds.
template <typename T>
struct BilinearPixel {
  using A = typename AccOf<T>::type;
  A wy0, wy1, wx0, wx1;
  int64_t off00, off01, off10, off11;  // element offsets of the four inputs (channel 0)
  bool two_y, two_x;                   // whether the second tap exists along y / x

  TFUP_HOST_DEVICE BilinearPixel(const Axis& ay, const Axis& ax, const Divider& sy,
                                 const Divider& sx, const Strides& s, int64_t n, int64_t y,
                                 int64_t x) {
    const Run ry = InputsOf(ay, sy, y), rx = InputsOf(ax, sx, x);
    // A missing second tap repeats the first offset (always in bounds) and is skipped by Mix, so
    // an inf or NaN input reaches exactly the outputs its taps reach.
    two_y = ry.count > 1;
    two_x = rx.count > 1;
    wy0 = ry.count > 0 ? BilinearWeights<A>::Axis1(ay.stride, ry.t0) : A(0);
    wy1 = ry.count > 1 ? BilinearWeights<A>::Axis1(ay.stride, ry.t0 + ry.dt) : A(0);
    wx0 = rx.count > 0 ? BilinearWeights<A>::Axis1(ax.stride, rx.t0) : A(0);
    wx1 = rx.count > 1 ? BilinearWeights<A>::Axis1(ax.stride, rx.t0 + rx.dt) : A(0);
    const int64_t iy0 = ry.count > 0 ? ry.i0 : 0, iy1 = ry.count > 1 ? ry.i0 + 1 : iy0;
    const int64_t ix0 = rx.count > 0 ? rx.i0 : 0, ix1 = rx.count > 1 ? rx.i0 + 1 : ix0;
    off00 = s.At(n, iy0, ix0, 0);
    off01 = s.At(n, iy0, ix1, 0);
    off10 = s.At(n, iy1, ix0, 0);
    off11 = s.At(n, iy1, ix1, 0);
  }
  // The bilinear order of operations: Mix4's (below), with the taps known at run time.
  TFUP_HOST_DEVICE A Mix(A v00, A v01, A v10, A v11) const {
    const A col0 = two_y ? wy0 * v00 + wy1 * v10 : wy0 * v00;
    if (!two_x) return wx0 * col0;
    const A col1 = two_y ? wy0 * v01 + wy1 * v11 : wy0 * v01;
    return wx0 * col0 + wx1 * col1;
  }
  TFUP_HOST_DEVICE A Value(const T* in, int64_t coff) const {
    return Mix(ToAcc(in[off00 + coff]), ToAcc(in[off01 + coff]), ToAcc(in[off10 + coff]),
               ToAcc(in[off11 + coff]));
  }
};

// V channels moved as one aligned vector (one 8- or 16-byte load or store).
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// One output coordinate's inputs along an axis of the bilinear forward: i0 and i1 (i1 = i0 when
// there is no second tap) and their weights. The forward reads them from per-axis tables made once
// per launch (TapTableBody) instead of dividing and computing weights per element.
template <typename A, typename I>
struct alignas(16) Taps2 {  // one 16-byte load (float, 32-bit indices)
  I i0, i1;
  A w0, w1;
  TFUP_HOST_DEVICE bool Two() const { return i1 != i0; }
};

// Fills the tables: entries [0, h_out) for y, then [h_out, h_out + w_out) for x, as BilinearPixel
// computes them (the heads' arithmetic: the same weights, the same bits).
template <typename A, typename I>
struct TapTableBody {
  Axis ay, ax;
  Divider sy, sx;
  Taps2<A, I>* table;
  TFUP_HOST_DEVICE void operator()(const Pos& p) const {
    const int64_t total = ay.n_out + ax.n_out;
    for (int64_t o = p.block * p.bx + p.tx; o < total; o += p.grid * p.bx) {
      const bool along_y = o < ay.n_out;
      const Axis& a = along_y ? ay : ax;
      const Run r = InputsOf(a, along_y ? sy : sx, along_y ? o : o - ay.n_out);
      const int64_t i0 = r.count > 0 ? r.i0 : 0, i1 = r.count > 1 ? r.i0 + 1 : i0;
      table[o] = Taps2<A, I>{static_cast<I>(i0), static_cast<I>(i1),
                             r.count > 0 ? BilinearWeights<A>::Axis1(a.stride, r.t0) : A(0),
                             r.count > 1 ? BilinearWeights<A>::Axis1(a.stride, r.t0 + r.dt) : A(0)};
    }
  }
};

// One output element from its four inputs' values, both second taps present or not at compile
// time: the same expressions as BilinearPixel::Mix, the bilinear order of operations (docs/
// DESIGN.md, "The bilinear kernel": each input column along y first, then the two columns along
// x -- as on the CPU, so equal bits everywhere it is used: forward, argmax, loss). A missing
// second tap is skipped, not weighted 0, so an inf or NaN input reaches exactly the outputs its
// taps reach.
template <bool kTwoY, typename A, typename I>
TFUP_HOST_DEVICE inline A Column(const Taps2<A, I>& ty, A v0, A v1) {
  return kTwoY ? ty.w0 * v0 + ty.w1 * v1 : ty.w0 * v0;
}
template <bool kTwoY, bool kTwoX, typename A, typename I>
TFUP_HOST_DEVICE inline A Mix4(const Taps2<A, I>& ty, const Taps2<A, I>& tx, A v00, A v01, A v10, A v11) {
  const A first = tx.w0 * Column<kTwoY>(ty, v00, v10);
  return kTwoX ? first + tx.w1 * Column<kTwoY>(ty, v01, v11) : first;
}

// The bilinear forward's tables and sizes, shared by its two launch shapes.
template <typename T, typename I>
struct BilinearForwardBase {
  using A = typename AccOf<T>::type;
  const Taps2<A, I>* ty_tab;  // h_out entries
  const Taps2<A, I>* tx_tab;  // w_out entries
  I h_in, w_in, h_out, w_out, C;
  const T* in;
  T* out;
};

// NHWC with many channels (ChannelLanes): per position the two tables' entries and four input
// pointers, then the channel loop -- four vector loads, the mix, one vector store -- in one of four
// variants chosen once per position by which second taps exist. V channels per vector (C a
// multiple of V, aligned pointers): fewer instructions per byte, which the write-bound x32
// upsample needs to run at the memory's speed. The channel index counts vectors.
template <typename T, typename I, int V>
struct BilinearChannelsBody : BilinearForwardBase<T, I> {
  using A = typename AccOf<T>::type;
  using W = Vec<T, V>;

  // The channel loop, unrolled: a full warp across channels (the launch runs channel lanes only
  // with at least 128 vectors, so cs is 32), every access at a constant offset from five pointers.
  template <bool kTwoY, bool kTwoX>
  TFUP_HOST_DEVICE void Loop(const Taps2<A, I>& ty, const Taps2<A, I>& tx, const W* p00, const W* p01,
                             const W* p10, const W* p11, W* o, I c0, I c_end) const {
    if (c0 >= c_end) return;  // a lane past the channels
    p00 = Opaque(p00 + c0);
    p01 = Opaque(p01 + c0);
    p10 = Opaque(p10 + c0);
    p11 = Opaque(p11 + c0);
    o = Opaque(o + c0);
    constexpr int kLanes = 32;
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) {
      const I at = I(j * kLanes);
      if (c0 + at >= c_end) break;
      const W a = p00[at], b = p01[at];
      W d = a, e = b;
      if (kTwoY) {
        d = p10[at];
        e = p11[at];
      }
      W r;
      TFUP_UNROLL
      for (int i = 0; i < V; ++i) {
        r.v[i] = Store<T>::From(Mix4<kTwoY, kTwoX>(ty, tx, ToAcc(a.v[i]), ToAcc(b.v[i]), ToAcc(d.v[i]), ToAcc(e.v[i])));
      }
      o[at] = r;
    }
  }
  TFUP_HOST_DEVICE void operator()(I n, I y, I x, I c0, I, I c_end) const {
    const auto& b = *this;
    const Taps2<A, I> ty = b.ty_tab[y], tx = b.tx_tab[x];
    const I row0 = (n * b.h_in + ty.i0) * b.w_in, row1 = (n * b.h_in + ty.i1) * b.w_in;
    const W* in = reinterpret_cast<const W*>(b.in);
    const I cv = b.C / V;
    const W *p00 = in + (row0 + tx.i0) * cv, *p01 = in + (row0 + tx.i1) * cv;
    const W *p10 = in + (row1 + tx.i0) * cv, *p11 = in + (row1 + tx.i1) * cv;
    W* o = reinterpret_cast<W*>(b.out) + ((n * b.h_out + y) * b.w_out + x) * cv;
    if (ty.Two()) {
      if (tx.Two()) return Loop<true, true>(ty, tx, p00, p01, p10, p11, o, c0, c_end);
      return Loop<true, false>(ty, tx, p00, p01, p10, p11, o, c0, c_end);
    }
    if (tx.Two()) return Loop<false, true>(ty, tx, p00, p01, p10, p11, o, c0, c_end);
    Loop<false, false>(ty, tx, p00, p01, p10, p11, o, c0, c_end);
  }
};

// NCHW (a row is one channel's output row) and NHWC (a row is w_out * C elements, in vectors of V
// channels: element e is vector e % (C / V) of position e / (C / V); kOne: a position is one
// vector -- NCHW, or NHWC with C = V -- so element e is position e, no division), by RowRuns, two
// rows y_a, y_b of a plane (or image) at a time: per run each row's y entry and input rows, per
// element the x entry, the loads and the mix. Where both rows read the same two input rows (at an
// even factor every pair but the edges', RowRuns pairing them so), an element's x work and four
// loads serve both rows; otherwise the rows go one after the other.
template <typename T, typename I, bool kOne, int V>
struct BilinearRowsBody : BilinearForwardBase<T, I> {
  using A = typename AccOf<T>::type;
  using W = Vec<T, V>;
  // e -> x (NHWC: with 32-bit indices the launch checks that every row index times C / V is below
  // 2^32, ShortDivider's range)
  typename std::conditional<std::is_same<I, int64_t>::value, Divider, ShortDivider>::type by_cv;

  // One output vector from its inputs' values: Mix4's arithmetic (First: the first column's
  // product; Both: plus the second's, when there is a second tap along x; Out: the vector).
  struct Firsts {  // V accumulator values
    A v[V];
  };
  template <bool kTwoY>
  TFUP_HOST_DEVICE static Firsts First(const Taps2<A, I>& ty, const Taps2<A, I>& tx, const W& v00, const W& v10) {
    Firsts f;
    TFUP_UNROLL
    for (int i = 0; i < V; ++i) f.v[i] = tx.w0 * Column<kTwoY>(ty, ToAcc(v00.v[i]), ToAcc(v10.v[i]));
    return f;
  }
  TFUP_HOST_DEVICE static W Out(const Firsts& f) {
    W w;
    TFUP_UNROLL
    for (int i = 0; i < V; ++i) w.v[i] = Store<T>::From(f.v[i]);
    return w;
  }
  template <bool kTwoY>
  TFUP_HOST_DEVICE static Firsts Both(const Taps2<A, I>& ty, const Taps2<A, I>& tx, const W& v01, const W& v11,
                                      const Firsts& f) {
    Firsts r;
    TFUP_UNROLL
    for (int i = 0; i < V; ++i) r.v[i] = f.v[i] + tx.w1 * Column<kTwoY>(ty, ToAcc(v01.v[i]), ToAcc(v11.v[i]));
    return r;
  }

  // Rows with the same two input rows r0, r1 (kPair: two rows, y entries ta and tb, outputs oa
  // and ob; else row a alone), from element e, kRun elements kRunLanes apart. kFull: all of them
  // inside the row (no bounds test per element).
  template <bool kPair, bool kTwoY, bool kFull>
  TFUP_HOST_DEVICE void Elements(const Taps2<A, I>& ta, const Taps2<A, I>& tb, const W* r0, const W* r1, W* oa,
                                 W* ob, I e, I row_len) const {
    const I cv = kOne ? 1 : this->C / V;
    if (e >= row_len) return;  // a lane past the row
    oa += e;
    ob += e;
    const Taps2<A, I>* tab = this->tx_tab + (kOne ? e : 0);
    // Unrolled whole, vectors of 2-byte types 4 elements at a time (register pressure: unrolled
    // whole they would spill).
    constexpr int kUnroll = sizeof(T) == 2 && V > 1 ? 4 : kRun;
#if defined(__CUDA_ARCH__)
#pragma unroll kUnroll
#endif
    for (int j = 0; j < kRun; ++j, e += kRunLanes) {
      if (!kFull && e >= row_len) break;
      const I x = kOne ? 0 : by_cv.Div(e), c = kOne ? 0 : e - x * cv;
      const Taps2<A, I> tx = tab[kOne ? j * kRunLanes : x];
      const I off = kOne ? tx.i0 : tx.i0 * cv + c;
      const W v00 = r0[off], v10 = kTwoY ? r1[off] : v00;
      const Firsts fa = First<kTwoY>(ta, tx, v00, v10), fb = kPair ? First<kTwoY>(tb, tx, v00, v10) : fa;
      Firsts ra = fa, rb = fb;
      if (tx.Two()) {
        // (the offset from i1 = i0 + 1, not off + cv: one wide multiply-add per address, where
        // the compiler would add a 64-bit cv * sizeof(W) to the first tap's in two halves)
        const I off1 = kOne ? tx.i1 : tx.i1 * cv + c;
        const W v01 = r0[off1], v11 = kTwoY ? r1[off1] : v01;
        ra = Both<kTwoY>(ta, tx, v01, v11, fa);
        if (kPair) rb = Both<kTwoY>(tb, tx, v01, v11, fb);
      }
      oa[j * kRunLanes] = Out(ra);
      if (kPair) ob[j * kRunLanes] = Out(rb);
    }
  }
  template <bool kPair, bool kFull>
  TFUP_HOST_DEVICE void Rows(const Taps2<A, I>& ta, const Taps2<A, I>& tb, I q, W* oa, W* ob, I e, I row_len) const {
    const auto& b = *this;
    const I row_in = kOne ? b.w_in : b.w_in * (b.C / V);  // vectors per input row
    const W* in = reinterpret_cast<const W*>(b.in);
    const W* r0 = Opaque(in + (q * b.h_in + ta.i0) * row_in);
    const W* r1 = Opaque(in + (q * b.h_in + ta.i1) * row_in);
    if (ta.Two()) return Elements<kPair, true, kFull>(ta, tb, r0, r1, oa, ob, e, row_len);
    Elements<kPair, false, kFull>(ta, tb, r0, r1, oa, ob, e, row_len);
  }
  // Rows ya and yb of plane q (yb = ya: that row alone).
  TFUP_HOST_DEVICE void operator()(I q, I ya, I yb, I e, I row_len) const {
    const auto& b = *this;
    const Taps2<A, I> ta = b.ty_tab[ya], tb = b.ty_tab[yb];
    W* const out = reinterpret_cast<W*>(b.out) + q * b.h_out * row_len;
    W *const oa = out + ya * row_len, *const ob = out + yb * row_len;
    const bool full = e + kRunLanes * (kRun - 1) < row_len;
    if (ya != yb && ta.i0 == tb.i0 && ta.i1 == tb.i1) {
      if (full) return Rows<true, true>(ta, tb, q, oa, ob, e, row_len);
      return Rows<true, false>(ta, tb, q, oa, ob, e, row_len);
    }
    if (full) {
      Rows<false, true>(ta, ta, q, oa, oa, e, row_len);
      if (yb != ya) Rows<false, true>(tb, tb, q, ob, ob, e, row_len);
      return;
    }
    Rows<false, false>(ta, ta, q, oa, oa, e, row_len);
    if (yb != ya) Rows<false, false>(tb, tb, q, ob, ob, e, row_len);
  }
};

// The row pairing of RowRuns for the bilinear forward along y: pairs (y, y + 1) from y = -shift,
// shift 0 or 1, whichever gives more pairs whose rows read the same two input rows, counted over
// two periods of the taps (2 * stride rows) away from the top edge where the axis is long enough
// (from its start otherwise). Only the speed depends on it.
inline int PairShift(const Axis& ay) {
  const Divider by(ay.stride);
  const int64_t span = 4 * ay.stride + 2;
  const int64_t begin = ay.n_out >= 2 * ay.stride + span ? 2 * ay.stride : 0;
  const int64_t end = begin + span < ay.n_out ? begin + span : ay.n_out;
  int64_t same[2] = {0, 0};
  for (int shift = 0; shift < 2; ++shift) {
    for (int64_t y = begin + (begin + shift) % 2; y + 1 < end; y += 2) {  // RowRuns' pairs under this shift
      const Run a = InputsOf(ay, by, y), b = InputsOf(ay, by, y + 1);
      same[shift] += a.count == b.count && a.i0 == b.i0;
    }
  }
  return same[1] > same[0] ? 1 : 0;
}

// The inputs [*lo, *hi] (empty when *lo > *hi) whose tap t lands inside the output along an axis:
// 0 <= i * s - p + t < n_out. The filter gradient's column range per tap.
TFUP_HOST_DEVICE inline void InputsOfTap(const Axis& a, int64_t t, int64_t* lo, int64_t* hi) {
  *lo = 0;
  *hi = a.n_in - 1;
  while (*lo <= *hi && *lo * a.stride - a.pad + t < 0) ++*lo;
  while (*hi >= *lo && *hi * a.stride - a.pad + t >= a.n_out) --*hi;
}

// Filter gradient, stage 1: over a space (chunk, ty, tx, c), the sum over one chunk of the
// (n, iy) rows of input[n, iy, ix, c] * output_grad[n, iy*sy - py + ty, ix*sx - px + tx, c].
template <typename T>
struct FilterPartialBody {
  using A = typename AccOf<T>::type;
  Axis ay, ax;
  int64_t C, rows, rows_per_chunk, kx, ky;
  Divider by_h;  // rows -> (n, iy)
  Strides in_s, dy_s;
  const T* in;
  const T* dy;
  A* partial;  // [chunks, ky, kx, C]

  TFUP_HOST_DEVICE void operator()(int64_t chunk, int64_t ty, int64_t tx, int64_t c0,
                                   int64_t cs, int64_t c_end) const {
    int64_t ix_lo, ix_hi;
    InputsOfTap(ax, tx, &ix_lo, &ix_hi);
    const int64_t r0 = chunk * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    const int64_t in_step = cs * in_s.c, dy_step = cs * dy_s.c;
    A acc[kGroupLanes];
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) acc[j] = A(0);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = by_h.Div(r), iy = r - n * ay.n_in;
      const int64_t oy = iy * ay.stride - ay.pad + ty;
      if (oy < 0 || oy >= ay.n_out) continue;
      const T* x_row = in + in_s.At(n, iy, 0, c0);
      const T* dy_row = dy + dy_s.At(n, oy, 0, c0);
      for (int64_t ix = ix_lo; ix <= ix_hi; ++ix) {
        const T* xp = x_row + ix * in_s.x;
        const T* dp = dy_row + (ix * ax.stride - ax.pad + tx) * dy_s.x;
        TFUP_UNROLL
        for (int j = 0; j < kGroupLanes; ++j) {
          if (c0 + j * cs < c_end) acc[j] += A(ToAcc(xp[j * in_step])) * A(ToAcc(dp[j * dy_step]));
        }
      }
    }
    A* out = partial + ((chunk * ky + ty) * kx + tx) * C + c0;
    TFUP_UNROLL
    for (int j = 0; j < kGroupLanes; ++j) {
      if (c0 + j * cs < c_end) out[j * cs] = acc[j];
    }
  }
};

// Stage 1 for NCHW, where a warp across channels would use 4 of each 32-byte sector it loads:
// a warp takes one (chunk, tap, channel), lane l the columns ix = ix_lo + l + 32 m of each row
// (coalesced along x), and writes its own partial: partial[chunk * 32 + l, ky, kx, C].
constexpr int kFilterLanes = 32;
template <typename T>
struct FilterPartialColumnsBody {
  using A = typename AccOf<T>::type;
  Axis ay, ax;
  int64_t C, rows, rows_per_chunk, kx, taps, items;  // items = chunks * taps * C
  Divider by_h, by_c, by_taps, by_kx;  // rows -> (n, iy); items -> (chunk, tap, c); tap -> (ty, tx)
  const T* in;
  const T* dy;
  A* partial;

  TFUP_HOST_DEVICE void operator()(const Pos& p) const {
    const int64_t step = p.grid * p.by;
    for (int64_t i = p.block * p.by + p.ty; i < items; i += step) {
      const QuotRem rc = Split(by_c, i), ct = Split(by_taps, rc.q), yx = Split(by_kx, ct.r);
      const int64_t c = rc.r, chunk = ct.q, ty = yx.q, tx = yx.r;
      int64_t ix_lo, ix_hi;
      InputsOfTap(ax, tx, &ix_lo, &ix_hi);
      const int64_t r0 = chunk * rows_per_chunk;
      const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
      A acc = A(0);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = by_h.Div(r), iy = r - n * ay.n_in;
        const int64_t oy = iy * ay.stride - ay.pad + ty;
        if (oy < 0 || oy >= ay.n_out) continue;
        const T* x_row = in + ((n * C + c) * ay.n_in + iy) * ax.n_in;
        const T* dy_row = dy + ((n * C + c) * ay.n_out + oy) * ax.n_out;
        for (int64_t ix = ix_lo + p.tx; ix <= ix_hi; ix += kFilterLanes) {
          acc += A(ToAcc(x_row[ix])) * A(ToAcc(dy_row[ix * ax.stride - ax.pad + tx]));
        }
      }
      partial[((chunk * kFilterLanes + p.tx) * taps + ct.r) * C + c] = acc;
    }
  }
};

// Stages 2 and 3: a partial-sum array [count, ky, kx, C] reduced along its first dimension in
// consecutive groups of `per` (the last may be shorter), each group in order: stage 2 writes
// [groups, ky, kx, C] partials (A), stage 3 (one group) the filter gradient (T). Two levels of at
// most kFilterGroup terms each: no thread sums more than that, and the order is fixed.
template <typename T, typename Out>
struct FilterReduceBody {
  using A = typename AccOf<T>::type;
  int64_t count, per, taps, C;  // taps = ky * kx
  int64_t kx;
  const A* partial;
  Out* out;
  TFUP_HOST_DEVICE void operator()(int64_t group, int64_t ty, int64_t tx, int64_t c0, int64_t cs,
                                   int64_t c_end) const {
    const int64_t tap = ty * kx + tx;
    const int64_t k0 = group * per, k1 = k0 + per < count ? k0 + per : count;
    for (int64_t c = c0; c < c_end; c += cs) {
      A acc = A(0);
      for (int64_t k = k0; k < k1; ++k) acc += partial[(k * taps + tap) * C + c];
      out[(group * taps + tap) * C + c] = Store<Out>::From(acc);
    }
  }
};

}  // namespace cuda
}  // namespace tfup
