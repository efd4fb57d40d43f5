#pragma once
// What the rlhf tasks with a reference (dpo, kto, grpo) share: the per-token log-prob collector
// and the reference model itself.
//
// The reference: for LoRA the policy itself with its adapter switched off (no second copy of the
// weights; --ref_adapters switches another adapter in instead); for full training a frozen copy of
// --ref_model (default: the model). Its passes keep no activations.
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/objective.h"
#include "model/transformer.h"
#include "train/frozen_shards.h"
#include "train/task.h"
#include "tuner/lora.h"

namespace swiftlet::rlhf {

// Every row's log p(target) of a batch, on logits / temperature (rows without a target stay 0).
class LogprobCollector : public Objective {
 public:
  explicit LogprobCollector(int64_t rows, float temperature = 1.0f)
      : logp(size_t(rows), 0.0f), temperature_(temperature) {}
  float temperature() const override { return temperature_; }
  void chunk(const HeadChunk& c, std::span<float>) override {
    for (int64_t i = 0; i < c.rows(); ++i) logp[size_t(c.begin + i)] = c.logprobs[size_t(i)];
  }
  std::vector<float> logp;

 private:
  float temperature_;
};

class ReferenceModel {
 public:
  // From the trainer's setup (s.adapter set: LoRA). Throws Error when --ref_model does not share
  // the policy's vocabulary.
  ReferenceModel(const TrainSetup& s, const std::string& ref_model,
                 const std::string& ref_adapters);
  // Every row's log p(target) under the reference; the policy's own adapter is back on however
  // the pass ends.
  std::vector<float> logprobs(Transformer& policy, const TrainBatch& b, float temperature = 1.0f);
  // ZeRO-3: the sharded frozen copy gathered whole for its scope, for passes whose number differs
  // between ranks (each rank scores its share of a generation); null when nothing is sharded.
  std::unique_ptr<Transformer::WholeWeights> whole();

 private:
  LoraAdapter* adapter_ = nullptr;            // LoRA: the policy with this adapter switched off
  std::unique_ptr<LoraAdapter> ref_adapter_;  // --ref_adapters: switched in for reference passes
  std::unique_ptr<Transformer> frozen_;       // full training: a frozen copy
  std::unique_ptr<FrozenShards> shards_;      // its weights, under ZeRO-3
};

}  // namespace swiftlet::rlhf
