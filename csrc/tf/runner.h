// The kernels' ParallelFor on TensorFlow's own intra-op pool (no private threads), split by
// TF's cost model.
#pragma once

#include "cpu/kernels.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tfup {

inline ParallelFor CpuRunner(tensorflow::OpKernelContext* ctx) {
  const auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  return [workers](int64_t total, int64_t cost, const std::function<void(int64_t, int64_t)>& fn) {
    tensorflow::Shard(workers->num_threads, workers->workers, total, cost, fn);
  };
}

}  // namespace tfup
