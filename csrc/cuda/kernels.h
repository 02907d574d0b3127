// The CUDA kernels' entry points: raw device pointers, a Geometry, a dtype tag and the caller's
// stream (a cudaStream_t passed as void*, so that this header needs neither CUDA nor TF). Each
// returns "" or the CUDA error. Argument checking is the caller's (the TF op kernels, the C ABI of
// binding.cu): these trust the geometry.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "geometry.h"

namespace tfup {
namespace cuda {

enum class DType { kHalf, kBFloat16, kFloat, kDouble };

// The flat argument list of the framework-free bindings (the C ABI of binding.cu, the CPU emulation):
// n, h, w, c, out_h, out_w, ky, kx, sy, sx, valid, nchw, use_ignore, ignore_label, resize (0: the
// transposed convolution; 1, 2, 3: a resize with half-pixel centres, aligned corners, neither),
// label smoothing (the bits of a double in [0, 1]), narrow labels (1: int32, 0: int64), uniform
// loss gradient (1: loss_grad[0] for every pixel, as XLA may pass it).
// Fills g and rule; returns "" or why the sizes are inconsistent.
constexpr int kArgCount = 18;
inline std::string GeometryFromArgs(const int64_t* d, Geometry* g, LabelRule* rule) {
  double smoothing;
  std::memcpy(&smoothing, &d[15], sizeof smoothing);
  const std::string bad = CheckLabelSmoothing(smoothing);
  if (!bad.empty()) return bad;
  *rule = LabelRule{d[12] != 0, d[13], smoothing, d[16] != 0, d[17] != 0};
  if (d[14] != 0) {
    if (d[14] < 0 || d[14] > 3) return "resize must be 0, 1, 2 or 3, got " + std::to_string(d[14]);
    const Resize mode = d[14] == 1 ? Resize::kHalfPixel
                                   : (d[14] == 2 ? Resize::kAlignCorners : Resize::kAsymmetric);
    return MakeResizeGeometry(d[0], d[1], d[2], d[3], d[4], d[5], mode,
                              d[11] ? Layout::kNCHW : Layout::kNHWC, g);
  }
  if (d[0] < 0 || d[1] < 0 || d[2] < 0 || d[3] < 0) return "input dimensions must be non-negative";
  g->n = d[0];
  g->c = d[3];
  g->layout = d[11] ? Layout::kNCHW : Layout::kNHWC;
  const Padding pad = d[10] ? Padding::kValid : Padding::kSame;
  std::string err = MakeAxis(d[1], d[4], d[6], d[8], pad, &g->y);
  if (!err.empty()) return "height: " + err;
  err = MakeAxis(d[2], d[5], d[7], d[9], pad, &g->x);
  if (!err.empty()) return "width: " + err;
  const int64_t in = CheckedMul(CheckedMul(CheckedMul(g->n, g->y.n_in), g->x.n_in), g->c);
  const int64_t out = CheckedMul(CheckedMul(CheckedMul(g->n, g->y.n_out), g->x.n_out), g->c);
  if (in < 0 || out < 0) return "the tensors would have more elements than int64 can index";
  return "";
}

// Whether op (a kernel list name) takes the geometry g: the Resize* ops a resize, the others not.
inline std::string CheckOpGeometry(const std::string& op, const Geometry& g) {
  const bool resize_op = op.rfind("Resize", 0) == 0;
  if (resize_op == (g.resize != Resize::kNone)) return "";
  return op + (resize_op ? " needs a resize geometry (resize 1, 2 or 3)"
                         : " takes no resize geometry (resize must be 0)");
}

// Whether a call's arrays can be used together: types[k] of array k is -1 (absent), 0 (not known
// to CUDA: plain host memory), 1 (pinned host memory), 2 (device memory, on devices[k]) or 3
// (managed memory). All present arrays must be device or managed memory, the device ones on one
// device; *device gets it (-1 when none is device memory). "" or why not.
inline std::string CheckDevices(const int* types, const int* devices, int n, int* device) {
  int first = -1;
  for (int k = 0; k < n; ++k) {
    if (types[k] == -1 || types[k] == 3) continue;
    if (types[k] != 2) return "array " + std::to_string(k) + " is not GPU memory";
    if (first < 0) {
      first = k;
    } else if (devices[k] != devices[first]) {
      return "array " + std::to_string(k) + " is on GPU " + std::to_string(devices[k]) + " but array " +
             std::to_string(first) + " on GPU " + std::to_string(devices[first]) +
             ": every array must be on the same GPU";
    }
  }
  *device = first < 0 ? -1 : devices[first];
  return "";
}

// "" when this machine's driver can run the kernels (or has no driver: then there is no GPU
// either), else why not -- the driver's CUDA version, the compiling toolkit's, and the fix.
// The kernels' cubins need a driver of the toolkit's CUDA major version or newer. Asked once.
std::string CheckDriver();

// The ops of launch.cuh's table, by their names in csrc/cpu/kernel_list.h ("BilinearForward", ...).
// Device scratch op needs (bytes; any 256-byte alignment), or -1 when there is no op of that name.
int64_t OpScratchBytes(const char* op, const Geometry& g, DType t);
// Launches op on stream (a cudaStream_t): pointers are its arrays in the kernel list's order,
// scratch OpScratchBytes of device memory. "" or the error, naming the op.
std::string RunOp(const char* op, const Geometry& g, DType t, LabelRule rule,
                  void* const* pointers, void* scratch, void* stream);

}  // namespace cuda
}  // namespace tfup
