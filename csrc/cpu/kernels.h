// CPU kernels of the per-channel transposed convolution and the bilinear upsample.
// Raw pointers, sizes from Geometry, work split through the caller's ParallelFor (TF's intra-op
// pool in the op, a few std::threads in the NumPy binding). Every kernel writes each output
// element from exactly one place, in a fixed order: results do not depend on the thread count.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <string>

#include "cpu/kernel_list.h"
#include "geometry.h"

namespace tfup {

// Runs work(begin, end) over a partition of [0, total); cost_per_unit is a rough cycle count per
// unit that lets the runner decide how finely to split.
using ParallelFor = std::function<void(int64_t total, int64_t cost_per_unit,
                                       const std::function<void(int64_t, int64_t)>& work)>;

// For the runners: calls split(w), where w forwards to work but catches what work throws (a
// std::bad_alloc of its scratch, say) in whichever thread runs it, so nothing escapes into a
// thread pool (which would end the process). The first exception is rethrown here once split has
// returned, for the caller to turn into an error; units not yet started are then skipped.
template <class Split>
void RunCatching(Split&& split, const std::function<void(int64_t, int64_t)>& work) {
  std::mutex mutex;
  std::exception_ptr first;
  std::atomic<bool> failed{false};
  split([&](int64_t begin, int64_t end) {
    if (failed.load(std::memory_order_relaxed)) return;
    try {
      work(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!first) first = std::current_exception();
      failed.store(true, std::memory_order_relaxed);
    }
  });
  if (first) std::rethrow_exception(first);
}

// The kernels of kernel_list.h: template <typename T> void DepthwiseForward(const Geometry& g,
// const T* input, const T* filter, T* output, const ParallelFor& pf), and so on.
TFUP_KERNELS(TFUP_DECLARE_KERNEL, T)

// Which build of the kernels runs on this CPU: "avx512", "avx2" or "baseline".
const char* KernelIsa();

// Asks the kernel to back a large, freshly allocated buffer with transparent huge pages before it
// is first written (the forwards do, for their output). A x32 upsample writes ~1.4 GB into new memory; with 4 KB pages the page
// faults cost several times the writing itself (NumPy does the same for its large arrays).
// A hint only: does nothing where unsupported or for small buffers.
void PreferHugePages(void* data, int64_t bytes);

// The benchmark's write floor: n floats set to value on every core (pf), in 16 KB blocks, with
// non-temporal stores (`stream`, what the kernels use for large outputs) or plain ones.
void FillFloats(float* data, int64_t n, float value, bool stream, const ParallelFor& pf);

// Outputs larger than this many bytes are written with non-temporal stores: the L2 caches of all
// cores together, at most the last-level cache (sysconf, read once; 8 MiB where unknown, at least
// 1 MiB); TFUPSAMPLE_STREAM_BYTES (bytes) overrides it (the tests stream small outputs with it).
int64_t StreamThresholdBytes();

// Whether the x pass of the input gradients that read their output gradient from memory (the
// bilinear one's; the resize gradient's x pass reads a row of sums in the cache and always takes
// blocks) takes a run of output pixels (which all read the same two input columns) pixel by
// pixel, each pixel's channels in one pass with the two columns' sums in L1, where a pixel spans
// more than one channel block -- rather than block by block, each block's
// sums in registers over the whole run. On AMD CPUs (Zen 4 measured), whose prefetchers serve one
// sequential stream far better than a run's pixels read a block at a time; elsewhere blocks
// (Intel Xeon measured). TFUPSAMPLE_X_PASS=pixels|blocks overrides it (the tests compare both).
// Either way each sum adds its pixels in ascending order: the same bits.
bool XPassByPixel();

// The machine's logical cores (at least 1): the kernels size their units of work by it (a few per
// core), TensorFlow's intra-op pool having as many threads by default.
int64_t CoreCount();

// Geometry of a bilinear upsample by `factor` of an [n, h, w, c] input (SAME, output h*f, w*f).
// Returns "" or the reason it cannot exist (overflow).
std::string MakeBilinearGeometry(int64_t n, int64_t h, int64_t w, int64_t c, int64_t factor,
                                 Layout layout, Geometry* g);

// Geometry of a depthwise transposed convolution; "" or the reason the arguments are inconsistent.
std::string MakeDepthwiseGeometry(int64_t n, int64_t h, int64_t w, int64_t c, int64_t out_h,
                                  int64_t out_w, int64_t ky, int64_t kx, int64_t sy, int64_t sx,
                                  Padding padding, Layout layout, Geometry* g);

}  // namespace tfup
