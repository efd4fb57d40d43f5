#include "model/objective.h"

namespace swiftlet {

void CrossEntropyObjective::fixed_grad(const HeadChunk& c, std::span<float> dlogp) {
  // loss = sum_t w_t * grad_scale * (-log p_t): d loss / d log p_t = -w_t * grad_scale
  for (int64_t i = 0; i < c.rows(); ++i)
    dlogp[size_t(i)] =
        token_weights_.empty() ? -grad_scale_ : -grad_scale_ * token_weights_[size_t(c.begin + i)];
}

// Metrics only: the head asks for the gradient through fixed_grad (weights_before_logprobs).
void CrossEntropyObjective::chunk(const HeadChunk& c, std::span<float>) {
  for (int64_t i = 0; i < c.rows(); ++i) {
    const double ce = -double(c.logprobs[size_t(i)]);
    loss_sum += token_weights_.empty() ? ce : double(token_weights_[size_t(c.begin + i)]) * ce;
    correct += c.correct[size_t(i)] > 0.5f;
  }
  tokens += c.rows();
}

}  // namespace swiftlet
