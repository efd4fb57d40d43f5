#pragma once
// What is trained and how a micro-batch becomes gradients. The trainer (train/trainer.h) owns the
// loop — micro-batches, accumulation, reduction, clipping, the optimizer, logging, evaluation,
// checkpoints — and asks a task for the rest: SFT/PT cross-entropy now (train/sft_task.h),
// preference and RL objectives next (rlhf/). A new objective is a TrainTask driving
// Transformer::train_step with its own Objective.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "model/folder.h"
#include "model/transformer.h"
#include "train/param_buckets.h"
#include "tuner/lora.h"

namespace swiftlet {

// Named running means: each metric a (sum, weight) pair, logged as sum / weight (0 without
// weight). Windows of several micro-batches and steps add up before the division.
class Metrics {
 public:
  void add(const std::string& name, double sum, double weight) {
    auto& [s, w] = values_[name];
    s += sum;
    w += weight;
  }
  // A metric logged as mean(a) - mean(b) over the window (KTO's rewards/margins), when both are.
  void add_difference(const std::string& name, const std::string& a, const std::string& b) {
    differences_[name] = {a, b};
  }
  void merge(const Metrics& o) {
    for (const auto& [n, sw] : o.values_) add(n, sw.first, sw.second);
    for (const auto& [n, ab] : o.differences_) differences_[n] = ab;
  }
  double mean(const std::string& name) const {
    if (auto d = differences_.find(name); d != differences_.end())
      return mean(d->second.first) - mean(d->second.second);
    auto it = values_.find(name);
    return it == values_.end() || it->second.second == 0 ? 0.0
                                                         : it->second.first / it->second.second;
  }
  bool has(const std::string& name) const {
    if (auto d = differences_.find(name); d != differences_.end())
      return has(d->second.first) && has(d->second.second);
    return values_.count(name) > 0;
  }
  // Every metric to log, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [n, sw] : values_) out.push_back(n);
    for (const auto& [n, ab] : differences_)
      if (has(n)) out.push_back(n);
    std::sort(out.begin(), out.end());
    return out;
  }
  void clear() {
    values_.clear();
    differences_.clear();
  }
  // The (sum, weight) pairs in name order, and their names: what ranks add up so that every rank
  // logs the metrics of the whole step.
  std::vector<double> sums_and_weights() const {
    std::vector<double> out;
    for (const auto& [n, sw] : values_) out.insert(out.end(), {sw.first, sw.second});
    return out;
  }
  std::string names_key() const {
    std::string key;
    for (const auto& [n, sw] : values_) key += n + "\n";
    return key;
  }
  void set_sums_and_weights(const std::vector<double>& v) {
    size_t i = 0;
    for (auto& [n, sw] : values_) {
      sw = {v.at(i), v.at(i + 1)};
      i += 2;
    }
  }

 private:
  std::map<std::string, std::pair<double, double>> values_;
  std::map<std::string, std::pair<std::string, std::string>> differences_;
};

// What the trainer built, for a task that needs more than the policy (a reference model).
struct TrainSetup {
  Device& device;
  const ModelFolder& folder;  // as prepare_model() left it
  Transformer& model;         // the policy, trainable parameters attached
  LoraAdapter* adapter;       // null for full training
  DType base_dtype;           // the frozen base weights' dtype
  std::string resume;         // the checkpoint being resumed ("" for a new run)
  dist::Comm& comm;           // the ranks training together (one process: a single rank)
  int zero_stage = 0;         // 3: frozen copies (a reference model) are sharded over the ranks
};

// The evaluation metric that picks the best checkpoint, and whether higher is better.
struct BestMetric {
  std::string name = "loss";
  bool greater_is_better = false;
};

class TrainTask {
 public:
  virtual ~TrainTask() = default;
  // Before the model is built from the folder: a task may change it (a reward model swaps the
  // LM head for a score head).
  virtual void prepare_model(ModelFolder& folder) {}
  // After the model and its trainable parameters are set up, before the first step.
  virtual void attach(const TrainSetup& setup) {}
  // Samples of the training set: the epoch permutation and the micro-batches run over them.
  virtual size_t train_size() const = 0;
  virtual size_t eval_size() const = 0;
  // Called once per optimizer step with all its micro-batches (sample indices), before the first
  // runs: a loss averaged over the whole step (tokens of all micro-batches) is scaled here.
  virtual void begin_step(std::span<const std::vector<size_t>> micro_batches) = 0;
  // Forward, objective and backward of one micro-batch; gradients accumulate into `grads`.
  // Adds the batch's metrics ("loss" first among them) and returns the tokens it ran.
  virtual int64_t train_micro(Transformer& model, ModelGrads& grads,
                              std::span<const size_t> samples, const TrainStepOptions& opt,
                              Metrics& metrics) = 0;
  // Metrics over the validation set (logged with an "eval_" prefix; eval_loss picks the best
  // checkpoint).
  virtual Metrics evaluate(Transformer& model, int64_t batch_size) = 0;
  // eval_<name> picks the best checkpoint (ms-swift's metric_for_best_model).
  virtual BestMetric best_metric() const { return {}; }
  // State carried across steps (saved in trainer_state.json, restored on resume); null: none.
  virtual nlohmann::json state() const { return nullptr; }
  virtual void restore(const nlohmann::json& state) {}
  // Tensors the task trains beside the model's (PPO's value model), asked once after attach():
  // the trainer's optimizer updates them and clips their gradients jointly with the model's. The
  // task restores their values from its own checkpoint files when resuming (setup.resume).
  virtual std::vector<TrainableSlot> extra_trainable() { return {}; }
  // After the trainer moved the extra tensors into its buckets (re-point what reads them).
  virtual void extra_trainable_ready() {}
  // Writes the task's own files into a checkpoint folder being written (before it is renamed).
  virtual void save_files(const std::string& dir) const {}
  // Whether several processes can share a step, each running some of its micro-batches: the
  // task's scaling (begin_step) sees every rank's micro-batches, a micro-batch trains the same
  // on whichever rank runs it, and each runs one backward. (GRPO and PPO, which carry rollouts
  // between micro-batches, sample them in begin_step on every rank and share them.)
  virtual bool data_parallel() const { return true; }
};

}  // namespace swiftlet
