// The kernels' ParallelFor on TensorFlow's own intra-op pool (no private threads), split by
// TF's cost model.
#pragma once

#include "cpu/kernels.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

#include <exception>
#include <new>
#include <string>

namespace tfup {

inline ParallelFor CpuRunner(tensorflow::OpKernelContext* ctx) {
  const auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  return [workers](int64_t total, int64_t cost, const std::function<void(int64_t, int64_t)>& fn) {
    RunCatching([&](const std::function<void(int64_t, int64_t)>& w) {
      tensorflow::Shard(workers->num_threads, workers->workers, total, cost, w);
    }, fn);
  };
}

// Runs a CPU kernel: an exception from it (scratch it could not allocate, on any thread) becomes
// the op's error instead of ending the process.
template <class Fn>
void RunGuarded(tensorflow::OpKernelContext* ctx, const char* op, Fn&& fn) {
  try {
    fn();
  } catch (const std::bad_alloc&) {
    ctx->CtxFailure(__FILE__, __LINE__, absl::ResourceExhaustedError(
        std::string(op) + ": out of memory for the kernel's scratch"));
  } catch (const std::exception& e) {
    ctx->CtxFailure(__FILE__, __LINE__, absl::InternalError(std::string(op) + ": " + e.what()));
  }
}

}  // namespace tfup
