#pragma once
// PPO's two losses as Objectives (model/objective.h), both token-local:
//  - the policy's clipped ratio loss on the LM head's log-probs (logits / temperature), per chunk;
//  - the critic's clipped value loss on the final hidden states through the score head, read at
//    every value position (rlhf/value_model.h).
// Each sample of a batch is one response; the per-token math is rlhf/ppo_loss.h's. Both losses are
// token means over the micro-batch (policy: the L_i response tokens; value: positions <= L_i
// inside the width W), times grad_scale (1 / micro-batches of the optimizer step).
#include <span>
#include <vector>

#include "model/objective.h"
#include "model/transformer.h"
#include "rlhf/ppo_loss.h"

namespace swiftlet::rlhf {

struct PpoPolicyTarget {
  const std::vector<double>* old_logps = nullptr;   // L_i
  const std::vector<double>* advantages = nullptr;  // >= L_i (whitened)
};

class PpoPolicyObjective : public Objective {
 public:
  PpoPolicyObjective(const PpoConfig& cfg, const TrainBatch& batch,
                     std::vector<PpoPolicyTarget> targets, float temperature, float grad_scale);
  float temperature() const override { return t_; }
  bool wants_logits() const override { return true; }  // for the entropy
  void chunk(const HeadChunk& c, std::span<float> dlogp) override;

  // pg loss (token mean) and token sums for the metrics (divide by `tokens`); entropy_sum: of
  // softmax(logits / temperature) at every response token.
  double loss = 0, tokens = 0, clipped = 0, ratio_sum = 0, approxkl_sum = 0, entropy_sum = 0;

 private:
  PpoConfig cfg_;
  float t_, scale_;
  std::vector<PpoPolicyTarget> targets_;
  std::vector<int64_t> seq_, pos_;  // per batch row: its response and token index, or -1
};

struct PpoValueTarget {
  const std::vector<double>* old_values = nullptr;  // >= positions used
  const std::vector<double>* returns = nullptr;     // >= positions used
  int64_t positions = 0;                            // min(L_i + 1, W)
};

// The critic's objective. Without targets it only reads the values (`values`, per sample at
// value_rows()).
class PpoValueObjective : public Objective {
 public:
  PpoValueObjective(const PpoConfig& cfg, const TrainBatch& batch, const Tensor& score,
                    const Tensor& dscore, std::vector<PpoValueTarget> targets, float grad_scale);
  bool uses_lm_head() const override { return false; }
  void chunk(const HeadChunk&, std::span<float>) override {}
  void hidden_states(const Tensor& h, const Tensor& dh) override;

  std::vector<std::vector<double>> values;  // per sample, at its value rows
  // vf loss (1/2 the token mean, without vf_coef) and clipped positions over `positions`.
  double loss = 0, positions = 0, clipped = 0;

 private:
  PpoConfig cfg_;
  const TrainBatch& batch_;
  Tensor score_, dscore_;
  std::vector<PpoValueTarget> targets_;
  float scale_;
};

}  // namespace swiftlet::rlhf
