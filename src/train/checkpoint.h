#pragma once
// Checkpoints: written to a temporary folder and renamed when complete, so a crash during a save
// never damages the last good one.
//   checkpoint-K/ adapter_config.json + adapter_model.safetensors (LoRA) or config.json +
//                 model.safetensors (full), optimizer.safetensors, trainer_state.json, args.json,
//                 tokenizer files
#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "model/folder.h"
#include "train/optimizer.h"
#include "tuner/lora.h"

namespace swiftlet {

struct TrainState {
  int64_t global_step = 0;
  int64_t max_steps = 0;
  double epoch = 0;
  std::optional<double> best_metric;  // eval_loss of the best checkpoint
  int64_t best_step = 0;
  std::vector<nlohmann::json> log_history;
  // What the task carries from step to step (bco_pair's running mean), restored on resume.
  nlohmann::json task_state;
};

struct CheckpointContents {
  const ModelFolder& base;
  bool save_only_model;
  const LoraAdapter* adapter;  // LoRA run, else full weights from `model`
  Transformer* model;
  AdamW* optimizer;
  const TrainState* state;
  const nlohmann::json& args;
  // The whole moments by tensor name ("<param>.exp_avg", "<param>.exp_avg_sq") when the optimizer
  // holds only this rank's pieces of them (ZeRO): gathered first, written in the same layout.
  const std::vector<std::pair<std::string, Tensor>>* gathered_moments = nullptr;
  // The task's own files (PPO's value_model/), written into the checkpoint folder.
  std::function<void(const std::string& dir)> task_files;
};

void write_json_atomic(const std::filesystem::path& path, const nlohmann::json& j);

// Writes <run_dir>/checkpoint-<step>/ and returns its path.
std::string save_checkpoint(const std::string& run_dir, int64_t step, const CheckpointContents& c);
// Deletes the oldest checkpoints beyond `limit` (< 1: keep all), never the best or the latest.
void prune_checkpoints(const std::string& run_dir, int64_t limit, int64_t latest, int64_t best);

TrainState read_trainer_state(const std::string& ckpt);
// Each parameter's moments, or the piece of them a Param covers (a sharded optimizer reads its
// slice of the whole tensors, whatever the number of ranks that saved them).
void load_optimizer_state(AdamW& opt, const std::string& ckpt);
// Full fine-tuning resume: replaces the model's weights with the checkpoint's.
void load_full_weights(Transformer& model, const std::string& ckpt);

// Copies tokenizer.json, tokenizer_config.json and friends from one folder to another.
void copy_tokenizer_files(const std::string& from, const std::string& to);

}  // namespace swiftlet
