// The row and element-wise kernels on every device, each against a double-precision loop, and
// every backward against finite differences of that loop.
#include <bit>
#include <cmath>
#include <cstdint>

#include "backend/device.h"
#include "backend/op_harness.h"

namespace swiftlet::test {
namespace {

class OpsTest : public DeviceTest {};
SWIFTLET_ALL_DEVICES(OpsTest);

std::vector<double> plus(const std::vector<double>& a, const std::vector<float>& b) {
  std::vector<double> r(a);
  for (size_t i = 0; i < r.size(); ++i) r[i] += b[i];
  return r;
}

TEST_P(OpsTest, AddScaleAndSumSquares) {
  const int64_t n = 100003;  // odd size, parallel, vector tails
  auto a = random_floats(n, 1), b = random_floats(n, 2);
  Tensor A = up(a, {n}), B = up(b, {n}), out = dev().empty({n}, DType::kF32);
  dev().add(out, A, B);
  std::vector<double> want(n);
  for (int64_t i = 0; i < n; ++i) want[size_t(i)] = double(a[size_t(i)]) + b[size_t(i)];
  SWIFTLET_EXPECT_CLOSE(down(out), want, tol_f32(1));
  dev().add_inplace(A, B, -0.5f);
  for (int64_t i = 0; i < n; ++i) want[size_t(i)] = double(a[size_t(i)]) - 0.5 * b[size_t(i)];
  SWIFTLET_EXPECT_CLOSE(down(A), want, tol_f32(1));
  dev().scale_inplace(A, 3.0f);
  for (auto& x : want) x *= 3.0;
  SWIFTLET_EXPECT_CLOSE(down(A), want, tol_f32(2));
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    auto r = round_to(b, d);
    double ss = 0;
    for (float x : r) ss += double(x) * x;
    double got = dev().sum_squares(up(b, {n}, d));
    EXPECT_NEAR(got, ss, ss * tol_f32(256)) << dtype_name(d);
  }
}

TEST_P(OpsTest, BiasForwardAndBackward) {
  const int64_t rows = 7, n = 37;
  auto x = random_floats(rows * n, 3), bias = random_floats(n, 4), r = random_floats(rows * n, 5);
  for (DType d : {DType::kF32, DType::kBF16}) {
    auto bq = round_to(bias, d);
    Tensor X = up(x, {rows, n});
    dev().add_bias(X, up(bias, {n}, d));
    std::vector<double> want(x.size());
    for (int64_t i = 0; i < rows * n; ++i)
      want[size_t(i)] = double(x[size_t(i)]) + bq[size_t(i % n)];
    SWIFTLET_EXPECT_CLOSE(down(X), want, tol_f32(1));
  }
  // dbias += sum_r dy[r, :], against finite differences of sum(r * (x + bias)).
  auto g = numeric_grad(to_double(bias), [&](const std::vector<double>& bv) {
    std::vector<double> y(x.size());
    for (int64_t i = 0; i < rows * n; ++i) y[size_t(i)] = x[size_t(i)] + bv[size_t(i % n)];
    return project(y, r);
  });
  auto db0 = random_floats(n, 6);
  Tensor dB = up(db0, {n});
  dev().bias_backward(dB, up(r, {rows, n}));
  SWIFTLET_EXPECT_CLOSE(down(dB), plus(g, db0), tol_grad(rows));
}

TEST_P(OpsTest, EmbeddingForwardAndBackward) {
  const int64_t V = 11, D = 21;
  std::vector<int32_t> ids = {3, 0, 10, 3, 7, 3};  // repeated ids accumulate
  const int64_t T = int64_t(ids.size());
  auto table = random_floats(V * D, 7);
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    auto tq = round_to(table, d);
    Tensor out = dev().empty({T, D}, DType::kF32);
    dev().embedding_forward(out, up_i32(ids, {T}), up(table, {V, D}, d));
    std::vector<double> want;
    for (int32_t id : ids)
      for (int64_t i = 0; i < D; ++i) want.push_back(tq[size_t(id * D + i)]);
    SWIFTLET_EXPECT_CLOSE(down(out), want, 0.0);
  }
  auto r = random_floats(T * D, 8), dt0 = random_floats(V * D, 9);
  auto g = numeric_grad(to_double(table), [&](const std::vector<double>& tv) {
    std::vector<double> y;
    for (int32_t id : ids)
      for (int64_t i = 0; i < D; ++i) y.push_back(tv[size_t(id * D + i)]);
    return project(y, r);
  });
  Tensor dT = up(dt0, {V, D});
  dev().embedding_backward(dT, up(r, {T, D}), up_i32(ids, {T}));
  SWIFTLET_EXPECT_CLOSE(down(dT), plus(g, dt0), tol_grad(double(T)));
  // An id outside the table is a user-facing error naming the position.
  Tensor out = dev().empty({1, D}, DType::kF32);
  try {
    dev().embedding_forward(out, up_i32({11}, {1}), up(table, {V, D}));
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 11 at position 0"), std::string::npos)
        << e.what();
  }
}

std::vector<double> rmsnorm_ref(const std::vector<double>& x, const std::vector<double>& w,
                                int64_t rows, int64_t dim, double eps, std::vector<double>* rstd) {
  std::vector<double> y(x.size());
  if (rstd) rstd->resize(size_t(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += x[size_t(r * dim + i)] * x[size_t(r * dim + i)];
    double inv = 1.0 / std::sqrt(ss / double(dim) + eps);
    if (rstd) (*rstd)[size_t(r)] = inv;
    for (int64_t i = 0; i < dim; ++i)
      y[size_t(r * dim + i)] = x[size_t(r * dim + i)] * inv * w[size_t(i)];
  }
  return y;
}

TEST_P(OpsTest, RmsNormForwardAndBackward) {
  const int64_t rows = 5, dim = 35;
  const float eps = 1e-6f;
  auto x = random_floats(rows * dim, 10), w = random_floats(dim, 11),
       r = random_floats(rows * dim, 12);
  for (DType d : {DType::kF32, DType::kBF16}) {
    auto wq = round_to(w, d);
    Tensor y = dev().empty({rows, dim}, DType::kF32), rstd = dev().empty({rows}, DType::kF32);
    dev().rmsnorm_forward(y, rstd, up(x, {rows, dim}), up(w, {dim}, d), eps);
    std::vector<double> want_rstd;
    auto want = rmsnorm_ref(to_double(x), to_double(wq), rows, dim, eps, &want_rstd);
    SWIFTLET_EXPECT_CLOSE(down(y), want, tol_f32(dim));
    SWIFTLET_EXPECT_CLOSE(down(rstd), want_rstd, tol_f32(dim));
  }
  Tensor X = up(x, {rows, dim}), Wt = up(w, {dim});
  Tensor y = dev().empty({rows, dim}, DType::kF32), rstd = dev().empty({rows}, DType::kF32);
  dev().rmsnorm_forward(y, rstd, X, Wt, eps);
  auto dx0 = random_floats(rows * dim, 13), dw0 = random_floats(dim, 14);
  Tensor dX = up(dx0, {rows, dim}), dW = up(dw0, {dim});
  dev().rmsnorm_backward(dX, dW, up(r, {rows, dim}), X, Wt, rstd);
  auto gx = numeric_grad(to_double(x), [&](const auto& xv) {
    return project(rmsnorm_ref(xv, to_double(w), rows, dim, eps, nullptr), r);
  });
  auto gw = numeric_grad(to_double(w), [&](const auto& wv) {
    return project(rmsnorm_ref(to_double(x), wv, rows, dim, eps, nullptr), r);
  });
  SWIFTLET_EXPECT_CLOSE(down(dX), plus(gx, dx0), tol_grad(dim));
  SWIFTLET_EXPECT_CLOSE(down(dW), plus(gw, dw0), tol_grad(rows * dim));
  // A frozen weight: dw undefined, dx still accumulated.
  Tensor dX2 = dev().zeros({rows, dim}, DType::kF32);
  dev().rmsnorm_backward(dX2, Tensor(), up(r, {rows, dim}), X, Wt, rstd);
  SWIFTLET_EXPECT_CLOSE(down(dX2), gx, tol_grad(dim));
}

// HF rotate_half: out1 = x1 cos - x2 sin, out2 = x2 cos + x1 sin, angle = f32(pos * inv_freq).
std::vector<double> rope_ref(const std::vector<double>& x, const std::vector<int32_t>& pos,
                             const std::vector<float>& inv_freq, int64_t H, int64_t D,
                             double scaling) {
  std::vector<double> y(x.size());
  int64_t half = D / 2;
  for (size_t t = 0; t < pos.size(); ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < half; ++i) {
        double a = double(float(pos[t]) * inv_freq[size_t(i)]);
        double c = std::cos(a) * scaling, s = std::sin(a) * scaling;
        size_t b = (t * size_t(H) + size_t(h)) * size_t(D);
        double x1 = x[b + size_t(i)], x2 = x[b + size_t(i + half)];
        y[b + size_t(i)] = x1 * c - x2 * s;
        y[b + size_t(i + half)] = x2 * c + x1 * s;
      }
  return y;
}

TEST_P(OpsTest, RopeForwardAndBackward) {
  const int64_t H = 3, D = 36;
  std::vector<int32_t> pos = {0, 1, 5, 17, 1000, 32767};
  const int64_t T = int64_t(pos.size());
  std::vector<float> inv_freq(D / 2);
  for (int64_t i = 0; i < D / 2; ++i) inv_freq[size_t(i)] = float(std::pow(1e6, -2.0 * i / D));
  auto x = random_floats(T * H * D, 15), r = random_floats(T * H * D, 16);
  for (float scaling : {1.0f, 1.25f}) {
    Tensor X = up(x, {T, H, D});
    dev().rope_forward(X, up_i32(pos, {T}), up(inv_freq, {D / 2}), scaling);
    // cos/sin are rounded to f32 in the kernel: a relative 1 ulp each.
    SWIFTLET_EXPECT_CLOSE(down(X), rope_ref(to_double(x), pos, inv_freq, H, D, scaling),
                          tol_f32(4));
    // Backward is R^T: the gradient of sum(r * rope(x)) with respect to x.
    auto g = numeric_grad(to_double(x), [&](const auto& xv) {
      return project(rope_ref(xv, pos, inv_freq, H, D, scaling), r);
    });
    Tensor dX = up(r, {T, H, D});
    dev().rope_backward(dX, up_i32(pos, {T}), up(inv_freq, {D / 2}), scaling);
    SWIFTLET_EXPECT_CLOSE(down(dX), g, tol_grad(4));
  }
}

std::vector<double> swiglu_ref(const std::vector<double>& g, const std::vector<double>& u) {
  std::vector<double> y(g.size());
  for (size_t i = 0; i < g.size(); ++i) y[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
  return y;
}

TEST_P(OpsTest, SwigluForwardAndBackward) {
  const int64_t n = 3 * 67;
  auto g = random_floats(n, 17, 3.0), u = random_floats(n, 18), r = random_floats(n, 19);
  g[0] = -95.0f;  // far tails of the sigmoid
  g[1] = 95.0f;
  Tensor G = up(g, {3, 67}), U = up(u, {3, 67}), out = dev().empty({3, 67}, DType::kF32);
  dev().swiglu_forward(out, G, U);
  SWIFTLET_EXPECT_CLOSE(down(out), swiglu_ref(to_double(g), to_double(u)), tol_f32(4));
  auto dg0 = random_floats(n, 20), du0 = random_floats(n, 21);
  Tensor dG = up(dg0, {3, 67}), dU = up(du0, {3, 67});
  dev().swiglu_backward(dG, dU, up(r, {3, 67}), G, U);
  auto gg = numeric_grad(to_double(g),
                         [&](const auto& gv) { return project(swiglu_ref(gv, to_double(u)), r); });
  auto gu = numeric_grad(to_double(u),
                         [&](const auto& uv) { return project(swiglu_ref(to_double(g), uv), r); });
  SWIFTLET_EXPECT_CLOSE(down(dG), plus(gg, dg0), tol_grad(4));
  SWIFTLET_EXPECT_CLOSE(down(dU), plus(gu, du0), tol_grad(4));
}

std::vector<double> scale_rows_ref(const std::vector<double>& x, const std::vector<double>& sc,
                                   int64_t n) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = sc[i / size_t(n)] * x[i];
  return y;
}

TEST_P(OpsTest, ScaleRowsForwardAndBackward) {
  const int64_t rows = 5, n = 37;  // vector tails
  auto x = random_floats(rows * n, 41), sc = random_floats(rows, 42),
       r = random_floats(rows * n, 43);
  Tensor X = up(x, {rows, n}), S = up(sc, {rows}), out = dev().empty({rows, n}, DType::kF32);
  dev().scale_rows_forward(out, X, S);
  SWIFTLET_EXPECT_CLOSE(down(out), scale_rows_ref(to_double(x), to_double(sc), n), tol_f32(1));
  Tensor inplace = up(x, {rows, n});
  dev().scale_rows_forward(inplace, inplace, S);  // out may alias x
  SWIFTLET_EXPECT_CLOSE(down(inplace), scale_rows_ref(to_double(x), to_double(sc), n), tol_f32(1));
  auto dx0 = random_floats(rows * n, 44), ds0 = random_floats(rows, 45);
  Tensor dX = up(dx0, {rows, n}), dS = up(ds0, {rows});
  dev().scale_rows_backward(dX, dS, up(r, {rows, n}), X, S);
  auto gx = numeric_grad(to_double(x), [&](const auto& xv) {
    return project(scale_rows_ref(xv, to_double(sc), n), r);
  });
  auto gs = numeric_grad(to_double(sc), [&](const auto& sv) {
    return project(scale_rows_ref(to_double(x), sv, n), r);
  });
  SWIFTLET_EXPECT_CLOSE(down(dX), plus(gx, dx0), tol_grad(1));
  SWIFTLET_EXPECT_CLOSE(down(dS), plus(gs, ds0), tol_grad(n));
  Tensor dS_only = up(ds0, {rows});  // dx undefined: only ds
  dev().scale_rows_backward(Tensor(), dS_only, up(r, {rows, n}), X, S);
  SWIFTLET_EXPECT_CLOSE(down(dS_only), plus(gs, ds0), tol_grad(n));
}

double logsumexp(const double* x, int64_t n) {
  double m = -INFINITY, s = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  for (int64_t i = 0; i < n; ++i) s += std::exp(x[i] - m);
  return m + std::log(s);
}

TEST_P(OpsTest, CrossEntropyLossAccuracyAndGradient) {
  const int64_t N = 6, V = 53;
  auto logits = random_floats(N * V, 22, 4.0);
  std::vector<int32_t> labels = {5, -100, 52, 0, -100, 17};
  logits[3 * V + 0] = 30.0f;  // row 3: the label is the argmax (correct = 1)
  const float scale = 0.25f;
  auto ce = [&](const std::vector<double>& x, std::vector<double>* loss) {
    double total = 0;
    for (int64_t r = 0; r < N; ++r) {
      double l = labels[size_t(r)] == -100
                     ? 0.0
                     : logsumexp(&x[size_t(r * V)], V) - x[size_t(r * V + labels[size_t(r)])];
      if (loss) loss->push_back(l);
      total += l * scale;
    }
    return total;
  };
  std::vector<double> want_loss, want_correct;
  ce(to_double(logits), &want_loss);
  for (int64_t r = 0; r < N; ++r) {
    int64_t am = std::max_element(logits.begin() + r * V, logits.begin() + (r + 1) * V) -
                 (logits.begin() + r * V);
    want_correct.push_back(labels[size_t(r)] != -100 && am == labels[size_t(r)] ? 1.0 : 0.0);
  }
  auto grad = numeric_grad(to_double(logits), [&](const auto& x) { return ce(x, nullptr); });
  for (bool alias : {false, true}) {
    SCOPED_TRACE(alias ? "dlogits aliases logits" : "separate dlogits");
    Tensor X = up(logits, {N, V}), L = dev().empty({N}, DType::kF32),
           C = dev().empty({N}, DType::kF32);
    Tensor dX = alias ? X : up(std::vector<float>(size_t(N * V), NAN), {N, V});  // overwritten
    dev().cross_entropy(L, C, dX, X, up_i32(labels, {N}), scale);
    SWIFTLET_EXPECT_CLOSE(down(L), want_loss, tol_f32(V));
    SWIFTLET_EXPECT_CLOSE(down(C), want_correct, 0.0);
    SWIFTLET_EXPECT_CLOSE(down(dX), grad, tol_grad(V));
  }
  // Without dlogits (evaluation) only loss and correct are written.
  Tensor L = dev().empty({N}, DType::kF32), C = dev().empty({N}, DType::kF32);
  dev().cross_entropy(L, C, Tensor(), up(logits, {N, V}), up_i32(labels, {N}), scale);
  SWIFTLET_EXPECT_CLOSE(down(L), want_loss, tol_f32(V));
  // A label outside the vocabulary is a user-facing error.
  EXPECT_THROW(dev().cross_entropy(L, C, Tensor(), up(logits, {N, V}),
                                   up_i32({0, 0, 53, 0, 0, 0}, {N}), scale),
               Error);
}

// Per-row gradient weights: dlogits is the gradient of sum_r grad_scale * w_r * loss_r, negative
// and zero weights included (objectives hand d loss / d log p per token).
TEST_P(OpsTest, CrossEntropyRowScaledGradient) {
  const int64_t N = 5, V = 37;
  auto logits = random_floats(N * V, 31, 3.0);
  std::vector<int32_t> labels = {4, 36, -100, 0, 11};
  std::vector<float> w = {0.5f, -2.0f, 7.0f, 0.0f, 1.25f};
  const float scale = 0.5f;
  auto weighted = [&](const std::vector<double>& x) {
    double total = 0;
    for (int64_t r = 0; r < N; ++r)
      if (labels[size_t(r)] != -100)
        total += scale * w[size_t(r)] *
                 (logsumexp(&x[size_t(r * V)], V) - x[size_t(r * V + labels[size_t(r)])]);
    return total;
  };
  auto grad = numeric_grad(to_double(logits), weighted);
  Tensor X = up(logits, {N, V}), L = dev().empty({N}, DType::kF32),
         C = dev().empty({N}, DType::kF32);
  Tensor dX = up(std::vector<float>(size_t(N * V), NAN), {N, V});
  dev().cross_entropy(L, C, dX, X, up_i32(labels, {N}), scale, up(w, {N}));
  SWIFTLET_EXPECT_CLOSE(down(dX), grad, 8 * tol_grad(V));
  // A row scale of the wrong length is an internal error naming the kernel.
  EXPECT_ANY_THROW(dev().cross_entropy(L, C, dX, X, up_i32(labels, {N}), scale, up({1.0f}, {1})));
}

TEST_P(OpsTest, LogSoftmax) {
  const int64_t N = 4, V = 1000;
  auto x = random_floats(N * V, 23, 10.0);
  Tensor X = up(x, {N, V});
  dev().log_softmax_inplace(X);
  std::vector<double> want(x.size());
  for (int64_t r = 0; r < N; ++r) {
    double l = logsumexp(to_double(x).data() + r * V, V);
    for (int64_t i = 0; i < V; ++i) want[size_t(r * V + i)] = x[size_t(r * V + i)] - l;
  }
  SWIFTLET_EXPECT_CLOSE(down(X), want, tol_f32(V));
}

// Entropy of softmax(logits / T) against a double loop, for a flat and a peaked row, a row with
// -inf entries (masked tokens) and V not a multiple of the SIMD width.
TEST_P(OpsTest, SoftmaxEntropy) {
  const int64_t N = 4, V = 1003;
  auto x = random_floats(N * V, 27, 10.0);
  for (int64_t i = 0; i < V; ++i) x[size_t(V + i)] *= 0.001f;  // nearly uniform: H ~ log V
  x[size_t(2 * V + 5)] = 400.0f;                               // one token takes all: H ~ 0
  for (int64_t i = 0; i < V; i += 3) x[size_t(3 * V + i)] = -INFINITY;
  for (float scale : {1.0f, 1.0f / 0.7f}) {
    Tensor X = up(x, {N, V}), H = dev().empty({N}, DType::kF32);
    dev().softmax_entropy(H, X, scale);
    std::vector<double> want(static_cast<size_t>(N));
    for (int64_t r = 0; r < N; ++r) {
      std::vector<double> z(static_cast<size_t>(V));
      for (int64_t i = 0; i < V; ++i) z[size_t(i)] = double(scale) * x[size_t(r * V + i)];
      const double l = logsumexp(z.data(), V);
      double h = l;
      for (int64_t i = 0; i < V; ++i)
        if (std::isfinite(z[size_t(i)])) h -= std::exp(z[size_t(i)] - l) * z[size_t(i)];
      want[size_t(r)] = h;
    }
    SWIFTLET_EXPECT_CLOSE(down(H), want, tol_f32(V));
    EXPECT_NEAR(down(H)[1], std::log(double(V)), 1e-3);
    EXPECT_LT(down(H)[2], 1e-6);
  }
}

TEST_P(OpsTest, AdamWMatchesTorchFormula) {
  const int64_t n = 301;
  auto p = random_floats(n, 24), m = random_floats(n, 25, 0.1), v = random_floats(n, 26, 0.1);
  for (auto& x : v) x = x * x;
  Tensor P = up(p, {n}), M = up(m, {n}), Vt = up(v, {n});
  std::vector<double> pd = to_double(p), md = to_double(m), vd = to_double(v);
  const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
  for (int64_t step = 1; step <= 3; ++step) {
    auto g = random_floats(n, 30 + uint64_t(step));
    dev().adamw_step(P, up(g, {n}), M, Vt, float(lr), float(b1), float(b2), float(eps), float(wd),
                     step);
    for (int64_t i = 0; i < n; ++i) {  // torch.optim.AdamW
      size_t k = size_t(i);
      pd[k] *= 1 - lr * wd;
      md[k] = b1 * md[k] + (1 - b1) * g[k];
      vd[k] = b2 * vd[k] + (1 - b2) * double(g[k]) * g[k];
      double mh = md[k] / (1 - std::pow(b1, step)), vh = vd[k] / (1 - std::pow(b2, step));
      pd[k] -= lr * mh / (std::sqrt(vh) + eps);
    }
  }
  SWIFTLET_EXPECT_CLOSE(down(P), pd, tol_f32(16));
  SWIFTLET_EXPECT_CLOSE(down(M), md, tol_f32(16));
  SWIFTLET_EXPECT_CLOSE(down(Vt), vd, tol_f32(16));
}

TEST_P(OpsTest, DropoutMaskIsReproducibleAndMatchesBackward) {
  const int64_t n = 50000;
  const float p = 0.3f;
  auto x = random_floats(n, 40);
  Tensor X = up(x, {n}), Y = dev().empty({n}, DType::kF32), Y2 = dev().empty({n}, DType::kF32);
  dev().dropout_forward(Y, X, p, 1234);
  dev().dropout_forward(Y2, X, p, 1234);
  auto y = down(Y);
  EXPECT_EQ(y, down(Y2));
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (y[size_t(i)] == 0.0f) continue;
    ++kept;
    EXPECT_NEAR(y[size_t(i)], x[size_t(i)] / (1 - p), 1e-6 * std::fabs(x[size_t(i)]) + 1e-7);
  }
  // Binomial(n, 0.7): standard deviation ~102, so 5 sigma is about 510.
  EXPECT_NEAR(double(kept), 0.7 * n, 510.0);
  // Backward recomputes the same mask: din += dout * mask / (1 - p). Checked against finite
  // differences of the forward (the mask read from its output) on the first 300 elements, run as
  // a tensor of their own: the mask depends only on (seed, element index).
  const int64_t m = 300;
  std::vector<float> xs(x.begin(), x.begin() + m), r = random_floats(m, 41),
                                                   d0 = random_floats(m, 42);
  auto g = numeric_grad(to_double(xs), [&](const std::vector<double>& xv) {
    std::vector<double> out(static_cast<size_t>(m));
    for (size_t i = 0; i < size_t(m); ++i) out[i] = y[i] != 0.0f ? xv[i] / (1.0 - double(p)) : 0.0;
    return project(out, r);
  });
  Tensor dX = up(d0, {m});
  dev().dropout_backward(dX, up(r, {m}), p, 1234);
  SWIFTLET_EXPECT_CLOSE(down(dX), plus(g, d0), tol_grad(2));
  // Another seed, another mask; p == 0 copies.
  dev().dropout_forward(Y2, X, p, 1235);
  EXPECT_NE(y, down(Y2));
  dev().dropout_forward(Y2, X, 0.0f, 1);
  EXPECT_EQ(down(Y2), x);
}

// The mask written in device.h's dropout_forward comment, recomputed here from that text alone: a
// backend that follows the comment reproduces these bits.
bool documented_dropout_keep(uint64_t seed, float p, uint64_t i) {
  const uint64_t key = seed * 0xd1b54a32d192ed03ull + 0x2545f4914f6cdd1dull;
  uint64_t z = key + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z = z ^ (z >> 31);
  return (z >> 40) >= uint64_t(uint32_t(double(p) * 16777216));
}

int64_t bit_differences(const std::vector<float>& a, const std::vector<float>& b) {
  int64_t d = 0;
  for (size_t i = 0; i < a.size(); ++i)
    d += std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i]);
  return d;
}

TEST_P(OpsTest, DropoutMaskIsTheDocumentedFunction) {
  const int64_t n = 100003;  // odd, several threads' chunks
  auto x = random_floats(n, 43), r = random_floats(n, 44);
  Tensor X = up(x, {n}), R = up(r, {n}), Y = dev().empty({n}, DType::kF32);
  struct Case {
    uint64_t seed;
    float p;
  };
  // p * 2^24 exact (0.5) or not (0.1f, 0.3f), tiny p (threshold 1), p near 1; seeds 0 and 2^64 - 1.
  for (Case c :
       {Case{0, 0.1f}, Case{1234, 0.3f}, Case{~0ull, 0.5f}, Case{7, 6e-8f}, Case{99, 0.999f}}) {
    SCOPED_TRACE(testing::Message() << "seed " << c.seed << ", p " << c.p);
    const float scale = 1.0f / (1.0f - c.p);
    std::vector<float> want_y(size_t(n), 0.0f), want_dx(size_t(n), 0.0f);
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (!documented_dropout_keep(c.seed, c.p, uint64_t(i))) continue;
      ++kept;
      want_y[size_t(i)] = x[size_t(i)] * scale;
      want_dx[size_t(i)] = r[size_t(i)] * scale;  // 0 + dout * scale: one rounding, fused or not
    }
    EXPECT_GT(kept, 0);
    if (c.p >= 0.1f) {
      EXPECT_LT(kept, n);  // at p = 6e-8 no element of n is likely to drop
    }
    dev().dropout_forward(Y, X, c.p, c.seed);
    EXPECT_EQ(bit_differences(down(Y), want_y), 0) << "forward elements unlike the documented ones";
    Tensor dX = dev().zeros({n}, DType::kF32);
    dev().dropout_backward(dX, R, c.p, c.seed);
    EXPECT_EQ(bit_differences(down(dX), want_dx), 0)
        << "backward elements unlike the documented ones";
  }
}

TEST_P(OpsTest, CopyConvertsLikeCoreAndFillWrites) {
  // Includes rounding ties, subnormals, overflow to inf in f16, NaN and infinities.
  std::vector<float> v = random_floats(77, 50, 100.0);
  v[0] = 1.0f + 1.0f / 256;
  v[1] = 1.0f + 3.0f / 256;
  v[2] = 1e-40f;
  v[3] = 70000.0f;
  v[4] = NAN;
  v[5] = -INFINITY;
  v[6] = 6.1e-5f;
  v[7] = 65520.0f;
  Tensor src = up(v, {7, 11});
  for (DType d : {DType::kBF16, DType::kF16}) {
    Tensor half = dev().empty({77}, d), back = dev().empty({7, 11}, DType::kF32);
    dev().copy(half, src);
    dev().copy(back, half);
    auto got = dev().download(half);
    for (size_t i = 0; i < v.size(); ++i) {
      uint16_t want = d == DType::kBF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      uint16_t bits = got.data<uint16_t>()[i];
      if (std::isnan(v[i])) {
        EXPECT_TRUE(std::isnan(d == DType::kBF16 ? bf16_to_f32(bits) : f16_to_f32(bits)));
      } else {
        EXPECT_EQ(bits, want) << dtype_name(d) << " element " << i << " value " << v[i];
      }
    }
    auto rt = down(back), want = round_to(v, d);
    for (size_t i = 0; i < v.size(); ++i)
      if (!std::isnan(v[i])) {
        EXPECT_EQ(rt[i], want[i]) << i;
      }
  }
  Tensor t = dev().empty({5}, DType::kBF16);
  dev().fill(t, 2.5f);
  EXPECT_EQ(down(t), std::vector<float>(5, 2.5f));
  Tensor ids = dev().empty({3}, DType::kI32);
  dev().fill(ids, 7.0f);
  EXPECT_EQ(down(ids), std::vector<float>(3, 7.0f));
  Tensor z = dev().zeros({4, 4}, DType::kF32);
  EXPECT_EQ(down(z), std::vector<float>(16, 0.0f));
}

}  // namespace
}  // namespace swiftlet::test
