#pragma once
// The f32 GEMM library, OpenBLAS, loaded at run time so swiftlet decides how it starts:
//  - single-threaded (OPENBLAS_NUM_THREADS=1 while it loads): the CPU device splits every GEMM
//    over its own ThreadPool and calls sgemm once per pool thread, so BLAS uses exactly the pool's
//    thread count and no second set of threads competes with the pool for cores;
//  - with its AVX-512 (SkylakeX) kernels on every CPU with AVX-512F/BW/DQ/VL/CD: Debian's OpenBLAS
//    0.3.21 falls back to Haswell or SSE3 kernels on newer CPUs (2-6x slower) unless
//    OPENBLAS_CORETYPE names a core before the library initialises. An OPENBLAS_CORETYPE already
//    in the environment is kept when it names an AVX-512 core or the CPU has no AVX-512, and
//    otherwise overridden (info().how says so): images that pin it to Haswell for other programs
//    would halve swiftlet's GEMM speed.
// The environment is restored after loading (at the first CpuDevice, before other threads run).
// Chosen by measurement on a 2-core AVX-512 machine (AMD Zen 5) at (512, 1024..3072, 1024):
// this setup 440-485 GFLOP/s with two threads, OpenBLAS's own Haswell pick ~240, oneDNN 2.6's
// sgemm 355-370 and its matmul primitive ~440 (which would add a dependency and an OpenMP pool).
#include <cstdint>
#include <string>

namespace swiftlet::blas {

struct BlasInfo {
  std::string library;  // "OpenBLAS 0.3.21"
  std::string config;   // openblas_get_config(): build options
  std::string core;     // the kernel set in use: "SkylakeX", "Haswell", "neoversen1", ...
  std::string how;      // why this core: detected by OpenBLAS, forced by swiftlet, or by the user
};

// Loads the library on first use; throws Error when it cannot be found.
const BlasInfo& info();

// Single-threaded row-major C = alpha op(A) op(B) + beta C. Thread-safe: the CPU device calls it
// from every pool thread at once on disjoint blocks of C. beta == 0 ignores C's old contents.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace swiftlet::blas
