// Blocked attention through single-threaded BLAS calls, one work item per thread at a time.
// Work items own their outputs (forward and dq: a head and a block of query rows; dk/dv: a kv head
// and a block of keys), so no two threads write the same element and results do not depend on
// the thread count. Blocks are visited in zig-zag order so every thread gets short and long rows.
#include "backend/cpu/attention_blas.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/blas.h"
#include "backend/cpu/kernel_util.h"
#include "backend/cpu/simd.h"

namespace swiftlet::cpu {

namespace s = simd;
constexpr int W = s::kWidth;

namespace {

constexpr int64_t kRows = 64;       // query rows per block
constexpr int64_t kKeys = 64;       // keys per block (dk/dv)
constexpr int64_t kRowChunk = 256;  // query rows per pass of a key block (bounds its scratch)

inline int64_t zigzag(int64_t t, int64_t n) { return (t & 1) ? n - 1 - t / 2 : t / 2; }
inline int64_t blocks(int64_t n, int64_t b) { return (n + b - 1) / b; }

// Items of every BLAS segment: per_segment(sg) items each, with their prefix sums.
template <class Fn>
std::vector<int64_t> item_prefix(std::span<const AttnSegment> segments, Fn per_segment) {
  std::vector<int64_t> begin(1, 0);
  for (const AttnSegment& sg : segments)
    begin.push_back(begin.back() + (attention_uses_blas(sg) ? per_segment(sg) : 0));
  return begin;
}
inline size_t find_segment(const std::vector<int64_t>& begin, int64_t item) {
  return size_t(std::upper_bound(begin.begin(), begin.end(), item) - begin.begin()) - 1;
}

// Rows [0, n) of head g of a k or v view as f32 with row stride *ld: the view itself when it is
// f32, else a converted copy in scratch `slot`.
const float* kv_rows(const Tensor& t, int64_t g, int64_t n, const AttnDims& d, int slot,
                     int64_t* ld) {
  const int64_t stride = d.Hkv * d.D;
  if (t.dtype() == DType::kF32) {
    *ld = stride;
    return static_cast<const float*>(t.raw_ptr()) + g * d.D;
  }
  float* buf = scratch_floats(slot, size_t(n * d.D));
  const void* src = t.raw_ptr();
  s::with_float_dtype(t.dtype(), [&](auto dt) {
    constexpr DType Dt = decltype(dt)::value;
    for (int64_t j = 0; j < n; ++j)
      for (int64_t e = 0; e < d.D; e += W) {
        int len = int(std::min<int64_t>(W, d.D - e));
        s::store_partial(buf + j * d.D + e,
                         s::load_partial_as<Dt>(src, j * stride + g * d.D + e, len), len);
      }
  });
  *ld = d.D;
  return buf;
}

// Softmax of one row of scores in place over the first `visible` entries; the rest become 0.
// Returns log sum_j exp(s_j).
float softmax_row(float* row, int64_t visible, int64_t n) {
  s::V vmax = s::set1(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + W <= visible; i += W) vmax = s::max(vmax, s::load(row + i));
  float m = s::reduce_max(vmax);
  for (; i < visible; ++i) m = std::max(m, row[i]);
  s::V vm = s::set1(m), sum = s::zero();
  for (int64_t j = 0; j < visible; j += W) {
    int len = int(std::min<int64_t>(W, visible - j));
    s::V p = s::exp(s::sub(s::load_partial(row + j, len), vm));
    s::store_partial(row + j, p, len);
    if (len < W) p = s::load_partial(row + j, len);
    sum = s::add(sum, p);
  }
  float total = s::reduce_add(sum);
  s::V inv = s::set1(1.0f / total);
  for (int64_t j = 0; j < visible; j += W) {
    int len = int(std::min<int64_t>(W, visible - j));
    s::store_partial(row + j, s::mul(s::load_partial(row + j, len), inv), len);
  }
  std::fill(row + visible, row + n, 0.0f);
  return m + std::log(total);
}

}  // namespace

void attention_forward_blas(ThreadPool& pool, const AttnDims& d,
                            std::span<const AttnSegment> segments, const float* q, float* out,
                            float* lse, float scale) {
  const int64_t Hq = d.Hq, D = d.D, group = d.Hq / d.Hkv;
  auto begin =
      item_prefix(segments, [&](const AttnSegment& sg) { return Hq * blocks(sg.q_len, kRows); });
  parallel(pool, begin.back(), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t item = lo; item < hi; ++item) {
      size_t si = find_segment(begin, item);
      const AttnSegment& sg = segments[si];
      int64_t local = item - begin[si], h = local % Hq;
      int64_t i0 = zigzag(local / Hq, blocks(sg.q_len, kRows)) * kRows;
      int64_t i1 = std::min(sg.q_len, i0 + kRows), rows = i1 - i0;
      int64_t off = sg.kv_len - sg.q_len, nk = off + i1;  // keys seen by the block's last row
      int64_t ldk, ldv;
      const float* kp = kv_rows(sg.k, h / group, nk, d, 0, &ldk);
      const float* vp = kv_rows(sg.v, h / group, nk, d, 1, &ldv);
      float* sc = scratch_floats(2, size_t(rows * nk));
      const int64_t r0 = (sg.q_begin + i0) * Hq + h;  // row of q/out (as [T * Hq, D]) of row i0
      blas::sgemm(false, true, rows, nk, D, scale, q + r0 * D, Hq * D, kp, ldk, 0.0f, sc, nk);
      for (int64_t r = 0; r < rows; ++r) {
        float l = softmax_row(sc + r * nk, off + i0 + r + 1, nk);
        if (lse) lse[r0 + r * Hq] = l;
      }
      blas::sgemm(false, false, rows, D, nk, 1.0f, sc, nk, vp, ldv, 0.0f, out + r0 * D, Hq * D);
    }
  });
}

void attention_backward_blas(ThreadPool& pool, const AttnDims& d,
                             std::span<const AttnSegment> segments, const float* q,
                             const float* out, const float* dout, const float* lse, float* dq,
                             float scale) {
  const int64_t Hq = d.Hq, Hkv = d.Hkv, D = d.D, group = d.Hq / d.Hkv;
  int64_t Tq = 0;
  for (const AttnSegment& sg : segments) Tq = std::max(Tq, sg.q_begin + sg.q_len);
  // Delta_i = dout_i . out_i per (row, head), used by both passes.
  std::vector<float> delta(size_t(Tq * Hq));
  for (const AttnSegment& sg : segments) {
    if (!attention_uses_blas(sg)) continue;
    parallel(pool, sg.q_len * Hq, 256, [&](int64_t lo, int64_t hi) {
      for (int64_t r = sg.q_begin * Hq + lo; r < sg.q_begin * Hq + hi; ++r) {
        s::V acc = s::zero();
        for (int64_t e = 0; e < D; e += W) {
          int len = int(std::min<int64_t>(W, D - e));
          acc = s::fma(s::load_partial(dout + r * D + e, len),
                       s::load_partial(out + r * D + e, len), acc);
        }
        delta[size_t(r)] = s::reduce_add(acc);
      }
    });
  }
  // Pass 1, per (head, block of rows): P = exp(scale Q K^T - lse) masked, dP = dO V^T,
  // dS = P (dP - Delta), dQ += scale dS K.
  auto begin =
      item_prefix(segments, [&](const AttnSegment& sg) { return Hq * blocks(sg.q_len, kRows); });
  parallel(pool, begin.back(), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t item = lo; item < hi; ++item) {
      size_t si = find_segment(begin, item);
      const AttnSegment& sg = segments[si];
      int64_t local = item - begin[si], h = local % Hq, g = h / group;
      int64_t i0 = zigzag(local / Hq, blocks(sg.q_len, kRows)) * kRows;
      int64_t i1 = std::min(sg.q_len, i0 + kRows), rows = i1 - i0;
      int64_t off = sg.kv_len - sg.q_len, nk = off + i1;
      const float *kp = static_cast<const float*>(sg.k.raw_ptr()) + g * D,
                  *vp = static_cast<const float*>(sg.v.raw_ptr()) + g * D;
      float* p = scratch_floats(2, size_t(2 * rows * nk));
      float* dp = p + rows * nk;
      const int64_t r0 = (sg.q_begin + i0) * Hq + h;
      blas::sgemm(false, true, rows, nk, D, scale, q + r0 * D, Hq * D, kp, Hkv * D, 0.0f, p, nk);
      blas::sgemm(false, true, rows, nk, D, 1.0f, dout + r0 * D, Hq * D, vp, Hkv * D, 0.0f, dp, nk);
      for (int64_t r = 0; r < rows; ++r) {
        int64_t visible = off + i0 + r + 1, qr = r0 + r * Hq;
        float *pr = p + r * nk, *dr = dp + r * nk;
        s::V l = s::set1(lse[qr]), dl = s::set1(delta[size_t(qr)]);
        for (int64_t j = 0; j < visible; j += W) {  // dS = exp(S - lse) (dP - Delta)
          int len = int(std::min<int64_t>(W, visible - j));
          s::V pv = s::exp(s::sub(s::load_partial(pr + j, len), l));
          s::store_partial(dr + j, s::mul(pv, s::sub(s::load_partial(dr + j, len), dl)), len);
        }
        std::fill(dr + visible, dr + nk, 0.0f);
      }
      blas::sgemm(false, false, rows, D, nk, scale, dp, nk, kp, Hkv * D, 1.0f, dq + r0 * D, Hq * D);
    }
  });
  // Pass 2, per (kv head, block of keys), over the rows that see them and the group's heads:
  // dK += scale dS^T Q, dV += P^T dO, with P^T and dS^T recomputed as [keys, rows] blocks.
  auto kbegin =
      item_prefix(segments, [&](const AttnSegment& sg) { return Hkv * blocks(sg.kv_len, kKeys); });
  parallel(pool, kbegin.back(), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t item = lo; item < hi; ++item) {
      size_t si = find_segment(kbegin, item);
      const AttnSegment& sg = segments[si];
      int64_t local = item - kbegin[si], g = local % Hkv;
      int64_t j0 = zigzag(local / Hkv, blocks(sg.kv_len, kKeys)) * kKeys;
      int64_t j1 = std::min(sg.kv_len, j0 + kKeys), keys = j1 - j0;
      int64_t off = sg.kv_len - sg.q_len, first = std::max<int64_t>(0, j0 - off);
      const int64_t kv0 = j0 * Hkv + g;  // row of k/v (as [rows * Hkv, D]) of key j0
      const float *kp = static_cast<const float*>(sg.k.raw_ptr()) + kv0 * D,
                  *vp = static_cast<const float*>(sg.v.raw_ptr()) + kv0 * D;
      float *dkp = static_cast<float*>(sg.dk.raw_ptr()) + kv0 * D,
            *dvp = static_cast<float*>(sg.dv.raw_ptr()) + kv0 * D;
      float* pt = scratch_floats(2, size_t(2 * keys * kRowChunk + 2 * kRowChunk));
      float *dpt = pt + keys * kRowChunk, *lse_c = dpt + keys * kRowChunk,
            *delta_c = lse_c + kRowChunk;
      for (int64_t ia = first; ia < sg.q_len; ia += kRowChunk) {
        int64_t ib = std::min(sg.q_len, ia + kRowChunk), rows = ib - ia;
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          const int64_t r0 = (sg.q_begin + ia) * Hq + h;
          blas::sgemm(false, true, keys, rows, D, scale, kp, Hkv * D, q + r0 * D, Hq * D, 0.0f, pt,
                      rows);
          blas::sgemm(false, true, keys, rows, D, 1.0f, vp, Hkv * D, dout + r0 * D, Hq * D, 0.0f,
                      dpt, rows);
          for (int64_t r = 0; r < rows; ++r) {  // this head's lse and Delta, contiguous
            lse_c[r] = lse[r0 + r * Hq];
            delta_c[r] = delta[size_t(r0 + r * Hq)];
          }
          for (int64_t jj = 0; jj < keys; ++jj) {
            float *pr = pt + jj * rows, *dr = dpt + jj * rows;
            // Key j is seen by row i when j <= off + i: rows before r_min are masked.
            int64_t r_min = std::clamp<int64_t>(j0 + jj - off - ia, 0, rows);
            std::fill(pr, pr + r_min, 0.0f);
            std::fill(dr, dr + r_min, 0.0f);
            for (int64_t r = r_min; r < rows; r += W) {
              int len = int(std::min<int64_t>(W, rows - r));
              s::V pv =
                  s::exp(s::sub(s::load_partial(pr + r, len), s::load_partial(lse_c + r, len)));
              s::V ds = s::mul(
                  pv, s::sub(s::load_partial(dr + r, len), s::load_partial(delta_c + r, len)));
              s::store_partial(pr + r, pv, len);
              s::store_partial(dr + r, ds, len);
            }
          }
          blas::sgemm(false, false, keys, D, rows, scale, dpt, rows, q + r0 * D, Hq * D, 1.0f, dkp,
                      Hkv * D);
          blas::sgemm(false, false, keys, D, rows, 1.0f, pt, rows, dout + r0 * D, Hq * D, 1.0f, dvp,
                      Hkv * D);
        }
      }
    }
  });
}

}  // namespace swiftlet::cpu
