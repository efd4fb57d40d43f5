// KTO (unpaired examples with a KL baseline) and the reward-model loss.
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "core/error.h"
#include "rlhf/loss_math.h"
#include "rlhf/preference_loss.h"

namespace swiftlet::rlhf {
namespace {

double sum_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

// Python's round(x, 2): the correctly rounded decimal, as printf gives it.
double round2(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return std::stod(buf);
}

}  // namespace

KtoLossResult kto_loss(const PreferenceConfig& cfg, std::span<const KtoExample> examples,
                       const RankMean& ranks) {
  SWIFTLET_CHECK(cfg.type == RlhfType::kKto, "kto_loss: rlhf_type is {}", rlhf_type_name(cfg.type));
  SWIFTLET_CHECK(!examples.empty(), "kto_loss: no examples");
  const bool kto = cfg.loss_types.at(0) == LossType::kKto;
  const size_t n = examples.size();
  for (size_t i = 0; i < n; ++i) {
    const KtoExample& e = examples[i];
    if (e.completion.policy.empty())
      throw Error(fmt::format("KTO example {}: the completion has no label tokens", i),
                  "it was probably truncated away; raise --max_length or drop the row");
    SWIFTLET_CHECK(e.completion.reference.size() == e.completion.policy.size(),
                   "kto_loss: example {}: {} reference logps for {} policy logps", i,
                   e.completion.reference.size(), e.completion.policy.size());
    if (kto)
      SWIFTLET_CHECK(e.kl_completion.reference.size() == e.kl_completion.policy.size(),
                     "kto_loss: example {}: {} reference logps for {} policy logps of the KL "
                     "completion",
                     i, e.kl_completion.reference.size(), e.kl_completion.policy.size());
  }

  // KL baseline: detached, averaged over the micro-batch and the ranks, then clamped at 0.
  double kl = 0;
  if (kto) {
    for (const KtoExample& e : examples)
      kl += sum_of(e.kl_completion.policy) - sum_of(e.kl_completion.reference);
    kl /= double(n);
    if (ranks) kl = ranks(kl);
    kl = std::max(kl, 0.0);
  }

  const double beta = cfg.beta;
  KtoLossResult res;
  std::vector<double> loss(n), dloss(n);  // per example: ℓ and dℓ/dΔ
  std::vector<double> delta(n), logp(n);
  for (size_t i = 0; i < n; ++i) {
    const KtoExample& e = examples[i];
    logp[i] = sum_of(e.completion.policy);
    delta[i] = logp[i] - sum_of(e.completion.reference);
    const double w = e.desirable ? cfg.desirable_weight : cfg.undesirable_weight;
    if (kto) {
      // desirable 1 − σ(β(Δ − KL)), undesirable 1 − σ(β(KL − Δ)).
      const double u = e.desirable ? beta * (delta[i] - kl) : beta * (kl - delta[i]);
      const double s = sigmoid(u);
      loss[i] = w * (1 - s);
      dloss[i] = w * s * (1 - s) * (e.desirable ? -beta : beta);
    } else {
      // apo_zero_unpaired: desirable 1 − σ(βΔ), undesirable σ(βΔ).
      const double s = sigmoid(beta * delta[i]);
      loss[i] = w * (e.desirable ? 1 - s : s);
      dloss[i] = w * s * (1 - s) * (e.desirable ? -beta : beta);
    }
  }
  // nanmean over the examples.
  size_t valid = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(loss[i])) continue;
    res.loss += loss[i];
    ++valid;
  }
  res.loss = valid ? res.loss / double(valid) : std::nan("");
  res.d_policy.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const double g = std::isnan(loss[i]) || valid == 0 ? 0.0 : dloss[i] / double(valid);
    res.d_policy[i].assign(examples[i].completion.policy.size(), g);
  }

  res.metrics["kl"] = kl;
  for (const bool side : {true, false}) {
    const std::string name = side ? "chosen" : "rejected";
    double rewards = 0, logps = 0, logits = 0, count = 0;
    bool all_logits = true;
    for (size_t i = 0; i < n; ++i) {
      if (examples[i].desirable != side) continue;
      count += 1;
      if (!std::isnan(delta[i])) rewards += beta * delta[i];  // nansum
      if (!std::isnan(logp[i])) logps += logp[i];
      if (examples[i].logits_sum) {
        if (!std::isnan(*examples[i].logits_sum)) logits += *examples[i].logits_sum;
      } else {
        all_logits = false;
      }
    }
    if (count == 0) continue;
    res.metrics["rewards/" + name + "_sum"] = rewards;
    res.metrics["logps/" + name + "_sum"] = logps;
    if (all_logits) res.metrics["logits/" + name + "_sum"] = logits;
    res.metrics["count/" + name] = count;
  }
  return res;
}

std::map<std::string, double> kto_window_metrics(const std::map<std::string, double>& summed,
                                                 int64_t micro_batches) {
  std::map<std::string, double> out;
  for (const auto& [name, value] : summed) {
    const bool per_side = name.starts_with("count/") || name.ends_with("_sum");
    if (!per_side) out[name] = micro_batches > 0 ? value / double(micro_batches) : 0.0;
  }
  for (const std::string side : {"chosen", "rejected"}) {
    auto count = summed.find("count/" + side);
    if (count == summed.end() || count->second == 0) continue;
    for (const std::string metric : {"rewards", "logps", "logits"})
      if (auto s = summed.find(metric + "/" + side + "_sum"); s != summed.end())
        out[metric + "/" + side] = s->second / count->second;
  }
  if (out.count("rewards/chosen") && out.count("rewards/rejected"))
    out["rewards/margins"] = out["rewards/chosen"] - out["rewards/rejected"];
  return out;
}

std::optional<std::string> kto_weight_warning(const PreferenceConfig& cfg, int64_t num_desirable,
                                              int64_t num_undesirable) {
  // As ms-swift's prepare_kto_dataset (TRL's KTOTrainer), including its max(., 1) guards.
  const int64_t total = num_desirable + num_undesirable;
  const double nd = double(std::max<int64_t>(num_desirable, 1));
  const double nu = double(std::max<int64_t>(total - int64_t(nd), 1));
  if (nd == nu) return std::nullopt;
  const double dw = cfg.desirable_weight, uw = cfg.undesirable_weight;
  const double des_lo = round2(nu * uw / nd), des_hi = round2(nu * uw / nd * 1.33);
  const double und_lo = round2(nd * dw / nu / 1.33), und_hi = round2(nd * dw / nu);
  if ((des_lo <= dw && dw <= des_hi) || (und_lo <= uw && uw <= und_hi)) return std::nullopt;
  return fmt::format(
      "KTO data has {} desirable and {} undesirable examples but desirable_weight {} and "
      "undesirable_weight {} do not balance them: use EITHER --desirable_weight in [{}, {}] OR "
      "--undesirable_weight in [{}, {}] (not both)",
      int64_t(nd), int64_t(nu), dw, uw, des_lo, des_hi, und_lo, und_hi);
}

RewardLossResult reward_loss(const PreferenceConfig& cfg, std::span<const double> chosen,
                             std::span<const double> rejected, std::span<const double> margins) {
  SWIFTLET_CHECK(cfg.type == RlhfType::kRm, "reward_loss: rlhf_type is {}",
                 rlhf_type_name(cfg.type));
  const size_t B = chosen.size();
  SWIFTLET_CHECK(B > 0 && rejected.size() == B && (margins.empty() || margins.size() == B),
                 "reward_loss: {} chosen, {} rejected scores and {} margins", B, rejected.size(),
                 margins.size());
  RewardLossResult res;
  res.d_chosen.resize(B);
  res.d_rejected.resize(B);
  double center = 0, sum_c = 0, sum_r = 0, accurate = 0, margin = 0;
  const double lambda = cfg.center_rewards_coefficient.value_or(0.0);
  for (size_t i = 0; i < B; ++i) {
    const double m = margins.empty() ? 0.0 : margins[i];
    const double x = chosen[i] - rejected[i] - m;
    res.loss += softplus(-x) / double(B);  // −log σ(x)
    const double dx = -sigmoid(-x) / double(B);
    const double s = chosen[i] + rejected[i];
    center += s * s / double(B);
    const double ds = 2 * lambda * s / double(B);
    res.d_chosen[i] = dx + ds;
    res.d_rejected[i] = -dx + ds;
    sum_c += chosen[i];
    sum_r += rejected[i];
    accurate += chosen[i] > rejected[i] ? 1.0 : 0.0;
    margin += chosen[i] - rejected[i];
  }
  res.metrics["rewards/chosen"] = sum_c / double(B);
  res.metrics["rewards/rejected"] = sum_r / double(B);
  res.metrics["rewards/accuracies"] = accurate / double(B);
  res.metrics["rewards/margins"] = margin / double(B);
  if (cfg.center_rewards_coefficient) {
    res.loss += lambda * center;
    res.metrics["center_rewards_loss"] = lambda * center;
  }
  return res;
}

}  // namespace swiftlet::rlhf
