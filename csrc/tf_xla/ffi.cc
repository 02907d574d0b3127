// The XLA custom-call handlers: one typed-FFI handler per kernel of csrc/cpu/kernel_list.h,
// registered under xla_call::Target(kernel) for XLA:CPU ("Host": the CPU kernel on XLA's intra-op
// thread pool) and, in CUDA builds, for XLA:GPU ("CUDA": the CUDA kernel on XLA's stream). Each
// runs the kernel the TF op runs, with the plan its XLA kernel (tf_xla/kernels.cc) made at compile
// time: element type, geometry and label rule as attributes, the buffers in the kernel's pointer
// order. Only the FFI's public header: XLA's internal FFI headers share its
// namespace and must not meet it.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <utility>

#include <Eigen/Core>

#include "tf_xla/call.h"
#include "xla/ffi/api/ffi.h"
#if GOOGLE_CUDA
#include "cuda/kernels.h"
#endif

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
      try {  // a helper that cannot be scheduled is not needed: the caller drains what is left
        for (int64_t k = std::min(threads, s->chunks - 1); k > 0; --k) pool->Schedule([s] { s->Drain(); });
      } catch (...) {
      }
      s->Drain();
      std::unique_lock<std::mutex> lock(s->mutex);  // every chunk is claimed now: wait for the rest
      s->finished.wait(lock, [&] { return s->done.load(std::memory_order_acquire) == s->chunks; });
    }, fn);
  };
}

// The buffers of a call in the kernel's pointer order, checked against the plan's sizes (the XLA
// kernel checked every shape when it compiled; a buffer that does not match is an error, never
// a crash); `absent` (an output's index, or -1) gets a null pointer.
struct Buffers {
  void* p[8] = {};
  int64_t first_output = -1;  // elements of the first output
};
ffi::Error Collect(Kernel k, ffi::RemainingArgs& args, ffi::RemainingRets& rets,
                   ffi::Span<const int64_t> geometry, ffi::Span<const int64_t> rule,
                   ffi::Span<const int64_t> sizes, int64_t labels, int64_t absent, Buffers* out) {
  const char* name = KernelName(k);
  const size_t n = args.size() + rets.size();
  if (geometry.size() != xla_call::kGeometryInts || rule.size() != xla_call::kRuleInts ||
      sizes.size() != n || static_cast<int>(n) != KernelPointers<float>(k) || rets.size() == 0 ||
      labels < -1 || labels >= static_cast<int64_t>(args.size()) || absent < -1 ||
      absent >= static_cast<int64_t>(rets.size())) {
    return ffi::Error::InvalidArgument(std::string(name) + ": the custom call's attributes do not match its buffers");
  }
  for (size_t i = 0; i < n; ++i) {
    int64_t count = 0;
    if (i < args.size()) {
      auto b = args.get<ffi::AnyBuffer>(i);
      if (!b.has_value()) return b.error();
      out->p[i] = b->untyped_data();
      count = static_cast<int64_t>(b->element_count());
      if (static_cast<int64_t>(i) == labels) {
        const bool narrow = xla_call::RuleFromInts(rule.begin()).narrow;
        if (b->element_type() != (narrow ? ffi::DataType::S32 : ffi::DataType::S64)) {
          return ffi::Error::InvalidArgument(std::string(name) + ": labels must be " + (narrow ? "int32" : "int64"));
        }
      }
    } else {
      const int64_t r = static_cast<int64_t>(i - args.size());
      auto b = rets.get<ffi::AnyBuffer>(r);
      if (!b.has_value()) return b.error();
      out->p[i] = r == absent ? nullptr : (*b)->untyped_data();
      count = static_cast<int64_t>((*b)->element_count());
      if (r == 0) out->first_output = count;
    }
    if (count != sizes[i]) {
      return ffi::Error::InvalidArgument(std::string(name) + ": buffer " + std::to_string(i) + " has " +
                                         std::to_string(count) + " elements, the plan " + std::to_string(sizes[i]));
    }
  }
  return ffi::Error::Success();
}

// The host handler of kernel K: the CPU kernel on XLA's intra-op pool. Label values are checked
// as the CPU op checks them.
template <Kernel K>
ffi::Error HostCall(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t dtype,
                    ffi::Span<const int64_t> geometry, ffi::Span<const int64_t> rule_ints,
                    ffi::Span<const int64_t> sizes, int64_t labels, int64_t absent) {
  const char* name = KernelName(K);
  Buffers b;
  if (ffi::Error e = Collect(K, args, rets, geometry, rule_ints, sizes, labels, absent, &b); e.failure()) return e;
  const Geometry g = xla_call::GeometryFromInts(geometry.begin());
  const LabelRule rule = xla_call::RuleFromInts(rule_ints.begin());
  if (labels >= 0) {
    const std::string bad = CheckLabelValues(LabelMap{b.p[labels], rule.narrow}, sizes[labels], g.c, rule);
    if (!bad.empty()) return ffi::Error::InvalidArgument(bad);
  }
  if (b.first_output == 0) return ffi::Error::Success();
  try {
    const ParallelFor pf = PoolRunner(&pool);
    switch (static_cast<xla_call::DType>(dtype)) {
      case xla_call::DType::kHalf: InvokeKernel<Eigen::half>(K, g, rule, b.p, pf); break;
      case xla_call::DType::kBFloat16: InvokeKernel<Eigen::bfloat16>(K, g, rule, b.p, pf); break;
      case xla_call::DType::kFloat: InvokeKernel<float>(K, g, rule, b.p, pf); break;
      case xla_call::DType::kDouble: InvokeKernel<double>(K, g, rule, b.p, pf); break;
      default: return ffi::Error::InvalidArgument(std::string(name) + ": unknown dtype " + std::to_string(dtype));
    }
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, std::string(name) + ": out of memory for the kernel's scratch");
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string(name) + ": " + e.what());
  }
  return ffi::Error::Success();
}

// A handler's binding after its context: the buffers, then the plan's attributes (tf_xla/call.h).
template <class Binding>
auto WithPlan(Binding&& context) {
  return std::forward<Binding>(context)
      .RemainingArgs()
      .RemainingRets()
      .template Attr<int64_t>("dtype")
      .template Attr<ffi::Span<const int64_t>>("geometry")
      .template Attr<ffi::Span<const int64_t>>("rule")
      .template Attr<ffi::Span<const int64_t>>("sizes")
      .template Attr<int64_t>("labels")
      .template Attr<int64_t>("absent");
}

template <Kernel K>
XLA_FFI_Error* HostHandler(XLA_FFI_CallFrame* frame) {
  static auto* handler = WithPlan(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()).To(HostCall<K>).release();
  return handler->Call(frame);
}

#if GOOGLE_CUDA
// The CUDA handler of kernel K: the CUDA kernel on XLA's stream, its scratch from XLA's
// allocator (stream-ordered, as TF's for the op). Labels live on the device: not checked (an
// out-of-range one gives NaN, as the GPU op).
template <Kernel K>
ffi::Error CudaCall(void* stream, ffi::ScratchAllocator scratch, ffi::RemainingArgs args, ffi::RemainingRets rets,
                    int64_t dtype, ffi::Span<const int64_t> geometry, ffi::Span<const int64_t> rule_ints,
                    ffi::Span<const int64_t> sizes, int64_t labels, int64_t absent) {
  const char* name = KernelName(K);
  Buffers b;
  if (ffi::Error e = Collect(K, args, rets, geometry, rule_ints, sizes, labels, absent, &b); e.failure()) return e;
  if (b.first_output == 0) return ffi::Error::Success();
  if (dtype < 0 || dtype > static_cast<int64_t>(xla_call::DType::kDouble)) {
    return ffi::Error::InvalidArgument(std::string(name) + ": unknown dtype " + std::to_string(dtype));
  }
  const Geometry g = xla_call::GeometryFromInts(geometry.begin());
  const cuda::DType t = static_cast<cuda::DType>(dtype);  // the same order (tf_xla/call.h)
  const int64_t bytes = cuda::OpScratchBytes(name, g, t);
  void* space = nullptr;
  if (bytes > 0) {
    std::optional<void*> got = scratch.Allocate(static_cast<size_t>(bytes), 256);
    if (!got.has_value()) {
      return ffi::Error(ffi::ErrorCode::kResourceExhausted, std::string(name) + ": out of device memory for the kernel's scratch");
    }
    space = *got;
  }
  const std::string err = cuda::RunOp(name, g, t, xla_call::RuleFromInts(rule_ints.begin()), b.p, space, stream);
  return err.empty() ? ffi::Error::Success() : ffi::Error::Internal(err);
}

template <Kernel K>
XLA_FFI_Error* CudaHandler(XLA_FFI_CallFrame* frame) {
  static auto* handler =
      WithPlan(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<void*>>().Ctx<ffi::ScratchAllocator>()).To(CudaCall<K>).release();
  return handler->Call(frame);
}
#endif  // GOOGLE_CUDA

}  // namespace

// Registers every handler with XLA: for the host platform, and for CUDA in CUDA builds; "" or
// what failed.
std::string RegisterXlaHandlers() {
  const XLA_FFI_Api* api = ffi::GetXlaFfiApi();
  std::string failed;
  auto add = [&](Kernel k, const char* platform, XLA_FFI_Handler* handler) {
    if (XLA_FFI_Error* e = ffi::Ffi::RegisterStaticHandler(api, xla_call::Target(k), platform, handler)) {
      failed += xla_call::Target(k) + " (" + platform + "): " + ffi::internal::GetErrorMessage(api, e) + "; ";
      ffi::internal::DestroyError(api, e);
    }
  };
#define TFUP_REGISTER_HANDLER(Name, Params, Args) add(Kernel::k##Name, "Host", HostHandler<Kernel::k##Name>);
  TFUP_KERNELS(TFUP_REGISTER_HANDLER, T)
#undef TFUP_REGISTER_HANDLER
#if GOOGLE_CUDA
  if (cuda::CheckDriver().empty()) {  // as the GPU kernels (tf/registration.h; asked once)
#define TFUP_REGISTER_HANDLER(Name, Params, Args) add(Kernel::k##Name, "CUDA", CudaHandler<Kernel::k##Name>);
    TFUP_KERNELS(TFUP_REGISTER_HANDLER, T)
#undef TFUP_REGISTER_HANDLER
  }
#endif
  return failed;
}

}  // namespace tfup
