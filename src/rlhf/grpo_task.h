#pragma once
// `swiftlet rlhf --rlhf_type grpo`: online RL as a TrainTask over the one trainer loop.
//
// Rollouts run on the continuous-batching engine (infer/engine.h) over the very Transformer being
// trained — the LoRA adapter attached unmerged, or the full weights — so nothing is copied or
// synchronised; the trainer's attach state is restored after every rollout. Per generation (once
// every steps_per_generation x num_iterations micro-batches, RLHF-SPEC §7.1):
//   1. generation_batch_size / G prompts, each sampled G times (seeded per generation and
//      completion), up to max_completion_length tokens; a completion keeps the stop token that
//      ended it (the model learns to stop), and is "clipped" when it hit the length limit;
//   2. rewards: the weighted sum of the reward functions (NaN ignored), advantages per group;
//      --dynamic_sample replaces groups whose rewards are all equal with groups of other prompts
//      (at most max_resample_times more generations), as DAPO does;
//   3. reference log-probs (beta != 0; LoRA: the adapter switched off, full: a frozen copy) and
//      old-policy log-probs, all on logits / temperature. The old log-probs are the current ones
//      (w = 1 exactly) when no optimizer step separates the rollout from its use (num_iterations
//      1 and steps_per_generation <= gradient_accumulation_steps): ms-swift's extra forward would
//      give the same numbers; otherwise a forward without gradient at generation time keeps them.
// Each micro-batch then trains on per_device_train_batch_size of the generation's completions
// with the clipped ratio loss and k3 KL (rlhf/grpo_loss.h), token-local, in the LM head's
// per-chunk mode. Evaluation samples G completions of every validation prompt and reports the
// reward metrics; the best checkpoint is the one with the highest eval reward.
//
// Data parallel (N ranks): a generation is TRL's, of per_device_train_batch_size x
// steps_per_generation x N completions, and micro-batches are numbered over the whole step (rank r
// trains micro-batches r x gas ... of it, as the trainer assigns them), so N ranks train as one
// rank accumulating N times as many micro-batches. Each rank samples and scores its contiguous
// share of the generation's groups (a completion is seeded by its index in the whole generation,
// not by the rank that samples it); the scored completions are then all-gathered, so that every
// rank holds the whole generation: advantages, dynamic sampling, dapo's token count and the
// generation's metrics see the whole batch as in one process, and a rank computes reference and
// old log-probs only for the micro-batches it trains.
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/prompts.h"
#include "dist/comm.h"
#include "infer/sampler.h"
#include "rlhf/grpo_loss.h"
#include "rlhf/reference_model.h"
#include "rlhf/rollout.h"
#include "rlhf/rewards.h"
#include "tokenizer/tokenizer.h"
#include "train/task.h"

namespace swiftlet::rlhf {

struct GrpoArgs {
  GrpoLossConfig loss;
  int64_t num_generations = 8;
  int64_t max_completion_length = 512;
  SamplingParams sampling;  // temperature 0.9, top_k off, top_p 1
  int64_t num_iterations = 1;
  int64_t per_device_train_batch_size = 1;
  int64_t gradient_accumulation_steps = 1;
  int64_t steps_per_generation = 0;  // micro-batches per generation (resolved, > 0)
  AdvantageEstimator advantage_estimator = AdvantageEstimator::kGrpo;
  ScaleRewards scale_rewards = ScaleRewards::kGroup;
  std::vector<double> reward_weights;  // one per reward function
  bool dynamic_sample = false;
  int64_t max_resample_times = 3;
  bool log_completions = false;
  std::string output_dir;  // the run folder (completions.jsonl)
  std::string ref_model, ref_adapters;
  uint64_t seed = 42, data_seed = 42;
  std::vector<int32_t> stop_token_ids;  // filled in attach() as inference takes them
  dist::Comm* comm = nullptr;           // the job's ranks (null: one process)
  int ranks() const { return comm ? comm->size() : 1; }
  // Completions of one generation, over all ranks (TRL's generation_batch_size).
  int64_t generation_batch_size() const {
    return per_device_train_batch_size * steps_per_generation * ranks();
  }
};

class GrpoTask : public TrainTask {
 public:
  GrpoTask(GrpoArgs args, PromptBundle data, std::vector<std::unique_ptr<RewardFunction>> rewards,
           Tokenizer tokenizer);
  ~GrpoTask() override;

  void attach(const TrainSetup& setup) override;
  // Completions of an epoch: every prompt that fills a generation batch, G times, num_iterations
  // times (ms-swift's repeat sampler).
  size_t train_size() const override;
  size_t eval_size() const override { return data_.val.size(); }
  void begin_step(std::span<const std::vector<size_t>> micro_batches) override;
  int64_t train_micro(Transformer& model, ModelGrads& grads, std::span<const size_t> samples,
                      const TrainStepOptions& opt, Metrics& metrics) override;
  Metrics evaluate(Transformer& model, int64_t batch_size) override;
  BestMetric best_metric() const override { return {"reward", true}; }
  nlohmann::json state() const override;
  void restore(const nlohmann::json& state) override;

  struct Rollout : SampledCompletion {
    std::vector<double> rewards;  // per reward function (NaN: none)
    double reward = 0, advantage = 0;
    std::vector<double> old_logps, ref_logps;
  };

 private:
  struct Generation {
    std::vector<Rollout> rollouts;
  };
  // Samples G completions of each prompt on the engine over `model`, the first seeded as the
  // generation's completion `first`.
  std::vector<Rollout> sample(Transformer& model, const std::vector<PromptSample>& prompts,
                              const std::vector<size_t>& which, uint64_t seed, size_t first = 0);
  // G scored completions of each training prompt of `which`: this rank samples and scores its
  // share of the groups, and every rank gets all of them.
  std::vector<Rollout> sample_scored(Transformer& model, const std::vector<size_t>& which,
                                     uint64_t seed);
  // Micro-batches per generation pass, over all ranks.
  int64_t steps_per_generation() const { return args_.steps_per_generation * args_.ranks(); }
  // The rank that trains micro-batch m (numbered over all ranks and steps).
  int rank_of(int64_t m) const;
  void score(std::vector<Rollout>& rollouts, const std::vector<PromptSample>& prompts);
  Generation generate(Transformer& model, int64_t index, Metrics& metrics);
  std::vector<size_t> prompts_of(int64_t generation, int64_t attempt) const;
  // Per-token log-probs of rollouts [begin, end) on logits / temperature.
  std::vector<std::vector<double>> logprobs(Transformer& model, const std::vector<Rollout>& r,
                                            size_t begin, size_t end,
                                            const std::vector<PromptSample>& prompts, bool ref);
  void log_completions(int64_t generation, const std::vector<Rollout>& rollouts);
  bool old_is_current() const;

  GrpoArgs args_;
  PromptBundle data_;
  std::vector<std::unique_ptr<RewardFunction>> rewards_;
  Tokenizer tok_;
  std::unique_ptr<ReferenceModel> ref_;
  LoraAdapter* adapter_ = nullptr;
  Transformer* model_ = nullptr;  // the policy, which samples
  std::map<int64_t, Generation> generations_;
  int64_t micro_ = 0;        // micro-batches of all ranks trained so far, the current step's too
  int64_t step_first_ = 0;   // first micro-batch of the current step
  int64_t rank_first_ = 0;   // this rank's first micro-batch of the current step
  int64_t cursor_ = 0;       // this rank's next micro-batch
  Metrics pending_;          // the generations' metrics, logged with this step's first micro-batch
  double step_tokens_ = 0;   // dapo: completion tokens of the current step
  int64_t step_micros_ = 1;  // micro-batches of the current step
  float grad_scale_ = 1.0f;
  double rollout_s_ = 0;                     // rollout seconds of the current step
  double sample_s_ = 0, sample_tokens_ = 0;  // engine time and completion tokens of a generation
};

}  // namespace swiftlet::rlhf
