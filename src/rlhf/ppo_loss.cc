#include "rlhf/ppo_loss.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace swiftlet::rlhf {

namespace {

// TRL's masked_whiten: (x - mean) / sqrt(var + 1e-8) over the masked entries, the variance
// unbiased (Bessel); shift_mean false adds the mean back.
void masked_whiten(std::vector<std::vector<double>>& x, const std::vector<std::vector<bool>>& mask,
                   bool shift_mean) {
  double sum = 0, n = 0;
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t t = 0; t < x[i].size(); ++t)
      if (mask[i][t]) {
        sum += x[i][t];
        ++n;
      }
  SWIFTLET_CHECK(n > 1, "whitening needs at least two values, got {}", n);
  const double mean = sum / n;
  double ss = 0;
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t t = 0; t < x[i].size(); ++t)
      if (mask[i][t]) ss += (x[i][t] - mean) * (x[i][t] - mean);
  const double var = ss / n * (n / (n - 1));
  const double inv = 1.0 / std::sqrt(var + 1e-8);
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t t = 0; t < x[i].size(); ++t) {
      x[i][t] = (x[i][t] - mean) * inv;
      if (!shift_mean) x[i][t] += mean;
    }
}

}  // namespace

PpoRollout ppo_rollout(const PpoConfig& cfg, const std::vector<PpoResponse>& batch) {
  PpoRollout r;
  const size_t B = batch.size();
  int64_t W = 0;
  for (const auto& s : batch) W = std::max<int64_t>(W, int64_t(s.values.size()));
  r.width = W;
  std::vector<std::vector<bool>> valid(B), valid_p1(B);  // positions < L_i, <= L_i
  r.rewards.assign(B, std::vector<double>(size_t(W), 0.0));
  for (size_t i = 0; i < B; ++i) {
    const auto& s = batch[i];
    const int64_t L = int64_t(s.logps.size());
    SWIFTLET_CHECK(
        L >= 1 && L <= W && int64_t(s.ref_logps.size()) == L && int64_t(s.values.size()) == W,
        "response {}: {} log-probs, {} reference, {} values, width {}", i, L, s.ref_logps.size(),
        s.values.size(), W);
    valid[i].assign(size_t(W), false);
    valid_p1[i].assign(size_t(W), false);
    double kl_sum = 0;
    for (int64_t t = 0; t < W; ++t) {
      valid[i][size_t(t)] = t < L;
      valid_p1[i][size_t(t)] = t <= L;
      if (t >= L) continue;
      const double d = s.logps[size_t(t)] - s.ref_logps[size_t(t)];  // old - ref
      const double kl = cfg.kl_k3 ? (std::exp(-d) - 1.0) + d : d;
      kl_sum += kl;
      r.rewards[i][size_t(t)] = -cfg.kl_coef * kl;
    }
    r.kl += kl_sum / double(B);
    r.non_score_reward += -cfg.kl_coef * kl_sum / double(B);
    r.scores += s.score / double(B);
    r.rewards[i][size_t(L < W ? L : L - 1)] += s.score;
  }
  if (cfg.whiten_rewards) {
    masked_whiten(r.rewards, valid_p1, false);
    for (size_t i = 0; i < B; ++i)
      for (int64_t t = 0; t < W; ++t)
        if (!valid_p1[i][size_t(t)]) r.rewards[i][size_t(t)] = 0;
  }
  r.advantages.assign(B, std::vector<double>(size_t(W), 0.0));
  r.returns.assign(B, std::vector<double>(size_t(W), 0.0));
  for (size_t i = 0; i < B; ++i) {
    // Values past L_i are zero (TRL masks them before GAE).
    std::vector<double> v(size_t(W), 0.0);
    for (int64_t t = 0; t < W; ++t)
      if (valid_p1[i][size_t(t)]) v[size_t(t)] = batch[i].values[size_t(t)];
    double last = 0;
    for (int64_t t = W - 1; t >= 0; --t) {
      const double next = t + 1 < W ? v[size_t(t + 1)] : 0.0;
      const double delta = r.rewards[i][size_t(t)] + cfg.gamma * next - v[size_t(t)];
      last = delta + cfg.gamma * cfg.lam * last;
      r.advantages[i][size_t(t)] = last;
      r.returns[i][size_t(t)] = last + v[size_t(t)];
    }
  }
  masked_whiten(r.advantages, valid, true);
  for (size_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < W; ++t)
      if (!valid[i][size_t(t)]) r.advantages[i][size_t(t)] = 0;
  return r;
}

PpoPolicyToken ppo_policy_token(const PpoConfig& cfg, double x, double o, double A) {
  PpoPolicyToken t;
  t.ratio = std::exp(x - o);
  const double l1 = -A * t.ratio;
  const double l2 = -A * std::clamp(t.ratio, 1.0 - cfg.cliprange, 1.0 + cfg.cliprange);
  t.loss = std::max(l1, l2);
  if (l1 >= l2) t.dlogp = -A * t.ratio;  // the unclipped term is the maximum
  t.clipped = l2 > l1;
  return t;
}

PpoValueToken ppo_value_token(const PpoConfig& cfg, double v, double old, double G) {
  PpoValueToken t;
  const double vc = old + std::clamp(v - old, -cfg.cliprange_value, cfg.cliprange_value);
  const double e1 = (v - G) * (v - G), e2 = (vc - G) * (vc - G);
  t.loss = 0.5 * std::max(e1, e2);
  // d/dv: the unclipped branch 2 (v - G); the clipped one only inside the clip range.
  const bool inside = std::abs(v - old) < cfg.cliprange_value;
  if (e1 >= e2) {
    t.dvalue = v - G;
  } else if (inside) {
    t.dvalue = vc - G;
  }
  t.clipped = e2 > e1;
  return t;
}

PpoLossResult ppo_loss(const PpoConfig& cfg, const std::vector<PpoLossInput>& batch) {
  PpoLossResult r;
  double pg_n = 0, vf_n = 0, all_n = 0;
  for (const auto& in : batch) {
    pg_n += double(in.response->logps.size());
    const int64_t W = int64_t(in.response->values.size());
    vf_n += double(std::min<int64_t>(W, int64_t(in.response->logps.size()) + 1));
    all_n += double(W);
  }
  for (const auto& in : batch) {
    const PpoResponse& s = *in.response;
    const size_t L = s.logps.size(), W = s.values.size();
    SWIFTLET_CHECK(in.new_logps.size() == L && in.new_values.size() == W,
                   "ppo_loss: {} new log-probs for {}, {} new values for {}", in.new_logps.size(),
                   L, in.new_values.size(), W);
    auto& dl = r.d_logps.emplace_back(L, 0.0);
    auto& dv = r.d_values.emplace_back(W, 0.0);
    for (size_t t = 0; t < L; ++t) {
      const PpoPolicyToken p =
          ppo_policy_token(cfg, in.new_logps[t], s.logps[t], (*in.advantages)[t]);
      r.pg_loss += p.loss / pg_n;
      dl[t] = p.dlogp / pg_n;
      r.pg_clipfrac += (p.clipped ? 1.0 : 0.0) / pg_n;
      const double diff = in.new_logps[t] - s.logps[t];
      r.approxkl += 0.5 * diff * diff / all_n;
    }
    for (size_t t = 0; t <= L && t < W; ++t) {
      const PpoValueToken v = ppo_value_token(cfg, in.new_values[t], s.values[t], (*in.returns)[t]);
      r.vf_loss += v.loss / vf_n;
      dv[t] = v.dvalue / vf_n;
      r.vf_clipfrac += (v.clipped ? 1.0 : 0.0) / vf_n;
    }
  }
  r.loss = r.pg_loss + cfg.vf_coef * r.vf_loss;
  for (auto& d : r.d_values)
    for (double& x : d) x *= cfg.vf_coef;
  return r;
}

}  // namespace swiftlet::rlhf
