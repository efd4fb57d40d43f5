#pragma once
// `swiftlet rlhf --rlhf_type ppo`: TRL 0.29's PPOTrainer as ms-swift drives it (RLHF-SPEC §8), as a
// TrainTask over the one trainer loop. Models: the policy (trained), the reference (LoRA: the
// policy with its adapter off; full: a frozen copy), the reward model (--reward_model, frozen) and
// the critic, a second load of the reward model trained jointly with the policy
// (rlhf/value_model.h).
//
// An update takes per_device_train_batch_size x gradient_accumulation_steps prompts (the rollout
// batch B) and, before its first micro-batch:
//   1. samples one completion per prompt on the engine over the weights being trained (rollout.h)
//      at --temperature, top_k/top_p off, up to --max_completion_length tokens; a completion ends
//      on the template's stop token (kept, the model learns to stop) or at the limit;
//   2. scores each with the reward model (the conversation rendered whole, read at the token it was
//      trained on); --missing_eos_penalty p subtracts p from the score of a completion without a
//      stop token;
//   3. old-policy and reference log-probs (logits / temperature) and the critic's values, without
//      gradients; then per-token rewards -kl_coef (old - ref) plus the score, GAE (gamma, lam),
//      whitened advantages and returns (rlhf/ppo_loss.h).
// Then --num_ppo_epochs passes over the rollout batch, each in a freshly shuffled order and each
// one optimizer step of gradient_accumulation_steps micro-batches (TRL's num_mini_batches 1): the
// policy's clipped ratio loss and vf_coef x the critic's clipped value loss (rlhf/ppo_objective.h).
// A trainer step is therefore one PPO epoch of one update. Checkpoints add value_model/ and the
// current update's rollouts (ppo_rollouts.json), so a resumed run continues exactly.
//
// Data parallel (N ranks): the rollout batch is the whole step's, B = per_device_train_batch_size
// x gradient_accumulation_steps x N prompts, and micro-batches are numbered over the whole step
// (rank r trains the r-th gas of them), so N ranks train as one rank accumulating N times as many
// micro-batches. Each rank samples, scores and evaluates (old and reference log-probs, values) its
// contiguous share of the prompts, a completion seeded by its index in the whole batch; the
// responses are then all-gathered, so that rewards, GAE, the whitening of advantages (and of
// rewards) and the per-update metrics see the whole batch, as one process does. (TRL whitens per
// process, over its local batch; we follow the single-process semantics instead, see README.) The
// critic's gradients are all-reduced with the policy's by the trainer. Every rank holds the whole
// update, so rank 0's ppo_rollouts.json resumes on any number of ranks with the same global batch.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/prompts.h"
#include "dist/comm.h"
#include "infer/sampler.h"
#include "rlhf/ppo_loss.h"
#include "rlhf/reference_model.h"
#include "rlhf/rewards.h"
#include "rlhf/rollout.h"
#include "rlhf/value_model.h"
#include "tokenizer/tokenizer.h"
#include "train/task.h"

namespace swiftlet::rlhf {

struct PpoArgs {
  PpoConfig loss;  // kl_coef, gamma, lam, whiten_rewards, cliprange(_value), vf_coef
  int64_t num_ppo_epochs = 4;
  std::optional<double> missing_eos_penalty;
  int64_t max_completion_length = 512;
  SamplingParams sampling;  // temperature 0.9; top_k and top_p off (TRL's PPO sampling)
  int64_t per_device_train_batch_size = 1;
  int64_t gradient_accumulation_steps = 1;  // resolved (> 0)
  std::string reward_model;                 // the folder (scores and the critic's start)
  std::string ref_model;                    // full training: the reference ("" = --model)
  bool lora = true;                         // the policy's tuner, which the critic shares
  LoraConfig lora_config;
  uint64_t seed = 42, data_seed = 42;
  dist::Comm* comm = nullptr;  // the job's ranks (null: one process)
  int ranks() const { return comm ? comm->size() : 1; }
  // Prompts of one update, over all ranks.
  int64_t rollout_batch() const {
    return per_device_train_batch_size * gradient_accumulation_steps * ranks();
  }
};

class PpoTask : public TrainTask {
 public:
  PpoTask(PpoArgs args, PromptBundle data, Tokenizer tokenizer);
  ~PpoTask() override;

  void attach(const TrainSetup& setup) override;
  std::vector<TrainableSlot> extra_trainable() override { return critic_->trainable(); }
  void extra_trainable_ready() override { critic_->ready(); }
  void save_files(const std::string& dir) const override;
  // Per epoch of the prompts: every update that fills a rollout batch, num_ppo_epochs times.
  size_t train_size() const override;
  size_t eval_size() const override { return data_.val.size(); }
  void begin_step(std::span<const std::vector<size_t>> micro_batches) override;
  int64_t train_micro(Transformer& model, ModelGrads& grads, std::span<const size_t> samples,
                      const TrainStepOptions& opt, Metrics& metrics) override;
  // One completion of every validation prompt, sampled as rollouts are: its reward-model score.
  Metrics evaluate(Transformer& model, int64_t batch_size) override;
  BestMetric best_metric() const override { return {"objective/scores", true}; }
  nlohmann::json state() const override { return {{"ppo_micro_batches", micro_}}; }
  void restore(const nlohmann::json& state) override;

  struct Rollout : SampledCompletion {
    PpoResponse response;  // old and reference log-probs, values (width W), score
  };

 private:
  struct Update {
    int64_t index = -1;
    std::vector<Rollout> rollouts;
    PpoRollout math;                  // rewards, advantages, returns
    std::vector<double> micro_ratio;  // val/ratio of each micro-batch trained so far
  };
  std::vector<size_t> prompts_of(int64_t update) const;
  std::vector<size_t> order_of(int64_t update, int64_t ppo_epoch) const;
  std::vector<double> scores(const std::vector<Rollout>& rs,
                             const std::vector<PromptSample>& prompts);
  void roll_out(Transformer& model, int64_t update, Metrics& metrics);
  void finish_update();  // the math from the rollouts
  nlohmann::json rollouts_json() const;
  void load_rollouts(const std::string& ckpt);

  PpoArgs args_;
  PromptBundle data_;
  Tokenizer tok_;
  RolloutSampling sampling_;
  std::unique_ptr<RewardModelReward> reward_;
  std::unique_ptr<ValueModel> critic_;
  std::unique_ptr<ReferenceModel> ref_;
  LoraAdapter* adapter_ = nullptr;
  Transformer* model_ = nullptr;  // the policy, which samples
  Update update_;
  int64_t micro_ = 0;       // micro-batches of all ranks trained so far, the current step's too
  int64_t step_first_ = 0;  // first micro-batch of the current step
  int64_t step_micros_ = 1;
  int64_t rank_first_ = 0;  // this rank's first micro-batch of the current step
  int64_t cursor_ = 0;      // this rank's next micro-batch
  Metrics pending_;         // the update's metrics, logged with the step's first micro-batch
  std::vector<double> step_ratio_;  // val/ratio of this rank's micro-batches of the step
  double rollout_s_ = 0;  // rollout seconds of the current step
};

}  // namespace swiftlet::rlhf
