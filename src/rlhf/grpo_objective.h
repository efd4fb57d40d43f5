#pragma once
// GRPO's per-token loss as an Objective (model/objective.h, the per-chunk mode): the LM head hands
// each chunk's completion-token log-probs (on logits / temperature), and every token's gradient
// follows from its own log-prob, its completion's advantage and its old and reference log-probs
// (rlhf/grpo_loss.h). Each sample of the batch is one completion whose target rows are exactly its
// completion tokens, in order.
#include <span>
#include <vector>

#include "model/objective.h"
#include "model/transformer.h"
#include "rlhf/grpo_loss.h"
#include "rlhf/rollout.h"

namespace swiftlet::rlhf {

struct GrpoTarget {
  double advantage = 0;
  const std::vector<double>* old_logps = nullptr;  // null: the old policy is the current one
  const std::vector<double>* ref_logps = nullptr;  // null when beta = 0
};

class GrpoObjective : public Objective {
 public:
  // grad_scale multiplies every gradient (1 / micro-batches of the step for grpo, bnpo, dr_grpo).
  GrpoObjective(const GrpoLossConfig& cfg, const TrainBatch& batch, std::vector<GrpoTarget> targets,
                float temperature, float grad_scale);
  float temperature() const override { return t_; }
  void chunk(const HeadChunk& c, std::span<float> dlogp) override;

  // The loss of the batch and token sums for the metrics (divide by `tokens`).
  double loss = 0, tokens = 0, kl_sum = 0, clip_low = 0, clip_high = 0, clip_region = 0;

 private:
  GrpoLossConfig cfg_;
  float t_, scale_;
  std::vector<GrpoTarget> targets_;
  std::vector<int64_t> seq_, pos_;  // per batch row: its completion and token index, or -1
  std::vector<double> weight_;      // per completion: the aggregation weight of its tokens
};

}  // namespace swiftlet::rlhf
