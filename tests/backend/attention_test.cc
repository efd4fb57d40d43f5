// attention_forward / attention_backward on every device against a double-precision loop:
// several segments (a packed prefill, a chunk continuing a cache, a decode step), GQA, KV caches
// with more rows than kv_len (those rows hold NaN and must never be read), rows no segment covers
// (left untouched), bf16 caches; backward against finite differences of the reference.
#include <cmath>

#include "backend/device.h"
#include "backend/op_harness.h"
#include "core/rng.h"

namespace swiftlet::test {
namespace {

class AttentionTest : public DeviceTest {};
SWIFTLET_ALL_DEVICES(AttentionTest);

struct SegSpec {
  int64_t q_begin, q_len, kv_len, cache_rows;
};

struct Problem {
  int64_t Tq, Hq, Hkv, D;
  std::vector<SegSpec> segs;
  double softmax_scale = 0;  // 0: 1/sqrt(D)
  double scale() const { return softmax_scale ? softmax_scale : 1.0 / std::sqrt(double(D)); }
  int64_t kv_size(size_t s) const { return segs[s].cache_rows * Hkv * D; }
};

// out [Tq, Hq, D] and lse [Tq, Hq] of the covered rows (others stay 0) from q and per-segment k, v.
void attention_ref(const Problem& p, const std::vector<double>& q,
                   const std::vector<std::vector<double>>& k,
                   const std::vector<std::vector<double>>& v, std::vector<double>* out,
                   std::vector<double>* lse) {
  const int64_t D = p.D, Hq = p.Hq, Hkv = p.Hkv, group = Hq / Hkv;
  out->assign(size_t(p.Tq * Hq * D), 0.0);
  lse->assign(size_t(p.Tq * Hq), 0.0);
  for (size_t si = 0; si < p.segs.size(); ++si) {
    const SegSpec& sg = p.segs[si];
    for (int64_t i = 0; i < sg.q_len; ++i)
      for (int64_t h = 0; h < Hq; ++h) {
        int64_t row = sg.q_begin + i, g = h / group, nk = sg.kv_len - sg.q_len + i + 1;
        std::vector<double> s(static_cast<size_t>(nk));
        double m = -INFINITY;
        for (int64_t j = 0; j < nk; ++j) {
          double d = 0;
          for (int64_t e = 0; e < D; ++e)
            d += q[size_t((row * Hq + h) * D + e)] * k[si][size_t((j * Hkv + g) * D + e)];
          s[size_t(j)] = d * p.scale();
          m = std::max(m, s[size_t(j)]);
        }
        double sum = 0;
        for (auto& x : s) sum += (x = std::exp(x - m));
        (*lse)[size_t(row * Hq + h)] = m + std::log(sum);
        for (int64_t j = 0; j < nk; ++j)
          for (int64_t e = 0; e < D; ++e)
            (*out)[size_t((row * Hq + h) * D + e)] +=
                s[size_t(j)] / sum * v[si][size_t((j * Hkv + g) * D + e)];
      }
  }
}

// A problem with a packed two-sequence prefill, a chunk continuing a 4-token cache, a decode step
// with a 37-token cache, one with a 300-token cache (long enough to be split over key chunks),
// and one uncovered row at the end.
Problem mixed_problem(int64_t Hq, int64_t Hkv, int64_t D) {
  return Problem{14,
                 Hq,
                 Hkv,
                 D,
                 {{0, 4, 4, 4}, {4, 3, 3, 3}, {7, 4, 8, 11}, {11, 1, 37, 40}, {12, 1, 300, 305}}};
}

struct Inputs {
  std::vector<float> q;
  std::vector<std::vector<float>> k, v;  // NaN beyond kv_len rows
};

Inputs make_inputs(const Problem& p, DType kv_dtype, uint64_t seed) {
  Inputs in;
  in.q = random_floats(size_t(p.Tq * p.Hq * p.D), seed);
  for (size_t s = 0; s < p.segs.size(); ++s) {
    auto k = round_to(random_floats(size_t(p.kv_size(s)), seed + 10 + s), kv_dtype);
    auto v = round_to(random_floats(size_t(p.kv_size(s)), seed + 20 + s), kv_dtype);
    for (int64_t i = p.segs[s].kv_len * p.Hkv * p.D; i < p.kv_size(s); ++i)
      k[size_t(i)] = v[size_t(i)] = NAN;
    in.k.push_back(k);
    in.v.push_back(v);
  }
  return in;
}

std::vector<std::vector<double>> to_double_all(const std::vector<std::vector<float>>& x) {
  std::vector<std::vector<double>> r;
  for (const auto& v : x) r.push_back(to_double(v));
  return r;
}

void check_forward(DeviceTest& t, Device& dev, const Problem& p, DType kv_dtype) {
  SCOPED_TRACE(fmt::format("Hq {} Hkv {} D {} kv {}", p.Hq, p.Hkv, p.D, dtype_name(kv_dtype)));
  Inputs in = make_inputs(p, kv_dtype, 5);
  std::vector<AttnSegment> segs;
  for (size_t s = 0; s < p.segs.size(); ++s) {
    const SegSpec& sp = p.segs[s];
    Shape shape{sp.cache_rows, p.Hkv, p.D};
    segs.push_back({sp.q_begin,
                    sp.q_len,
                    sp.kv_len,
                    t.up(in.k[s], shape, kv_dtype),
                    t.up(in.v[s], shape, kv_dtype),
                    {},
                    {}});
  }
  Tensor q = t.up(in.q, {p.Tq, p.Hq, p.D});
  Tensor out = t.up(std::vector<float>(size_t(p.Tq * p.Hq * p.D), 7.0f), {p.Tq, p.Hq, p.D});
  Tensor lse = t.up(std::vector<float>(size_t(p.Tq * p.Hq), 7.0f), {p.Tq, p.Hq});
  dev.attention_forward(out, lse, q, segs, float(p.scale()));
  std::vector<double> want_out, want_lse;
  attention_ref(p, to_double(in.q), to_double_all(in.k), to_double_all(in.v), &want_out, &want_lse);
  // The last row is covered by no segment: it keeps its 7s.
  int64_t covered = p.Tq - 1;
  for (int64_t i = covered * p.Hq * p.D; i < p.Tq * p.Hq * p.D; ++i) want_out[size_t(i)] = 7.0;
  for (int64_t i = covered * p.Hq; i < p.Tq * p.Hq; ++i) want_lse[size_t(i)] = 7.0;
  SWIFTLET_EXPECT_CLOSE(t.down(out), want_out, tol_f32(300.0 * double(p.D)));
  SWIFTLET_EXPECT_CLOSE(t.down(lse), want_lse, tol_f32(300.0 * double(p.D)));
}

TEST_P(AttentionTest, ForwardSegmentsGqaCachesAndDecode) {
  check_forward(*this, dev(), mixed_problem(4, 2, 20),
                DType::kF32);  // GQA, D not a vector multiple
  check_forward(*this, dev(), mixed_problem(4, 4, 16), DType::kF32);   // multi-head
  check_forward(*this, dev(), mixed_problem(6, 1, 8), DType::kF32);    // multi-query
  check_forward(*this, dev(), mixed_problem(4, 2, 32), DType::kBF16);  // bf16 KV cache
  check_forward(*this, dev(), mixed_problem(4, 2, 32), DType::kF16);
  // Head dims of whole vectors take the register-resident decode path: groups of 3 (a pair of
  // heads, then one) and of 1, head_dim 128 and 64, f32 and bf16 caches.
  check_forward(*this, dev(), mixed_problem(6, 2, 128), DType::kF32);
  check_forward(*this, dev(), mixed_problem(6, 2, 128), DType::kBF16);
  check_forward(*this, dev(), mixed_problem(3, 3, 64), DType::kF32);
}

TEST_P(AttentionTest, LongDecodeRow) {
  // One query against 3000 cached keys (several vector widths of scores, large softmax range).
  Problem p{2, 8, 2, 64, {{0, 1, 3000, 3001}}};
  check_forward(*this, dev(), p, DType::kF32);
}

TEST_P(AttentionTest, LoneDecodeRowSplitIntoChunks) {
  // One decoding sequence: its keys are cut into a multiple of the thread count of equal chunks
  // (577 keys: chunks of 145, 145, 145 and 142) whose partial softmax sums are merged; 1, 2 and
  // 17 keys stay one chunk. Odd chunk lengths leave one key after the pairs of the v pass.
  for (int64_t kv_len : {1, 2, 17, 577})
    for (DType d : {DType::kF32, DType::kBF16}) {
      SCOPED_TRACE(::testing::Message() << "kv_len " << kv_len << " " << dtype_name(d));
      check_forward(*this, dev(), Problem{2, 4, 2, 128, {{0, 1, kv_len, kv_len + 3}}}, d);
    }
}

TEST_P(AttentionTest, PackedSegmentsShareOneKvTensor) {
  // Training layout: two sequences packed in one [T, Hkv, D] k/v, each segment a row slice.
  const int64_t T = 9, Hq = 4, Hkv = 2, D = 8;
  auto qv = random_floats(size_t(T * Hq * D), 41), kv = random_floats(size_t(T * Hkv * D), 42),
       vv = random_floats(size_t(T * Hkv * D), 43);
  Tensor q = up(qv, {T, Hq, D}), k = up(kv, {T, Hkv, D}), v = up(vv, {T, Hkv, D});
  std::vector<AttnSegment> segs = {{0, 5, 5, k.slice(0, 5), v.slice(0, 5), {}, {}},
                                   {5, 4, 4, k.slice(5, 9), v.slice(5, 9), {}, {}}};
  Tensor out = dev().empty({T, Hq, D}, DType::kF32);
  dev().attention_forward(out, Tensor(), q, segs, 0.3f);
  Problem p{T + 1, Hq, Hkv, D, {{0, 5, 5, 5}, {5, 4, 4, 4}}, 0.3};
  std::vector<std::vector<double>> ks = {to_double(std::vector<float>(kv.begin(), kv.begin() + 80)),
                                         to_double(std::vector<float>(kv.begin() + 80, kv.end()))};
  std::vector<std::vector<double>> vs = {to_double(std::vector<float>(vv.begin(), vv.begin() + 80)),
                                         to_double(std::vector<float>(vv.begin() + 80, vv.end()))};
  auto q_ext = to_double(qv);
  q_ext.resize(size_t((T + 1) * Hq * D), 0.0);
  std::vector<double> want, lse;
  attention_ref(p, q_ext, ks, vs, &want, &lse);
  want.resize(size_t(T * Hq * D));
  SWIFTLET_EXPECT_CLOSE(down(out), want, tol_f32(5.0 * D));
}

// Runs forward + backward on the device and compares dq, dk, dv (accumulated onto random initial
// values) with central differences of sum(r * out) through the reference: at every coordinate, or
// at `samples` random coordinates per tensor when the problem is too large to difference fully.
// The cache rows past kv_len must keep their initial gradient exactly.
void check_backward(DeviceTest& t, Device& dev, const Problem& p, size_t samples) {
  Inputs in = make_inputs(p, DType::kF32, 7);
  auto r = random_floats(size_t(p.Tq * p.Hq * p.D), 8);  // dout
  const size_t S = p.segs.size();
  auto dq0 = random_floats(in.q.size(), 9);
  std::vector<std::vector<float>> dk0, dv0;
  for (size_t s = 0; s < S; ++s) {
    dk0.push_back(random_floats(size_t(p.kv_size(s)), 100 + s));
    dv0.push_back(random_floats(size_t(p.kv_size(s)), 200 + s));
  }
  std::vector<AttnSegment> segs;
  for (size_t s = 0; s < S; ++s) {
    Shape shape{p.segs[s].cache_rows, p.Hkv, p.D};
    segs.push_back({p.segs[s].q_begin, p.segs[s].q_len, p.segs[s].kv_len, t.up(in.k[s], shape),
                    t.up(in.v[s], shape), t.up(dk0[s], shape), t.up(dv0[s], shape)});
  }
  Tensor q = t.up(in.q, {p.Tq, p.Hq, p.D}), dout = t.up(r, {p.Tq, p.Hq, p.D});
  Tensor out = dev.empty({p.Tq, p.Hq, p.D}, DType::kF32),
         lse = dev.empty({p.Tq, p.Hq}, DType::kF32);
  dev.attention_forward(out, lse, q, segs, float(p.scale()));
  Tensor dq = t.up(dq0, {p.Tq, p.Hq, p.D});
  dev.attention_backward(dq, dout, q, out, lse, segs, float(p.scale()));

  auto qd = to_double(in.q);
  auto kd = to_double_all(in.k), vd = to_double_all(in.v);
  auto loss = [&](const std::vector<double>& qx, const std::vector<std::vector<double>>& kx,
                  const std::vector<std::vector<double>>& vx) {
    std::vector<double> o, l;
    attention_ref(p, qx, kx, vx, &o, &l);
    return project(o, r);
  };
  Rng rng(11);
  // Coordinates to difference among the first n (all of them when samples == 0).
  auto pick = [&](size_t n) {
    std::vector<size_t> at;
    for (size_t i = 0; i < n; ++i) at.push_back(i);
    if (samples && samples < n) {
      for (size_t i = 0; i < samples; ++i) std::swap(at[i], at[i + rng.below(n - i)]);
      at.resize(samples);
    }
    return at;
  };
  // Device gradient minus its initial value, at the picked coordinates.
  auto grad_at = [&](const Tensor& g, const std::vector<float>& init,
                     const std::vector<size_t>& at) {
    auto v = t.down(g);
    std::vector<float> r2;
    for (size_t i : at) r2.push_back(v[i] - init[i]);
    return r2;
  };
  double tol = tol_grad(300.0 * p.D);
  auto aq = pick(qd.size());
  auto gq = numeric_grad_at(qd, aq, [&](const auto& x) { return loss(x, kd, vd); });
  SWIFTLET_EXPECT_CLOSE(grad_at(dq, dq0, aq), gq, tol);
  for (size_t s = 0; s < S; ++s) {
    SCOPED_TRACE(fmt::format("segment {}", s));
    size_t used = size_t(p.segs[s].kv_len * p.Hkv * p.D);
    auto ak = pick(used);
    auto kx = kd;
    auto gk = numeric_grad_at(kd[s], ak, [&](const auto& x) {
      kx[s] = x;
      return loss(qd, kx, vd);
    });
    auto vx = vd;
    auto gv = numeric_grad_at(vd[s], ak, [&](const auto& x) {
      vx[s] = x;
      return loss(qd, kd, vx);
    });
    SWIFTLET_EXPECT_CLOSE(grad_at(segs[s].dk, dk0[s], ak), gk, tol);
    SWIFTLET_EXPECT_CLOSE(grad_at(segs[s].dv, dv0[s], ak), gv, tol);
    auto dk = t.down(segs[s].dk), dv = t.down(segs[s].dv);
    for (size_t i = used; i < dk.size(); ++i) {  // rows past kv_len: untouched
      ASSERT_EQ(dk[i], dk0[s][i]) << i;
      ASSERT_EQ(dv[i], dv0[s][i]) << i;
    }
  }
}

TEST_P(AttentionTest, BackwardMatchesFiniteDifferences) {
  Problem p = mixed_problem(4, 2, 8);
  p.segs[3] = {11, 1, 9, 12};  // short caches keep the finite differences cheap
  p.segs[4] = {12, 1, 6, 8};
  check_backward(*this, dev(), p, 0);
}

// Segments of 16 rows or more run as blocked matrix products (BLAS); 70 rows span two blocks of
// 64, and the second segment continues a 25-token cache.
Problem long_problem(int64_t D) {
  return Problem{
      95, 4, 2, D, {{0, 70, 70, 70}, {70, 20, 45, 50}, {90, 3, 3, 3}, {93, 1, 300, 305}}};
}

TEST_P(AttentionTest, BlockedForwardForLongSegments) {
  check_forward(*this, dev(), long_problem(20), DType::kF32);
  check_forward(*this, dev(), long_problem(32), DType::kBF16);  // converted block by block
}

TEST_P(AttentionTest, BlockedBackwardMatchesFiniteDifferences) {
  Problem p = long_problem(8);
  p.segs[3] = {93, 1, 9, 12};
  check_backward(*this, dev(), p, 48);
}

TEST_P(AttentionTest, RejectsOverlappingSegmentsAndBadHeads) {
  Tensor q = dev().zeros({4, 4, 8}, DType::kF32), out = dev().zeros({4, 4, 8}, DType::kF32);
  Tensor k = dev().zeros({4, 2, 8}, DType::kF32), k3 = dev().zeros({4, 3, 8}, DType::kF32);
  std::vector<AttnSegment> overlap = {{0, 3, 3, k, k, {}, {}}, {2, 2, 2, k, k, {}, {}}};
  EXPECT_THROW(dev().attention_forward(out, Tensor(), q, overlap, 1.0f), InternalError);
  std::vector<AttnSegment> bad_heads = {{0, 3, 3, k3, k3, {}, {}}};
  EXPECT_THROW(dev().attention_forward(out, Tensor(), q, bad_heads, 1.0f), InternalError);
  std::vector<AttnSegment> short_kv = {{0, 3, 2, k, k, {}, {}}};  // q_len > kv_len
  EXPECT_THROW(dev().attention_forward(out, Tensor(), q, short_kv, 1.0f), InternalError);
}

}  // namespace
}  // namespace swiftlet::test
