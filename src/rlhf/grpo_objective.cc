#include "rlhf/grpo_objective.h"

#include "core/error.h"

namespace swiftlet::rlhf {

GrpoObjective::GrpoObjective(const GrpoLossConfig& cfg, const TrainBatch& b,
                             std::vector<GrpoTarget> targets, float temperature, float grad_scale)
    : cfg_(cfg), t_(temperature), scale_(grad_scale), targets_(std::move(targets)) {
  const auto rows = target_rows(b);
  SWIFTLET_CHECK(rows.size() == targets_.size(), "{} samples for {} completions", rows.size(),
                 targets_.size());
  seq_.assign(b.input_ids.size(), -1);
  pos_.assign(b.input_ids.size(), -1);
  for (const auto& r : rows) tokens += double(r.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const GrpoTarget& t = targets_[i];
    SWIFTLET_CHECK(!t.old_logps || t.old_logps->size() == rows[i].size(),
                   "completion {}: {} tokens, {} old log-probs", i, rows[i].size(),
                   t.old_logps->size());
    SWIFTLET_CHECK((cfg_.beta == 0) == (t.ref_logps == nullptr) &&
                       (!t.ref_logps || t.ref_logps->size() == rows[i].size()),
                   "completion {}: reference log-probs do not match beta {} and {} tokens", i,
                   cfg_.beta, rows[i].size());
    weight_.push_back(grpo_token_weight(cfg_, double(rows[i].size()), double(rows.size()), tokens));
    for (size_t k = 0; k < rows[i].size(); ++k) {
      seq_[size_t(rows[i][k])] = int64_t(i);
      pos_[size_t(rows[i][k])] = int64_t(k);
    }
  }
}

void GrpoObjective::chunk(const HeadChunk& c, std::span<float> dlogp) {
  for (int64_t k = 0; k < c.rows(); ++k) {
    const size_t row = size_t(c.begin + k);
    const int64_t i = seq_[row];
    SWIFTLET_CHECK(i >= 0, "row {} of a GRPO batch belongs to no completion", row);
    const size_t t = size_t(pos_[row]);
    const GrpoTarget& g = targets_[size_t(i)];
    const double x = c.logprobs[size_t(k)];
    const double o = g.old_logps ? (*g.old_logps)[t] : x;
    const double q = g.ref_logps ? (*g.ref_logps)[t] : 0.0;
    const GrpoToken tok = grpo_token(cfg_, x, o, q, g.advantage);
    const double w = weight_[size_t(i)];
    loss += w * tok.loss;
    kl_sum += tok.kl;
    clip_low += tok.clip_low;
    clip_high += tok.clip_high;
    clip_region += tok.clip_low || tok.clip_high;
    if (!dlogp.empty()) dlogp[size_t(k)] = float(scale_ * w * tok.dlogp);
  }
}

}  // namespace swiftlet::rlhf
