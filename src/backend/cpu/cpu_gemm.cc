// CpuDevice::gemm. Three paths, chosen by shape and weight dtype:
//  - small M (decode: M <= 32 for x W^T, M <= 8 for x W): hand-written kernels that stream B
//    once, split over N, reading the 2-byte weights directly. bf16 weights of x W^T use bf16 dot
//    products where the CPU has AVX512_BF16 (A rounded to bf16, f32 sums; see gemv_nt_tile_bf16),
//    else even/odd f32 pairs; f16 (and bf16 of x W) are widened to f32 for FMA. Every row of C is
//    summed in the same order whatever M is, so a row's result does not depend on the batch;
//  - f32 B: OpenBLAS sgemm, one single-threaded call per pool thread on a block of C;
//  - bf16/f16 B: each thread converts panels of its columns of B to f32 and runs sgemm on them.
//    A stays f32 (no activation rounding) and this measures as fast as f32 weights (conversion is
//    ~1% of the work at M = 512). A bf16 x bf16 product (AVX512_BF16) would round A to bf16; it
//    runs at half the f32 peak on Intel CPUs without AMX and at twice it on AMD Zen 5 (oneDNN 2.6:
//    ~1000 vs ~470 GFLOP/s on 2 cores), a possible opt-in mode for bf16 prefill, not a default.
#include <algorithm>
#include <climits>
#include <cstring>

#include "backend/cpu/blas.h"
#include "backend/cpu/cpu_device.h"
#include "backend/cpu/cpu_info.h"
#include "backend/cpu/kernel_util.h"
#include "backend/cpu/simd.h"

namespace swiftlet {

using namespace cpu;  // NOLINT: the kernel helpers
namespace s = simd;
constexpr int W = s::kWidth;

namespace {

// Rows of A at or below which the GEMV kernels run instead of BLAS: for y = x W^T (decode of a
// batch of sequences; measured faster than BLAS up to M = 32 with bf16 and f32 weights) and for
// x W.
constexpr int64_t kSmallM = 32;
constexpr int64_t kSmallMNoTrans = 8;
constexpr int64_t kPanelFloats = 1 << 20;  // f32 elements of one converted B panel (4 MiB)
constexpr double kFlopsPerThread = 4e6;    // below this much work per thread a GEMM runs serially
constexpr int kRowsB = W == 16 ? 4 : 2;    // rows of B per GEMV tile (accumulators fit registers)
// Up to this many rows of A, the GEMV reads B one row at a time: one sequential stream per thread,
// which the hardware prefetchers follow best (measured from DRAM, Qwen3-0.6B's weights, 2
// threads: +14% at M = 1 and +25% at M = 4 with bf16 weights, +9% at M = 1 with f32, against
// tiles of kRowsB interleaved rows). Above it, tiles reuse each load of A for kRowsB rows of B,
// which wins once the dot products, not the reads, set the pace (M = 8: 37 vs 31 GB/s).
constexpr int64_t kOneRowM = 4;

// The tiles below index small fixed-size arrays of vectors in loops GCC does not unroll at -O2;
// unrolled, the arrays live in registers instead of on the stack (measured 3x on the decode GEMV).
#define SWIFTLET_UNROLL _Pragma("GCC unroll 16")

// Reduces acc[m][j] into C[m, n + j] = alpha * sum + beta * C.
template <int MT, int NT>
inline void store_tile(const s::V (&acc)[MT][NT], float* c, int64_t ldc, int64_t n, float alpha,
                       float beta) {
  SWIFTLET_UNROLL
  for (int m = 0; m < MT; ++m) {
    SWIFTLET_UNROLL
    for (int j = 0; j < NT; ++j) {
      float v = alpha * s::reduce_add(acc[m][j]);
      float& out = c[m * ldc + n + j];
      out = beta == 0.0f ? v : v + beta * out;
    }
  }
}

// C[m, n + j] = alpha * sum_k A[m, k] B[n + j, k] (+ beta C) for m < MT, j < NT; A [., K] f32,
// B [., K] of dtype D. The NT rows of B are loaded once and used for all MT rows of A.
template <DType D, int MT, int NT>
void gemv_nt_tile(const float* a, int64_t K, const void* b, int64_t n, float* c, int64_t ldc,
                  float alpha, float beta) {
  s::V acc[MT][NT];
  s::set_zero(acc);
  // The next tile's rows are prefetched while this one streams: the hardware prefetchers lose
  // track of several interleaved rows in one page (measured 4 GB/s instead of 20 from DRAM).
  const char* next = static_cast<const char*>(b) + (n + NT) * K * int64_t(dtype_size(D));
  const int64_t row_bytes = K * int64_t(dtype_size(D));
  int64_t k = 0;
  for (; k + W <= K; k += W) {
    s::V bv[NT];
    SWIFTLET_UNROLL
    for (int j = 0; j < NT; ++j) {
      __builtin_prefetch(next + j * row_bytes + k * int64_t(dtype_size(D)), 0, 3);
      bv[j] = s::load_as<D>(b, (n + j) * K + k);
    }
    SWIFTLET_UNROLL
    for (int m = 0; m < MT; ++m) {
      s::V av = s::load(a + m * K + k);
      SWIFTLET_UNROLL
      for (int j = 0; j < NT; ++j) acc[m][j] = s::fma(av, bv[j], acc[m][j]);
    }
  }
  if (k < K) {
    int len = int(K - k);
    s::V bv[NT];
    SWIFTLET_UNROLL
    for (int j = 0; j < NT; ++j) bv[j] = s::load_partial_as<D>(b, (n + j) * K + k, len);
    SWIFTLET_UNROLL
    for (int m = 0; m < MT; ++m) {
      s::V av = s::load_partial(a + m * K + k, len);
      SWIFTLET_UNROLL
      for (int j = 0; j < NT; ++j) acc[m][j] = s::fma(av, bv[j], acc[m][j]);
    }
  }
  store_tile<MT, NT>(acc, c, ldc, n, alpha, beta);
}

// Calls fn(std::integral_constant<int, MT>{}, m) for the row blocks [m, m + MT) of M rows, MT <= 4.
template <class Fn>
inline void over_row_blocks(int64_t M, Fn&& fn) {
  for (int64_t m = 0; m < M; m += 4) {
    switch (std::min<int64_t>(4, M - m)) {
      case 1:
        fn(std::integral_constant<int, 1>{}, m);
        break;
      case 2:
        fn(std::integral_constant<int, 2>{}, m);
        break;
      case 3:
        fn(std::integral_constant<int, 3>{}, m);
        break;
      default:
        fn(std::integral_constant<int, 4>{}, m);
        break;
    }
  }
}

// bf16 weights at small M. Both variants read 2W weights of a row per step with one plain load
// and take A packed once per call (row stride kp = K rounded up to 2W, zero-padded):
//  - with AVX512_BF16, A is rounded to bf16 (round to nearest even) and each step is one bf16 dot
//    product per (row of A, row of B): exact products summed in f32, as llama.cpp and PyTorch's
//    bf16 matmuls do. Measured on AMD EPYC, 2 threads, M = 4, weights in cache: 600 vs 340
//    GFLOP/s for the f32 pair variant; from DRAM, memory-bound up to M = 8;
//  - otherwise A stays f32, reordered per block of 2W columns as W even then W odd columns, and
//    the weights are split into even/odd f32 vectors with a shift and a mask
//    (simd::load_bf16_pairs).
inline int64_t packed_bf16_stride(int64_t K) { return (K + 2 * W - 1) / (2 * W) * (2 * W); }

#if defined(SWIFTLET_SIMD_BF16_DOT)
using PackedA = uint16_t;
using ABlock = s::Bf16x2;  // 2W values of A
using BBlock = s::Bf16x2;  // 2W weights of one row

// out[m, :] = bf16(op(A)[m, :]); op(A) is [M, K] of A with leading dimension lda.
void pack_bf16_a(const float* a, bool trans_a, int64_t lda, int64_t M, int64_t K, PackedA* out) {
  const int64_t kp = packed_bf16_stride(K);
  float* row = scratch_floats(2, size_t(kp));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < kp; ++k)
      row[k] = k < K ? (trans_a ? a[k * lda + m] : a[m * lda + k]) : 0.0f;
    for (int64_t k = 0; k < kp; k += W) s::store_bf16(out + m * kp + k, s::load(row + k));
  }
}
inline ABlock load_a_block(const PackedA* p) { return s::load_bf16x2(p); }
inline BBlock load_b_block(const uint16_t* p) { return s::load_bf16x2(p); }
inline BBlock load_b_block_partial(const uint16_t* p, int n) {
  return s::load_bf16x2_partial(p, n);
}
inline s::V multiply_add(s::V acc, const ABlock& a, const BBlock& b) {
  return s::dot_bf16x2(acc, a, b);
}
#else
using PackedA = float;
struct ABlock {
  s::V even, odd;
};
using BBlock = ABlock;

// out[m, :] = op(A)[m, :] with each block of 2W columns reordered as its W even columns, then its
// W odd ones; op(A) is [M, K] of A with leading dimension lda.
void pack_bf16_a(const float* a, bool trans_a, int64_t lda, int64_t M, int64_t K, PackedA* out) {
  const int64_t kp = packed_bf16_stride(K);
  for (int64_t m = 0; m < M; ++m) {
    float* o = out + m * kp;
    for (int64_t k = 0; k < kp; ++k) {
      int64_t block = k / (2 * W), i = k % (2 * W);
      int64_t dst = block * 2 * W + (i % 2) * W + i / 2;
      o[dst] = k < K ? (trans_a ? a[k * lda + m] : a[m * lda + k]) : 0.0f;
    }
  }
}
inline ABlock load_a_block(const PackedA* p) { return {s::load(p), s::load(p + W)}; }
inline BBlock load_b_block(const uint16_t* p) {
  BBlock b;
  s::load_bf16_pairs(p, b.even, b.odd);
  return b;
}
inline BBlock load_b_block_partial(const uint16_t* p, int n) {
  BBlock b;
  s::load_bf16_pairs_partial(p, n, b.even, b.odd);
  return b;
}
inline s::V multiply_add(s::V acc, const ABlock& a, const BBlock& b) {
  return s::fma(a.even, b.even, s::fma(a.odd, b.odd, acc));
}
#endif

// C[m, n + j] (m < MT, j < NT) from A packed by pack_bf16_a (row stride kp) and bf16 rows of B,
// 2W columns per step.
template <int MT, int NT>
void gemv_nt_tile_bf16(const PackedA* ap, int64_t kp, int64_t K, const uint16_t* b, int64_t n,
                       float* c, int64_t ldc, float alpha, float beta) {
  s::V acc[MT][NT];
  s::set_zero(acc);
  const uint16_t* next = b + (n + NT) * K;  // the next tile's rows, prefetched as in gemv_nt_tile
  int64_t k = 0;
  auto step = [&](const BBlock(&bv)[NT]) {
    SWIFTLET_UNROLL
    for (int m = 0; m < MT; ++m) {
      ABlock av = load_a_block(ap + m * kp + k);
      SWIFTLET_UNROLL
      for (int j = 0; j < NT; ++j) acc[m][j] = multiply_add(acc[m][j], av, bv[j]);
    }
  };
  for (; k + 2 * W <= K; k += 2 * W) {
    BBlock bv[NT];
    SWIFTLET_UNROLL
    for (int j = 0; j < NT; ++j) {
      __builtin_prefetch(next + j * K + k, 0, 3);
      bv[j] = load_b_block(b + (n + j) * K + k);
    }
    step(bv);
  }
  if (k < K) {
    BBlock bv[NT];
    SWIFTLET_UNROLL
    for (int j = 0; j < NT; ++j) bv[j] = load_b_block_partial(b + (n + j) * K + k, int(K - k));
    step(bv);
  }
  store_tile<MT, NT>(acc, c, ldc, n, alpha, beta);
}

// The bf16 decode matmul over rows [n0, n1) of B, with A packed by pack_bf16_a.
void gemv_nt_bf16(const PackedA* ap, int64_t M, int64_t K, const uint16_t* b, int64_t n0,
                  int64_t n1, float* c, int64_t ldc, float alpha, float beta) {
  const int64_t kp = packed_bf16_stride(K);
  auto rows = [&](auto nt, int64_t n) {
    over_row_blocks(M, [&](auto mt, int64_t m) {
      gemv_nt_tile_bf16<decltype(mt)::value, decltype(nt)::value>(ap + m * kp, kp, K, b, n,
                                                                  c + m * ldc, ldc, alpha, beta);
    });
  };
  int64_t n = n0;
  if (M > kOneRowM)
    for (; n + kRowsB <= n1; n += kRowsB) rows(std::integral_constant<int, kRowsB>{}, n);
  for (; n < n1; ++n) rows(std::integral_constant<int, 1>{}, n);
}

template <DType D, int NT>
void gemv_nt_rows(const float* a, int64_t M, int64_t K, const void* b, int64_t n, float* c,
                  int64_t ldc, float alpha, float beta) {
  over_row_blocks(M, [&](auto mt, int64_t m) {
    gemv_nt_tile<D, decltype(mt)::value, NT>(a + m * K, K, b, n, c + m * ldc, ldc, alpha, beta);
  });
}

// C = alpha A B^T + beta C for rows [n0, n1) of B [N, K]: the decode matmul y = x W^T.
template <DType D>
void gemv_nt(const float* a, int64_t M, int64_t K, const void* b, int64_t n0, int64_t n1, float* c,
             int64_t ldc, float alpha, float beta) {
  int64_t n = n0;
  if (M > kOneRowM)
    for (; n + kRowsB <= n1; n += kRowsB)
      gemv_nt_rows<D, kRowsB>(a, M, K, b, n, c, ldc, alpha, beta);
  for (; n < n1; ++n) gemv_nt_rows<D, 1>(a, M, K, b, n, c, ldc, alpha, beta);
}

// C[m, col + j W ...] = alpha * sum_k A[m, k] B[k, col ...] (+ beta C) for m < MT over CV column
// vectors of B [K, N]; `len` is the element count of the last vector (W except at the edge).
template <DType D, int MT, int CV>
void gemv_nn_tile(const float* a, int64_t K, const void* b, int64_t N, int64_t col, int len,
                  float* c, int64_t ldc, float alpha, float beta) {
  s::V acc[MT][CV];
  s::set_zero(acc);
  for (int64_t k = 0; k < K; ++k) {
    s::V bv[CV];
    SWIFTLET_UNROLL
    for (int j = 0; j < CV; ++j)
      bv[j] = (j == CV - 1 && len < W) ? s::load_partial_as<D>(b, k * N + col + j * W, len)
                                       : s::load_as<D>(b, k * N + col + j * W);
    SWIFTLET_UNROLL
    for (int m = 0; m < MT; ++m) {
      s::V av = s::set1(a[m * K + k]);
      SWIFTLET_UNROLL
      for (int j = 0; j < CV; ++j) acc[m][j] = s::fma(av, bv[j], acc[m][j]);
    }
  }
  s::V va = s::set1(alpha), vb = s::set1(beta);
  SWIFTLET_UNROLL
  for (int m = 0; m < MT; ++m) SWIFTLET_UNROLL
  for (int j = 0; j < CV; ++j) {
    float* out = c + m * ldc + col + j * W;
    int n = j == CV - 1 ? len : W;
    s::V v = s::mul(va, acc[m][j]);
    if (beta != 0.0f) v = s::fma(vb, s::load_partial(out, n), v);
    s::store_partial(out, v, n);
  }
}

template <DType D, int CV>
void gemv_nn_cols(const float* a, int64_t M, int64_t K, const void* b, int64_t N, int64_t col,
                  int len, float* c, int64_t ldc, float alpha, float beta) {
  over_row_blocks(M, [&](auto mt, int64_t m) {
    gemv_nn_tile<D, decltype(mt)::value, CV>(a + m * K, K, b, N, col, len, c + m * ldc, ldc, alpha,
                                             beta);
  });
}

// C = alpha A B + beta C over column vectors [v0, v1) of B [K, N] (dX = dY W at small M).
template <DType D>
void gemv_nn(const float* a, int64_t M, int64_t K, const void* b, int64_t N, int64_t v0, int64_t v1,
             float* c, int64_t ldc, float alpha, float beta) {
  constexpr int kCV = W == 16 ? 4 : 2;
  int64_t v = v0;
  for (; v + kCV <= v1 && (v + kCV) * W <= N; v += kCV)
    gemv_nn_cols<D, kCV>(a, M, K, b, N, v * W, W, c, ldc, alpha, beta);
  for (; v < v1; ++v) {
    int len = int(std::min<int64_t>(W, N - v * W));
    gemv_nn_cols<D, 1>(a, M, K, b, N, v * W, len, c, ldc, alpha, beta);
  }
}

// dst[r, :] = f32(src[r, c0 : c0 + cols]) for r < rows; src has row stride ld (elements).
template <DType D>
void convert_block(float* dst, const void* src, int64_t rows, int64_t ld, int64_t c0,
                   int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* d = dst + r * cols;
    int64_t base = r * ld + c0, i = 0;
    for (; i + W <= cols; i += W) s::store(d + i, s::load_as<D>(src, base + i));
    if (i < cols)
      s::store_partial(d + i, s::load_partial_as<D>(src, base + i, int(cols - i)), int(cols - i));
  }
}

bool overlaps(const Tensor& x, const Tensor& y) {
  const char *a = static_cast<const char*>(x.raw_ptr()), *b = static_cast<const char*>(y.raw_ptr());
  return a < b + y.nbytes() && b < a + x.nbytes();
}

}  // namespace

bool CpuDevice::gemm_rounds_a_to_bf16(int64_t M, bool trans_b, DType b) {
  return sizeof(PackedA) == 2 && trans_b && b == DType::kBF16 && M <= kSmallM;
}

std::string CpuDevice::gemv_summary() {
  return fmt::format("x W^T at M <= {} and x W at M <= {} by swiftlet's {} GEMV kernels{}", kSmallM,
                     kSmallMNoTrans, build_simd_level(),
                     sizeof(PackedA) == 2 ? " (bf16 W: AVX512_BF16 dot products, x rounded to bf16)"
                                          : " (bf16 W: widened to f32, x kept in f32)");
}

void CpuDevice::gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
                     float alpha, float beta) {
  const char* k = "gemm";
  check_here(k, a);
  check_here(k, b);
  check_here(k, c);
  expect_dtype(k, "a", a, DType::kF32);
  expect_dtype(k, "c", c, DType::kF32);
  expect_float(k, "b", b);
  SWIFTLET_CHECK(a.ndim() == 2 && b.ndim() == 2 && c.ndim() == 2,
                 "gemm: a {} b {} c {} must be 2-D", a.describe(), b.describe(), c.describe());
  int64_t M = trans_a ? a.dim(1) : a.dim(0), K = trans_a ? a.dim(0) : a.dim(1);
  int64_t Kb = trans_b ? b.dim(1) : b.dim(0), N = trans_b ? b.dim(0) : b.dim(1);
  SWIFTLET_CHECK(K == Kb && c.dim(0) == M && c.dim(1) == N,
                 "gemm: op(a) [{}, {}] x op(b) [{}, {}] -> c {} (trans_a {}, trans_b {})", M, K, Kb,
                 N, c.describe(), trans_a, trans_b);
  SWIFTLET_CHECK(!overlaps(c, a) && !overlaps(c, b), "gemm: c {} overlaps an input", c.describe());
  if (M == 0 || N == 0) return;
  float* cp = f32(c);
  if (K == 0) {  // C = beta C
    if (beta == 0.0f) {
      std::memset(cp, 0, c.nbytes());
    } else {
      scale_inplace(c, beta);
    }
    return;
  }
  const float* ap = f32(a);
  const void* bp = b.raw_ptr();
  const int64_t lda = a.dim(1), ldb = b.dim(1), ldc = N;

  if (M <= (trans_b ? kSmallM : kSmallMNoTrans)) {
    if (trans_b && b.dtype() == DType::kBF16) {
      auto* packed = reinterpret_cast<PackedA*>(
          scratch_floats(1, size_t(M * packed_bf16_stride(K)) * sizeof(PackedA) / 4));
      pack_bf16_a(ap, trans_a, lda, M, K, packed);
      const uint16_t* bw = static_cast<const uint16_t*>(bp);
      int64_t grain =
          std::max<int64_t>(kRowsB, int64_t(kFlopsPerThread / (2.0 * double(M * K)) / 4));
      parallel(pool(), N, grain, [&](int64_t n0, int64_t n1) {
        gemv_nt_bf16(packed, M, K, bw, n0, n1, cp, ldc, alpha, beta);
      });
      return;
    }
    // Pack op(A) as [M, K] rows (it is tiny) so the kernels read it contiguously.
    const float* ar = ap;
    if (trans_a) {
      float* packed = scratch_floats(1, size_t(M * K));
      for (int64_t kk = 0; kk < K; ++kk)
        for (int64_t m = 0; m < M; ++m) packed[m * K + kk] = ap[kk * M + m];
      ar = packed;
    }
    s::with_float_dtype(b.dtype(), [&](auto d) {
      constexpr DType D = decltype(d)::value;
      double work = 2.0 * double(M) * double(K);  // flops per output column
      if (trans_b) {
        int64_t grain = std::max<int64_t>(kRowsB, int64_t(kFlopsPerThread / work / 4));
        parallel(pool(), N, grain, [&](int64_t n0, int64_t n1) {
          gemv_nt<D>(ar, M, K, bp, n0, n1, cp, ldc, alpha, beta);
        });
      } else {
        int64_t vecs = (N + W - 1) / W;
        int64_t grain = std::max<int64_t>(1, int64_t(kFlopsPerThread / work / W / 4));
        parallel(pool(), vecs, grain, [&](int64_t v0, int64_t v1) {
          gemv_nn<D>(ar, M, K, bp, N, v0, v1, cp, ldc, alpha, beta);
        });
      }
    });
    return;
  }

  // Checked here, not in the threads (an exception in a pool thread would end the process).
  SWIFTLET_CHECK(std::max({M, N, K, lda, ldb}) <= INT_MAX,
                 "gemm: dimensions ({}, {}, {}) exceed the 32-bit BLAS interface", M, N, K);
  // Blocks of 64 columns (or rows) so every thread's share stays aligned for the BLAS kernels.
  constexpr int64_t kBlock = 64;
  if (b.dtype() == DType::kF32) {
    const float* bf = static_cast<const float*>(bp);
    bool split_n = N >= M;
    int64_t extent = split_n ? N : M, blocks = (extent + kBlock - 1) / kBlock;
    double block_flops = 2.0 * double(split_n ? M : N) * double(K) * kBlock;
    int64_t grain = std::max<int64_t>(1, int64_t(kFlopsPerThread / block_flops));
    parallel(pool(), blocks, grain, [&](int64_t lo, int64_t hi) {
      int64_t x0 = lo * kBlock, x1 = std::min(extent, hi * kBlock);
      if (split_n) {
        const float* bb = trans_b ? bf + x0 * ldb : bf + x0;
        blas::sgemm(trans_a, trans_b, M, x1 - x0, K, alpha, ap, lda, bb, ldb, beta, cp + x0, ldc);
      } else {
        const float* aa = trans_a ? ap + x0 : ap + x0 * lda;
        blas::sgemm(trans_a, trans_b, x1 - x0, N, K, alpha, aa, lda, bf, ldb, beta, cp + x0 * ldc,
                    ldc);
      }
    });
    return;
  }

  // bf16/f16 B at larger M: convert panels of B's columns to f32, then sgemm on each panel.
  int64_t panel = std::max<int64_t>(kBlock, kPanelFloats / K / kBlock * kBlock);
  int64_t blocks = (N + kBlock - 1) / kBlock;
  double block_flops = 2.0 * double(M) * double(K) * kBlock;
  int64_t grain = std::max<int64_t>(1, int64_t(kFlopsPerThread / block_flops));
  s::with_float_dtype(b.dtype(), [&](auto d) {
    constexpr DType D = decltype(d)::value;
    parallel(pool(), blocks, grain, [&](int64_t lo, int64_t hi) {
      int64_t n_end = std::min(N, hi * kBlock);
      float* buf = scratch_floats(0, size_t(std::min(panel, n_end - lo * kBlock) * K));
      for (int64_t n0 = lo * kBlock; n0 < n_end; n0 += panel) {
        int64_t nb = std::min(panel, n_end - n0);
        if (trans_b) {  // B [N, K]: rows n0.. are whole contiguous rows
          convert_block<D>(buf, bp, nb, K, n0 * K, K);
          blas::sgemm(trans_a, true, M, nb, K, alpha, ap, lda, buf, K, beta, cp + n0, ldc);
        } else {  // B [K, N]: gather columns n0.. of every row
          convert_block<D>(buf, bp, K, N, n0, nb);
          blas::sgemm(trans_a, false, M, nb, K, alpha, ap, lda, buf, nb, beta, cp + n0, ldc);
        }
      }
    });
  });
}

}  // namespace swiftlet
