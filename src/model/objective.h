#pragma once
// What a training objective sees of a forward pass and hands back to the shared backward.
//
// The LM head runs over chunks of rows that have a target (never the whole [T, V] logits): for
// each chunk it computes log p(target) per row (and the logits, while the chunk lasts, for an
// objective that asks), the objective returns d loss / d log p(target) per row, and the head
// turns that into the logits' gradient (one cross-entropy kernel with per-row scales) and on into
// the final hidden states. An objective may also read the final hidden states (after the last
// norm) and add their gradient, for a value or score head. The model backward is the same for all.
//
// Three ways an objective can be driven, fastest first:
//  - weights_before_logprobs(): its gradient by log p does not depend on log p (cross-entropy,
//    per-token weighted cross-entropy); log-probs and gradients come from one pass per chunk;
//  - the default: each chunk's gradient depends only on that chunk's log-probs (token-local losses
//    such as GRPO/PPO's clipped ratios): a loss pass, then a gradient pass over the same logits;
//  - whole_batch(): the gradient depends on log-probs of other rows (sequence-level losses: DPO,
//    KTO): every chunk's log-probs first, then the logits are recomputed chunk by chunk.
#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace swiftlet {

// One chunk of consecutive rows [begin, end) of the packed batch that all have a target.
struct HeadChunk {
  int64_t begin = 0, end = 0;
  std::span<const int32_t> targets;  // [end - begin] target token ids
  std::span<const float> logprobs;   // log p(target); empty in the fixed-weight call
  std::span<const float> correct;    // 1 where argmax == target; empty in the fixed-weight call
  Tensor logits;                     // [end - begin, V] f32 on the device, when wants_logits()
  int64_t rows() const { return end - begin; }
};

class Objective {
 public:
  virtual ~Objective() = default;

  virtual bool weights_before_logprobs() const { return false; }
  virtual bool whole_batch() const { return false; }
  // Each chunk's logits (divided by temperature()) reach chunk() (read-only, valid during the
  // call).
  virtual bool wants_logits() const { return false; }
  // False for objectives on the hidden states alone (a reward model's score head): no LM head.
  virtual bool uses_lm_head() const { return true; }
  // Log-probs (and their gradient) on logits / temperature: GRPO/PPO score a rollout at the
  // temperature it was sampled with. 1: the raw logits.
  virtual float temperature() const { return 1.0f; }

  // weights_before_logprobs(): d loss / d log p(target) of the chunk's rows into dlogp, before
  // their log-probs are known (c.logprobs and c.correct are empty).
  virtual void fixed_grad(const HeadChunk& c, std::span<float> dlogp) {}

  // Every chunk, in row order, with its log-probs. dlogp (zeroed, one per row) receives
  // d loss / d log p(target); it is empty when no gradient is computed (evaluation, reference
  // log-probs) and for weights_before_logprobs() and whole_batch() objectives, which give theirs
  // in fixed_grad() / batch_grad(). Metrics are gathered here.
  virtual void chunk(const HeadChunk& c, std::span<float> dlogp) = 0;

  // whole_batch(): after every chunk was seen, d loss / d log p(target) for all T rows of the
  // batch (dlogp zeroed; rows without a target are ignored).
  virtual void batch_grad(std::span<float> dlogp) {}

  // The final hidden states h [T, H] (after the last norm) on the device; dh (same shape) receives
  // d loss / d h (+=) and is undefined when no gradient is computed. Called after the chunks.
  virtual void hidden_states(const Tensor& h, const Tensor& dh) {}
};

// Mean next-token cross-entropy (SFT / PT): loss = sum_t w_t * CE_t * grad_scale, with w_t = 1
// or per-token weights (ms-swift's loss_scale), grad_scale = 1 / target tokens of the whole
// optimizer step. Gathers the loss sum, target tokens and argmax hits (token_acc).
class CrossEntropyObjective : public Objective {
 public:
  explicit CrossEntropyObjective(float grad_scale = 1.0f, std::vector<float> token_weights = {})
      : grad_scale_(grad_scale), token_weights_(std::move(token_weights)) {}
  bool weights_before_logprobs() const override { return true; }
  void fixed_grad(const HeadChunk& c, std::span<float> dlogp) override;
  void chunk(const HeadChunk& c, std::span<float> dlogp) override;

  double loss_sum = 0;  // sum of w_t * CE_t over target tokens
  int64_t tokens = 0;   // target tokens
  int64_t correct = 0;  // argmax == target

 private:
  float grad_scale_;
  std::vector<float> token_weights_;  // per row of the batch, or empty
};

}  // namespace swiftlet
