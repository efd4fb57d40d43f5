// CpuDevice: the Gated DeltaNet (linear attention) kernels and their backward: column split and
// concat, causal depthwise conv + SiLU, row L2 norm, the decay/beta gates, the gated delta rule
// (recurrent and chunked forms, chunked backward), gated RMSNorm, sigmoid gating. The math lives
// once in gated_delta_rule.cc / gated_delta_ops.cc; this file checks arguments and splits work.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_device.h"
#include "backend/cpu/gated_delta_ops.h"
#include "backend/cpu/gated_delta_rule.h"
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

void CpuDevice::concat_columns(const Tensor& out, std::span<const Tensor> ins) {
  check_here("concat_columns", out);
  expect_dtype("concat_columns", "out", out, DType::kF32);
  const int64_t R = out.dim(0), N = out.numel() / std::max<int64_t>(R, 1);
  int64_t total = 0;
  for (const Tensor& i : ins) {
    check_here("concat_columns", i);
    expect_dtype("concat_columns", "in", i, DType::kF32);
    SWIFTLET_CHECK(i.dim(0) == R, "concat_columns: in {} must have {} rows like out {}",
                   i.describe(), R, out.describe());
    total += i.numel() / std::max<int64_t>(R, 1);
  }
  SWIFTLET_CHECK(total == N, "concat_columns: ins hold {} columns, out {} has {}", total,
                 out.describe(), N);
  float* y = f32(out);
  parallel(pool(), R, std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1)),
           [&](int64_t lo, int64_t hi) {
             for (int64_t r = lo; r < hi; ++r) {
               int64_t off = 0;
               for (const Tensor& i : ins) {
                 const int64_t n = i.numel() / R;
                 std::copy(f32(i) + r * n, f32(i) + (r + 1) * n, y + r * N + off);
                 off += n;
               }
             }
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
  // Row `row` of [state; x], and the K-1 rows of it before x row t (the start state of rows t..).
  auto xx = [&](int64_t row) { return row < K - 1 ? st + row * C : xs + (row - (K - 1)) * C; };
  auto rows_before = [&](int64_t t) {
    std::vector<float> b(static_cast<size_t>((K - 1) * C));
    for (int64_t r = 0; r < K - 1; ++r) std::copy(xx(t + r), xx(t + r) + C, b.data() + r * C);
    return b;
  };
  parallel(pool(), T, std::max<int64_t>(K, 4096 / std::max<int64_t>(C, 1)),
           [&](int64_t lo, int64_t hi) {
             const std::vector<float> before = rows_before(lo);
             cpu::causal_conv_silu_forward(hi - lo, C, K, xs + lo * C, ws, before.data(),
                                           ys + lo * C, nullptr);
           });
  const std::vector<float> keep = rows_before(T);  // the new state: the last K-1 rows
  std::copy(keep.begin(), keep.end(), st);
}

void CpuDevice::causal_conv1d_silu_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                            const Tensor& x, const Tensor& w, const Tensor& state) {
  for (const Tensor* t : {&dx, &dy, &x, &w, &state}) {
    check_here("causal_conv1d_silu_backward", *t);
    expect_dtype("causal_conv1d_silu_backward", "argument", *t, DType::kF32);
  }
  check_here_optional("causal_conv1d_silu_backward", dw);
  SWIFTLET_CHECK(x.ndim() == 2 && w.ndim() == 2 && w.dim(0) == x.dim(1),
                 "causal_conv1d_silu_backward: x {} must be [T, C] and w {} [C, K]", x.describe(),
                 w.describe());
  const int64_t T = x.dim(0), C = x.dim(1), K = w.dim(1);
  expect_shape("causal_conv1d_silu_backward", "dx", dx, x.shape());
  expect_shape("causal_conv1d_silu_backward", "dy", dy, x.shape());
  expect_shape("causal_conv1d_silu_backward", "state", state, {K - 1, C});
  std::vector<float> dw_scratch;
  float* dws = nullptr;
  if (dw.defined()) {
    expect_numel("causal_conv1d_silu_backward", "dw", dw, C * K);
    dws = f32(dw);
  } else {
    dw_scratch.assign(size_t(C * K), 0.0f);
    dws = dw_scratch.data();
  }
  cpu::causal_conv_silu_backward(T, C, K, f32(x), f32(w), f32(state), f32(dy), f32(dx), dws,
                                 nullptr);
}

void CpuDevice::l2norm_rows(const Tensor& x, float eps, float scale) {
  check_here("l2norm_rows", x);
  expect_dtype("l2norm_rows", "x", x, DType::kF32);
  const int64_t R = x.dim(0), d = x.numel() / std::max<int64_t>(R, 1);
  float* p = f32(x);
  parallel(pool(), R, 256, [&](int64_t lo, int64_t hi) {
    cpu::l2norm_forward(hi - lo, d, p + lo * d, eps, p + lo * d);  // in place, row by row
    if (scale != 1.0f)
      for (int64_t i = lo * d; i < hi * d; ++i) p[i] *= scale;
  });
}

void CpuDevice::l2norm_rows_backward(const Tensor& dx, const Tensor& dy, const Tensor& x, float eps,
                                     float scale) {
  for (const Tensor* t : {&dx, &dy, &x}) {
    check_here("l2norm_rows_backward", *t);
    expect_dtype("l2norm_rows_backward", "argument", *t, DType::kF32);
  }
  expect_numel("l2norm_rows_backward", "dx", dx, x.numel());
  expect_numel("l2norm_rows_backward", "dy", dy, x.numel());
  const int64_t R = x.dim(0), d = x.numel() / std::max<int64_t>(R, 1);
  parallel(pool(), R, 256, [&](int64_t lo, int64_t hi) {
    std::vector<float> dys(f32(dy) + lo * d, f32(dy) + hi * d);  // d(scale y) = scale dy
    for (float& v : dys) v *= scale;
    cpu::l2norm_backward(hi - lo, d, f32(x) + lo * d, eps, dys.data(), f32(dx) + lo * d);
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

void CpuDevice::gdn_gates_backward(const Tensor& da, const Tensor& db, const Tensor& d_a_log,
                                   const Tensor& d_dt_bias, const Tensor& dg, const Tensor& dbeta,
                                   const Tensor& a, const Tensor& b, const Tensor& a_log,
                                   const Tensor& dt_bias) {
  for (const Tensor* t : {&da, &db, &dg, &dbeta, &a, &b, &a_log, &dt_bias}) {
    check_here("gdn_gates_backward", *t);
    expect_dtype("gdn_gates_backward", "argument", *t, DType::kF32);
  }
  check_here_optional("gdn_gates_backward", d_a_log);
  check_here_optional("gdn_gates_backward", d_dt_bias);
  const int64_t HV = a_log.numel(), T = a.numel() / std::max<int64_t>(HV, 1);
  for (const Tensor* t : {&da, &db, &dg, &dbeta, &b})
    expect_numel("gdn_gates_backward", "gate", *t, a.numel());
  const float *as = f32(a), *bs = f32(b), *al = f32(a_log), *dt = f32(dt_bias);
  const float *dgs = f32(dg), *dbs = f32(dbeta);
  float *das = f32(da), *dbl = f32(db);
  std::vector<double> sum_da(size_t(HV), 0.0), sum_dgg(size_t(HV), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < HV; ++h) {
      const int64_t i = t * HV + h;
      const float be = sigmoid(bs[i]), x = as[i] + dt[h], A = std::exp(al[h]);
      dbl[i] += dbs[i] * be * (1.0f - be);
      // g = -A softplus(x): dg/dx = -A sigmoid(x), dg/dA_log = g
      const float d = dgs[i] * -A * sigmoid(x);
      das[i] += d;
      sum_da[size_t(h)] += d;
      sum_dgg[size_t(h)] += double(dgs[i]) * double(-A * softplus(x));
    }
  if (d_dt_bias.defined()) {
    expect_numel("gdn_gates_backward", "d_dt_bias", d_dt_bias, HV);
    for (int64_t h = 0; h < HV; ++h) f32(d_dt_bias)[h] += float(sum_da[size_t(h)]);
  }
  if (d_a_log.defined()) {
    expect_numel("gdn_gates_backward", "d_a_log", d_a_log, HV);
    for (int64_t h = 0; h < HV; ++h) f32(d_a_log)[h] += float(sum_dgg[size_t(h)]);
  }
}

namespace {

// Checks the delta rule's arguments and returns its dims: q, k [T, HK, dk]; v [T, HV, dv];
// g, beta [T * HV]; state [HV, dk, dv].
GatedDeltaDims delta_rule_dims(const char* kernel, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& g, const Tensor& beta,
                               const Tensor& state) {
  SWIFTLET_CHECK(q.ndim() == 3 && v.ndim() == 3 && state.ndim() == 3,
                 "{}: q {} must be [T, HK, dk], v {} [T, HV, dv], state {} [HV, dk, dv]", kernel,
                 q.describe(), v.describe(), state.describe());
  GatedDeltaDims d;
  d.T = q.dim(0);
  d.HK = q.dim(1);
  d.dk = q.dim(2);
  d.HV = v.dim(1);
  d.dv = v.dim(2);
  SWIFTLET_CHECK(d.HV % d.HK == 0 && v.dim(0) == d.T, "{}: v {} does not fit q {}", kernel,
                 v.describe(), q.describe());
  expect_shape(kernel, "k", k, q.shape());
  expect_shape(kernel, "state", state, {d.HV, d.dk, d.dv});
  expect_numel(kernel, "g", g, d.T * d.HV);
  expect_numel(kernel, "beta", beta, d.T * d.HV);
  return d;
}

}  // namespace

void CpuDevice::gated_delta_rule(const Tensor& o, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& g, const Tensor& beta, const Tensor& state) {
  for (const Tensor* t : {&o, &q, &k, &v, &g, &beta, &state}) {
    check_here("gated_delta_rule", *t);
    expect_dtype("gated_delta_rule", "argument", *t, DType::kF32);
  }
  const GatedDeltaDims d = delta_rule_dims("gated_delta_rule", q, k, v, g, beta, state);
  expect_shape("gated_delta_rule", "o", o, v.shape());
  parallel(pool(), d.HV, 1, [&](int64_t lo, int64_t hi) {
    GatedDeltaDims part = d;
    part.h_begin = lo;
    part.h_end = hi;
    const FlushDenormalsScope ftz;
    cpu::gated_delta_rule_recurrent(part, f32(q), f32(k), f32(v), f32(g), f32(beta), f32(state),
                                    f32(o));
  });
}

void CpuDevice::gated_delta_rule_chunked(const Tensor& o, const Tensor& q, const Tensor& k,
                                         const Tensor& v, const Tensor& g, const Tensor& beta,
                                         const Tensor& state, int64_t chunk) {
  for (const Tensor* t : {&o, &q, &k, &v, &g, &beta, &state}) {
    check_here("gated_delta_rule_chunked", *t);
    expect_dtype("gated_delta_rule_chunked", "argument", *t, DType::kF32);
  }
  const GatedDeltaDims d = delta_rule_dims("gated_delta_rule_chunked", q, k, v, g, beta, state);
  expect_shape("gated_delta_rule_chunked", "o", o, v.shape());
  SWIFTLET_CHECK(chunk > 0, "gated_delta_rule_chunked: chunk {} must be positive", chunk);
  parallel(pool(), d.HV, 1, [&](int64_t lo, int64_t hi) {
    GatedDeltaDims part = d;
    part.h_begin = lo;
    part.h_end = hi;
    const FlushDenormalsScope ftz;
    cpu::gated_delta_rule_chunked(part, chunk, f32(q), f32(k), f32(v), f32(g), f32(beta),
                                  f32(state), f32(o));
  });
}

void CpuDevice::gated_delta_rule_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                          const Tensor& dg, const Tensor& dbeta,
                                          const Tensor& d_state0, const Tensor& d_o,
                                          const Tensor& q, const Tensor& k, const Tensor& v,
                                          const Tensor& g, const Tensor& beta, const Tensor& state0,
                                          int64_t chunk) {
  for (const Tensor* t : {&dq, &dk, &dv, &dg, &dbeta, &d_o, &q, &k, &v, &g, &beta, &state0}) {
    check_here("gated_delta_rule_backward", *t);
    expect_dtype("gated_delta_rule_backward", "argument", *t, DType::kF32);
  }
  check_here_optional("gated_delta_rule_backward", d_state0);
  const GatedDeltaDims d = delta_rule_dims("gated_delta_rule_backward", q, k, v, g, beta, state0);
  expect_shape("gated_delta_rule_backward", "dq", dq, q.shape());
  expect_shape("gated_delta_rule_backward", "dk", dk, q.shape());
  expect_shape("gated_delta_rule_backward", "dv", dv, v.shape());
  expect_shape("gated_delta_rule_backward", "d_o", d_o, v.shape());
  expect_numel("gated_delta_rule_backward", "dg", dg, d.T * d.HV);
  expect_numel("gated_delta_rule_backward", "dbeta", dbeta, d.T * d.HV);
  SWIFTLET_CHECK(chunk > 0, "gated_delta_rule_backward: chunk {} must be positive", chunk);
  std::vector<float> ds_scratch;
  float* ds0 = nullptr;
  if (d_state0.defined()) {
    expect_shape("gated_delta_rule_backward", "d_state0", d_state0, state0.shape());
    ds0 = f32(d_state0);
  } else {
    ds_scratch.assign(size_t(state0.numel()), 0.0f);
    ds0 = ds_scratch.data();
  }
  // Value heads sharing a key head add into the same dq, dk rows: split by key head.
  const int64_t r = d.HV / d.HK;
  parallel(pool(), d.HK, 1, [&](int64_t lo, int64_t hi) {
    GatedDeltaDims part = d;
    part.h_begin = lo * r;
    part.h_end = hi * r;
    const FlushDenormalsScope ftz;
    cpu::gated_delta_rule_chunked_backward(part, chunk, f32(q), f32(k), f32(v), f32(g), f32(beta),
                                           f32(state0), f32(d_o), nullptr, f32(dq), f32(dk),
                                           f32(dv), f32(dg), f32(dbeta), ds0);
  });
}

void CpuDevice::gated_rmsnorm_forward(const Tensor& out, const Tensor& o, const Tensor& z,
                                      const Tensor& w, float eps) {
  for (const Tensor* t : {&out, &o, &z, &w}) {
    check_here("gated_rmsnorm_forward", *t);
    expect_dtype("gated_rmsnorm_forward", "argument", *t, DType::kF32);
  }
  const int64_t dim = w.numel(), R = o.numel() / std::max<int64_t>(dim, 1);
  SWIFTLET_CHECK(R * dim == o.numel(), "gated_rmsnorm_forward: o {} is not rows of w {}",
                 o.describe(), w.describe());
  expect_numel("gated_rmsnorm_forward", "z", z, o.numel());
  expect_numel("gated_rmsnorm_forward", "out", out, o.numel());
  parallel(pool(), R, 64, [&](int64_t lo, int64_t hi) {
    cpu::gated_rmsnorm_forward(hi - lo, dim, f32(o) + lo * dim, f32(z) + lo * dim, f32(w), eps,
                               f32(out) + lo * dim);
  });
}

void CpuDevice::gated_rmsnorm_backward(const Tensor& d_o, const Tensor& dz, const Tensor& dw,
                                       const Tensor& dout, const Tensor& o, const Tensor& z,
                                       const Tensor& w, float eps) {
  for (const Tensor* t : {&d_o, &dz, &dout, &o, &z, &w}) {
    check_here("gated_rmsnorm_backward", *t);
    expect_dtype("gated_rmsnorm_backward", "argument", *t, DType::kF32);
  }
  check_here_optional("gated_rmsnorm_backward", dw);
  const int64_t dim = w.numel(), R = o.numel() / std::max<int64_t>(dim, 1);
  for (const Tensor* t : {&d_o, &dz, &dout, &z})
    expect_numel("gated_rmsnorm_backward", "argument", *t, o.numel());
  std::vector<float> dw_scratch;
  float* dws = nullptr;
  if (dw.defined()) {
    expect_numel("gated_rmsnorm_backward", "dw", dw, dim);
    dws = f32(dw);
  } else {
    dw_scratch.assign(size_t(dim), 0.0f);
    dws = dw_scratch.data();
  }
  cpu::gated_rmsnorm_backward(R, dim, f32(o), f32(z), f32(w), eps, f32(dout), f32(d_o), f32(dz),
                              dws);
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

void CpuDevice::mul_sigmoid_backward(const Tensor& dx, const Tensor& dgate, const Tensor& dout,
                                     const Tensor& x, const Tensor& gate) {
  for (const Tensor* t : {&dx, &dgate, &dout, &x, &gate}) {
    check_here("mul_sigmoid_backward", *t);
    expect_dtype("mul_sigmoid_backward", "argument", *t, DType::kF32);
  }
  for (const Tensor* t : {&dx, &dgate, &dout, &gate})
    expect_numel("mul_sigmoid_backward", "argument", *t, x.numel());
  const float *dos = f32(dout), *xs = f32(x), *gs = f32(gate);
  float *dxs = f32(dx), *dgs = f32(dgate);
  parallel(pool(), x.numel(), 1 << 14, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float s = sigmoid(gs[i]);
      dxs[i] += dos[i] * s;
      dgs[i] += dos[i] * xs[i] * s * (1.0f - s);
    }
  });
}

}  // namespace swiftlet
