#pragma once
// GRPO's math on plain numbers (RLHF-SPEC §7.2-7.4): group advantages from rewards, and the
// clipped per-token policy loss with the k3 KL to the reference, its gradient by each completion
// token's log-prob, and its metrics. The task (rlhf/grpo_task.h) feeds it the log-probs the model
// computed; tests feed it fixed rollouts and compare with PyTorch (tests/reference/torch_rlhf.py).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace swiftlet::rlhf {

enum class GrpoLossType { kGrpo, kBnpo, kDrGrpo, kDapo };
enum class AdvantageEstimator { kGrpo, kRloo, kReinforcePlusPlus };
enum class ScaleRewards { kGroup, kBatch, kNone };

GrpoLossType parse_grpo_loss_type(const std::string& s);
AdvantageEstimator parse_advantage_estimator(const std::string& s);
ScaleRewards parse_scale_rewards(const std::string& s);
// ms-swift's default scaling per estimator: group (grpo), none (rloo), batch (reinforce++).
ScaleRewards default_scale_rewards(AdvantageEstimator e);

struct GrpoLossConfig {
  GrpoLossType loss_type = GrpoLossType::kGrpo;
  double beta = 0.04;  // 0: no reference, no KL term
  double epsilon_low = 0.2, epsilon_high = 0.2;
  int64_t max_completion_length = 512;  // dr_grpo's L
  // dapo: completion tokens of the whole optimizer step (the normaliser T); 0 = this batch's.
  double dapo_tokens = 0;
};

// One completion of a micro-batch: per completion token, the current (x), old (o) and reference
// (q, empty when beta = 0) log-probs, and the completion's advantage.
struct GrpoSequence {
  std::vector<double> logps, old_logps, ref_logps;
  double advantage = 0;
};

struct GrpoLossResult {
  double loss = 0;
  std::vector<std::vector<double>> d_logps;  // d loss / d x_t per completion and token
  // Token sums over the batch (divide by `tokens` for the logged token means).
  double tokens = 0, kl_sum = 0, clip_low = 0, clip_high = 0, clip_region = 0;
};

GrpoLossResult grpo_loss(const GrpoLossConfig& cfg, const std::vector<GrpoSequence>& batch);

// One token's unweighted loss l_t and d l_t / d x_t (x current, o old, q reference log-prob; q is
// ignored when beta = 0), its k3 KL and clip flags. grpo_loss is the weighted sum of these.
struct GrpoToken {
  double loss = 0, dlogp = 0, kl = 0;
  bool clip_low = false, clip_high = false;
};
GrpoToken grpo_token(const GrpoLossConfig& cfg, double x, double o, double q, double advantage);
// The aggregation weight of each token of a completion with `tokens` tokens, in a batch of
// `completions` completions holding `batch_tokens` tokens.
double grpo_token_weight(const GrpoLossConfig& cfg, double tokens, double completions,
                         double batch_tokens);

struct AdvantageResult {
  std::vector<double> advantages;
  double reward_mean = 0;  // mean of the group means
  double reward_std = 0;   // mean of the group stds (batch std under scale_rewards batch)
  double frac_zero_std = 0;
};

// Advantages of a generation batch: groups of `G` consecutive completions.
AdvantageResult grpo_advantages(const std::vector<double>& rewards, int64_t G,
                                AdvantageEstimator estimator, ScaleRewards scale);

// Unbiased (Bessel) standard deviation; 0 for fewer than two values.
double unbiased_std(const std::vector<double>& v);

}  // namespace swiftlet::rlhf
