// Every op as a sequence of launches, written once over an executor: DeviceExec (kernels.cu)
// launches them on a stream, HostExec runs the same grid on the CPU (tests/cuda_host).
#pragma once

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "cuda/heads.cuh"
#include "cuda/kernels.h"
#include "cuda/resize.cuh"

namespace tfup {
namespace cuda {

template <class Fn>
auto WithType(DType t, const Fn& fn) {
  switch (t) {
    case DType::kHalf: return fn(__half{});
    case DType::kBFloat16: return fn(__nv_bfloat16{});
    case DType::kFloat: return fn(float{});
    default: return fn(double{});
  }
}
inline int64_t AccBytes(DType t) { return t == DType::kDouble ? 8 : 4; }

inline Strides InputStrides(const Geometry& g) {
  return StridesOf(g.layout, g.y.n_in, g.x.n_in, g.c);
}
inline Strides OutputStrides(const Geometry& g) {
  return StridesOf(g.layout, g.y.n_out, g.x.n_out, g.c);
}
// The axis of a one-axis pass: n in, n out, weight 1.
inline Axis Identity(int64_t n) { return Axis{n, n, 1, 1, 0}; }

// Channels per vector for the NHWC forward: 4 or 2 when C and both pointers allow 8- or 16-byte
// accesses, else 1.
inline int VectorWidth(const Geometry& g, int64_t bytes, const void* a, const void* b) {
  if (g.layout != Layout::kNHWC) return 1;
  for (int v = 4; v >= 2; v /= 2) {
    const uintptr_t align = static_cast<uintptr_t>(bytes * v);
    if (bytes * v <= 16 && g.c % v == 0 && reinterpret_cast<uintptr_t>(a) % align == 0 &&
        reinterpret_cast<uintptr_t>(b) % align == 0) {
      return v;
    }
  }
  return 1;
}

// The bilinear forward: the two axes' tap tables (scratch), then one of two launch shapes. NHWC
// with at least 4 channel vectors per lane (C / V >= 128) runs ChannelLanes (no per-element
// division or table entry); NCHW and NHWC with fewer channels run RowRuns (every lane busy
// whatever C; the per-row work shared by 16 elements, the per-element work by two rows where
// they read the same input rows). 32-bit indices where both tensors are
// small enough; the 64-bit path (huge tensors) runs RowRuns, one channel per element.
inline int64_t TapTableBytes(const Geometry& g) {
  return (g.y.n_out + g.x.n_out) * 32;  // Taps2 of at most 32 bytes (scratch is 256-byte aligned)
}
template <typename T>
struct ZeroBody {  // out[0, count) = 0
  T* out;
  int64_t count;
  TFUP_HOST_DEVICE void operator()(const Pos& p) const {
    for (int64_t i = p.block * p.bx + p.tx; i < count; i += p.grid * p.bx) out[i] = Store<T>::From(0.0f);
  }
};
constexpr int64_t kChannelLanesMin = 128;
static_assert(kChannelLanesMin > 16, "BilinearChannelsBody's loop steps by 32: a full warp across channels, "
              "which ChannelLanes gives above 16 channel vectors");

template <typename T, typename I, class Exec>
void BilinearForwardTyped(const Exec& ex, const Geometry& g, const T* in, T* out, void* scratch) {
  using A = typename AccOf<T>::type;
  Taps2<A, I>* table = static_cast<Taps2<A, I>*>(scratch);
  const int64_t coords = g.y.n_out + g.x.n_out;
  ex(Shape::Of(256, 1, coords, 256),
     TapTableBody<A, I>{g.y, g.x, Divider(g.y.stride), Divider(g.x.stride), table});
  const BilinearForwardBase<T, I> base{table, table + g.y.n_out, static_cast<I>(g.y.n_in), static_cast<I>(g.x.n_in),
                                       static_cast<I>(g.y.n_out), static_cast<I>(g.x.n_out), static_cast<I>(g.c), in, out};
  Shape s;
  const int V = std::is_same<I, int64_t>::value ? 1 : VectorWidth(g, sizeof(T), in, out);
  const auto channels = [&](auto v) {
    constexpr int kV = decltype(v)::value;
    using Body = BilinearChannelsBody<T, I, kV>;
    const auto k = ChannelLanes<Body, I>::Make(Body{base}, g.n * g.y.n_out * g.x.n_out, g.x.n_out, g.y.n_out, g.c / kV, &s);
    ex(s, k);
  };
  // Row runs; kOne: a position is one vector (NCHW, or NHWC with C = V).
  const auto rows = [&](auto one, auto v) {
    constexpr bool kOne = decltype(one)::value;
    constexpr int kV = decltype(v)::value;
    using Body = BilinearRowsBody<T, I, kOne, kV>;
    const int64_t row_len = g.x.n_out * (kOne ? 1 : g.c / kV);
    const Body body{base, decltype(Body::by_cv)(g.c / kV)};
    const int64_t planes = g.n * (g.layout == Layout::kNCHW ? g.c : 1);
    const auto k = RowRuns<Body, I>::Make(body, planes, g.y.n_out, PairShift(g.y), row_len, &s);
    ex(s, k);
  };
  using One = std::integral_constant<int, 1>;
  if (g.layout == Layout::kNCHW || g.c == V) {
    if constexpr (!std::is_same<I, int64_t>::value) {
      if (V == 4) return rows(std::true_type{}, std::integral_constant<int, 4>{});
      if (V == 2) return rows(std::true_type{}, std::integral_constant<int, 2>{});
    }
    return rows(std::true_type{}, One{});
  }
  if constexpr (!std::is_same<I, int64_t>::value) {
    const bool wide = g.c / V >= kChannelLanesMin;
    if (V == 4) return wide ? channels(std::integral_constant<int, 4>{}) : rows(std::false_type{}, std::integral_constant<int, 4>{});
    if (V == 2) return wide ? channels(std::integral_constant<int, 2>{}) : rows(std::false_type{}, std::integral_constant<int, 2>{});
    if (wide) return channels(One{});
  }
  rows(std::false_type{}, One{});
}

template <class Exec>
void RunBilinearForward(const Exec& ex, const Geometry& g, DType t, const void* in, void* out, void* scratch) {
  if (g.OutputElements() == 0) return;
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    const T* src = static_cast<const T*>(in);
    T* dst = static_cast<T*>(out);
    if (g.y.n_in == 0 || g.x.n_in == 0) {  // (VALID) no input reaches the output: zeros
      return ex(Shape::Of(256, 1, g.OutputElements(), 256), ZeroBody<T>{dst, g.OutputElements()});
    }
    // int32 where the tensors allow it and, for NHWC row runs (C / V below kChannelLanesMin), the
    // row's indices times C / V stay in ShortDivider's range (the int64 path divides in 64 bits).
    const int64_t cv = g.c / VectorWidth(g, sizeof(T), in, out);
    const bool rows_divide = g.layout == Layout::kNHWC && cv < kChannelLanesMin;
    if (Fits32(g.InputElements()) && Fits32(g.OutputElements()) &&
        (!rows_divide || ShortDivider::Fits(g.x.n_out * cv, cv))) {
      return BilinearForwardTyped<T, int32_t>(ex, g, src, dst, scratch);
    }
    BilinearForwardTyped<T, int64_t>(ex, g, src, dst, scratch);
  });
}

// Separable, in two gathers: along x into a [n, h_out, w_in, c] scratch (each output-gradient
// element is read once from memory, its second reader finds it in cache), then along y. The
// weights come from a table at the scratch's end (WeightTableBody).
inline int64_t BilinearRowsBytes(const Geometry& g, DType t) {
  return (g.n * g.y.n_out * g.x.n_in * g.c * AccBytes(t) + 255) / 256 * 256;
}
inline int64_t BilinearScratchBytes(const Geometry& g, DType t) {
  return BilinearRowsBytes(g, t) + (g.y.k + g.x.k) * AccBytes(t);
}

// Runs fn(int32_t{}) where every tensor of `elements` and both axes fit 32-bit indices (Fits32,
// AxisFits32), else fn(int64_t{}): the gathers' index type.
template <class Fn>
void WithIndexType(const Geometry& g, std::initializer_list<int64_t> elements, const Fn& fn) {
  bool small = AxisFits32(g.y) && AxisFits32(g.x);
  for (const int64_t e : elements) small = small && Fits32(e);
  if (small) return fn(int32_t{});
  fn(int64_t{});
}

template <class Exec>
void RunBilinearBackpropInput(const Exec& ex, const Geometry& g, DType t, const void* dy,
                              void* dx, void* scratch) {
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccOf<T>::type;
    const Strides mid = StridesOf(g.layout, g.y.n_out, g.x.n_in, g.c);
    A* rows = static_cast<A*>(scratch);
    A* weights = reinterpret_cast<A*>(static_cast<char*>(scratch) + BilinearRowsBytes(g, t));
    ex(Shape::Of(256, 1, g.y.k + g.x.k, 256), WeightTableBody<A>{g.y.stride, g.y.k, g.x.stride, g.x.k, weights});
    const GatherBody<T, A, AxisTableWeights<A, false>, true> along_x{
        Identity(g.y.n_out), g.x, Divider(), Divider(), g.c, OutputStrides(g), mid,
        static_cast<const T*>(dy), rows, AxisTableWeights<A, false>{weights + g.y.k}};
    const GatherBody<A, T, AxisTableWeights<A, true>, true> along_y{
        g.y, Identity(g.x.n_in), Divider(), Divider(), g.c, mid, InputStrides(g), rows,
        static_cast<T*>(dx), AxisTableWeights<A, true>{weights}};
    WithIndexType(g, {g.OutputElements(), g.InputElements(), g.n * g.y.n_out * g.x.n_in * g.c}, [&](auto index) {
      using I = decltype(index);
      ForEach<I>(ex, g.layout, g.n, g.y.n_out, g.x.n_in, g.c, along_x);
      ForEach<I>(ex, g.layout, g.n, g.y.n_in, g.x.n_in, g.c, along_y);
    });
  });
}

// The forward gathers each output from its inputs; the input gradient (kAdjoint) each input from
// the outputs it reaches, with the same taps.
template <bool kAdjoint, class Exec>
void RunDepthwiseGather(const Exec& ex, const Geometry& g, DType t, const void* src,
                        const void* filter, void* dst) {
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    const Divider sy = kAdjoint ? Divider() : Divider(g.y.stride);
    const Divider sx = kAdjoint ? Divider() : Divider(g.x.stride);
    const GatherBody<T, T, FilterWeights<T>, kAdjoint> b{
        g.y, g.x, sy, sx, g.c, kAdjoint ? OutputStrides(g) : InputStrides(g),
        kAdjoint ? InputStrides(g) : OutputStrides(g), static_cast<const T*>(src),
        static_cast<T*>(dst), FilterWeights<T>{static_cast<const T*>(filter), g.x.k, g.c}};
    WithIndexType(g, {g.OutputElements(), g.InputElements(), g.y.k * g.x.k * g.c}, [&](auto index) {
      ForEach<decltype(index)>(ex, g.layout, g.n, kAdjoint ? g.y.n_in : g.y.n_out,
                               kAdjoint ? g.x.n_in : g.x.n_out, g.c, b);
    });
  });
}

// Filter gradient: the (n, iy) rows are cut into chunks so that there are ~2^20 threads whatever
// the filter size; each thread sums one chunk for one (tap, channel) -- NCHW: one lane's columns
// of it, 32 partials per chunk -- then the partials (at most kFilterGroup^2) are added in two
// levels of at most kFilterGroup, in order. Fixed chunking (from the shapes only): the same bits
// on every run and every card.
constexpr int64_t kFilterGroup = 256;
struct FilterChunks {
  int64_t rows, per, count, lanes, partials, groups;  // partials = count * lanes
  explicit FilterChunks(const Geometry& g) {
    rows = g.n * g.y.n_in;
    lanes = g.layout == Layout::kNCHW ? kFilterLanes : 1;
    const int64_t items = g.y.k * g.x.k * g.c * lanes;
    int64_t want = items > 0 ? ((int64_t{1} << 20) + items - 1) / items : 1;
    if (want > kFilterGroup * kFilterGroup / lanes) want = kFilterGroup * kFilterGroup / lanes;
    if (want > rows) want = rows;
    if (want < 1) want = 1;
    per = (rows + want - 1) / want;
    count = per > 0 ? (rows + per - 1) / per : 1;
    partials = count * lanes;
    groups = (partials + kFilterGroup - 1) / kFilterGroup;
  }
};
inline int64_t FilterScratchBytes(const Geometry& g, DType t) {
  const FilterChunks chunks(g);
  return (chunks.partials + chunks.groups) * g.y.k * g.x.k * g.c * AccBytes(t);
}
template <class Exec>
void RunDepthwiseBackpropFilter(const Exec& ex, const Geometry& g, DType t, const void* in,
                                const void* dy, void* dw, void* scratch) {
  const FilterChunks chunks(g);
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccOf<T>::type;
    const int64_t taps = g.y.k * g.x.k;
    A* partial = static_cast<A*>(scratch);  // [partials, ky, kx, C], then the groups' [groups, ky, kx, C]
    A* sums = partial + chunks.partials * taps * g.c;
    const Divider by_h(g.y.n_in > 0 ? g.y.n_in : 1);
    if (g.layout == Layout::kNCHW) {
      const int64_t items = chunks.count * taps * g.c;
      const FilterPartialColumnsBody<T> part{g.y, g.x, g.c, chunks.rows, chunks.per, g.x.k, taps, items,
                                             by_h, Divider(g.c), Divider(taps), Divider(g.x.k),
                                             static_cast<const T*>(in), static_cast<const T*>(dy), partial};
      ex(Shape::Of(kFilterLanes, 256 / kFilterLanes, items, 256 / kFilterLanes), part);
    } else {
      const FilterPartialBody<T> part{g.y, g.x, g.c, chunks.rows, chunks.per, g.x.k, g.y.k, by_h,
                                      InputStrides(g), OutputStrides(g), static_cast<const T*>(in),
                                      static_cast<const T*>(dy), partial};
      ForEachNHWC(ex, chunks.count, g.y.k, g.x.k, g.c, part);
    }
    const FilterReduceBody<T, A> level1{chunks.partials, kFilterGroup, taps, g.c, g.x.k, partial, sums};
    ForEachNHWC(ex, chunks.groups, g.y.k, g.x.k, g.c, level1);
    const FilterReduceBody<T, T> level2{chunks.groups, chunks.groups, taps, g.c, g.x.k, sums, static_cast<T*>(dw)};
    ForEachNHWC(ex, 1, g.y.k, g.x.k, g.c, level2);
  });
}

template <typename T>
HeadBase<T> MakeHead(const Geometry& g, const void* logits) {
  return HeadBase<T>{g.y, g.x, Divider(g.y.stride), Divider(g.x.stride), g.c,
                     StridesOf(Layout::kNHWC, g.y.n_in, g.x.n_in, g.c),
                     static_cast<const T*>(logits)};
}

// Pass 1's class masks (per sub-block, n x 2h SubBlocks x 2w SubBlocks of them, a bit per class),
// then its cells' statistics (4 per mask word) and its sub-blocks' best smallest corner values
// (1 per mask word).
struct ArgmaxScratch {
  int64_t masks, stats, lows;  // bytes of each, each a multiple of 8
  ArgmaxScratch(const Geometry& g, DType t) {
    const int64_t words = MaskWords(g.c), acc = AccBytes(t);
    const int64_t subs = CheckedMul(CheckedMul(g.n, CheckedMul(2 * g.y.n_in, SubBlocks(g.y))),
                                    CheckedMul(2 * g.x.n_in, SubBlocks(g.x)));
    const int64_t cells = CheckedMul(g.n, CheckedMul(2 * g.y.n_in, 2 * g.x.n_in));
    masks = CheckedMul(subs, words * 8);
    stats = CheckedMul(cells, words * 4 * acc);
    lows = CheckedMul(subs, words * acc);
    lows = lows < 0 ? -1 : (lows + 7) / 8 * 8;
  }
  int64_t Total() const {
    if (masks < 0 || stats < 0 || lows < 0 || masks > INT64_MAX / 4 || stats > INT64_MAX / 4 || lows > INT64_MAX / 4) {
      return INT64_MAX;  // too large: the allocation fails and says so
    }
    return masks + stats + lows;
  }
};
inline int64_t ArgmaxScratchBytes(const Geometry& g, DType t) { return ArgmaxScratch(g, t).Total(); }
template <class Exec>
void RunUpsampleArgmax(const Exec& ex, const Geometry& g, DType t, const void* logits,
                       int64_t* labels, void* scores, void* scratch) {
  if (g.c == 0) return;
  const ArgmaxScratch sizes(g, t);
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccOf<T>::type;
    char* base = static_cast<char*>(scratch);
    uint64_t* masks = reinterpret_cast<uint64_t*>(base);
    const ArgmaxPass1<T> pass1{MakeHead<T>(g, logits), masks, reinterpret_cast<A*>(base + sizes.masks),
                               reinterpret_cast<A*>(base + sizes.masks + sizes.stats)};
    const int64_t words = MaskWords(g.c), sub_h = 2 * g.y.n_in * SubBlocks(g.y), sub_w = 2 * g.x.n_in * SubBlocks(g.x);
    ForEachNHWC(ex, g.n, 2 * g.y.n_in, 2 * g.x.n_in, words, ArgmaxPass1Body<T, 0>{pass1});
    ForEachNHWC(ex, g.n, sub_h, sub_w, words, ArgmaxPass1Body<T, 1>{pass1});
    ForEachNHWC(ex, g.n, sub_h, sub_w, words, ArgmaxPass1Body<T, 2>{pass1});
    const ArgmaxBody<T> b{MakeHead<T>(g, logits), masks, labels, static_cast<T*>(scores)};
    ForEachNHWC(ex, g.n, g.y.n_out, g.x.n_out, 1, b);
  });
}

template <class Exec>
void RunUpsampleCrossEntropy(const Exec& ex, const Geometry& g, DType t, const void* logits,
                             LabelMap labels, LabelRule rule, void* loss, double* stats) {
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    const CrossEntropyBody<T> b{MakeHead<T>(g, logits), labels, rule, static_cast<T*>(loss), stats};
    ForEachNHWC(ex, g.n, g.y.n_out, g.x.n_out, 1, b);
  });
}

template <class Exec>
void RunUpsampleCrossEntropyGrad(const Exec& ex, const Geometry& g, DType t, const void* logits,
                                 LabelMap labels, LabelRule rule, const double* stats,
                                 const void* loss_grad, void* grad) {
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    const CrossEntropyGradBody<T> b{MakeHead<T>(g, logits), labels, rule, stats,
                                    static_cast<const T*>(loss_grad), static_cast<T*>(grad)};
    ForEachNHWC(ex, g.n, g.y.n_in, g.x.n_in, g.c, b);
  });
}

// Resize: the forward through ForEach (channel lanes, ColumnRuns or ElementLanes by layout,
// channels and index type); the gradient, the two
// axes' output ranges per input index (tables at the start of the scratch), then the gather along
// y into the rest of the scratch ([n, h_in, w_out, c] accumulators), then along x (the CPU
// kernel's order).
template <class Exec>
void RunResizeBilinear(const Exec& ex, const Geometry& g, DType t, const void* in, void* out) {
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    const ResizeForwardBody<T> b{g.y, g.x, g.resize, ResizeScale(g.y.n_in, g.y.n_out, g.resize),
                                 ResizeScale(g.x.n_in, g.x.n_out, g.resize), InputStrides(g),
                                 OutputStrides(g), static_cast<const T*>(in), static_cast<float*>(out)};
    WithIndexType(g, {g.OutputElements(), g.InputElements()}, [&](auto index) {
      ForEach<decltype(index)>(ex, g.layout, g.n, g.y.n_out, g.x.n_out, g.c, b);
    });
  });
}

inline int64_t ResizeTableBytes(const Geometry& g) {
  return (2 * (g.y.n_in + g.x.n_in) * 8 + 255) / 256 * 256;
}
inline int64_t ResizeScratchBytes(const Geometry& g, DType t) {
  return ResizeTableBytes(g) + g.n * g.y.n_in * g.x.n_out * g.c * AccBytes(t);
}
// Each axis' output range per input index ([first, end)), computed into the scratch's tables.
struct ResizeRanges {
  int64_t *first_y, *end_y, *first_x, *end_x;
  float sy, sx;
};
template <class Exec>
ResizeRanges RunResizeRanges(const Exec& ex, const Geometry& g, void* scratch) {
  int64_t* tables = static_cast<int64_t*>(scratch);
  ResizeRanges r{tables, tables + g.y.n_in, tables + 2 * g.y.n_in, tables + 2 * g.y.n_in + g.x.n_in,
                 ResizeScale(g.y.n_in, g.y.n_out, g.resize), ResizeScale(g.x.n_in, g.x.n_out, g.resize)};
  ex(Shape::Of(256, 1, g.y.n_in, 256), ResizeRangeBody{g.y.n_in, g.y.n_out, g.resize, r.sy, r.first_y, r.end_y});
  ex(Shape::Of(256, 1, g.x.n_in, 256), ResizeRangeBody{g.x.n_in, g.x.n_out, g.resize, r.sx, r.first_x, r.end_x});
  return r;
}

template <class Exec>
void RunResizeBilinearBackpropInput(const Exec& ex, const Geometry& g, DType t, const void* dy,
                                    void* dx, void* scratch) {
  const ResizeRanges r = RunResizeRanges(ex, g, scratch);
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccOf<T>::type;
    A* rows = reinterpret_cast<A*>(static_cast<char*>(scratch) + ResizeTableBytes(g));
    const Strides mid = StridesOf(g.layout, g.y.n_in, g.x.n_out, g.c);
    const ResizeGatherBody<float, A, A> along_y{false, g.y.n_in, g.resize, r.sy, r.first_y, r.end_y,
                                               OutputStrides(g), mid, static_cast<const float*>(dy), rows};
    const ResizeGatherBody<A, T, A> along_x{true, g.x.n_in, g.resize, r.sx, r.first_x, r.end_x,
                                           mid, InputStrides(g), rows, static_cast<T*>(dx)};
    WithIndexType(g, {g.OutputElements(), g.InputElements(), g.n * g.y.n_in * g.x.n_out * g.c}, [&](auto index) {
      using I = decltype(index);
      ForEach<I>(ex, g.layout, g.n, g.y.n_in, g.x.n_out, g.c, along_y);
      ForEach<I>(ex, g.layout, g.n, g.y.n_in, g.x.n_in, g.c, along_x);
    });
  });
}

template <typename T>
ResizeHeadBase<T> MakeResizeHead(const Geometry& g, const void* logits) {
  return ResizeHeadBase<T>{g.y, g.x, g.resize, ResizeScale(g.y.n_in, g.y.n_out, g.resize),
                           ResizeScale(g.x.n_in, g.x.n_out, g.resize), g.c,
                           StridesOf(Layout::kNHWC, g.y.n_in, g.x.n_in, g.c), static_cast<const T*>(logits)};
}

template <class Exec>
void RunResizeArgmax(const Exec& ex, const Geometry& g, DType t, const void* logits, int64_t* labels,
                     void* scores) {
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    const ResizeArgmaxBody<T> b{MakeResizeHead<T>(g, logits), labels, static_cast<float*>(scores)};
    ForEachNHWC(ex, g.n, g.y.n_out, g.x.n_out, 1, b);
  });
}

template <class Exec>
void RunResizeCrossEntropy(const Exec& ex, const Geometry& g, DType t, const void* logits,
                           LabelMap labels, LabelRule rule, void* loss, double* stats) {
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    const ResizeCrossEntropyBody<T> b{MakeResizeHead<T>(g, logits), labels, rule,
                                      static_cast<float*>(loss), stats};
    ForEachNHWC(ex, g.n, g.y.n_out, g.x.n_out, 1, b);
  });
}

template <class Exec>
void RunResizeCrossEntropyGrad(const Exec& ex, const Geometry& g, DType t, const void* logits,
                               LabelMap labels, LabelRule rule, const double* stats,
                               const void* loss_grad, void* grad, void* scratch) {
  const ResizeRanges r = RunResizeRanges(ex, g, scratch);
  WithType(t, [&](auto tag) {
    using T = decltype(tag);
    const ResizeCrossEntropyGradBody<T> b{MakeResizeHead<T>(g, logits), r.first_y, r.end_y, r.first_x, r.end_x,
                                          labels, rule, stats, static_cast<const float*>(loss_grad),
                                          static_cast<T*>(grad)};
    ForEachNHWC(ex, g.n, g.y.n_in, g.x.n_in, g.c, b);
  });
}
inline int64_t ResizeHeadScratchBytes(const Geometry& g, DType) { return ResizeTableBytes(g); }

// The op table: every op by its name in csrc/cpu/kernel_list.h, with the scratch it needs and its
// launch sequence, the pointers in the kernel list's order. The only list of CUDA ops: the TF op
// kernels (tf/backends.h) and the C ABI (binding.cu) reach them through RunOp / OpScratchBytes
// (kernels.cu), the CPU emulation (tests/cuda_host/emulate.cu) through FindOp<HostExec>.
struct OpCall {
  const Geometry& g;
  DType t;
  LabelRule rule;
  void* const* p;  // the op's arrays, in the kernel list's order
  void* scratch;   // OpScratchBytes of device memory
  LabelMap Labels() const { return {p[1], rule.narrow}; }  // the loss ops' labels (array 1)
};
template <class Exec>
struct Op {
  const char* name;
  int64_t (*scratch_bytes)(const Geometry&, DType);
  void (*run)(const Exec&, const OpCall&);
};
inline int64_t NoScratch(const Geometry&, DType) { return 0; }

template <class Exec>
const Op<Exec>* FindOp(const char* name) {
  using C = const OpCall&;
  using E = const Exec&;
  static const Op<Exec> ops[] = {
      {"BilinearForward", [](const Geometry& g, DType) { return TapTableBytes(g); },
       [](E ex, C c) { RunBilinearForward(ex, c.g, c.t, c.p[0], c.p[1], c.scratch); }},
      {"BilinearBackpropInput", BilinearScratchBytes,
       [](E ex, C c) { RunBilinearBackpropInput(ex, c.g, c.t, c.p[0], c.p[1], c.scratch); }},
      {"DepthwiseForward", NoScratch,
       [](E ex, C c) { RunDepthwiseGather<false>(ex, c.g, c.t, c.p[0], c.p[1], c.p[2]); }},
      {"DepthwiseBackpropInput", NoScratch,
       [](E ex, C c) { RunDepthwiseGather<true>(ex, c.g, c.t, c.p[0], c.p[1], c.p[2]); }},
      {"DepthwiseBackpropFilter", FilterScratchBytes,
       [](E ex, C c) { RunDepthwiseBackpropFilter(ex, c.g, c.t, c.p[0], c.p[1], c.p[2], c.scratch); }},
      {"ResizeBilinear", NoScratch,
       [](E ex, C c) { RunResizeBilinear(ex, c.g, c.t, c.p[0], c.p[1]); }},
      {"ResizeBilinearBackpropInput", ResizeScratchBytes,
       [](E ex, C c) { RunResizeBilinearBackpropInput(ex, c.g, c.t, c.p[0], c.p[1], c.scratch); }},
      {"ResizeArgmax", NoScratch,
       [](E ex, C c) { RunResizeArgmax(ex, c.g, c.t, c.p[0], static_cast<int64_t*>(c.p[1]), c.p[2]); }},
      {"ResizeSoftmaxCrossEntropy", NoScratch,
       [](E ex, C c) {
         RunResizeCrossEntropy(ex, c.g, c.t, c.p[0], c.Labels(), c.rule, c.p[2],
                               static_cast<double*>(c.p[3]));
       }},
      {"ResizeSoftmaxCrossEntropyGrad", ResizeHeadScratchBytes,
       [](E ex, C c) {
         RunResizeCrossEntropyGrad(ex, c.g, c.t, c.p[0], c.Labels(), c.rule,
                                   static_cast<const double*>(c.p[2]), c.p[3], c.p[4], c.scratch);
       }},
      {"ResizeSoftmaxCrossEntropyWithGrad", ResizeHeadScratchBytes,
       [](E ex, C c) {  // the loss, then (logits_grad not null) its gradient for a loss gradient of 1
         RunResizeCrossEntropy(ex, c.g, c.t, c.p[0], c.Labels(), c.rule, c.p[2], static_cast<double*>(c.p[3]));
         if (c.p[4] != nullptr) {
           RunResizeCrossEntropyGrad(ex, c.g, c.t, c.p[0], c.Labels(), c.rule, static_cast<const double*>(c.p[3]),
                                     nullptr, c.p[4], c.scratch);
         }
       }},
      {"UpsampleArgmax", ArgmaxScratchBytes,
       [](E ex, C c) {
         RunUpsampleArgmax(ex, c.g, c.t, c.p[0], static_cast<int64_t*>(c.p[1]), c.p[2], c.scratch);
       }},
      {"UpsampleSoftmaxCrossEntropy", NoScratch,
       [](E ex, C c) {
         RunUpsampleCrossEntropy(ex, c.g, c.t, c.p[0], c.Labels(), c.rule,
                                 c.p[2], static_cast<double*>(c.p[3]));
       }},
      {"UpsampleSoftmaxCrossEntropyGrad", NoScratch,
       [](E ex, C c) {
         RunUpsampleCrossEntropyGrad(ex, c.g, c.t, c.p[0], c.Labels(),
                                     c.rule, static_cast<const double*>(c.p[2]), c.p[3], c.p[4]);
       }},
      {"UpsampleSoftmaxCrossEntropyWithGrad", NoScratch,
       [](E ex, C c) {  // the loss, then (logits_grad not null) its gradient for a loss gradient of 1
         RunUpsampleCrossEntropy(ex, c.g, c.t, c.p[0], c.Labels(), c.rule, c.p[2], static_cast<double*>(c.p[3]));
         if (c.p[4] != nullptr) {
           RunUpsampleCrossEntropyGrad(ex, c.g, c.t, c.p[0], c.Labels(), c.rule, static_cast<const double*>(c.p[3]),
                                       nullptr, c.p[4]);
         }
       }},
  };
  for (const Op<Exec>& op : ops) {
    if (std::strcmp(op.name, name) == 0) return &op;
  }
  return nullptr;
}

}  // namespace cuda
}  // namespace tfup
