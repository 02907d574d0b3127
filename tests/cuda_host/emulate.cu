// The CUDA launch sequences of csrc/cuda run on the CPU (HostExec: every block and thread of the
// same grid, one after another), for tests on machines with nvcc and no GPU. Built by
// tests/test_cuda_host.py with nvcc as host code; called through ctypes.
#include <cstring>
#include <string>
#include <vector>

#include "cuda/launch.cuh"

namespace {
std::string last_error;
}

// op: a name of launch.cuh's table (csrc/cpu/kernel_list.h's). dims: n, h, w, c, out_h, out_w, ky,
// kx, sy, sx, padding (0 SAME, 1 VALID), layout (0 NHWC, 1 NCHW), rule.use, rule.value, resize
// (GeometryFromArgs).
// dtype: 0 half, 1 bfloat16, 2 float, 3 double.
extern "C" int tfup_emu_run(const char* op, const int64_t* d, int dtype, void* a, void* b, void* c,
                            void* e, void* f) {
  using namespace tfup;
  using namespace tfup::cuda;
  Geometry g;
  LabelRule rule;
  last_error = GeometryFromArgs(d, &g, &rule);
  if (last_error.empty()) last_error = CheckOpGeometry(op, g);
  if (!last_error.empty()) return -1;
  const Op<HostExec>* found = FindOp<HostExec>(op);
  if (found == nullptr) {
    last_error = std::string("unknown op ") + op;
    return -1;
  }
  const DType t = static_cast<DType>(dtype);
  std::vector<char> scratch(found->scratch_bytes(g, t) + 8);
  void* const pointers[] = {a, b, c, e, f};
  found->run(HostExec{}, OpCall{g, t, rule, pointers, scratch.data()});
  return 0;
}

extern "C" const char* tfup_emu_error() { return last_error.c_str(); }

// The divider against plain division, over the values given.
extern "C" int64_t tfup_emu_divide(int64_t n, int64_t d) {
  return tfup::cuda::Divider(d).Div(n);
}

// The 32-bit division (int32 indices: n >= 0, d < 2^31).
extern "C" int32_t tfup_emu_divide32(int32_t n, int64_t d) {
  return tfup::cuda::Divider(d).Div(n);
}

// The element count below which a launch takes int32 indices (Fits32): 0 in the 64-bit build.
extern "C" int64_t tfup_emu_index32_limit() { return TFUP_INDEX32_LIMIT; }

// The one-multiply division (n < 2^32 / d).
extern "C" int32_t tfup_emu_divide_short(int32_t n, int64_t d) {
  return tfup::cuda::ShortDivider(d).Div(n);
}

// The row pairing shift of the bilinear forward's row runs along an axis.
extern "C" int tfup_emu_pair_shift(int64_t n_in, int64_t n_out, int64_t stride, int64_t k, int64_t pad) {
  tfup::Axis a;
  a.n_in = n_in, a.n_out = n_out, a.stride = stride, a.k = k, a.pad = pad;
  return tfup::cuda::PairShift(a);
}

// The argmax's cells along one axis of n inputs upsampled by f: the number of outputs whose cell's
// span does not hold them, plus the outputs over all spans that are not exactly n * f, plus the
// spans longer than f (a cell must fit its sub-blocks).
extern "C" int64_t tfup_emu_check_cells(int64_t n, int64_t f) {
  using namespace tfup;
  using namespace tfup::cuda;
  const int64_t k = 2 * f - f % 2, d[] = {1, n, 1, 1, n * f, f, k, k, f, f, 0, 0, 0, 0, 0};
  Geometry g;
  LabelRule rule;
  if (!GeometryFromArgs(d, &g, &rule).empty()) return -1;
  const Axis& a = g.y;
  const Divider s(a.stride);
  int64_t bad = 0, covered = 0;
  for (int64_t o = 0; o < a.n_out; ++o) {
    const Span span = CellSpan(a, CellOf(a, s, o));
    bad += !(span.first <= o && o < span.end);
  }
  for (int64_t c = 0; c < 2 * a.n_in; ++c) {
    const Span span = CellSpan(a, c);
    const int64_t len = span.end > span.first ? span.end - span.first : 0;
    covered += len;
    bad += len > f;
  }
  return bad + (covered != a.n_out);
}

// geometry.h's rules, as binding.cu exports them.
extern "C" int64_t tfup_emu_bilinear_kernel_size(int64_t factor) {
  return tfup::BilinearKernelSize(factor);
}
extern "C" int64_t tfup_emu_default_output_size(int64_t n, int64_t k, int64_t s, int valid) {
  return tfup::DefaultOutputSize(n, k, s, valid ? tfup::Padding::kValid : tfup::Padding::kSame);
}
