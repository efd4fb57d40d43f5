// CpuDevice: the Gated DeltaNet (linear attention) forward kernels: column split, causal depthwise
// conv + SiLU, row L2 norm, the decay/beta gates, the recurrent gated delta rule, sigmoid gating.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_device.h"
#include "backend/cpu/kernel_util.h"

namespace swiftlet {

using namespace cpu;  // NOLINT: the kernel helpers

namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
// torch.nn.functional.softplus (beta 1, threshold 20)
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

}  // namespace

void CpuDevice::split_columns(std::span<const Tensor> outs, const Tensor& in) {
  check_here("split_columns", in);
  expect_dtype("split_columns", "in", in, DType::kF32);
  const int64_t R = in.dim(0), N = in.numel() / std::max<int64_t>(R, 1);
  int64_t total = 0;
  for (const Tensor& o : outs) {
    check_here("split_columns", o);
    expect_dtype("split_columns", "out", o, DType::kF32);
    SWIFTLET_CHECK(o.dim(0) == R, "split_columns: out {} must have {} rows like in {}",
                   o.describe(), R, in.describe());
    total += o.numel() / std::max<int64_t>(R, 1);
  }
  SWIFTLET_CHECK(total == N, "split_columns: outs hold {} columns, in {} has {}", total,
                 in.describe(), N);
  const float* x = f32(in);
  parallel(pool(), R, std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1)),
           [&](int64_t lo, int64_t hi) {
             for (int64_t r = lo; r < hi; ++r) {
               int64_t off = 0;
               for (const Tensor& o : outs) {
                 const int64_t n = o.numel() / R;
                 std::copy(x + r * N + off, x + r * N + off + n, f32(o) + r * n);
                 off += n;
               }
             }
           });
}

void CpuDevice::gather_columns(const Tensor& out, const Tensor& in, const Tensor& index) {
  check_here("gather_columns", out);
  check_here("gather_columns", in);
  check_here("gather_columns", index);
  expect_dtype("gather_columns", "out", out, DType::kF32);
  expect_dtype("gather_columns", "in", in, DType::kF32);
  expect_dtype("gather_columns", "index", index, DType::kI32);
  SWIFTLET_CHECK(out.ndim() == 2 && in.ndim() == 2 && index.ndim() == 1 &&
                     out.dim(0) == in.dim(0) && out.dim(1) == index.dim(0),
                 "gather_columns: out {} in {} index {}", out.describe(), in.describe(),
                 index.describe());
  const int64_t R = in.dim(0), M = in.dim(1), N = out.dim(1);
  const int32_t* idx = i32(index);
  for (int64_t j = 0; j < N; ++j)
    SWIFTLET_CHECK(idx[j] >= 0 && idx[j] < M, "gather_columns: index[{}] = {} is not below {}", j,
                   idx[j], M);
  const float* x = f32(in);
  float* y = f32(out);
  parallel(pool(), R, std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1)),
           [&](int64_t lo, int64_t hi) {
             for (int64_t r = lo; r < hi; ++r)
               for (int64_t j = 0; j < N; ++j) y[r * N + j] = x[r * M + idx[j]];
           });
}

void CpuDevice::causal_conv1d_silu(const Tensor& y, const Tensor& x, const Tensor& w,
                                   const Tensor& state) {
  for (const Tensor* t : {&y, &x, &w, &state}) {
    check_here("causal_conv1d_silu", *t);
    expect_dtype("causal_conv1d_silu", "argument", *t, DType::kF32);
  }
  SWIFTLET_CHECK(x.ndim() == 2 && w.ndim() == 2 && w.dim(0) == x.dim(1),
                 "causal_conv1d_silu: x {} must be [T, C] and w {} [C, K]", x.describe(),
                 w.describe());
  const int64_t T = x.dim(0), C = x.dim(1), K = w.dim(1);
  expect_shape("causal_conv1d_silu", "y", y, x.shape());
  expect_shape("causal_conv1d_silu", "state", state, {K - 1, C});
  const float *xs = f32(x), *ws = f32(w);
  float *ys = f32(y), *st = f32(state);
  // row r of x' = [state; x]: state row r for r < K-1, else x row r - (K-1)
  auto row = [&](int64_t r) { return r < K - 1 ? st + r * C : xs + (r - (K - 1)) * C; };
  parallel(pool(), C, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = lo; c < hi; ++c) {
        float acc = 0;
        for (int64_t j = 0; j < K; ++j) acc += ws[c * K + j] * row(t + j)[c];
        ys[t * C + c] = acc / (1.0f + std::exp(-acc));
      }
  });
  // new state: the last K-1 rows of x' (rows T .. T+K-2)
  std::vector<float> keep(static_cast<size_t>((K - 1) * C));
  for (int64_t r = 0; r < K - 1; ++r) std::copy(row(T + r), row(T + r) + C, keep.data() + r * C);
  std::copy(keep.begin(), keep.end(), st);
}

void CpuDevice::l2norm_rows(const Tensor& x, float eps, float scale) {
  check_here("l2norm_rows", x);
  expect_dtype("l2norm_rows", "x", x, DType::kF32);
  const int64_t R = x.dim(0), d = x.numel() / std::max<int64_t>(R, 1);
  float* p = f32(x);
  parallel(pool(), R, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      float* v = p + r * d;
      float ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += v[i] * v[i];
      const float s = scale / std::sqrt(ss + eps);
      for (int64_t i = 0; i < d; ++i) v[i] *= s;
    }
  });
}

void CpuDevice::gdn_gates(const Tensor& g, const Tensor& beta, const Tensor& a, const Tensor& b,
                          const Tensor& a_log, const Tensor& dt_bias) {
  for (const Tensor* t : {&g, &beta, &a, &b, &a_log, &dt_bias}) {
    check_here("gdn_gates", *t);
    expect_dtype("gdn_gates", "argument", *t, DType::kF32);
  }
  const int64_t HV = a_log.numel(), T = a.numel() / std::max<int64_t>(HV, 1);
  for (const Tensor* t : {&g, &beta, &b}) expect_numel("gdn_gates", "gate", *t, a.numel());
  expect_numel("gdn_gates", "dt_bias", dt_bias, HV);
  const float *as = f32(a), *bs = f32(b), *al = f32(a_log), *dt = f32(dt_bias);
  float *gs = f32(g), *be = f32(beta);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < HV; ++h) {
      const int64_t i = t * HV + h;
      be[i] = sigmoid(bs[i]);
      gs[i] = -std::exp(al[h]) * softplus(as[i] + dt[h]);
    }
}

void CpuDevice::gated_delta_rule(const Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& g, const Tensor& beta, const Tensor& state) {
  for (const Tensor* t : {&o, &q, &k, &v, &g, &beta, &state}) {
    check_here("gated_delta_rule", *t);
    expect_dtype("gated_delta_rule", "argument", *t, DType::kF32);
  }
  SWIFTLET_CHECK(q.ndim() == 3 && v.ndim() == 3 && state.ndim() == 3,
                 "gated_delta_rule: q {} must be [T, HK, dk], v {} [T, HV, dv], state {} "
                 "[HV, dk, dv]",
                 q.describe(), v.describe(), state.describe());
  const int64_t T = q.dim(0), HK = q.dim(1), dk = q.dim(2), HV = v.dim(1), dv = v.dim(2);
  SWIFTLET_CHECK(HV % HK == 0 && v.dim(0) == T, "gated_delta_rule: v {} does not fit q {}",
                 v.describe(), q.describe());
  expect_shape("gated_delta_rule", "k", k, q.shape());
  expect_shape("gated_delta_rule", "o", o, v.shape());
  expect_shape("gated_delta_rule", "state", state, {HV, dk, dv});
  expect_numel("gated_delta_rule", "g", g, T * HV);
  expect_numel("gated_delta_rule", "beta", beta, T * HV);
  const int64_t r = HV / HK;
  const float *qs = f32(q), *ks = f32(k), *vs = f32(v), *gs = f32(g), *bs = f32(beta);
  float *os = f32(o), *ss = f32(state);
  parallel(pool(), HV, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> kv(static_cast<size_t>(dv));
    for (int64_t h = lo; h < hi; ++h) {
      float* S = ss + h * dk * dv;  // [dk, dv]
      const int64_t hk = h / r;
      for (int64_t t = 0; t < T; ++t) {
        const float decay = std::exp(gs[t * HV + h]), b = bs[t * HV + h];
        const float* kt = ks + (t * HK + hk) * dk;
        const float* qt = qs + (t * HK + hk) * dk;
        const float* vt = vs + (t * HV + h) * dv;
        float* ot = os + (t * HV + h) * dv;
        for (int64_t i = 0; i < dk * dv; ++i) S[i] *= decay;  // decay first
        std::fill(kv.begin(), kv.end(), 0.0f);
        for (int64_t i = 0; i < dk; ++i)  // kv = S^T k
          for (int64_t j = 0; j < dv; ++j) kv[size_t(j)] += S[i * dv + j] * kt[i];
        for (int64_t j = 0; j < dv; ++j) kv[size_t(j)] = b * (vt[j] - kv[size_t(j)]);  // delta
        for (int64_t i = 0; i < dk; ++i)  // S += k delta^T
          for (int64_t j = 0; j < dv; ++j) S[i * dv + j] += kt[i] * kv[size_t(j)];
        std::fill(ot, ot + dv, 0.0f);
        for (int64_t i = 0; i < dk; ++i)  // o = S^T q
          for (int64_t j = 0; j < dv; ++j) ot[j] += S[i * dv + j] * qt[i];
      }
    }
  });
}

void CpuDevice::mul_sigmoid(const Tensor& out, const Tensor& x, const Tensor& gate) {
  for (const Tensor* t : {&out, &x, &gate}) {
    check_here("mul_sigmoid", *t);
    expect_dtype("mul_sigmoid", "argument", *t, DType::kF32);
  }
  expect_numel("mul_sigmoid", "x", x, out.numel());
  expect_numel("mul_sigmoid", "gate", gate, out.numel());
  const float *xs = f32(x), *gs = f32(gate);
  float* os = f32(out);
  parallel(pool(), out.numel(), 1 << 14, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) os[i] = xs[i] * sigmoid(gs[i]);
  });
}

}  // namespace swiftlet
