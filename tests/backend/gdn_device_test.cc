// The Gated DeltaNet kernels of the Device interface on every device: each forward against a
// double-precision loop written here, each backward against central differences of that loop.
// (The kernels' math is also checked on its own by GatedDeltaRule.* / GatedDeltaOps.*; this file
// checks what the model calls: argument layout, state handling, accumulation, the device split.)
#include <cmath>

#include "backend/device.h"
#include "backend/op_harness.h"

namespace swiftlet::test {
namespace {

class GdnDeviceTest : public DeviceTest {};
SWIFTLET_ALL_DEVICES(GdnDeviceTest);

using Vec = std::vector<double>;

double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

Vec plus(const Vec& a, const std::vector<float>& b) {
  Vec r(a);
  for (size_t i = 0; i < r.size(); ++i) r[i] += b[i];
  return r;
}

TEST_P(GdnDeviceTest, ConcatColumnsInvertsSplitColumns) {
  auto x = random_floats(3 * 9, 1);
  Tensor a = dev().empty({3, 2}, DType::kF32), b = dev().empty({3, 7}, DType::kF32);
  const Tensor parts[] = {a, b};
  dev().split_columns(parts, up(x, {3, 9}));
  Tensor back = dev().empty({3, 9}, DType::kF32);
  dev().concat_columns(back, parts);
  EXPECT_EQ(down(back), x);
}

// y = silu(causal depthwise conv of [state; x]) over T rows of C channels, kernel K.
Vec conv_ref(const Vec& x, const Vec& w, const Vec& state, int64_t T, int64_t C, int64_t K) {
  Vec y(size_t(T * C));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      double u = 0;
      for (int64_t j = 0; j < K; ++j) {
        const int64_t row = t + j;  // of [state; x]
        u += w[size_t(c * K + j)] *
             (row < K - 1 ? state[size_t(row * C + c)] : x[size_t((row - (K - 1)) * C + c)]);
      }
      y[size_t(t * C + c)] = u * sigm(u);
    }
  return y;
}

TEST_P(GdnDeviceTest, CausalConvSiluForwardStateAndBackward) {
  const int64_t T = 11, C = 5, K = 4;
  auto x = random_floats(size_t(T * C), 2), w = random_floats(size_t(C * K), 3, 0.5);
  auto st = random_floats(size_t((K - 1) * C), 4), r = random_floats(size_t(T * C), 5);
  Tensor X = up(x, {T, C}), W = up(w, {C, K}), S = up(st, {K - 1, C});
  Tensor y = dev().empty({T, C}, DType::kF32);
  dev().causal_conv1d_silu(y, X, W, S);
  SWIFTLET_EXPECT_CLOSE(down(y), conv_ref(to_double(x), to_double(w), to_double(st), T, C, K),
                        tol_f32(K));
  // The new state is the last K-1 raw rows.
  std::vector<float> last(x.end() - (K - 1) * C, x.end());
  EXPECT_EQ(down(S), last);
  auto dx0 = random_floats(size_t(T * C), 6), dw0 = random_floats(size_t(C * K), 7);
  Tensor dX = up(dx0, {T, C}), dW = up(dw0, {C, K});
  dev().causal_conv1d_silu_backward(dX, dW, up(r, {T, C}), X, W, up(st, {K - 1, C}));
  auto gx = numeric_grad(to_double(x), [&](const Vec& v) {
    return project(conv_ref(v, to_double(w), to_double(st), T, C, K), r);
  });
  auto gw = numeric_grad(to_double(w), [&](const Vec& v) {
    return project(conv_ref(to_double(x), v, to_double(st), T, C, K), r);
  });
  SWIFTLET_EXPECT_CLOSE(down(dX), plus(gx, dx0), tol_grad(K));
  SWIFTLET_EXPECT_CLOSE(down(dW), plus(gw, dw0), tol_grad(T));
}

Vec l2_ref(const Vec& x, int64_t d, double eps, double scale) {
  Vec y(x.size());
  for (size_t r = 0; r < x.size() / size_t(d); ++r) {
    double s = 0;
    for (int64_t i = 0; i < d; ++i)
      s += x[r * size_t(d) + size_t(i)] * x[r * size_t(d) + size_t(i)];
    for (int64_t i = 0; i < d; ++i)
      y[r * size_t(d) + size_t(i)] = x[r * size_t(d) + size_t(i)] * scale / std::sqrt(s + eps);
  }
  return y;
}

TEST_P(GdnDeviceTest, L2NormRowsForwardAndBackward) {
  const int64_t R = 6, d = 8;
  const float eps = 1e-6f, scale = 0.35f;
  auto x = random_floats(size_t(R * d), 8), r = random_floats(size_t(R * d), 9);
  Tensor X = up(x, {R, d});
  dev().l2norm_rows(X, eps, scale);
  SWIFTLET_EXPECT_CLOSE(down(X), l2_ref(to_double(x), d, eps, scale), tol_f32(d));
  auto dx0 = random_floats(size_t(R * d), 10);
  Tensor dX = up(dx0, {R, d});
  dev().l2norm_rows_backward(dX, up(r, {R, d}), up(x, {R, d}), eps, scale);
  auto gx = numeric_grad(to_double(x),
                         [&](const Vec& v) { return project(l2_ref(v, d, eps, scale), r); });
  SWIFTLET_EXPECT_CLOSE(down(dX), plus(gx, dx0), tol_grad(d));
}

// [g | beta] of gdn_gates: g = -exp(A_log) softplus(a + dt_bias), beta = sigmoid(b).
Vec gates_ref(const Vec& a, const Vec& b, const Vec& a_log, const Vec& dt, int64_t HV) {
  Vec out(2 * a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const size_t h = i % size_t(HV);
    out[i] = -std::exp(a_log[h]) * std::log1p(std::exp(a[i] + dt[h]));
    out[a.size() + i] = sigm(b[i]);
  }
  return out;
}

TEST_P(GdnDeviceTest, GatesForwardAndBackward) {
  const int64_t T = 5, HV = 3;
  auto a = random_floats(size_t(T * HV), 11), b = random_floats(size_t(T * HV), 12);
  auto al = random_floats(size_t(HV), 13, 0.5), dt = random_floats(size_t(HV), 14, 0.5);
  auto r = random_floats(size_t(2 * T * HV), 15);
  Tensor A = up(a, {T, HV}), B = up(b, {T, HV}), AL = up(al, {HV}), DT = up(dt, {HV});
  Tensor g = dev().empty({T, HV}, DType::kF32), beta = dev().empty({T, HV}, DType::kF32);
  dev().gdn_gates(g, beta, A, B, AL, DT);
  auto want = gates_ref(to_double(a), to_double(b), to_double(al), to_double(dt), HV);
  auto got = down(g), got_b = down(beta);
  got.insert(got.end(), got_b.begin(), got_b.end());
  SWIFTLET_EXPECT_CLOSE(got, want, tol_f32(4));
  std::vector<float> rg(r.begin(), r.begin() + T * HV), rb(r.begin() + T * HV, r.end());
  Tensor dA = dev().zeros({T, HV}, DType::kF32), dB = dev().zeros({T, HV}, DType::kF32);
  Tensor dAL = dev().zeros({HV}, DType::kF32), dDT = dev().zeros({HV}, DType::kF32);
  dev().gdn_gates_backward(dA, dB, dAL, dDT, up(rg, {T, HV}), up(rb, {T, HV}), A, B, AL, DT);
  auto f = [&](const Vec& av, const Vec& bv, const Vec& alv, const Vec& dtv) {
    return project(gates_ref(av, bv, alv, dtv, HV), r);
  };
  const Vec ad = to_double(a), bd = to_double(b), ald = to_double(al), dtd = to_double(dt);
  SWIFTLET_EXPECT_CLOSE(
      down(dA), numeric_grad(ad, [&](const Vec& v) { return f(v, bd, ald, dtd); }), tol_grad(4));
  SWIFTLET_EXPECT_CLOSE(
      down(dB), numeric_grad(bd, [&](const Vec& v) { return f(ad, v, ald, dtd); }), tol_grad(4));
  SWIFTLET_EXPECT_CLOSE(
      down(dAL), numeric_grad(ald, [&](const Vec& v) { return f(ad, bd, v, dtd); }), tol_grad(T));
  SWIFTLET_EXPECT_CLOSE(
      down(dDT), numeric_grad(dtd, [&](const Vec& v) { return f(ad, bd, ald, v); }), tol_grad(T));
}

Vec gated_norm_ref(const Vec& o, const Vec& z, const Vec& w, double eps) {
  const size_t d = w.size();
  Vec y(o.size());
  for (size_t r = 0; r < o.size() / d; ++r) {
    double s = 0;
    for (size_t i = 0; i < d; ++i) s += o[r * d + i] * o[r * d + i];
    const double rs = 1.0 / std::sqrt(s / double(d) + eps);
    for (size_t i = 0; i < d; ++i) {
      const double zi = z[r * d + i];
      y[r * d + i] = w[i] * o[r * d + i] * rs * zi * sigm(zi);
    }
  }
  return y;
}

TEST_P(GdnDeviceTest, GatedRmsNormForwardAndBackward) {
  const int64_t R = 7, d = 6;
  const float eps = 1e-6f;
  auto o = random_floats(size_t(R * d), 16), z = random_floats(size_t(R * d), 17, 2.0);
  auto w = random_floats(size_t(d), 18), r = random_floats(size_t(R * d), 19);
  Tensor O = up(o, {R, d}), Z = up(z, {R, d}), W = up(w, {d}), y = dev().empty({R, d}, DType::kF32);
  dev().gated_rmsnorm_forward(y, O, Z, W, eps);
  const Vec od = to_double(o), zd = to_double(z), wd = to_double(w);
  SWIFTLET_EXPECT_CLOSE(down(y), gated_norm_ref(od, zd, wd, eps), tol_f32(d));
  auto do0 = random_floats(size_t(R * d), 20);
  Tensor dO = up(do0, {R, d}), dZ = dev().zeros({R, d}, DType::kF32),
         dW = dev().zeros({d}, DType::kF32);
  dev().gated_rmsnorm_backward(dO, dZ, dW, up(r, {R, d}), O, Z, W, eps);
  auto f = [&](const Vec& ov, const Vec& zv, const Vec& wv) {
    return project(gated_norm_ref(ov, zv, wv, eps), r);
  };
  SWIFTLET_EXPECT_CLOSE(down(dO),
                        plus(numeric_grad(od, [&](const Vec& v) { return f(v, zd, wd); }), do0),
                        tol_grad(d));
  SWIFTLET_EXPECT_CLOSE(down(dZ), numeric_grad(zd, [&](const Vec& v) { return f(od, v, wd); }),
                        tol_grad(d));
  SWIFTLET_EXPECT_CLOSE(down(dW), numeric_grad(wd, [&](const Vec& v) { return f(od, zd, v); }),
                        tol_grad(R * d));
}

TEST_P(GdnDeviceTest, MulSigmoidBackward) {
  const int64_t n = 40;
  auto x = random_floats(n, 21), gt = random_floats(n, 22, 3.0), r = random_floats(n, 23);
  auto ref = [&](const Vec& xv, const Vec& gv) {
    Vec y(xv.size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = xv[i] * sigm(gv[i]);
    return y;
  };
  Tensor dX = dev().zeros({n}, DType::kF32), dG = dev().zeros({n}, DType::kF32);
  dev().mul_sigmoid_backward(dX, dG, up(r, {n}), up(x, {n}), up(gt, {n}));
  const Vec xd = to_double(x), gd = to_double(gt);
  SWIFTLET_EXPECT_CLOSE(down(dX),
                        numeric_grad(xd, [&](const Vec& v) { return project(ref(v, gd), r); }),
                        tol_grad(4));
  SWIFTLET_EXPECT_CLOSE(down(dG),
                        numeric_grad(gd, [&](const Vec& v) { return project(ref(xd, v), r); }),
                        tol_grad(4));
}

// The recurrence in double: o [T, HV, dv] followed by the end state [HV, dk, dv].
Vec delta_ref(const Vec& q, const Vec& k, const Vec& v, const Vec& g, const Vec& beta,
              const Vec& s0, int64_t T, int64_t HK, int64_t HV, int64_t dk, int64_t dv) {
  Vec out(size_t(T * HV * dv)), S = s0;
  for (int64_t h = 0; h < HV; ++h) {
    const int64_t kh = h / (HV / HK);
    double* St = &S[size_t(h * dk * dv)];
    for (int64_t t = 0; t < T; ++t) {
      const double* qt = &q[size_t((t * HK + kh) * dk)];
      const double* kt = &k[size_t((t * HK + kh) * dk)];
      const double e = std::exp(g[size_t(t * HV + h)]), b = beta[size_t(t * HV + h)];
      for (int64_t i = 0; i < dk * dv; ++i) St[i] *= e;
      for (int64_t j = 0; j < dv; ++j) {
        double kv = 0;
        for (int64_t i = 0; i < dk; ++i) kv += St[i * dv + j] * kt[i];
        const double delta = b * (v[size_t((t * HV + h) * dv + j)] - kv);
        for (int64_t i = 0; i < dk; ++i) St[i * dv + j] += kt[i] * delta;
      }
      for (int64_t j = 0; j < dv; ++j) {
        double o = 0;
        for (int64_t i = 0; i < dk; ++i) o += St[i * dv + j] * qt[i];
        out[size_t((t * HV + h) * dv + j)] = o;
      }
    }
  }
  out.insert(out.end(), S.begin(), S.end());
  return out;
}

// Chunked forward (chunks of 8 over 21 tokens) and its backward, from a non-zero start state;
// the backward is checked against differences of the outputs only (the end state gets no
// gradient), d_state0 included.
TEST_P(GdnDeviceTest, DeltaRuleChunkedForwardAndBackward) {
  const int64_t T = 21, HK = 1, HV = 2, dk = 3, dv = 4, chunk = 8;
  auto q = random_floats(size_t(T * HK * dk), 24, 0.5),
       k = random_floats(size_t(T * HK * dk), 25, 0.5);
  auto v = random_floats(size_t(T * HV * dv), 26), g = random_floats(size_t(T * HV), 27, 0.1);
  for (auto& x : g) x -= 0.2f;
  std::vector<float> beta(size_t(T * HV));
  for (size_t i = 0; i < beta.size(); ++i) beta[i] = float(0.5 + 0.4 * std::sin(double(i)));
  auto s0 = random_floats(size_t(HV * dk * dv), 28, 0.5);
  auto r = random_floats(size_t(T * HV * dv), 29);
  const Vec qd = to_double(q), kd = to_double(k), vd = to_double(v), gd = to_double(g),
            bd = to_double(beta), sd = to_double(s0);
  Tensor Q = up(q, {T, HK, dk}), K = up(k, {T, HK, dk}), V = up(v, {T, HV, dv});
  Tensor G = up(g, {T, HV}), B = up(beta, {T, HV}), S = up(s0, {HV, dk, dv});
  Tensor O = dev().empty({T, HV, dv}, DType::kF32);
  dev().gated_delta_rule_chunked(O, Q, K, V, G, B, S, chunk);
  Vec want = delta_ref(qd, kd, vd, gd, bd, sd, T, HK, HV, dk, dv);
  auto got = down(O), got_s = down(S);
  got.insert(got.end(), got_s.begin(), got_s.end());
  SWIFTLET_EXPECT_CLOSE(got, want, tol_f32(T * dk));

  auto f = [&](const Vec& qv, const Vec& kv, const Vec& vv, const Vec& gv, const Vec& bv,
               const Vec& sv) {
    Vec y = delta_ref(qv, kv, vv, gv, bv, sv, T, HK, HV, dk, dv);
    y.resize(size_t(T * HV * dv));  // outputs only
    return project(y, r);
  };
  Tensor dQ = dev().zeros({T, HK, dk}, DType::kF32), dK = dev().zeros({T, HK, dk}, DType::kF32);
  Tensor dV = dev().zeros({T, HV, dv}, DType::kF32), dG = dev().zeros({T, HV}, DType::kF32);
  Tensor dB = dev().zeros({T, HV}, DType::kF32), dS = dev().zeros({HV, dk, dv}, DType::kF32);
  dev().gated_delta_rule_backward(dQ, dK, dV, dG, dB, dS, up(r, {T, HV, dv}), Q, K, V, G, B,
                                  up(s0, {HV, dk, dv}), chunk);
  const double tol = tol_grad(T * dk * dv);
  SWIFTLET_EXPECT_CLOSE(
      down(dQ), numeric_grad(qd, [&](const Vec& x) { return f(x, kd, vd, gd, bd, sd); }), tol);
  SWIFTLET_EXPECT_CLOSE(
      down(dK), numeric_grad(kd, [&](const Vec& x) { return f(qd, x, vd, gd, bd, sd); }), tol);
  SWIFTLET_EXPECT_CLOSE(
      down(dV), numeric_grad(vd, [&](const Vec& x) { return f(qd, kd, x, gd, bd, sd); }), tol);
  SWIFTLET_EXPECT_CLOSE(
      down(dG), numeric_grad(gd, [&](const Vec& x) { return f(qd, kd, vd, x, bd, sd); }), tol);
  SWIFTLET_EXPECT_CLOSE(
      down(dB), numeric_grad(bd, [&](const Vec& x) { return f(qd, kd, vd, gd, x, sd); }), tol);
  SWIFTLET_EXPECT_CLOSE(
      down(dS), numeric_grad(sd, [&](const Vec& x) { return f(qd, kd, vd, gd, bd, x); }), tol);
}

}  // namespace
}  // namespace swiftlet::test
