// The gated delta rule's chunked form against its recurrent form (two independent algorithms over
// the same recurrence), and the recurrent form against a double-precision loop written here:
// chunk boundaries crossed and not, short last chunks, an initial state, GVA (HK < HV), strong
// decay. Tolerance: f32 round-off over T steps of a contraction (|k| = 1, beta <= 1): 2e-5 of
// max|o|.
#include "backend/cpu/gated_delta_rule.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace swiftlet::cpu {
namespace {

struct Inputs {
  GatedDeltaDims d;
  std::vector<float> q, k, v, g, beta, state;
};

Inputs random_inputs(int64_t T, double min_g, bool with_state, uint32_t seed) {
  Inputs x;
  x.d = {T, 2, 4, 8, 6};
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 1);
  std::uniform_real_distribution<float> u(0, 1);
  auto unit_rows = [&](std::vector<float>& a, int64_t rows, int64_t dim, float scale) {
    a.resize(size_t(rows * dim));
    for (int64_t i = 0; i < rows; ++i) {
      float s = 0;
      for (int64_t c = 0; c < dim; ++c)
        s += (a[size_t(i * dim + c)] = n(rng)) * a[size_t(i * dim + c)];
      for (int64_t c = 0; c < dim; ++c) a[size_t(i * dim + c)] *= scale / std::sqrt(s + 1e-6f);
    }
  };
  unit_rows(x.q, T * x.d.HK, x.d.dk, 1.0f / std::sqrt(float(x.d.dk)));
  unit_rows(x.k, T * x.d.HK, x.d.dk, 1.0f);
  x.v.resize(size_t(T * x.d.HV * x.d.dv));
  for (auto& e : x.v) e = n(rng);
  x.g.resize(size_t(T * x.d.HV));
  x.beta.resize(x.g.size());
  for (auto& e : x.g) e = float(min_g * u(rng));
  for (auto& e : x.beta) e = u(rng);
  x.state.assign(size_t(x.d.HV * x.d.dk * x.d.dv), 0.0f);
  if (with_state)
    for (auto& e : x.state) e = n(rng);
  return x;
}

// The recurrence in double precision, written from the math: S_t = e^g (I - b k k^T) S + b k v^T.
void reference(const Inputs& x, std::vector<double>& o, std::vector<double>& S_all) {
  const auto& d = x.d;
  o.assign(size_t(d.T * d.HV * d.dv), 0.0);
  S_all.assign(x.state.begin(), x.state.end());
  for (int64_t h = 0; h < d.HV; ++h) {
    double* S = &S_all[size_t(h * d.dk * d.dv)];
    const int64_t kh = h / (d.HV / d.HK);
    for (int64_t t = 0; t < d.T; ++t) {
      const float* kt = &x.k[size_t((t * d.HK + kh) * d.dk)];
      const float* qt = &x.q[size_t((t * d.HK + kh) * d.dk)];
      const double e = std::exp(double(x.g[size_t(t * d.HV + h)])),
                   b = x.beta[size_t(t * d.HV + h)];
      for (int64_t j = 0; j < d.dv; ++j) {
        double kS = 0;
        for (int64_t i = 0; i < d.dk; ++i) kS += kt[i] * S[i * d.dv + j];
        const double vj = x.v[size_t((t * d.HV + h) * d.dv + j)];
        for (int64_t i = 0; i < d.dk; ++i)
          S[i * d.dv + j] = e * (S[i * d.dv + j] - b * kt[i] * kS) + b * kt[i] * vj;
      }
      for (int64_t j = 0; j < d.dv; ++j)
        for (int64_t i = 0; i < d.dk; ++i)
          o[size_t((t * d.HV + h) * d.dv + j)] += S[i * d.dv + j] * qt[i];
    }
  }
}

double max_abs(const std::vector<double>& a) {
  double m = 0;
  for (double e : a) m = std::max(m, std::abs(e));
  return m;
}
template <class A, class B>
double max_diff(const A& a, const B& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}

TEST(GatedDeltaRule, Qwen35ChunkedEqualsRecurrent) {
  for (int64_t T : {1, 2, 7, 15, 16, 17, 63, 64, 65, 130})
    for (bool with_state : {false, true})
      for (double min_g : {-1.0, -21.0}) {
        Inputs x = random_inputs(T, min_g, with_state, uint32_t(T * 7 + with_state));
        std::vector<double> o_ref, S_ref;
        reference(x, o_ref, S_ref);
        const double tol = 2e-5 * std::max({1.0, max_abs(o_ref), max_abs(S_ref)});
        std::vector<float> s_rec = x.state, o_rec(o_ref.size());
        gated_delta_rule_recurrent(x.d, x.q.data(), x.k.data(), x.v.data(), x.g.data(),
                                   x.beta.data(), s_rec.data(), o_rec.data());
        EXPECT_LT(max_diff(o_rec, o_ref), tol) << "recurrent T=" << T;
        EXPECT_LT(max_diff(s_rec, S_ref), tol) << "recurrent state T=" << T;
        for (int64_t chunk : {16, 64}) {
          std::vector<float> s_ch = x.state, o_ch(o_ref.size(), NAN);
          gated_delta_rule_chunked(x.d, chunk, x.q.data(), x.k.data(), x.v.data(), x.g.data(),
                                   x.beta.data(), s_ch.data(), o_ch.data());
          EXPECT_LT(max_diff(o_ch, o_ref), tol) << "chunked C=" << chunk << " T=" << T;
          EXPECT_LT(max_diff(s_ch, S_ref), tol) << "chunked state C=" << chunk << " T=" << T;
        }
      }
}

// A prefill of 37 tokens (chunked), a continuation of 33 with that state (chunked), then decode
// token by token (recurrent) equals one chunked pass over all tokens.
TEST(GatedDeltaRule, Qwen35PrefillContinuationDecodeEqualsFull) {
  Inputs x = random_inputs(80, -2.0, true, 5);
  const auto& d = x.d;
  std::vector<float> s_full = x.state, o_full(size_t(d.T * d.HV * d.dv));
  gated_delta_rule_chunked(d, 16, x.q.data(), x.k.data(), x.v.data(), x.g.data(), x.beta.data(),
                           s_full.data(), o_full.data());
  std::vector<float> s = x.state, o(o_full.size(), NAN);
  auto run = [&](int64_t t0, int64_t n, bool chunked) {
    GatedDeltaDims p = d;
    p.T = n;
    const size_t qo = size_t(t0 * d.HK * d.dk), vo = size_t(t0 * d.HV * d.dv),
                 go = size_t(t0 * d.HV);
    if (chunked)
      gated_delta_rule_chunked(p, 16, x.q.data() + qo, x.k.data() + qo, x.v.data() + vo,
                               x.g.data() + go, x.beta.data() + go, s.data(), o.data() + vo);
    else
      gated_delta_rule_recurrent(p, x.q.data() + qo, x.k.data() + qo, x.v.data() + vo,
                                 x.g.data() + go, x.beta.data() + go, s.data(), o.data() + vo);
  };
  run(0, 37, true);
  run(37, 33, true);
  for (int64_t t = 70; t < 80; ++t) run(t, 1, false);
  double m = 0;
  for (float e : o_full) m = std::max(m, double(std::abs(e)));
  EXPECT_LT(max_diff(o, o_full), 2e-5 * std::max(1.0, m));
  EXPECT_LT(max_diff(s, s_full), 2e-5 * std::max(1.0, m));
}

// L = sum o * Ro + sum S_end * Rs in double precision from the recurrence (the function the
// backward differentiates), on double copies of the inputs.
struct InputsD {
  std::vector<double> q, k, v, g, beta, state;
};
double loss_d(const GatedDeltaDims& d, const InputsD& x, const std::vector<float>& Ro,
              const std::vector<float>& Rs) {
  std::vector<double> S = x.state;
  double loss = 0;
  const int64_t r = d.HV / d.HK;
  for (int64_t h = 0; h < d.HV; ++h) {
    double* Sh = &S[size_t(h * d.dk * d.dv)];
    const int64_t kh = h / r;
    for (int64_t t = 0; t < d.T; ++t) {
      const double* kt = &x.k[size_t((t * d.HK + kh) * d.dk)];
      const double* qt = &x.q[size_t((t * d.HK + kh) * d.dk)];
      const double e = std::exp(x.g[size_t(t * d.HV + h)]), b = x.beta[size_t(t * d.HV + h)];
      for (int64_t j = 0; j < d.dv; ++j) {
        double kS = 0;
        for (int64_t i = 0; i < d.dk; ++i) kS += kt[i] * Sh[i * d.dv + j];
        const double vj = x.v[size_t((t * d.HV + h) * d.dv + j)];
        for (int64_t i = 0; i < d.dk; ++i)
          Sh[i * d.dv + j] = e * (Sh[i * d.dv + j] - b * kt[i] * kS) + b * kt[i] * vj;
        double o = 0;
        for (int64_t i = 0; i < d.dk; ++i) o += Sh[i * d.dv + j] * qt[i];
        loss += o * Ro[size_t((t * d.HV + h) * d.dv + j)];
      }
    }
  }
  for (size_t i = 0; i < S.size(); ++i) loss += S[i] * Rs[i];
  return loss;
}

// The chunked backward against central differences of the double-precision recurrence, for every
// input element: T = 21 with chunk 8 (two full chunks and a short one), GVA, an initial state and
// an end-state gradient. f32 kernel inputs are exactly representable in double, so the differences
// are of the same function; tolerance 1e-4 of the largest gradient (f32 accumulation).
TEST(GatedDeltaRule, Qwen35ChunkedBackwardMatchesFiniteDifferences) {
  Inputs x = random_inputs(21, -1.5, true, 3);
  const auto& d = x.d;
  std::mt19937 rng(9);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> Ro(size_t(d.T * d.HV * d.dv)), Rs(x.state.size());
  for (auto& e : Ro) e = n(rng);
  for (auto& e : Rs) e = n(rng);
  std::vector<float> dq(x.q.size()), dk(x.k.size()), dv(x.v.size()), dg(x.g.size()),
      db(x.beta.size()), ds(x.state.size());
  gated_delta_rule_chunked_backward(d, 8, x.q.data(), x.k.data(), x.v.data(), x.g.data(),
                                    x.beta.data(), x.state.data(), Ro.data(), Rs.data(), dq.data(),
                                    dk.data(), dv.data(), dg.data(), db.data(), ds.data());
  InputsD xd{{x.q.begin(), x.q.end()},       {x.k.begin(), x.k.end()},
             {x.v.begin(), x.v.end()},       {x.g.begin(), x.g.end()},
             {x.beta.begin(), x.beta.end()}, {x.state.begin(), x.state.end()}};
  struct Field {
    const char* name;
    std::vector<double>* in;
    const std::vector<float>* grad;
  };
  for (const Field& f :
       {Field{"q", &xd.q, &dq}, Field{"k", &xd.k, &dk}, Field{"v", &xd.v, &dv},
        Field{"g", &xd.g, &dg}, Field{"beta", &xd.beta, &db}, Field{"state0", &xd.state, &ds}}) {
    std::vector<double> fd(f.in->size());
    double gmax = 0, err = 0;
    for (size_t i = 0; i < f.in->size(); ++i) {
      const double keep = (*f.in)[i], eps = 1e-5;
      (*f.in)[i] = keep + eps;
      const double lp = loss_d(d, xd, Ro, Rs);
      (*f.in)[i] = keep - eps;
      const double lm = loss_d(d, xd, Ro, Rs);
      (*f.in)[i] = keep;
      fd[i] = (lp - lm) / (2 * eps);
      gmax = std::max(gmax, std::abs(fd[i]));
      err = std::max(err, std::abs(fd[i] - double((*f.grad)[i])));
    }
    EXPECT_LT(err, 1e-4 * std::max(1.0, gmax)) << f.name;
    std::printf("d%s: max |kernel - finite differences| %.3g (max |grad| %.3g)\n", f.name, err,
                gmax);
  }
}

// Against transformers' torch_chunk_gated_delta_rule transcribed in tests/reference/torch_gated_delta.py
// (float64, chunk 64): T = 150 crosses two chunk boundaries, GVA, an initial state.
TEST(GatedDeltaRule, Qwen35MatchesPyTorchChunked) {
  if (std::system("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1") != 0) {
    const char* req = std::getenv("SWIFTLET_REQUIRE_REFERENCES");
    if (req && std::string(req) == "1") FAIL() << "/usr/bin/python3 with torch is not installed";
    GTEST_SKIP() << "/usr/bin/python3 with torch is not installed";
  }
  Inputs x = random_inputs(150, -3.0, true, 11);
  const auto& d = x.d;
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("gdr_ref_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(dir / "in.bin", std::ios::binary);
    f << "{\"T\": " << d.T << ", \"HK\": " << d.HK << ", \"HV\": " << d.HV << ", \"dk\": " << d.dk
      << ", \"dv\": " << d.dv << "}\n";
    for (const auto* a : {&x.q, &x.k, &x.v, &x.g, &x.beta, &x.state})
      f.write(reinterpret_cast<const char*>(a->data()), std::streamsize(a->size() * 4));
  }
  const std::string cmd = "/usr/bin/python3 " SWIFTLET_SOURCE_DIR
                          "/tests/reference/torch_gated_delta.py delta " +
                          (dir / "in.bin").string() + " " + (dir / "out.bin").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream f(dir / "out.bin", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  const size_t no = size_t(d.T * d.HV * d.dv), ns = size_t(d.HV * d.dk * d.dv);
  ASSERT_EQ(bytes.size(), (no + ns) * 4);
  std::vector<float> o_ref(no), s_ref(ns);
  std::memcpy(o_ref.data(), bytes.data(), no * 4);
  std::memcpy(s_ref.data(), bytes.data() + no * 4, ns * 4);
  std::filesystem::remove_all(dir);

  double m = 0;
  for (float e : o_ref) m = std::max(m, double(std::abs(e)));
  for (float e : s_ref) m = std::max(m, double(std::abs(e)));
  for (int mode = 0; mode < 3; ++mode) {
    std::vector<float> s = x.state, o(no);
    if (mode == 0)
      gated_delta_rule_recurrent(d, x.q.data(), x.k.data(), x.v.data(), x.g.data(), x.beta.data(),
                                 s.data(), o.data());
    else
      gated_delta_rule_chunked(d, mode == 1 ? 64 : 16, x.q.data(), x.k.data(), x.v.data(),
                               x.g.data(), x.beta.data(), s.data(), o.data());
    EXPECT_LT(max_diff(o, o_ref), 1e-4 * m) << "mode " << mode;
    EXPECT_LT(max_diff(s, s_ref), 1e-4 * m) << "mode " << mode;
    std::printf("mode %d: max |o - torch| %.3g, max |S - torch| %.3g (max %.3g)\n", mode,
                max_diff(o, o_ref), max_diff(s, s_ref), m);
  }
}

}  // namespace
}  // namespace swiftlet::cpu
