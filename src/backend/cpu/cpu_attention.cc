// CpuDevice: causal grouped-query attention over segments (packed sequences, KV caches).
// Forward, per query row i and head h: s_j = scale q.k_j for the visible keys, p = softmax(s),
// out = sum_j p_j v_j, lse = log sum_j exp(s_j) (two passes over the scores, max subtracted).
// Work items are (query row, kv head): the query heads sharing a kv head are done together so each
// k/v row is read once per group. Rows are visited in zig-zag order (short and long causal rows
// alternate), so the contiguous share of each thread holds about the same number of keys.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/attention_blas.h"
#include "backend/cpu/cpu_device.h"
#include "backend/cpu/kernel_util.h"
#include "backend/cpu/simd.h"

namespace swiftlet {

using namespace cpu;  // NOLINT: the kernel helpers
namespace s = simd;
constexpr int W = s::kWidth;

namespace {

// Small fixed-size loops over vectors, unrolled so their arrays stay in registers.
#define SWIFTLET_UNROLL_ATTN _Pragma("GCC unroll 16")

// The t-th row in zig-zag order over [0, n): 0, n-1, 1, n-2, ...
inline int64_t zigzag(int64_t t, int64_t n) { return (t & 1) ? n - 1 - t / 2 : t / 2; }

template <DType Dk>
inline float dot(const float* a, const void* b, int64_t b_off, int64_t n) {
  s::V acc = s::zero();
  int64_t i = 0;
  for (; i + W <= n; i += W) acc = s::fma(s::load(a + i), s::load_as<Dk>(b, b_off + i), acc);
  if (i < n)
    acc = s::fma(s::load_partial(a + i, int(n - i)),
                 s::load_partial_as<Dk>(b, b_off + i, int(n - i)), acc);
  return s::reduce_add(acc);
}

// Prefetch the k/v row of key j + kAhead: consecutive keys of one head are a page apart (stride
// Hkv * D), which the hardware prefetchers do not follow (decode read 3.5 GB/s without this).
constexpr int64_t kAhead = 4;
// decode_rows streams whole rows; prefetching the rows kDecodeAhead keys ahead gains ~7% there.
constexpr int64_t kDecodeAhead = 4;
inline void prefetch_row(const void* base, int64_t elem_off, int64_t n, size_t elem_size) {
  const char* p = static_cast<const char*>(base) + elem_off * int64_t(elem_size);
  for (int64_t b = 0; b < n * int64_t(elem_size); b += 64) __builtin_prefetch(p + b, 0, 3);
}

// y += alpha * x  (x of dtype Dx, n elements)
template <DType Dx>
inline void axpy(float* y, float alpha, const void* x, int64_t x_off, int64_t n) {
  s::V va = s::set1(alpha);
  int64_t i = 0;
  for (; i + W <= n; i += W)
    s::store(y + i, s::fma(va, s::load_as<Dx>(x, x_off + i), s::load(y + i)));
  if (i < n) {
    int len = int(n - i);
    s::store_partial(
        y + i, s::fma(va, s::load_partial_as<Dx>(x, x_off + i, len), s::load_partial(y + i, len)),
        len);
  }
}

struct Geometry {
  int64_t Tq = 0, Hq = 0, D = 0, Hkv = 0, group = 0;
  int64_t part_stride = 0;  // floats per head in a decode chunk's partial sums (D + 2, padded)
  std::vector<int64_t> item_begin;  // prefix sums of work items per segment
};

// A decode step against a long cache (one query row, many keys) is split over chunks of keys
// instead: every chunk reads whole contiguous k/v rows (all heads), partial softmax sums are
// merged. With the faster kernel for common head sizes (`fast`, see decode_rows) every decode step
// goes this way.
constexpr int64_t kDecodeChunk = 256;
inline bool split_over_keys(const AttnSegment& sg, bool fast) {
  return sg.q_len == 1 && (fast || sg.kv_len > kDecodeChunk);
}

// Work items of each segment: `rows_of(segment)` row-or-key ordinals times the kv heads.
template <class Fn>
void set_items(Geometry* g, std::span<const AttnSegment> segments, Fn rows_of) {
  g->item_begin.assign(1, 0);
  for (const AttnSegment& sg : segments)
    g->item_begin.push_back(g->item_begin.back() + rows_of(sg) * g->Hkv);
}

// Checks the segments against q and returns the shared geometry (without work items).
Geometry check_segments(const char* k, const Tensor& q, std::span<const AttnSegment> segments,
                        bool backward) {
  Geometry g;
  SWIFTLET_CHECK(q.ndim() == 3, "{}: q {} must be [T, H, D]", k, q.describe());
  g.Tq = q.dim(0), g.Hq = q.dim(1), g.D = q.dim(2);
  g.part_stride = (g.D + 2 + 15) / 16 * 16;  // 64-byte aligned rows
  std::vector<std::pair<int64_t, int64_t>> q_ranges;
  std::vector<std::pair<const char*, const char*>> grad_ranges;
  for (size_t si = 0; si < segments.size(); ++si) {
    const AttnSegment& sg = segments[si];
    SWIFTLET_CHECK(
        sg.q_begin >= 0 && sg.q_len >= 0 && sg.q_begin + sg.q_len <= g.Tq && sg.kv_len >= sg.q_len,
        "{}: segment {} (q_begin {}, q_len {}, kv_len {}) does not fit q {}", k, si, sg.q_begin,
        sg.q_len, sg.kv_len, q.describe());
    SWIFTLET_CHECK(sg.k.ndim() == 3 && sg.v.shape() == sg.k.shape() && sg.k.dim(0) >= sg.kv_len &&
                       sg.k.dim(2) == g.D && sg.k.dim(1) > 0 && g.Hq % sg.k.dim(1) == 0,
                   "{}: segment {} k {} / v {} must be [>= {}, Hkv, {}] with {} % Hkv == 0", k, si,
                   sg.k.describe(), sg.v.describe(), sg.kv_len, g.D, g.Hq);
    if (g.Hkv == 0) g.Hkv = sg.k.dim(1);
    SWIFTLET_CHECK(sg.k.dim(1) == g.Hkv, "{}: segment {} has {} kv heads, segment 0 has {}", k, si,
                   sg.k.dim(1), g.Hkv);
    SWIFTLET_CHECK(sg.k.dtype() == sg.v.dtype() && dtype_is_float(sg.k.dtype()),
                   "{}: segment {} k {} and v {} need one float dtype", k, si, sg.k.describe(),
                   sg.v.describe());
    if (backward) {
      expect_dtype(k, "segment k", sg.k, DType::kF32);
      SWIFTLET_CHECK(sg.dk.defined() && sg.dv.defined() && sg.dk.shape() == sg.k.shape() &&
                         sg.dv.shape() == sg.k.shape() && sg.dk.dtype() == DType::kF32 &&
                         sg.dv.dtype() == DType::kF32,
                     "{}: segment {} dk {} / dv {} must be f32 shaped like k {}", k, si,
                     sg.dk.describe(), sg.dv.describe(), sg.k.describe());
      size_t row_bytes = size_t(g.Hkv * g.D) * 4;
      for (const Tensor* t : {&sg.dk, &sg.dv}) {
        const char* p = static_cast<const char*>(t->raw_ptr());
        grad_ranges.emplace_back(p, p + row_bytes * size_t(sg.kv_len));
      }
    }
    q_ranges.emplace_back(sg.q_begin, sg.q_begin + sg.q_len);
  }
  std::sort(q_ranges.begin(), q_ranges.end());
  for (size_t i = 1; i < q_ranges.size(); ++i)
    SWIFTLET_CHECK(q_ranges[i].first >= q_ranges[i - 1].second,
                   "{}: segments overlap in query rows [{}, {}) and [{}, {})", k,
                   q_ranges[i - 1].first, q_ranges[i - 1].second, q_ranges[i].first,
                   q_ranges[i].second);
  // dk/dv of different segments are accumulated by different threads: they must not share rows.
  std::sort(grad_ranges.begin(), grad_ranges.end());
  for (size_t i = 1; i < grad_ranges.size(); ++i)
    SWIFTLET_CHECK(grad_ranges[i].first >= grad_ranges[i - 1].second,
                   "{}: the dk/dv views of two segments overlap", k);
  if (g.Hkv == 0) g.Hkv = 1;
  g.group = g.Hq / g.Hkv;
  return g;
}

// Locates work item `item`: its segment, then (row-or-key ordinal, kv head).
inline size_t find_segment(const std::vector<int64_t>& begin, int64_t item) {
  return size_t(std::upper_bound(begin.begin(), begin.end(), item) - begin.begin()) - 1;
}

// Sums exp(x_j - m) over n scores, overwriting each score with its exponential.
inline float exp_in_place(float* x, int64_t n, float m) {
  s::V vm = s::set1(m), sum = s::zero();
  for (int64_t j = 0; j < n; j += W) {
    int len = int(std::min<int64_t>(W, n - j));
    s::V p = s::exp(s::sub(s::load_partial(x + j, len), vm));
    s::store_partial(x + j, p, len);
    if (len < W) p = s::load_partial(x + j, len);  // drop the lanes past the end
    sum = s::add(sum, p);
  }
  return s::reduce_add(sum);
}

template <DType Dk>
void attention_forward_items(const Geometry& g, std::span<const AttnSegment> segments,
                             const float* q, float* out, float* lse, float scale, int64_t lo,
                             int64_t hi) {
  const int64_t D = g.D, Hq = g.Hq, Hkv = g.Hkv, group = g.group;
  float* acc = scratch_floats(3, size_t(group * D));
  for (int64_t item = lo; item < hi; ++item) {
    size_t si = find_segment(g.item_begin, item);
    const AttnSegment& sg = segments[si];
    int64_t local = item - g.item_begin[si], kvh = local % Hkv;
    int64_t i = zigzag(local / Hkv, sg.q_len), row = sg.q_begin + i;
    int64_t nk = sg.kv_len - sg.q_len + i + 1;  // keys visible to query i
    int64_t h0 = row * Hq + kvh * group;        // first query head of the group, as a row of q
    const void *kp = sg.k.raw_ptr(), *vp = sg.v.raw_ptr();
    float* sc = scratch_floats(2, size_t(group * (nk + 1)));  // scores, then 1/sum per head
    float* inv_sum = sc + group * nk;
    for (int64_t j = 0; j < nk; ++j) {
      int64_t off = (j * Hkv + kvh) * D;
      if (j + kAhead < nk) prefetch_row(kp, off + kAhead * Hkv * D, D, dtype_size(Dk));
      for (int64_t hh = 0; hh < group; ++hh)
        sc[hh * nk + j] = scale * dot<Dk>(q + (h0 + hh) * D, kp, off, D);
    }
    for (int64_t hh = 0; hh < group; ++hh) {
      float* srow = sc + hh * nk;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < nk; ++j) m = std::max(m, srow[j]);
      float total = exp_in_place(srow, nk, m);
      if (lse) lse[h0 + hh] = m + std::log(total);
      inv_sum[hh] = 1.0f / total;
    }
    std::fill(acc, acc + group * D, 0.0f);
    for (int64_t j = 0; j < nk; ++j) {
      int64_t off = (j * Hkv + kvh) * D;
      if (j + kAhead < nk) prefetch_row(vp, off + kAhead * Hkv * D, D, dtype_size(Dk));
      for (int64_t hh = 0; hh < group; ++hh) axpy<Dk>(acc + hh * D, sc[hh * nk + j], vp, off, D);
    }
    for (int64_t hh = 0; hh < group; ++hh) {
      float* o = out + (h0 + hh) * D;
      for (int64_t d = 0; d < D; ++d) o[d] = acc[hh * D + d] * inv_sum[hh];
    }
  }
}

// Backward pass 1, per (query row, kv head) item: with P_ij = exp(s_ij - lse_i),
// dP_ij = dout_i . v_j and Delta_i = dout_i . out_i (= sum_j P_ij dP_ij):
//   dS_ij = P_ij (dP_ij - Delta_i),   dq_i += scale sum_j dS_ij k_j.   Delta is saved for pass 2.
void attention_dq_items(const Geometry& g, std::span<const AttnSegment> segments, const float* q,
                        const float* out, const float* dout, const float* lse, float* dq,
                        float* delta, float scale, int64_t lo, int64_t hi) {
  const int64_t D = g.D, Hq = g.Hq, Hkv = g.Hkv, group = g.group;
  for (int64_t item = lo; item < hi; ++item) {
    size_t si = find_segment(g.item_begin, item);
    const AttnSegment& sg = segments[si];
    int64_t local = item - g.item_begin[si], kvh = local % Hkv;
    int64_t i = zigzag(local / Hkv, sg.q_len), row = sg.q_begin + i;
    int64_t nk = sg.kv_len - sg.q_len + i + 1;
    int64_t h0 = row * Hq + kvh * group;
    const float *kp = f32(sg.k), *vp = f32(sg.v);
    for (int64_t hh = 0; hh < group; ++hh) {
      int64_t h = h0 + hh;
      const float *qh = q + h * D, *gh = dout + h * D;
      float dl = dot<DType::kF32>(gh, out + h * D, 0, D);
      delta[h] = dl;
      float l = lse[h];
      float* dqh = dq + h * D;
      for (int64_t j = 0; j < nk; ++j) {
        int64_t off = (j * Hkv + kvh) * D;
        float p = std::exp(scale * dot<DType::kF32>(qh, kp, off, D) - l);
        float ds = p * (dot<DType::kF32>(gh, vp, off, D) - dl);
        axpy<DType::kF32>(dqh, scale * ds, kp, off, D);
      }
    }
  }
}

// Backward pass 2, per (key, kv head) item, over the query rows that see key j:
//   dk_j += scale sum_i dS_ij q_i,   dv_j += sum_i P_ij dout_i.
void attention_dkv_items(const Geometry& g, std::span<const AttnSegment> segments, const float* q,
                         const float* dout, const float* lse, const float* delta, float scale,
                         int64_t lo, int64_t hi) {
  const int64_t D = g.D, Hq = g.Hq, Hkv = g.Hkv, group = g.group;
  float* acc = scratch_floats(3, size_t(2 * D));
  for (int64_t item = lo; item < hi; ++item) {
    size_t si = find_segment(g.item_begin, item);
    const AttnSegment& sg = segments[si];
    int64_t local = item - g.item_begin[si], kvh = local % Hkv;
    int64_t j = zigzag(local / Hkv, sg.kv_len);
    int64_t first = std::max<int64_t>(0, j - (sg.kv_len - sg.q_len));  // first row seeing key j
    int64_t off = (j * Hkv + kvh) * D;
    const float *kp = f32(sg.k), *vp = f32(sg.v);
    float *dk = acc, *dv = acc + D;
    std::fill(acc, acc + 2 * D, 0.0f);
    for (int64_t i = first; i < sg.q_len; ++i) {
      int64_t h0 = (sg.q_begin + i) * Hq + kvh * group;
      for (int64_t hh = 0; hh < group; ++hh) {
        int64_t h = h0 + hh;
        const float *qh = q + h * D, *gh = dout + h * D;
        float p = std::exp(scale * dot<DType::kF32>(qh, kp, off, D) - lse[h]);
        float ds = p * (dot<DType::kF32>(gh, vp, off, D) - delta[h]);
        axpy<DType::kF32>(dk, scale * ds, qh, 0, D);
        axpy<DType::kF32>(dv, p, gh, 0, D);
      }
    }
    axpy<DType::kF32>(f32(sg.dk) + off, 1.0f, dk, 0, D);
    axpy<DType::kF32>(f32(sg.dv) + off, 1.0f, dv, 0, D);
  }
}

// Turns the scores sc [Hq, n] of one key chunk into e^(s - m) in place and starts each head's
// partial sums in part (stride part_stride): D zeros for the output accumulator, then the chunk's
// maximum m and l = sum e^(s - m).
inline void chunk_softmax(const Geometry& g, float* sc, int64_t n, float* part) {
  for (int64_t h = 0; h < g.Hq; ++h) {
    float* srow = sc + h * n;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) m = std::max(m, srow[j]);
    float* ph = part + h * g.part_stride;
    ph[g.D + 1] = exp_in_place(srow, n, m);
    ph[g.D] = m;
    std::fill(ph, ph + g.D, 0.0f);
  }
}

// One chunk [j0, j1) of a decode segment's keys for all query heads of its single row q (Hq x D):
// writes per head acc = sum_j e^(s_j - m) v_j, then m and l = sum_j e^(s_j - m), to part [Hq, D +
// 2].
template <DType Dk>
void decode_chunk(const Geometry& g, const AttnSegment& sg, const float* q, float scale, int64_t j0,
                  int64_t j1, float* part) {
  const int64_t D = g.D, Hq = g.Hq, Hkv = g.Hkv, group = g.group, n = j1 - j0, row = Hkv * D;
  const void *kp = sg.k.raw_ptr(), *vp = sg.v.raw_ptr();
  float* sc = scratch_floats(2, size_t(Hq * n));
  for (int64_t j = j0; j < j1; ++j) {
    if (j + kAhead < j1) prefetch_row(kp, (j + kAhead) * row, row, dtype_size(Dk));
    for (int64_t h = 0; h < Hq; ++h)
      sc[h * n + j - j0] = scale * dot<Dk>(q + h * D, kp, j * row + (h / group) * D, D);
  }
  chunk_softmax(g, sc, n, part);
  for (int64_t j = j0; j < j1; ++j) {
    if (j + kAhead < j1) prefetch_row(vp, (j + kAhead) * row, row, dtype_size(Dk));
    for (int64_t h = 0; h < Hq; ++h)
      axpy<Dk>(part + h * g.part_stride, sc[h * n + j - j0], vp, j * row + (h / group) * D, D);
  }
}

// decode_chunk for head_dim D = DV * W (DV = 2 to 16: 64 to 256 with AVX-512, 128 with AVX2).
// Keys are read row by row, all kv heads of a row in turn, so each thread streams one contiguous
// block of the cache (the hardware prefetchers follow it; per-head passes over strided rows
// reached half the read bandwidth from DRAM). Query heads go in pairs: each k or v vector is
// widened once for both heads of a pair, and q and the output accumulators (in `part`) come from
// L1; v is applied two keys per load/store of the accumulators.
template <DType Dk, int DV>
void decode_rows(const Geometry& g, const AttnSegment& sg, const float* q, float scale, int64_t j0,
                 int64_t j1, float* part) {
  constexpr int64_t D = int64_t(DV) * W;
  const int64_t Hq = g.Hq, Hkv = g.Hkv, group = g.group, n = j1 - j0, row = Hkv * D;
  const int64_t ps = g.part_stride;
  const void *kp = sg.k.raw_ptr(), *vp = sg.v.raw_ptr();
  float* sc = scratch_floats(2, size_t(Hq * n));
  // Calls fn(std::integral_constant<int, HN>{}, h) for the query heads of kv head kvh, by pairs.
  auto by_pairs = [group](int64_t kvh, auto&& fn) {
    int64_t h = kvh * group, end = h + group;
    for (; h + 2 <= end; h += 2) fn(std::integral_constant<int, 2>{}, h);
    if (h < end) fn(std::integral_constant<int, 1>{}, h);
  };
  for (int64_t j = j0; j < j1; ++j) {
    for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
      if (j + kDecodeAhead < j1)
        prefetch_row(kp, (j + kDecodeAhead) * row + kvh * D, D, dtype_size(Dk));
      const int64_t off = j * row + kvh * D;
      by_pairs(kvh, [&](auto hn, int64_t h) {
        constexpr int HN = decltype(hn)::value;
        s::V acc[HN][2];  // two chains per head: even and odd vectors
        s::set_zero(acc);
        SWIFTLET_UNROLL_ATTN
        for (int d = 0; d < DV; ++d) {
          const s::V kv = s::load_as<Dk>(kp, off + d * W);
          SWIFTLET_UNROLL_ATTN
          for (int hh = 0; hh < HN; ++hh)
            acc[hh][d % 2] = s::fma(s::load(q + (h + hh) * D + d * W), kv, acc[hh][d % 2]);
        }
        SWIFTLET_UNROLL_ATTN
        for (int hh = 0; hh < HN; ++hh)
          sc[(h + hh) * n + j - j0] = scale * s::reduce_add(s::add(acc[hh][0], acc[hh][1]));
      });
    }
  }
  chunk_softmax(g, sc, n, part);
  int64_t j = j0;
  for (; j + 2 <= j1; j += 2) {
    for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
      if (j + kDecodeAhead + 1 < j1)
        prefetch_row(vp, (j + kDecodeAhead) * row + kvh * D, 2 * D, dtype_size(Dk));
      const int64_t off = j * row + kvh * D;
      by_pairs(kvh, [&](auto hn, int64_t h) {
        constexpr int HN = decltype(hn)::value;
        s::V p0[HN], p1[HN];
        SWIFTLET_UNROLL_ATTN
        for (int hh = 0; hh < HN; ++hh) {
          p0[hh] = s::set1(sc[(h + hh) * n + j - j0]);
          p1[hh] = s::set1(sc[(h + hh) * n + j + 1 - j0]);
        }
        SWIFTLET_UNROLL_ATTN
        for (int d = 0; d < DV; ++d) {
          const s::V v0 = s::load_as<Dk>(vp, off + d * W),
                     v1 = s::load_as<Dk>(vp, off + row + d * W);
          SWIFTLET_UNROLL_ATTN
          for (int hh = 0; hh < HN; ++hh) {
            float* acc = part + (h + hh) * ps + d * W;
            s::store(acc, s::fma(p1[hh], v1, s::fma(p0[hh], v0, s::load(acc))));
          }
        }
      });
    }
  }
  if (j < j1)
    for (int64_t h = 0; h < Hq; ++h)
      axpy<Dk>(part + h * ps, sc[h * n + j - j0], vp, j * row + (h / group) * D, D);
}

// Runs fn(std::integral_constant<int, DV>{}) when D = DV * W for DV in 2, 4, 8, 16 (the head
// sizes decode_rows takes); returns false otherwise.
template <class Fn>
bool with_head_vectors(int64_t D, Fn&& fn) {
  if (D == 16 * W) return fn(std::integral_constant<int, 16>{}), true;
  if (D == 8 * W) return fn(std::integral_constant<int, 8>{}), true;
  if (D == 4 * W) return fn(std::integral_constant<int, 4>{}), true;
  if (D == 2 * W) return fn(std::integral_constant<int, 2>{}), true;
  return false;
}
inline bool fast_decode(int64_t D) {
  return with_head_vectors(D, [](auto) {});
}

}  // namespace

void CpuDevice::attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                  std::span<const AttnSegment> segments, float scale) {
  const char* k = "attention_forward";
  check_here(k, out);
  check_here(k, q);
  check_here_optional(k, lse);
  for (const AttnSegment& sg : segments) {
    check_here(k, sg.k);
    check_here(k, sg.v);
  }
  expect_dtype(k, "q", q, DType::kF32);
  expect_dtype(k, "out", out, DType::kF32);
  Geometry g = check_segments(k, q, segments, false);
  expect_shape(k, "out", out, q.shape());
  if (lse.defined()) {
    expect_dtype(k, "lse", lse, DType::kF32);
    expect_shape(k, "lse", lse, {g.Tq, g.Hq});
  }
  if (segments.empty()) return;
  const float* qp = f32(q);
  float *op = f32(out), *lp = lse.defined() ? f32(lse) : nullptr;
  const bool fast = fast_decode(g.D);
  set_items(&g, segments, [fast](const AttnSegment& sg) {
    return split_over_keys(sg, fast) || attention_uses_blas(sg) ? 0 : sg.q_len;
  });
  // Decode segments: (segment, key chunk) items writing partial sums, merged per head below.
  // Chunks hold at most kDecodeChunk keys; when there are fewer decode sequences than threads,
  // each sequence gets a multiple of the thread count of equal chunks (3 chunks over 2 threads
  // would leave one thread two thirds of the keys).
  struct Chunk {
    size_t seg;
    int64_t j0, j1;
  };
  std::vector<Chunk> chunks;
  const int64_t threads = pool().size();
  int64_t decoding = 0;
  for (const AttnSegment& sg : segments) decoding += split_over_keys(sg, fast);
  for (size_t si = 0; si < segments.size(); ++si) {
    const AttnSegment& sg = segments[si];
    if (!split_over_keys(sg, fast)) continue;
    int64_t nc = (sg.kv_len + kDecodeChunk - 1) / kDecodeChunk;
    if (decoding < threads)
      nc = std::min((nc + threads - 1) / threads * threads, std::max<int64_t>(1, sg.kv_len / 16));
    const int64_t len = (sg.kv_len + nc - 1) / nc;
    for (int64_t j0 = 0; j0 < sg.kv_len; j0 += len)
      chunks.push_back({si, j0, std::min(sg.kv_len, j0 + len)});
  }
  const int64_t part_size = g.Hq * g.part_stride;
  std::vector<float> part_buf(chunks.size() * size_t(part_size) + 16);  // + room to align
  float* parts = part_buf.data();
  while (reinterpret_cast<uintptr_t>(parts) % 64 != 0) ++parts;
  s::with_float_dtype(segments[0].k.dtype(), [&](auto d) {
    constexpr DType Dk = decltype(d)::value;
    for (const AttnSegment& sg : segments)
      SWIFTLET_CHECK(sg.k.dtype() == Dk, "{}: segments mix k dtypes ({})", k, sg.k.describe());
    parallel(pool(), g.item_begin.back(), 1, [&](int64_t lo, int64_t hi) {
      attention_forward_items<Dk>(g, segments, qp, op, lp, scale, lo, hi);
    });
    attention_forward_blas(pool(), {g.Hq, g.Hkv, g.D}, segments, qp, op, lp, scale);
    parallel(pool(), int64_t(chunks.size()), 1, [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c) {
        const Chunk& ch = chunks[size_t(c)];
        const AttnSegment& sg = segments[ch.seg];
        const float* qs = qp + sg.q_begin * g.Hq * g.D;
        float* part = parts + c * part_size;
        if (!with_head_vectors(g.D, [&](auto dv) {
              decode_rows<Dk, decltype(dv)::value>(g, sg, qs, scale, ch.j0, ch.j1, part);
            }))
          decode_chunk<Dk>(g, sg, qs, scale, ch.j0, ch.j1, part);
      }
    });
  });
  // Merge: with chunk maxima m_c, m = max m_c, out = sum_c e^(m_c - m) acc_c / sum_c e^(m_c - m)
  // l_c.
  for (size_t c0 = 0; c0 < chunks.size();) {
    size_t c1 = c0;
    while (c1 < chunks.size() && chunks[c1].seg == chunks[c0].seg) ++c1;
    const AttnSegment& sg = segments[chunks[c0].seg];
    for (int64_t h = 0; h < g.Hq; ++h) {
      float m = -std::numeric_limits<float>::infinity(), total = 0;
      for (size_t c = c0; c < c1; ++c)
        m = std::max(m, parts[c * size_t(part_size) + size_t(h * g.part_stride + g.D)]);
      float* o = op + (sg.q_begin * g.Hq + h) * g.D;
      std::fill(o, o + g.D, 0.0f);
      for (size_t c = c0; c < c1; ++c) {
        const float* part = parts + c * size_t(part_size) + h * g.part_stride;
        float w = std::exp(part[g.D] - m);
        total += w * part[g.D + 1];
        axpy<DType::kF32>(o, w, part, 0, g.D);
      }
      for (int64_t e = 0; e < g.D; ++e) o[e] /= total;
      if (lp) lp[sg.q_begin * g.Hq + h] = m + std::log(total);
    }
    c0 = c1;
  }
}

void CpuDevice::attention_backward(const Tensor& dq, const Tensor& dout, const Tensor& q,
                                   const Tensor& out, const Tensor& lse,
                                   std::span<const AttnSegment> segments, float scale) {
  const char* k = "attention_backward";
  for (const Tensor* t : {&dq, &dout, &q, &out, &lse}) {
    check_here(k, *t);
    expect_dtype(k, "argument", *t, DType::kF32);
  }
  for (const AttnSegment& sg : segments)
    for (const Tensor* t : {&sg.k, &sg.v, &sg.dk, &sg.dv}) check_here(k, *t);
  Geometry g = check_segments(k, q, segments, true);
  set_items(&g, segments,
            [](const AttnSegment& sg) { return attention_uses_blas(sg) ? 0 : sg.q_len; });
  for (const Tensor* t : {&dq, &dout, &out}) expect_shape(k, "argument", *t, q.shape());
  expect_shape(k, "lse", lse, {g.Tq, g.Hq});
  if (segments.empty()) return;
  std::vector<float> delta(size_t(g.Tq * g.Hq), 0.0f);
  const float *qp = f32(q), *op = f32(out), *gp = f32(dout), *lp = f32(lse);
  float* dqp = f32(dq);
  parallel(pool(), g.item_begin.back(), 1, [&](int64_t lo, int64_t hi) {
    attention_dq_items(g, segments, qp, op, gp, lp, dqp, delta.data(), scale, lo, hi);
  });
  Geometry gk = g;
  set_items(&gk, segments,
            [](const AttnSegment& sg) { return attention_uses_blas(sg) ? 0 : sg.kv_len; });
  parallel(pool(), gk.item_begin.back(), 1, [&](int64_t lo, int64_t hi) {
    attention_dkv_items(gk, segments, qp, gp, lp, delta.data(), scale, lo, hi);
  });
  attention_backward_blas(pool(), {g.Hq, g.Hkv, g.D}, segments, qp, op, gp, lp, dqp, scale);
}

}  // namespace swiftlet
