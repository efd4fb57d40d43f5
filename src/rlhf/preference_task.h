#pragma once
// `swiftlet rlhf --rlhf_type dpo|cpo|simpo|orpo|kto|rm`: preference alignment as TrainTasks over
// the one trainer loop. Each micro-batch packs its sequences into one batch (chosen then rejected,
// or KTO's completions then their mismatched KL completions), takes the reference model's
// log-probs without keeping activations, and trains the policy with an Objective that hands the
// loss math (rlhf/preference_loss.h) every label token's log-prob and returns its gradient.
//
// The reference (dpo, kto): for LoRA the policy itself with the adapter switched off (no second
// copy); for full training a frozen copy of --ref_model (default: the model). A reward model
// (rm) trains a score head on the last token's final hidden state instead of the LM head.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/preference.h"
#include "rlhf/preference_config.h"
#include "rlhf/preference_loss.h"
#include "rlhf/reference_model.h"
#include "train/task.h"

namespace swiftlet::rlhf {

struct PreferenceTaskArgs {
  PreferenceConfig loss;
  std::string ref_model;     // full training: folder of the reference ("" = the model)
  std::string ref_adapters;  // LoRA: an adapter folder used as the reference instead of none
  uint64_t seed = 42;        // the reward model's score head initialisation
};

class PreferenceTask : public TrainTask {
 public:
  PreferenceTask(PreferenceTaskArgs args, std::vector<PreferenceSample> train,
                 std::vector<PreferenceSample> val);
  ~PreferenceTask() override;

  void prepare_model(ModelFolder& folder) override;
  void attach(const TrainSetup& setup) override;
  size_t train_size() const override { return train_.size(); }
  size_t eval_size() const override { return val_.size(); }
  void begin_step(std::span<const std::vector<size_t>> micro_batches) override;
  int64_t train_micro(Transformer& model, ModelGrads& grads, std::span<const size_t> samples,
                      const TrainStepOptions& opt, Metrics& metrics) override;
  Metrics evaluate(Transformer& model, int64_t batch_size) override;
  nlohmann::json state() const override;
  void restore(const nlohmann::json& state) override;

 private:
  // Forward (and, with grads, backward) of one micro-batch; its loss and metrics.
  int64_t run(Transformer& model, ModelGrads* grads,
              const std::vector<const PreferenceSample*>& rows, const TrainStepOptions& opt,
              float grad_scale, Metrics& metrics);

  PreferenceTaskArgs args_;
  std::vector<PreferenceSample> train_, val_;
  std::unique_ptr<ReferenceModel> ref_;
  PairLossState pair_state_;
  float grad_scale_ = 1.0f;
};

// Adds `score.weight` (N(0, initializer_range), seeded) to a causal LM folder and makes its config
// a ...ForSequenceClassification with one label, as AutoModelForSequenceClassification loads a
// causal checkpoint; a folder that already is a sequence classifier is left as it is.
void make_reward_model(ModelFolder& folder, uint64_t seed);

}  // namespace swiftlet::rlhf
