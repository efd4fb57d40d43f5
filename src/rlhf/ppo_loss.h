#pragma once
// PPO's math on plain numbers (RLHF-SPEC §8, TRL 0.29's PPOTrainer): per-token rewards with the KL
// penalty and the score, GAE, whitening, and one micro-batch's clipped policy and value losses
// with their gradients by the new log-probs and values. A batch holds B responses padded to width
// W; response i keeps L_i tokens (its stop token included), so log-probs exist at positions < L_i
// and values at positions <= L_i (one past the end, where the score lands when L_i < W).
// The task (rlhf/ppo_task.h) drives the per-token forms below through the model.
#include <cstdint>
#include <string>
#include <vector>

namespace swiftlet::rlhf {

struct PpoConfig {
  double kl_coef = 0.05;
  bool kl_k3 = false;  // kl_estimator k3 instead of k1
  double gamma = 1.0, lam = 0.95;
  bool whiten_rewards = false;
  double cliprange = 0.2, cliprange_value = 0.2, vf_coef = 0.1;
};

struct PpoResponse {
  std::vector<double> logps, ref_logps;  // old policy and reference, L_i entries
  std::vector<double> values;            // the value model at rollout, W entries (used <= L_i)
  double score = 0;                      // the reward model's score (after missing_eos_penalty)
};

struct PpoRollout {
  int64_t width = 0;  // W
  // Per response, W entries (zero where unused): rewards r_t, advantages (whitened over the
  // valid positions < L_i) and returns A_t + V_t.
  std::vector<std::vector<double>> rewards, advantages, returns;
  double kl = 0, non_score_reward = 0, scores = 0;  // means over responses (objective/*)
};

PpoRollout ppo_rollout(const PpoConfig& cfg, const std::vector<PpoResponse>& batch);

struct PpoLossInput {
  const PpoResponse* response = nullptr;            // old log-probs and values
  const std::vector<double>* advantages = nullptr;  // W entries
  const std::vector<double>* returns = nullptr;     // W entries
  std::vector<double> new_logps;                    // L_i entries
  std::vector<double> new_values;                   // W entries (used <= L_i)
};

struct PpoLossResult {
  double loss = 0, pg_loss = 0, vf_loss = 0;
  double pg_clipfrac = 0, vf_clipfrac = 0, approxkl = 0;
  std::vector<std::vector<double>> d_logps, d_values;  // shaped as new_logps / new_values
};

// One response token's clipped policy term max(-A r, -A clip(r, 1 +- cliprange)), r = e^(x - o),
// with its gradient by x (zero where the clipped term is the larger) and whether it was clipped.
struct PpoPolicyToken {
  double loss = 0, dlogp = 0, ratio = 0;
  bool clipped = false;
};
PpoPolicyToken ppo_policy_token(const PpoConfig& cfg, double new_logp, double old_logp, double A);

// One position's value term 1/2 max((v - G)^2, (clip(v, V_old +- cliprange_value) - G)^2), its
// gradient by v and whether the clipped branch was the larger.
struct PpoValueToken {
  double loss = 0, dvalue = 0;
  bool clipped = false;
};
PpoValueToken ppo_value_token(const PpoConfig& cfg, double new_value, double old_value, double G);

// loss = pg + vf_coef * vf: pg the token mean of max(-A r, -A clip(r, 1 +- cliprange)) over
// positions < L_i, vf = 1/2 the mean of max((v - G)^2, (clip(v, V_old +- cliprange_value) - G)^2)
// over positions <= L_i (< W).
PpoLossResult ppo_loss(const PpoConfig& cfg, const std::vector<PpoLossInput>& batch);

}  // namespace swiftlet::rlhf
