// The XLA custom-call handlers: one typed-FFI handler per kernel of csrc/cpu/kernel_list.h,
// registered for XLA:CPU ("Host") under xla_call::Target(kernel). Each runs the same CPU kernel
// as the TF op, on XLA's intra-op thread pool, with the plan its XLA kernel (xla/kernels.cc) made
// at compile time: element type, geometry and label rule as attributes, the buffers in the
// kernel's pointer order. Only the FFI's public header: XLA's internal FFI headers share its
// namespace and must not meet it.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include <Eigen/Core>

#include "xla/call.h"
#include "xla/ffi/api/ffi.h"

namespace xla::ffi {
const XLA_FFI_Api* GetXlaFfiApi();  // exported by TF's libraries; its header pulls in XLA's internals
}  // namespace xla::ffi

namespace tfup {
namespace {

namespace ffi = ::xla::ffi;

// A ParallelFor on XLA's pool: the work in chunks that the calling thread and up to
// num_threads helpers claim one at a time. The caller works too and then waits only for chunks
// a running thread has claimed, so a helper still queued (behind this very thread, on a busy
// pool) never holds it up; a helper that starts late finds nothing left and touches only the
// shared state.
struct Split {
  std::atomic<int64_t> next{0}, done{0};
  int64_t total = 0, block = 1, chunks = 0;
  const std::function<void(int64_t, int64_t)>* work = nullptr;  // read only after a claim
  std::mutex mutex;
  std::condition_variable finished;

  void Drain() {
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      (*work)(i * block, std::min(total, (i + 1) * block));
      if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(mutex);
        finished.notify_all();
      }
    }
  }
};

ParallelFor PoolRunner(ffi::ThreadPool* pool) {
  const int64_t threads = pool->num_threads();
  return [pool, threads](int64_t total, int64_t cost, const std::function<void(int64_t, int64_t)>& fn) {
    RunCatching([&](const std::function<void(int64_t, int64_t)>& work) {
      if (total <= 0) return;
      // Chunks of at least ~20k cycles (what TF's sharding asks of a shard), a few per thread.
      const int64_t by_cost = std::max<int64_t>(1, total * std::max<int64_t>(cost, 1) / 20000);
      const int64_t want = std::min({total, by_cost, 4 * (threads + 1)});
      if (threads <= 0 || want < 2) {
        work(0, total);
        return;
      }
      auto s = std::make_shared<Split>();
      s->total = total;
      s->block = (total + want - 1) / want;
      s->chunks = (total + s->block - 1) / s->block;
      s->work = &work;
      for (int64_t k = std::min(threads, s->chunks - 1); k > 0; --k) pool->Schedule([s] { s->Drain(); });
      s->Drain();
      std::unique_lock<std::mutex> lock(s->mutex);  // every chunk is claimed now: wait for the rest
      s->finished.wait(lock, [&] { return s->done.load(std::memory_order_acquire) == s->chunks; });
    }, fn);
  };
}

template <typename T>
void Invoke(Kernel k, const Geometry& g, LabelRule rule, void* const* p, const ParallelFor& pf) {
  InvokeKernel<T>(k, g, rule, p, pf);
}

// The handler of kernel K. The XLA kernel checked every shape when it compiled; what can still
// be wrong (label values, or a buffer that does not match the plan) is an error, never a crash.
template <Kernel K>
ffi::Error Handle(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t dtype,
                  ffi::Span<const int64_t> geometry, ffi::Span<const int64_t> rule_ints,
                  ffi::Span<const int64_t> sizes, int64_t labels, int64_t absent) {
  const char* name = KernelName(K);
  const size_t n = args.size() + rets.size();
  if (geometry.size() != xla_call::kGeometryInts || rule_ints.size() != xla_call::kRuleInts ||
      sizes.size() != n || n > 8) {
    return ffi::Error::InvalidArgument(std::string(name) + ": the custom call's attributes do not match its buffers");
  }
  const Geometry g = xla_call::GeometryFromInts(geometry.begin());
  const LabelRule rule = xla_call::RuleFromInts(rule_ints.begin());
  void* p[8] = {};
  int64_t first_output = -1;
  for (size_t i = 0; i < n; ++i) {
    const bool is_arg = i < args.size();
    int64_t count = 0;
    if (is_arg) {
      auto b = args.get<ffi::AnyBuffer>(i);
      if (!b.has_value()) return b.error();
      p[i] = b->untyped_data();
      count = static_cast<int64_t>(b->element_count());
    } else {
      auto b = rets.get<ffi::AnyBuffer>(i - args.size());
      if (!b.has_value()) return b.error();
      p[i] = static_cast<int64_t>(i - args.size()) == absent ? nullptr : (*b)->untyped_data();
      count = static_cast<int64_t>((*b)->element_count());
      if (first_output < 0) first_output = count;
    }
    if (count != sizes[i]) {
      return ffi::Error::InvalidArgument(std::string(name) + ": buffer " + std::to_string(i) + " has " +
                                         std::to_string(count) + " elements, the plan " + std::to_string(sizes[i]));
    }
  }
  if (labels >= 0 && labels < static_cast<int64_t>(args.size())) {
    const std::string bad = CheckLabelValues(static_cast<const int64_t*>(p[labels]), sizes[labels], g.c, rule);
    if (!bad.empty()) return ffi::Error::InvalidArgument(bad);
  }
  if (first_output == 0) return ffi::Error::Success();
  try {
    const ParallelFor pf = PoolRunner(&pool);
    switch (static_cast<xla_call::DType>(dtype)) {
      case xla_call::DType::kHalf: Invoke<Eigen::half>(K, g, rule, p, pf); break;
      case xla_call::DType::kBFloat16: Invoke<Eigen::bfloat16>(K, g, rule, p, pf); break;
      case xla_call::DType::kFloat: Invoke<float>(K, g, rule, p, pf); break;
      case xla_call::DType::kDouble: Invoke<double>(K, g, rule, p, pf); break;
      default: return ffi::Error::InvalidArgument(std::string(name) + ": unknown dtype " + std::to_string(dtype));
    }
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, std::string(name) + ": out of memory for the kernel's scratch");
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string(name) + ": " + e.what());
  }
  return ffi::Error::Success();
}

template <Kernel K>
XLA_FFI_Error* Handler(XLA_FFI_CallFrame* frame) {
  static auto* handler = ffi::Ffi::Bind()
                             .Ctx<ffi::ThreadPool>()
                             .RemainingArgs()
                             .RemainingRets()
                             .Attr<int64_t>("dtype")
                             .Attr<ffi::Span<const int64_t>>("geometry")
                             .Attr<ffi::Span<const int64_t>>("rule")
                             .Attr<ffi::Span<const int64_t>>("sizes")
                             .Attr<int64_t>("labels")
                             .Attr<int64_t>("absent")
                             .To(Handle<K>)
                             .release();
  return handler->Call(frame);
}

}  // namespace

// Registers every handler with XLA for the host platform; "" or what failed.
std::string RegisterXlaHandlers() {
  const XLA_FFI_Api* api = ffi::GetXlaFfiApi();
  std::string failed;
#define TFUP_REGISTER_HANDLER(Name, Params, Args)                                                  \
  if (XLA_FFI_Error* e = ffi::Ffi::RegisterStaticHandler(api, xla_call::Target(Kernel::k##Name),   \
                                                         "Host", Handler<Kernel::k##Name>)) {      \
    failed += xla_call::Target(Kernel::k##Name) + ": " + ffi::internal::GetErrorMessage(api, e) + "; "; \
    ffi::internal::DestroyError(api, e);                                                           \
  }
  TFUP_KERNELS(TFUP_REGISTER_HANDLER, T)
#undef TFUP_REGISTER_HANDLER
  return failed;
}

}  // namespace tfup
