#pragma once
// A thin vector type for the CPU kernels, chosen at compile time: AVX-512 (16 floats), AVX2+FMA
// (8), NEON (4) or a portable 4-float struct. Kernels are written once against these functions;
// tails use load_partial/store_partial. Internal to backend/cpu (the only place intrinsics may
// appear).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/dtype.h"
#include "core/error.h"

#if defined(__AVX512F__) || defined(__AVX2__)
// GCC 12 reports its own _mm512_undefined_* helpers as maybe-uninitialized (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

namespace swiftlet::simd {

// ---------------------------------------------------------------------------------------------
#if defined(__AVX512F__)
constexpr int kWidth = 16;
using V = __m512;
inline V zero() { return _mm512_setzero_ps(); }
inline V set1(float x) { return _mm512_set1_ps(x); }
inline V load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V add(V a, V b) { return _mm512_add_ps(a, b); }
inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V div(V a, V b) { return _mm512_div_ps(a, b); }
inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
// max(a, b) returning b when either is NaN (so max(lo, x) keeps a NaN x).
inline V max(V a, V b) { return _mm512_max_ps(a, b); }
inline V min(V a, V b) { return _mm512_min_ps(a, b); }
inline V sqrt(V a) { return _mm512_sqrt_ps(a); }
inline float reduce_add(V v) { return _mm512_reduce_add_ps(v); }
inline float reduce_max(V v) { return _mm512_reduce_max_ps(v); }
inline __mmask16 tail_mask(int n) { return __mmask16((1u << n) - 1u); }
inline V load_partial(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
inline void store_partial(float* p, V v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
inline V widen_bf16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline V load_bf16(const uint16_t* p) {
  return widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline V load_f16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#if defined(__AVX512BW__) && defined(__AVX512VL__)
inline __m256i load_u16_partial(const uint16_t* p, int n) {
  return _mm256_maskz_loadu_epi16(tail_mask(n), p);
}
#else
inline __m256i load_u16_partial(const uint16_t* p, int n) {
  alignas(32) uint16_t tmp[16] = {};
  std::memcpy(tmp, p, size_t(n) * 2);
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp));
}
#endif
inline V load_bf16_partial(const uint16_t* p, int n) { return widen_bf16(load_u16_partial(p, n)); }
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
// bf16 dot products (AVX512_BF16): acc[i] += a[2i] b[2i] + a[2i+1] b[2i+1] over 2W bf16 values,
// products exact, sums in f32 (denormal inputs read as zero).
#define SWIFTLET_SIMD_BF16_DOT 1
using Bf16x2 = __m512bh;
inline Bf16x2 load_bf16x2(const uint16_t* p) { return (__m512bh)_mm512_loadu_si512(p); }
inline Bf16x2 load_bf16x2_partial(const uint16_t* p, int n) {  // n < 2W, the rest zero
  return (__m512bh)_mm512_maskz_loadu_epi16(__mmask32((uint64_t(1) << n) - 1), p);
}
inline V dot_bf16x2(V acc, Bf16x2 a, Bf16x2 b) { return _mm512_dpbf16_ps(acc, a, b); }
#endif
// 2W consecutive bf16 values as two f32 vectors: even = p[0], p[2], ..., odd = p[1], p[3], ...
// (one load and two bit operations, no shuffles: each 32-bit lane holds one even/odd pair).
inline void split_bf16_pairs(__m512i u, V& even, V& odd) {
  even = _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
  odd = _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32(int(0xffff0000u))));
}
inline void load_bf16_pairs(const uint16_t* p, V& even, V& odd) {
  split_bf16_pairs(_mm512_loadu_si512(p), even, odd);
}
#if defined(__AVX512BW__)
inline void load_bf16_pairs_partial(const uint16_t* p, int n, V& even, V& odd) {  // n < 2W
  split_bf16_pairs(_mm512_maskz_loadu_epi16(__mmask32((uint64_t(1) << n) - 1), p), even, odd);
}
#else
inline void load_bf16_pairs_partial(const uint16_t* p, int n, V& even, V& odd) {
  alignas(64) uint16_t tmp[32] = {};
  std::memcpy(tmp, p, size_t(n) * 2);
  split_bf16_pairs(_mm512_load_si512(tmp), even, odd);
}
#endif
inline V load_f16_partial(const uint16_t* p, int n) {
  return _mm512_cvtph_ps(load_u16_partial(p, n));
}
// f32 -> bf16 round to nearest even, NaN kept quiet: the same bits as core's f32_to_bf16.
inline __m256i narrow_bf16(V v) {
  __m512i u = _mm512_castps_si512(v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r =
      _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                          _mm512_set1_epi32(0x7f800000));
  r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(r);
}
inline __m256i narrow_f16(V v) {
  return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
inline void store_u16(uint16_t* p, __m256i h) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
}
inline void store_bf16(uint16_t* p, V v) { store_u16(p, narrow_bf16(v)); }
inline void store_f16(uint16_t* p, V v) { store_u16(p, narrow_f16(v)); }
inline V round_nearest(V x) {
  return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
inline V pow2_int(V n) {  // 2^n for integral n in [-126, 127]
  __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
  return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
inline V zero_below(V x, V y, float lo) {  // y where x >= lo (or NaN), else 0
  return _mm512_maskz_mov_ps(~_mm512_cmp_ps_mask(x, _mm512_set1_ps(lo), _CMP_LT_OQ), y);
}

// ---------------------------------------------------------------------------------------------
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kWidth = 8;
using V = __m256;
inline V zero() { return _mm256_setzero_ps(); }
inline V set1(float x) { return _mm256_set1_ps(x); }
inline V load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V add(V a, V b) { return _mm256_add_ps(a, b); }
inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V div(V a, V b) { return _mm256_div_ps(a, b); }
inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V max(V a, V b) { return _mm256_max_ps(a, b); }
inline V min(V a, V b) { return _mm256_min_ps(a, b); }
inline V sqrt(V a) { return _mm256_sqrt_ps(a); }
inline float reduce_add(V v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float reduce_max(V v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline V load_partial(const float* p, int n) {
  alignas(32) float tmp[8] = {};
  std::memcpy(tmp, p, size_t(n) * 4);
  return _mm256_load_ps(tmp);
}
inline void store_partial(float* p, V v, int n) {
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  std::memcpy(p, tmp, size_t(n) * 4);
}
inline V widen_bf16(__m128i h) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline V load_bf16(const uint16_t* p) {
  return widen_bf16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline V load_bf16_partial(const uint16_t* p, int n) {
  alignas(16) uint16_t tmp[8] = {};
  std::memcpy(tmp, p, size_t(n) * 2);
  return load_bf16(tmp);
}
inline void load_bf16_pairs(const uint16_t* p, V& even, V& odd) {
  __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  even = _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  odd = _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32(int(0xffff0000u))));
}
inline void load_bf16_pairs_partial(const uint16_t* p, int n, V& even, V& odd) {
  alignas(32) uint16_t tmp[16] = {};
  std::memcpy(tmp, p, size_t(n) * 2);
  load_bf16_pairs(tmp, even, odd);
}
#if defined(__F16C__)
inline V load_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#else
inline V load_f16(const uint16_t* p) {
  alignas(32) float tmp[8];
  for (int i = 0; i < 8; ++i) tmp[i] = f16_to_f32(p[i]);
  return _mm256_load_ps(tmp);
}
#endif
inline V load_f16_partial(const uint16_t* p, int n) {
  alignas(16) uint16_t tmp[8] = {};
  std::memcpy(tmp, p, size_t(n) * 2);
  return load_f16(tmp);
}
inline void store_bf16(uint16_t* p, V v) {
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  for (int i = 0; i < 8; ++i) p[i] = f32_to_bf16(tmp[i]);
}
inline void store_f16(uint16_t* p, V v) {
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  for (int i = 0; i < 8; ++i) p[i] = f32_to_f16(tmp[i]);
}
inline V round_nearest(V x) {
  return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
inline V pow2_int(V n) {
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
inline V zero_below(V x, V y, float lo) {
  return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(lo), _CMP_LT_OQ), y);
}

// ---------------------------------------------------------------------------------------------
#elif defined(__ARM_NEON) && defined(__aarch64__)
constexpr int kWidth = 4;
using V = float32x4_t;
inline V zero() { return vdupq_n_f32(0.0f); }
inline V set1(float x) { return vdupq_n_f32(x); }
inline V load(const float* p) { return vld1q_f32(p); }
inline void store(float* p, V v) { vst1q_f32(p, v); }
inline V add(V a, V b) { return vaddq_f32(a, b); }
inline V sub(V a, V b) { return vsubq_f32(a, b); }
inline V mul(V a, V b) { return vmulq_f32(a, b); }
inline V div(V a, V b) { return vdivq_f32(a, b); }
inline V fma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
// NEON max propagates NaN from either operand, which also keeps a NaN x in max(lo, x).
inline V max(V a, V b) { return vmaxq_f32(a, b); }
inline V min(V a, V b) { return vminq_f32(a, b); }
inline V sqrt(V a) { return vsqrtq_f32(a); }
inline float reduce_add(V v) { return vaddvq_f32(v); }
inline float reduce_max(V v) { return vmaxvq_f32(v); }
inline V load_partial(const float* p, int n) {
  float tmp[4] = {};
  std::memcpy(tmp, p, size_t(n) * 4);
  return vld1q_f32(tmp);
}
inline void store_partial(float* p, V v, int n) {
  float tmp[4];
  vst1q_f32(tmp, v);
  std::memcpy(p, tmp, size_t(n) * 4);
}
inline V load_bf16(const uint16_t* p) {
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}
inline V load_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
inline V load_bf16_partial(const uint16_t* p, int n) {
  uint16_t tmp[4] = {};
  std::memcpy(tmp, p, size_t(n) * 2);
  return load_bf16(tmp);
}
inline void load_bf16_pairs(const uint16_t* p, V& even, V& odd) {
  uint32x4_t u = vreinterpretq_u32_u16(vld1q_u16(p));
  even = vreinterpretq_f32_u32(vshlq_n_u32(u, 16));
  odd = vreinterpretq_f32_u32(vandq_u32(u, vdupq_n_u32(0xffff0000u)));
}
inline void load_bf16_pairs_partial(const uint16_t* p, int n, V& even, V& odd) {
  uint16_t tmp[8] = {};
  std::memcpy(tmp, p, size_t(n) * 2);
  load_bf16_pairs(tmp, even, odd);
}
inline V load_f16_partial(const uint16_t* p, int n) {
  uint16_t tmp[4] = {};
  std::memcpy(tmp, p, size_t(n) * 2);
  return load_f16(tmp);
}
inline void store_bf16(uint16_t* p, V v) {
  float tmp[4];
  vst1q_f32(tmp, v);
  for (int i = 0; i < 4; ++i) p[i] = f32_to_bf16(tmp[i]);
}
inline void store_f16(uint16_t* p, V v) {
  float tmp[4];
  vst1q_f32(tmp, v);
  for (int i = 0; i < 4; ++i) p[i] = f32_to_f16(tmp[i]);
}
inline V round_nearest(V x) { return vrndnq_f32(x); }
inline V pow2_int(V n) {
  int32x4_t e = vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127));
  return vreinterpretq_f32_s32(vshlq_n_s32(e, 23));
}
inline V zero_below(V x, V y, float lo) {
  uint32x4_t keep = vmvnq_u32(vcltq_f32(x, vdupq_n_f32(lo)));
  return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(y), keep));
}

// ---------------------------------------------------------------------------------------------
#else
constexpr int kWidth = 4;
struct V {
  float x[4];
};
inline V zero() { return V{{0, 0, 0, 0}}; }
inline V set1(float v) { return V{{v, v, v, v}}; }
inline V load(const float* p) { return V{{p[0], p[1], p[2], p[3]}}; }
inline void store(float* p, V v) { std::memcpy(p, v.x, 16); }
template <class F>
inline V lanes(F f) {  // r[i] = f(i) for each lane
  V r;
  for (int i = 0; i < 4; ++i) r.x[i] = f(i);
  return r;
}
inline V add(V a, V b) {
  return lanes([&](int i) { return a.x[i] + b.x[i]; });
}
inline V sub(V a, V b) {
  return lanes([&](int i) { return a.x[i] - b.x[i]; });
}
inline V mul(V a, V b) {
  return lanes([&](int i) { return a.x[i] * b.x[i]; });
}
inline V div(V a, V b) {
  return lanes([&](int i) { return a.x[i] / b.x[i]; });
}
inline V fma(V a, V b, V c) {
  return lanes([&](int i) { return std::fma(a.x[i], b.x[i], c.x[i]); });
}
inline V max(V a, V b) {
  return lanes([&](int i) { return a.x[i] > b.x[i] ? a.x[i] : b.x[i]; });
}
inline V min(V a, V b) {
  return lanes([&](int i) { return a.x[i] < b.x[i] ? a.x[i] : b.x[i]; });
}
inline V sqrt(V a) {
  return lanes([&](int i) { return std::sqrt(a.x[i]); });
}
inline V round_nearest(V a) {
  return lanes([&](int i) { return std::nearbyint(a.x[i]); });
}
inline V pow2_int(V n) {
  return lanes([&](int i) { return std::ldexp(1.0f, int(n.x[i])); });
}
inline V zero_below(V x, V y, float lo) {
  return lanes([&](int i) { return x.x[i] < lo ? 0.0f : y.x[i]; });
}
inline float reduce_add(V v) { return (v.x[0] + v.x[1]) + (v.x[2] + v.x[3]); }
inline float reduce_max(V v) {
  float a = v.x[0] > v.x[1] ? v.x[0] : v.x[1], b = v.x[2] > v.x[3] ? v.x[2] : v.x[3];
  return a > b ? a : b;
}
inline V load_partial(const float* p, int n) {
  V r = zero();
  std::memcpy(r.x, p, size_t(n) * 4);
  return r;
}
inline void store_partial(float* p, V v, int n) { std::memcpy(p, v.x, size_t(n) * 4); }
inline V load_bf16(const uint16_t* p) {
  return V{{bf16_to_f32(p[0]), bf16_to_f32(p[1]), bf16_to_f32(p[2]), bf16_to_f32(p[3])}};
}
inline V load_f16(const uint16_t* p) {
  return V{{f16_to_f32(p[0]), f16_to_f32(p[1]), f16_to_f32(p[2]), f16_to_f32(p[3])}};
}
inline V load_bf16_partial(const uint16_t* p, int n) {
  V r = zero();
  for (int i = 0; i < n; ++i) r.x[i] = bf16_to_f32(p[i]);
  return r;
}
inline void load_bf16_pairs_partial(const uint16_t* p, int n, V& even, V& odd) {
  even = zero();
  odd = zero();
  for (int i = 0; i < n; ++i) (i % 2 ? odd : even).x[i / 2] = bf16_to_f32(p[i]);
}
inline void load_bf16_pairs(const uint16_t* p, V& even, V& odd) {
  load_bf16_pairs_partial(p, 8, even, odd);
}
inline V load_f16_partial(const uint16_t* p, int n) {
  V r = zero();
  for (int i = 0; i < n; ++i) r.x[i] = f16_to_f32(p[i]);
  return r;
}
inline void store_bf16(uint16_t* p, V v) {
  for (int i = 0; i < 4; ++i) p[i] = f32_to_bf16(v.x[i]);
}
inline void store_f16(uint16_t* p, V v) {
  for (int i = 0; i < 4; ++i) p[i] = f32_to_f16(v.x[i]);
}
#endif

// ---- shared on top of the above ----------------------------------------------------------------

// e^x, Cephes' single-precision polynomial after x = n ln2 + r, |r| <= ln2/2 (measured within
// 1.3 ulp on [-87.3, 88.3] for every SIMD level). Below -87.3 the result is 0 (the edge of the
// normal range); above 88.376 it stays at e^88.376 (2.4e38) instead of overflowing; NaN stays NaN.
inline V exp(V x) {
  const V hi = set1(88.3762626647949f), lo = set1(-88.3762626647949f);
  x = min(hi, max(lo, x));
  V n = round_nearest(mul(x, set1(1.44269504088896341f)));
  V r = fma(n, set1(-0.693359375f), x);
  r = fma(n, set1(2.12194440e-4f), r);
  V p = set1(1.9875691500e-4f);
  p = fma(p, r, set1(1.3981999507e-3f));
  p = fma(p, r, set1(8.3334519073e-3f));
  p = fma(p, r, set1(4.1665795894e-2f));
  p = fma(p, r, set1(1.6666665459e-1f));
  p = fma(p, r, set1(5.0000001201e-1f));
  V y = add(fma(p, mul(r, r), r), set1(1.0f));
  return zero_below(x, mul(y, pow2_int(n)), -87.3f);
}

// Sets every vector of a small fixed-size tile to zero. The loops are unrolled so that, inlined
// into a kernel, the tile can live in registers (GCC does not unroll them at -O2 by itself).
template <int R, int C>
inline void set_zero(V (&tile)[R][C]) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) tile[r][c] = zero();
  }
}

// Loads of W consecutive elements of an array of dtype D (f32, bf16 or f16), widened to f32.
template <DType D>
inline V load_as(const void* base, int64_t i) {
  if constexpr (D == DType::kF32) return load(static_cast<const float*>(base) + i);
  if constexpr (D == DType::kBF16) return load_bf16(static_cast<const uint16_t*>(base) + i);
  if constexpr (D == DType::kF16) return load_f16(static_cast<const uint16_t*>(base) + i);
}
template <DType D>
inline V load_partial_as(const void* base, int64_t i, int n) {
  if constexpr (D == DType::kF32) return load_partial(static_cast<const float*>(base) + i, n);
  if constexpr (D == DType::kBF16)
    return load_bf16_partial(static_cast<const uint16_t*>(base) + i, n);
  if constexpr (D == DType::kF16)
    return load_f16_partial(static_cast<const uint16_t*>(base) + i, n);
}
template <DType D>
inline float load1_as(const void* base, int64_t i) {
  if constexpr (D == DType::kF32) return static_cast<const float*>(base)[i];
  if constexpr (D == DType::kBF16) return bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
  if constexpr (D == DType::kF16) return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
}
template <DType D>
inline void store_as(void* base, int64_t i, V v) {
  if constexpr (D == DType::kF32) store(static_cast<float*>(base) + i, v);
  if constexpr (D == DType::kBF16) store_bf16(static_cast<uint16_t*>(base) + i, v);
  if constexpr (D == DType::kF16) store_f16(static_cast<uint16_t*>(base) + i, v);
}
template <DType D>
inline void store1_as(void* base, int64_t i, float x) {
  if constexpr (D == DType::kF32) static_cast<float*>(base)[i] = x;
  if constexpr (D == DType::kBF16) static_cast<uint16_t*>(base)[i] = f32_to_bf16(x);
  if constexpr (D == DType::kF16) static_cast<uint16_t*>(base)[i] = f32_to_f16(x);
}

// Calls fn(std::integral_constant<DType, D>{}) for a float dtype D (callers check the dtype first).
template <class Fn>
inline decltype(auto) with_float_dtype(DType d, Fn&& fn) {
  SWIFTLET_CHECK(dtype_is_float(d), "kernel called with non-float dtype {}", dtype_name(d));
  switch (d) {
    case DType::kBF16:
      return fn(std::integral_constant<DType, DType::kBF16>{});
    case DType::kF16:
      return fn(std::integral_constant<DType, DType::kF16>{});
    default:
      return fn(std::integral_constant<DType, DType::kF32>{});
  }
}

}  // namespace swiftlet::simd
