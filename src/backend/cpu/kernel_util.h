#pragma once
// Helpers shared by the CPU kernels: argument checks with messages naming the kernel, the
// grain-size rule for going parallel, and per-thread scratch memory. Internal to backend/cpu.
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "core/tensor.h"
#include "core/thread_pool.h"

namespace swiftlet::cpu {

inline void expect_dtype(const char* kernel, const char* arg, const Tensor& t, DType d) {
  SWIFTLET_CHECK(t.dtype() == d, "{}: {} is {}, expected {}", kernel, arg, t.describe(),
                 dtype_name(d));
}
inline void expect_float(const char* kernel, const char* arg, const Tensor& t) {
  SWIFTLET_CHECK(dtype_is_float(t.dtype()), "{}: {} is {}, expected F32, BF16 or F16", kernel, arg,
                 t.describe());
}
inline void expect_shape(const char* kernel, const char* arg, const Tensor& t, const Shape& s) {
  SWIFTLET_CHECK(t.shape() == s, "{}: {} is {}, expected shape {}", kernel, arg, t.describe(),
                 shape_str(s));
}
inline void expect_numel(const char* kernel, const char* arg, const Tensor& t, int64_t n) {
  SWIFTLET_CHECK(t.numel() == n, "{}: {} is {}, expected {} elements", kernel, arg, t.describe(),
                 n);
}

inline float* f32(const Tensor& t) { return static_cast<float*>(t.raw_ptr()); }
inline int32_t* i32(const Tensor& t) { return static_cast<int32_t*>(t.raw_ptr()); }

// Splits [0, n) over the pool when each thread gets at least `grain` items; small jobs run on the
// caller (waking threads costs a few microseconds). The split is a function of n and the pool size.
inline void parallel(ThreadPool& pool, int64_t n, int64_t grain,
                     const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (pool.size() == 1 || n < 2 * grain) {
    fn(0, n);
    return;
  }
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) { fn(b, e); });
}

// Flushes denormal results and operands to zero on the calling thread while in scope (MXCSR FTZ
// and DAZ on x86; elsewhere the thread's mode is left as it is). For kernels whose decays
// underflow: the delta rule's e^{G_i - G_j} and decaying states reach the denormal range, where
// every operation on them costs ~100 cycles (prefill measured 2.8x slower), while what they add
// (below 1.2e-38) is far under the f32 resolution of the results.
class FlushDenormalsScope {
 public:
#if defined(__x86_64__) || defined(__i386__)
  FlushDenormalsScope() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }
  ~FlushDenormalsScope() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#else
  FlushDenormalsScope() {}
#endif
};

// Per-OS-thread scratch buffers (`slot` selects one of a few independent buffers), grown on demand
// and kept for the thread's lifetime so hot kernels do not page-fault fresh memory on every call.
inline float* scratch_floats(int slot, size_t n) {
  struct Buffer {
    float* p = nullptr;
    size_t n = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer buffers[4];
  Buffer& b = buffers[slot];
  if (b.n < n) {
    std::free(b.p);
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    b.p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!b.p) throw std::bad_alloc();
    b.n = n;
  }
  return b.p;
}

}  // namespace swiftlet::cpu
