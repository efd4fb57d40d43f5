#include "backend/cpu/gated_delta_rule.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace swiftlet::cpu {

void gated_delta_rule_recurrent(const GatedDeltaDims& d, const float* q, const float* k,
                                const float* v, const float* g, const float* beta, float* state,
                                float* o) {
  const int64_t r = d.HV / d.HK, dk = d.dk, dv = d.dv;
  std::vector<float> kv(static_cast<size_t>(dv));
  for (int64_t h = d.h_begin; h < d.head_end(); ++h) {
    float* S = state + h * dk * dv;
    const int64_t kh = h / r;
    for (int64_t t = 0; t < d.T; ++t) {
      const float* qt = q + (t * d.HK + kh) * dk;
      const float* kt = k + (t * d.HK + kh) * dk;
      const float* vt = v + (t * d.HV + h) * dv;
      const float decay = std::exp(g[t * d.HV + h]), b = beta[t * d.HV + h];
      std::fill(kv.begin(), kv.end(), 0.0f);
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) {
          S[i * dv + j] *= decay;
          kv[size_t(j)] += S[i * dv + j] * kt[i];  // S^T k of the decayed state
        }
      for (int64_t j = 0; j < dv; ++j) kv[size_t(j)] = b * (vt[j] - kv[size_t(j)]);  // delta
      float* ot = o + (t * d.HV + h) * dv;
      std::fill(ot, ot + dv, 0.0f);
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) {
          S[i * dv + j] += kt[i] * kv[size_t(j)];
          ot[j] += S[i * dv + j] * qt[i];
        }
    }
  }
}

void gated_delta_rule_chunked(const GatedDeltaDims& d, int64_t chunk, const float* q,
                              const float* k, const float* v, const float* g, const float* beta,
                              float* state, float* o) {
  const int64_t r = d.HV / d.HK, dk = d.dk, dv = d.dv, C = chunk;
  std::vector<float> G(static_cast<size_t>(C)), A(static_cast<size_t>(C * C)),
      U(static_cast<size_t>(C * dv)), W(static_cast<size_t>(C * dk)),
      Delta(static_cast<size_t>(C * dv)), S_new(static_cast<size_t>(dk * dv));
  for (int64_t h = d.h_begin; h < d.head_end(); ++h) {
    float* S = state + h * dk * dv;
    const int64_t kh = h / r;
    auto qrow = [&](int64_t t) { return q + (t * d.HK + kh) * dk; };
    auto krow = [&](int64_t t) { return k + (t * d.HK + kh) * dk; };
    auto dot_k = [&](const float* a, const float* b) {
      float s = 0;
      for (int64_t i = 0; i < dk; ++i) s += a[i] * b[i];
      return s;
    };
    for (int64_t s0 = 0; s0 < d.T; s0 += C) {
      const int64_t L = std::min(C, d.T - s0);
      float acc = 0;
      for (int64_t i = 0; i < L; ++i) G[size_t(i)] = acc += g[(s0 + i) * d.HV + h];
      // A_ij = beta_i (k_i . k_j) exp(G_i - G_j), j < i; then U, W by forward substitution on M.
      for (int64_t i = 0; i < L; ++i) {
        const float bi = beta[(s0 + i) * d.HV + h];
        for (int64_t j = 0; j < i; ++j)
          A[size_t(i * C + j)] =
              bi * dot_k(krow(s0 + i), krow(s0 + j)) * std::exp(G[size_t(i)] - G[size_t(j)]);
        const float* vi = v + ((s0 + i) * d.HV + h) * dv;
        float* Ui = &U[size_t(i * dv)];
        float* Wi = &W[size_t(i * dk)];
        const float eg = bi * std::exp(G[size_t(i)]);
        for (int64_t c = 0; c < dv; ++c) Ui[c] = bi * vi[c];
        for (int64_t c = 0; c < dk; ++c) Wi[c] = eg * krow(s0 + i)[c];
        for (int64_t j = 0; j < i; ++j) {
          const float a = A[size_t(i * C + j)];
          for (int64_t c = 0; c < dv; ++c) Ui[c] -= a * U[size_t(j * dv + c)];
          for (int64_t c = 0; c < dk; ++c) Wi[c] -= a * W[size_t(j * dk + c)];
        }
        // Delta_i = U_i - W_i S0
        float* Di = &Delta[size_t(i * dv)];
        for (int64_t c = 0; c < dv; ++c) Di[c] = Ui[c];
        for (int64_t a2 = 0; a2 < dk; ++a2)
          for (int64_t c = 0; c < dv; ++c) Di[c] -= Wi[a2] * S[a2 * dv + c];
      }
      // O_i = e^{G_i} q_i^T S0 + sum_{j <= i} (q_i . k_j) exp(G_i - G_j) Delta_j
      for (int64_t i = 0; i < L; ++i) {
        float* oi = o + ((s0 + i) * d.HV + h) * dv;
        const float* qi = qrow(s0 + i);
        const float eg = std::exp(G[size_t(i)]);
        std::fill(oi, oi + dv, 0.0f);
        for (int64_t a2 = 0; a2 < dk; ++a2)
          for (int64_t c = 0; c < dv; ++c) oi[c] += eg * qi[a2] * S[a2 * dv + c];
        for (int64_t j = 0; j <= i; ++j) {
          const float p = dot_k(qi, krow(s0 + j)) * std::exp(G[size_t(i)] - G[size_t(j)]);
          for (int64_t c = 0; c < dv; ++c) oi[c] += p * Delta[size_t(j * dv + c)];
        }
      }
      // S_end = e^{G_L} S0 + sum_i e^{G_L - G_i} k_i Delta_i^T
      const float GL = G[size_t(L - 1)];
      for (int64_t x = 0; x < dk * dv; ++x) S_new[size_t(x)] = std::exp(GL) * S[x];
      for (int64_t i = 0; i < L; ++i) {
        const float e = std::exp(GL - G[size_t(i)]);
        const float* ki = krow(s0 + i);
        for (int64_t a2 = 0; a2 < dk; ++a2)
          for (int64_t c = 0; c < dv; ++c)
            S_new[size_t(a2 * dv + c)] += e * ki[a2] * Delta[size_t(i * dv + c)];
      }
      std::copy(S_new.begin(), S_new.end(), S);
    }
  }
}

void gated_delta_rule_chunked_backward(const GatedDeltaDims& d, int64_t chunk, const float* q,
                                       const float* k, const float* v, const float* g,
                                       const float* beta, const float* state0, const float* d_o,
                                       const float* d_state_end, float* dq, float* dk, float* dv,
                                       float* dg, float* dbeta, float* d_state0) {
  const int64_t r = d.HV / d.HK, Dk = d.dk, Dv = d.dv, C = chunk;
  const int64_t n_chunks = (d.T + C - 1) / C;
  using Vec = std::vector<double>;
  auto zeros = [](int64_t n) { return Vec(static_cast<size_t>(n), 0.0); };
  for (int64_t h = d.h_begin; h < d.head_end(); ++h) {
    const int64_t kh = h / r;
    auto Q = [&](int64_t t, int64_t a) { return double(q[(t * d.HK + kh) * Dk + a]); };
    auto K = [&](int64_t t, int64_t a) { return double(k[(t * d.HK + kh) * Dk + a]); };
    auto V = [&](int64_t t, int64_t c) { return double(v[(t * d.HV + h) * Dv + c]); };
    auto B = [&](int64_t t) { return double(beta[t * d.HV + h]); };
    auto dO = [&](int64_t t, int64_t c) { return double(d_o[(t * d.HV + h) * Dv + c]); };
    auto kdot = [&](int64_t i, int64_t j) {
      double s = 0;
      for (int64_t a = 0; a < Dk; ++a) s += K(i, a) * K(j, a);
      return s;
    };
    auto qkdot = [&](int64_t i, int64_t j) {
      double s = 0;
      for (int64_t a = 0; a < Dk; ++a) s += Q(i, a) * K(j, a);
      return s;
    };
    // Per chunk: G, A (strict lower), U, W, Delta, and the start state S0, recomputed forward.
    std::vector<Vec> S0s(static_cast<size_t>(n_chunks));
    Vec S(state0 + h * Dk * Dv, state0 + (h + 1) * Dk * Dv);
    struct ChunkFwd {
      Vec G, A, U, W, Delta;
    };
    auto chunk_forward = [&](int64_t s0, int64_t L, const Vec& S0) {
      ChunkFwd f{zeros(L), zeros(L * L), zeros(L * Dv), zeros(L * Dk), zeros(L * Dv)};
      double acc = 0;
      for (int64_t i = 0; i < L; ++i) f.G[size_t(i)] = acc += double(g[(s0 + i) * d.HV + h]);
      for (int64_t i = 0; i < L; ++i) {
        const int64_t ti = s0 + i;
        for (int64_t j = 0; j < i; ++j)
          f.A[size_t(i * L + j)] =
              B(ti) * kdot(ti, s0 + j) * std::exp(f.G[size_t(i)] - f.G[size_t(j)]);
        for (int64_t c = 0; c < Dv; ++c) f.U[size_t(i * Dv + c)] = B(ti) * V(ti, c);
        const double eg = B(ti) * std::exp(f.G[size_t(i)]);
        for (int64_t a = 0; a < Dk; ++a) f.W[size_t(i * Dk + a)] = eg * K(ti, a);
        for (int64_t j = 0; j < i; ++j) {
          const double x = f.A[size_t(i * L + j)];
          for (int64_t c = 0; c < Dv; ++c) f.U[size_t(i * Dv + c)] -= x * f.U[size_t(j * Dv + c)];
          for (int64_t a = 0; a < Dk; ++a) f.W[size_t(i * Dk + a)] -= x * f.W[size_t(j * Dk + a)];
        }
        for (int64_t c = 0; c < Dv; ++c) {
          double s = f.U[size_t(i * Dv + c)];
          for (int64_t a = 0; a < Dk; ++a) s -= f.W[size_t(i * Dk + a)] * S0[size_t(a * Dv + c)];
          f.Delta[size_t(i * Dv + c)] = s;
        }
      }
      return f;
    };
    for (int64_t n = 0; n < n_chunks; ++n) {
      const int64_t s0 = n * C, L = std::min(C, d.T - s0);
      S0s[size_t(n)] = S;
      ChunkFwd f = chunk_forward(s0, L, S);
      const double GL = f.G[size_t(L - 1)];
      for (auto& e : S) e *= std::exp(GL);
      for (int64_t i = 0; i < L; ++i) {
        const double e = std::exp(GL - f.G[size_t(i)]);
        for (int64_t a = 0; a < Dk; ++a)
          for (int64_t c = 0; c < Dv; ++c)
            S[size_t(a * Dv + c)] += e * K(s0 + i, a) * f.Delta[size_t(i * Dv + c)];
      }
    }
    Vec dS = zeros(Dk * Dv);
    if (d_state_end)
      for (int64_t x = 0; x < Dk * Dv; ++x) dS[size_t(x)] = d_state_end[h * Dk * Dv + x];
    for (int64_t n = n_chunks - 1; n >= 0; --n) {
      const int64_t s0 = n * C, L = std::min(C, d.T - s0);
      const Vec& S0 = S0s[size_t(n)];
      ChunkFwd f = chunk_forward(s0, L, S0);
      const Vec& G = f.G;
      const double GL = G[size_t(L - 1)];
      auto Gam = [&](int64_t i, int64_t j) { return std::exp(G[size_t(i)] - G[size_t(j)]); };
      // dDelta_i = sum_{t >= i} P_ti dO_t + e^{G_L - G_i} dS^T k_i ;  dP_ti = dO_t . Delta_i
      Vec dDelta = zeros(L * Dv), dP = zeros(L * L), dG = zeros(L), dS0 = zeros(Dk * Dv);
      Vec dQ = zeros(L * Dk), dK = zeros(L * Dk), dVb = zeros(L * Dv), dKbg = zeros(L * Dk);
      for (int64_t i = 0; i < L; ++i) {
        const double e = std::exp(GL - G[size_t(i)]);
        for (int64_t c = 0; c < Dv; ++c) {
          double s = 0;
          for (int64_t a = 0; a < Dk; ++a) s += K(s0 + i, a) * dS[size_t(a * Dv + c)];
          dDelta[size_t(i * Dv + c)] = e * s;
        }
        for (int64_t t = i; t < L; ++t) {
          const double p = qkdot(s0 + t, s0 + i) * Gam(t, i);
          double dp = 0;
          for (int64_t c = 0; c < Dv; ++c) {
            dDelta[size_t(i * Dv + c)] += p * dO(s0 + t, c);
            dp += dO(s0 + t, c) * f.Delta[size_t(i * Dv + c)];
          }
          dP[size_t(t * L + i)] = dp;
        }
      }
      double sum_r = 0;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t tt = s0 + t;
        const double eg = std::exp(G[size_t(t)]);
        // dO_t S0^T (dk vector), and dS Delta_t
        double qdos = 0, r_t = 0;
        for (int64_t a = 0; a < Dk; ++a) {
          double dos = 0, dsd = 0;
          for (int64_t c = 0; c < Dv; ++c) {
            dos += dO(tt, c) * S0[size_t(a * Dv + c)];
            dsd += dS[size_t(a * Dv + c)] * f.Delta[size_t(t * Dv + c)];
          }
          dQ[size_t(t * Dk + a)] += eg * dos;
          qdos += Q(tt, a) * dos;
          const double e = std::exp(GL - G[size_t(t)]);
          dK[size_t(t * Dk + a)] += e * dsd;
          r_t += e * K(tt, a) * dsd;
        }
        dG[size_t(t)] += eg * qdos - r_t;
        sum_r += r_t;
        for (int64_t i = 0; i <= t; ++i) {
          const double x = dP[size_t(t * L + i)] * Gam(t, i);
          for (int64_t a = 0; a < Dk; ++a) {
            dQ[size_t(t * Dk + a)] += x * K(s0 + i, a);
            dK[size_t(i * Dk + a)] += x * Q(tt, a);
          }
        }
        for (int64_t a = 0; a < Dk; ++a)
          for (int64_t c = 0; c < Dv; ++c) dS0[size_t(a * Dv + c)] += eg * Q(tt, a) * dO(tt, c);
      }
      double s0ds = 0;
      for (int64_t x = 0; x < Dk * Dv; ++x) {
        s0ds += S0[size_t(x)] * dS[size_t(x)];
        dS0[size_t(x)] += std::exp(GL) * dS[size_t(x)];
      }
      dG[size_t(L - 1)] += sum_r + std::exp(GL) * s0ds;
      // dS0 -= W^T dDelta ; dW = -dDelta S0^T ; back substitution with the unit upper M^T.
      Vec dW = zeros(L * Dk);
      for (int64_t i = 0; i < L; ++i)
        for (int64_t a = 0; a < Dk; ++a) {
          double s = 0;
          for (int64_t c = 0; c < Dv; ++c) {
            dS0[size_t(a * Dv + c)] -= f.W[size_t(i * Dk + a)] * dDelta[size_t(i * Dv + c)];
            s += dDelta[size_t(i * Dv + c)] * S0[size_t(a * Dv + c)];
          }
          dW[size_t(i * Dk + a)] = -s;
        }
      for (int64_t i = L - 1; i >= 0; --i) {
        for (int64_t c = 0; c < Dv; ++c) dVb[size_t(i * Dv + c)] = dDelta[size_t(i * Dv + c)];
        for (int64_t a = 0; a < Dk; ++a) dKbg[size_t(i * Dk + a)] = dW[size_t(i * Dk + a)];
        for (int64_t j = i + 1; j < L; ++j) {
          const double x = f.A[size_t(j * L + i)];
          for (int64_t c = 0; c < Dv; ++c) dVb[size_t(i * Dv + c)] -= x * dVb[size_t(j * Dv + c)];
          for (int64_t a = 0; a < Dk; ++a) dKbg[size_t(i * Dk + a)] -= x * dKbg[size_t(j * Dk + a)];
        }
      }
      // dA_ij = -(dVb_i . U_j + dKbg_i . W_j), j < i;  X = (dP * QK^T + dA * diag(beta) K K^T) *
      // Gamma
      for (int64_t i = 0; i < L; ++i) {
        const int64_t ti = s0 + i;
        const double eg = std::exp(G[size_t(i)]);
        double db = 0, dkbg_k = 0;
        for (int64_t c = 0; c < Dv; ++c) {
          db += dVb[size_t(i * Dv + c)] * V(ti, c);
          dv[(ti * d.HV + h) * Dv + c] += float(B(ti) * dVb[size_t(i * Dv + c)]);
        }
        for (int64_t a = 0; a < Dk; ++a) {
          dkbg_k += dKbg[size_t(i * Dk + a)] * K(ti, a);
          dK[size_t(i * Dk + a)] += B(ti) * eg * dKbg[size_t(i * Dk + a)];
        }
        db += eg * dkbg_k;
        dG[size_t(i)] += B(ti) * eg * dkbg_k;
        for (int64_t j = 0; j <= i; ++j) {
          const int64_t tj = s0 + j;
          double x = dP[size_t(i * L + j)] * qkdot(ti, tj);
          if (j < i) {
            double dA = 0;
            for (int64_t c = 0; c < Dv; ++c)
              dA -= dVb[size_t(i * Dv + c)] * f.U[size_t(j * Dv + c)];
            for (int64_t a = 0; a < Dk; ++a)
              dA -= dKbg[size_t(i * Dk + a)] * f.W[size_t(j * Dk + a)];
            const double dAG = dA * Gam(i, j), kk = kdot(ti, tj);
            db += dAG * kk;
            for (int64_t a = 0; a < Dk; ++a) {
              dK[size_t(i * Dk + a)] += B(ti) * dAG * K(tj, a);
              dK[size_t(j * Dk + a)] += dAG * B(ti) * K(ti, a);
            }
            x += dA * B(ti) * kk;
          }
          x *= Gam(i, j);
          dG[size_t(i)] += x;
          dG[size_t(j)] -= x;
        }
        dbeta[ti * d.HV + h] += float(db);
      }
      // G = in-chunk cumsum of g: dg_i = sum_{t >= i} dG_t.
      double acc = 0;
      for (int64_t i = L - 1; i >= 0; --i) {
        acc += dG[size_t(i)];
        dg[(s0 + i) * d.HV + h] += float(acc);
      }
      for (int64_t i = 0; i < L; ++i)
        for (int64_t a = 0; a < Dk; ++a) {
          dq[((s0 + i) * d.HK + kh) * Dk + a] += float(dQ[size_t(i * Dk + a)]);
          dk[((s0 + i) * d.HK + kh) * Dk + a] += float(dK[size_t(i * Dk + a)]);
        }
      dS = dS0;
    }
    for (int64_t x = 0; x < Dk * Dv; ++x) d_state0[h * Dk * Dv + x] += float(dS[size_t(x)]);
  }
}

}  // namespace swiftlet::cpu
