// Non-temporal copies: for outputs larger than the cores' caches, which a plain store would first
// read line by line (and which would not stay cached for their consumer anyway). SSE2's 16-byte
// streaming stores, in every x86-64 build alike (one definition for every instruction-set build
// and the NumPy binding: the fills of the benchmark's floors); a plain copy elsewhere. The kernels
// use their build's widest stores (kernels_impl.h's StreamLines, or straight from registers).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#endif

namespace tfup {

// Copies bytes from src to dst with non-temporal stores; StreamFence() makes them visible to
// other threads.
inline void StreamBytes(void* dst, const void* src, int64_t bytes) {
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  int64_t i = 0;
#if defined(__x86_64__) || defined(__i386__)
  i = static_cast<int64_t>((16 - reinterpret_cast<uintptr_t>(d) % 16) % 16);
  if (i > bytes) i = bytes;
  std::memcpy(d, s, static_cast<size_t>(i));
  for (; i + 16 <= bytes; i += 16) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  }
#endif
  std::memcpy(d + i, s + i, static_cast<size_t>(bytes - i));
}

inline void StreamFence() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_sfence();
#endif
}

}  // namespace tfup
