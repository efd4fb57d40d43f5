#pragma once
// SFT / PT: next-token cross-entropy, averaged over the target tokens of a whole optimizer step
// (as ms-swift and HF's Trainer with average_tokens_across_devices do on one device).
#include <vector>

#include "data/sample.h"
#include "train/task.h"

namespace swiftlet {

// Packs samples into a TrainBatch: each sample its own attention segment, positions restarting,
// targets shifted within the sample (t predicts labels[t + 1]; the last position has none).
TrainBatch make_train_batch(const std::vector<const TokenizedSample*>& samples);

class SftTask : public TrainTask {
 public:
  SftTask(const std::vector<TokenizedSample>& train, const std::vector<TokenizedSample>& val)
      : train_(train), val_(val) {}
  size_t train_size() const override { return train_.size(); }
  size_t eval_size() const override { return val_.size(); }
  void begin_step(std::span<const std::vector<size_t>> micro_batches) override;
  int64_t train_micro(Transformer& model, ModelGrads& grads, std::span<const size_t> samples,
                      const TrainStepOptions& opt, Metrics& metrics) override;
  Metrics evaluate(Transformer& model, int64_t batch_size) override;

 private:
  const std::vector<TokenizedSample>& train_;
  const std::vector<TokenizedSample>& val_;
  float grad_scale_ = 1.0f;
};

}  // namespace swiftlet
