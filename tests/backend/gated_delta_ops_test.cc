// The ops around the gated delta rule: forward against a double-precision loop written here,
// backward against central differences of that loop (double, eps 1e-5; f32 kernels: tolerance
// 1e-4 of the largest gradient), and the conv's decode path (token by token with the state
// carried) against one pass.
#include "backend/cpu/gated_delta_ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

namespace swiftlet::cpu {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(n);
  for (auto& e : v) e = scale * d(rng);
  return v;
}
double silu(double u) { return u / (1 + std::exp(-u)); }

// Checks grad against d/dx_i of loss(x) for every element of x.
void expect_grad(const char* what, std::vector<double> x, const std::vector<float>& grad,
                 const std::function<double(const std::vector<double>&)>& loss) {
  double err = 0, gmax = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i], eps = 1e-5;
    x[i] = keep + eps;
    const double lp = loss(x);
    x[i] = keep - eps;
    const double lm = loss(x);
    x[i] = keep;
    const double fd = (lp - lm) / (2 * eps);
    gmax = std::max(gmax, std::abs(fd));
    err = std::max(err, std::abs(fd - double(grad[i])));
  }
  EXPECT_LT(err, 1e-4 * std::max(1.0, gmax)) << what;
  std::printf("%s: max |kernel - finite differences| %.3g (max |grad| %.3g)\n", what, err, gmax);
}
std::vector<double> to_d(const std::vector<float>& v) { return {v.begin(), v.end()}; }

TEST(GatedDeltaOps, Qwen35CausalConvSilu) {
  const int64_t T = 9, C = 5, K = 4;
  auto x = randn(size_t(T * C), 1), w = randn(size_t(C * K), 2, 0.5f),
       st = randn(size_t((K - 1) * C), 3), R = randn(size_t(T * C), 4);
  // sum R * y in double, xx = state ++ x
  auto loss = [&](const std::vector<double>& xd, const std::vector<double>& wd,
                  const std::vector<double>& sd) {
    double l = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double u = 0;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t row = t + j;
          u += wd[size_t(c * K + j)] *
               (row >= K - 1 ? xd[size_t((row - K + 1) * C + c)] : sd[size_t(row * C + c)]);
        }
        l += R[size_t(t * C + c)] * silu(u);
      }
    return l;
  };
  std::vector<float> y(x.size()), s_out(st.size());
  causal_conv_silu_forward(T, C, K, x.data(), w.data(), st.data(), y.data(), s_out.data());
  double l = 0;
  for (size_t i = 0; i < y.size(); ++i) l += double(R[i]) * y[i];
  EXPECT_NEAR(l, loss(to_d(x), to_d(w), to_d(st)), 1e-5 * std::abs(l) + 1e-5);
  for (int64_t r = 0; r < K - 1; ++r)
    for (int64_t c = 0; c < C; ++c)
      EXPECT_EQ(s_out[size_t(r * C + c)], x[size_t((T - K + 1 + r) * C + c)]);

  // Decode: one token at a time, the state updated in place, equals the full pass.
  std::vector<float> s = st, y1(static_cast<size_t>(C));
  for (int64_t t = 0; t < T; ++t) {
    causal_conv_silu_forward(1, C, K, x.data() + t * C, w.data(), s.data(), y1.data(), s.data());
    for (int64_t c = 0; c < C; ++c) EXPECT_FLOAT_EQ(y1[size_t(c)], y[size_t(t * C + c)]) << t;
  }
  EXPECT_EQ(s, s_out);

  std::vector<float> dx(x.size()), dw(w.size()), ds(st.size());
  causal_conv_silu_backward(T, C, K, x.data(), w.data(), st.data(), R.data(), dx.data(), dw.data(),
                            ds.data());
  expect_grad("conv dx", to_d(x), dx,
              [&](const std::vector<double>& v) { return loss(v, to_d(w), to_d(st)); });
  expect_grad("conv dw", to_d(w), dw,
              [&](const std::vector<double>& v) { return loss(to_d(x), v, to_d(st)); });
  expect_grad("conv dstate", to_d(st), ds,
              [&](const std::vector<double>& v) { return loss(to_d(x), to_d(w), v); });
  // Without a state the window starts with zeros.
  std::vector<float> y0(x.size());
  causal_conv_silu_forward(T, C, K, x.data(), w.data(), nullptr, y0.data(), nullptr);
  double l0 = 0;
  for (size_t i = 0; i < y0.size(); ++i) l0 += double(R[i]) * y0[i];
  EXPECT_NEAR(l0, loss(to_d(x), to_d(w), std::vector<double>(st.size(), 0.0)),
              1e-5 * std::abs(l0) + 1e-5);
}

TEST(GatedDeltaOps, Qwen35L2NormAndGatedRmsNorm) {
  const int64_t rows = 3, dim = 7;
  const double eps = 1e-6;
  auto x = randn(size_t(rows * dim), 5), z = randn(size_t(rows * dim), 6),
       w = randn(size_t(dim), 7), R = randn(size_t(rows * dim), 8);
  auto l2_loss = [&](const std::vector<double>& xd) {
    double l = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t i = 0; i < dim; ++i) s += xd[size_t(r * dim + i)] * xd[size_t(r * dim + i)];
      for (int64_t i = 0; i < dim; ++i)
        l += R[size_t(r * dim + i)] * xd[size_t(r * dim + i)] / std::sqrt(s + eps);
    }
    return l;
  };
  std::vector<float> y(x.size()), dx(x.size());
  l2norm_forward(rows, dim, x.data(), float(eps), y.data());
  double l = 0;
  for (size_t i = 0; i < y.size(); ++i) l += double(R[i]) * y[i];
  EXPECT_NEAR(l, l2_loss(to_d(x)), 1e-5);
  l2norm_backward(rows, dim, x.data(), float(eps), R.data(), dx.data());
  expect_grad("l2norm dx", to_d(x), dx, l2_loss);

  auto g_loss = [&](const std::vector<double>& od, const std::vector<double>& zd,
                    const std::vector<double>& wd) {
    double l = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t i = 0; i < dim; ++i) s += od[size_t(r * dim + i)] * od[size_t(r * dim + i)];
      const double rs = 1 / std::sqrt(s / double(dim) + eps);
      for (int64_t i = 0; i < dim; ++i)
        l += R[size_t(r * dim + i)] * wd[size_t(i)] * od[size_t(r * dim + i)] * rs *
             silu(zd[size_t(r * dim + i)]);
    }
    return l;
  };
  std::vector<float> out(x.size()), d_o(x.size()), dz(x.size()), dw(w.size());
  gated_rmsnorm_forward(rows, dim, x.data(), z.data(), w.data(), float(eps), out.data());
  l = 0;
  for (size_t i = 0; i < out.size(); ++i) l += double(R[i]) * out[i];
  EXPECT_NEAR(l, g_loss(to_d(x), to_d(z), to_d(w)), 1e-5 * std::max(1.0, std::abs(l)));
  gated_rmsnorm_backward(rows, dim, x.data(), z.data(), w.data(), float(eps), R.data(), d_o.data(),
                         dz.data(), dw.data());
  expect_grad("gated rmsnorm do", to_d(x), d_o,
              [&](const std::vector<double>& v) { return g_loss(v, to_d(z), to_d(w)); });
  expect_grad("gated rmsnorm dz", to_d(z), dz,
              [&](const std::vector<double>& v) { return g_loss(to_d(x), v, to_d(w)); });
  expect_grad("gated rmsnorm dw", to_d(w), dw,
              [&](const std::vector<double>& v) { return g_loss(to_d(x), to_d(z), v); });
}

}  // namespace
}  // namespace swiftlet::cpu
