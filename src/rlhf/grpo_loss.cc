#include "rlhf/grpo_loss.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace swiftlet::rlhf {

GrpoLossType parse_grpo_loss_type(const std::string& s) {
  if (s == "grpo") return GrpoLossType::kGrpo;
  if (s == "bnpo") return GrpoLossType::kBnpo;
  if (s == "dr_grpo") return GrpoLossType::kDrGrpo;
  if (s == "dapo") return GrpoLossType::kDapo;
  throw Error(fmt::format("--loss_type {} is not supported for grpo", s),
              "use grpo, bnpo, dr_grpo or dapo");
}

AdvantageEstimator parse_advantage_estimator(const std::string& s) {
  if (s == "grpo") return AdvantageEstimator::kGrpo;
  if (s == "rloo") return AdvantageEstimator::kRloo;
  if (s == "reinforce_plus_plus") return AdvantageEstimator::kReinforcePlusPlus;
  throw Error(fmt::format("--advantage_estimator {} is not supported", s),
              "use grpo, rloo or reinforce_plus_plus");
}

ScaleRewards parse_scale_rewards(const std::string& s) {
  if (s == "group") return ScaleRewards::kGroup;
  if (s == "batch") return ScaleRewards::kBatch;
  if (s == "none") return ScaleRewards::kNone;
  throw Error(fmt::format("--scale_rewards {} is not supported", s), "use group, batch or none");
}

ScaleRewards default_scale_rewards(AdvantageEstimator e) {
  switch (e) {
    case AdvantageEstimator::kRloo:
      return ScaleRewards::kNone;
    case AdvantageEstimator::kReinforcePlusPlus:
      return ScaleRewards::kBatch;
    default:
      return ScaleRewards::kGroup;
  }
}

double unbiased_std(const std::vector<double>& v) {
  if (v.size() < 2) return 0.0;
  double mean = 0;
  for (double x : v) mean += x;
  mean /= double(v.size());
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return std::sqrt(ss / double(v.size() - 1));
}

AdvantageResult grpo_advantages(const std::vector<double>& rewards, int64_t G,
                                AdvantageEstimator estimator, ScaleRewards scale) {
  SWIFTLET_CHECK(G > 0 && rewards.size() % size_t(G) == 0, "{} rewards in groups of {}",
                 rewards.size(), G);
  const size_t groups = rewards.size() / size_t(G);
  constexpr double kEps = 1e-4;
  AdvantageResult r;
  r.advantages.resize(rewards.size());
  std::vector<double> mean(groups), stdev(groups);
  for (size_t g = 0; g < groups; ++g) {
    std::vector<double> v(rewards.begin() + long(g * size_t(G)),
                          rewards.begin() + long((g + 1) * size_t(G)));
    for (double x : v) mean[g] += x;
    mean[g] /= double(G);
    stdev[g] = unbiased_std(v);
    r.reward_mean += mean[g];
    r.reward_std += stdev[g];
    r.frac_zero_std += stdev[g] < 1e-8 ? 1.0 : 0.0;
  }
  r.reward_mean /= double(groups);
  r.reward_std /= double(groups);
  r.frac_zero_std /= double(groups);
  const double batch_std = unbiased_std(rewards);
  if (scale == ScaleRewards::kBatch) r.reward_std = batch_std;
  std::vector<double> centered(rewards.size());
  for (size_t i = 0; i < rewards.size(); ++i) centered[i] = rewards[i] - mean[i / size_t(G)];
  for (size_t i = 0; i < rewards.size(); ++i) {
    const size_t g = i / size_t(G);
    double a = centered[i];
    switch (estimator) {
      case AdvantageEstimator::kGrpo:
        if (scale == ScaleRewards::kGroup) a /= stdev[g] + kEps;
        if (scale == ScaleRewards::kBatch) a /= batch_std + kEps;
        break;
      case AdvantageEstimator::kRloo:
        // Leave-one-out baseline: R_i - mean of the others = (R_i - mu) G / (G - 1).
        a *= double(G) / double(std::max<int64_t>(1, G - 1));
        if (scale == ScaleRewards::kGroup) a /= stdev[g] + kEps;
        if (scale == ScaleRewards::kBatch) a /= batch_std + kEps;
        break;
      case AdvantageEstimator::kReinforcePlusPlus:
        if (scale == ScaleRewards::kBatch) a /= unbiased_std(centered) + kEps;
        if (scale == ScaleRewards::kGroup) {
          std::vector<double> cg(centered.begin() + long(g * size_t(G)),
                                 centered.begin() + long((g + 1) * size_t(G)));
          a /= unbiased_std(cg) + kEps;
        }
        break;
    }
    r.advantages[i] = a;
  }
  return r;
}

GrpoToken grpo_token(const GrpoLossConfig& cfg, double x, double o, double q, double A) {
  GrpoToken r;
  const double ratio = std::exp(x - o);
  const double clipped = std::clamp(ratio, 1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high);
  const double u = ratio * A, c = clipped * A;
  if (u <= c) {  // the unclipped term is the minimum: its gradient flows
    r.loss = -u;
    r.dlogp = -A * ratio;
  } else {
    r.loss = -c;
  }
  r.clip_low = ratio < 1.0 - cfg.epsilon_low && A < 0;
  r.clip_high = ratio > 1.0 + cfg.epsilon_high && A > 0;
  if (cfg.beta != 0) {
    // k3 with ms-swift's clamps: d = clamp(q - x, +-20), kl = clamp(e^d - d - 1, +-10).
    const double raw = q - x;
    const double d = std::clamp(raw, -20.0, 20.0);
    const double k = std::exp(d) - d - 1.0;
    r.kl = std::clamp(k, -10.0, 10.0);
    r.loss += cfg.beta * r.kl;
    if (raw > -20.0 && raw < 20.0 && k < 10.0) r.dlogp += cfg.beta * (1.0 - std::exp(d));
  }
  return r;
}

double grpo_token_weight(const GrpoLossConfig& cfg, double tokens, double N, double total) {
  switch (cfg.loss_type) {
    case GrpoLossType::kGrpo:
      return tokens > 0 ? 1.0 / (tokens * N) : 0.0;
    case GrpoLossType::kBnpo:
      return 1.0 / std::max(1.0, total);
    case GrpoLossType::kDrGrpo:
      return 1.0 / (N * double(cfg.max_completion_length));
    case GrpoLossType::kDapo:
      return 1.0 / std::max(1.0, cfg.dapo_tokens > 0 ? cfg.dapo_tokens : total);
  }
  return 0.0;
}

GrpoLossResult grpo_loss(const GrpoLossConfig& cfg, const std::vector<GrpoSequence>& batch) {
  GrpoLossResult r;
  const double N = double(batch.size());
  for (const auto& s : batch) r.tokens += double(s.logps.size());
  const bool kl = cfg.beta != 0;
  r.d_logps.resize(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    const GrpoSequence& s = batch[i];
    const size_t n = s.logps.size();
    SWIFTLET_CHECK(s.old_logps.size() == n && (!kl || s.ref_logps.size() == n),
                   "grpo_loss: completion {} has {} log-probs, {} old, {} reference", i, n,
                   s.old_logps.size(), s.ref_logps.size());
    const double w = grpo_token_weight(cfg, double(n), N, r.tokens);
    auto& d = r.d_logps[i];
    d.assign(n, 0.0);
    for (size_t t = 0; t < n; ++t) {
      const GrpoToken k =
          grpo_token(cfg, s.logps[t], s.old_logps[t], kl ? s.ref_logps[t] : 0.0, s.advantage);
      r.loss += w * k.loss;
      d[t] = w * k.dlogp;
      r.kl_sum += k.kl;
      r.clip_low += k.clip_low;
      r.clip_high += k.clip_high;
      r.clip_region += k.clip_low || k.clip_high;
    }
  }
  return r;
}

}  // namespace swiftlet::rlhf
