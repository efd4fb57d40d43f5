#pragma once
// The training loop of `swiftlet sft` / `swiftlet pt`: LoRA or full fine-tuning with AdamW,
// gradient accumulation and clipping, LR schedule, evaluation, logging, checkpoints and exact
// resume. Writes ms-swift's run layout:
//   <output_dir>/v<N>-<YYYYMMDD-HHMMSS>/{args.json, logging.jsonl, runs/, images/, checkpoint-K/}
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/sample.h"
#include "dist/comm.h"
#include "model/folder.h"
#include "train/param_buckets.h"
#include "train/sft_task.h"
#include "train/task.h"
#include "tuner/lora.h"

namespace swiftlet {

struct TrainArgs {
  std::string model;                // resolved model folder
  std::string tuner_type = "lora";  // lora | full
  LoraConfig lora;
  std::string torch_dtype;  // frozen base weights ("" = config.json); trainable ones are f32
  std::string output_dir = "output";
  bool add_version = true;
  double num_train_epochs = 3;
  int64_t max_steps = -1;
  int64_t per_device_train_batch_size = 1;
  int64_t per_device_eval_batch_size = 1;
  int64_t gradient_accumulation_steps = 0;  // 0: ceil(16 / batch size) as ms-swift
  double learning_rate = 1e-4;
  double weight_decay = 0.1;
  double adam_beta1 = 0.9, adam_beta2 = 0.95, adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;
  std::string lr_scheduler_type = "cosine";
  double warmup_ratio = 0.0;
  int64_t warmup_steps = 0;
  int64_t logging_steps = 5;
  int64_t save_steps = 500;
  int64_t eval_steps = 0;         // 0: follow save_steps
  int64_t save_total_limit = -1;  // -1: keep all
  bool save_only_model = false;
  bool gradient_checkpointing = true;
  // MoE models: weight of the router load-balancing loss added to the training loss (0: none).
  double router_aux_loss_coef = 0.0;
  uint64_t seed = 42;
  uint64_t data_seed = 42;
  std::string resume_from_checkpoint;
  bool resume_only_model = false;
  int threads = 0;
  std::string device = "cpu:0";
  // Data parallelism: the job's communicator (null: this process alone). Each optimizer step runs
  // per_device_train_batch_size x gradient_accumulation_steps samples on every rank; gradients
  // are summed over ranks bucket by bucket while backward runs, so N ranks train as one process
  // accumulating N times as many micro-batches. Only rank 0 writes files.
  dist::Comm* comm = nullptr;
  double ddp_bucket_cap_mb = 0;  // gradient bucket size (0: 25 MiB with several ranks, as DDP)
  // ZeRO stage (--deepspeed zeroK or a DeepSpeed config's zero_optimization.stage; --fsdp
  // shard_grad_op = 2, full_shard = 3): 1 splits the AdamW moments over the ranks, each updating
  // its slice of the flat trainable parameters before they are all-gathered; 2 also splits the
  // gradients, reduce-scattered bucket by bucket during backward. 0: every rank holds everything
  // (plain data parallel).
  int zero_stage = 0;
  // ZeRO-Offload (zero2_offload, offload_optimizer.device cpu, FSDP's offload): the AdamW moments
  // and an f32 master copy of the parameters this rank updates live in host memory, and the
  // optimizer step runs on the host (see train/offload.h).
  bool offload_optimizer = false;
  // ZeRO-3 parameter offload (offload_param.device cpu): stored, refused unless the stage is 3 and
  // the training device is host memory, where the parameters already are.
  bool offload_param = false;
  nlohmann::json args_json;  // every flag as given/defaulted, written to args.json
};

struct TrainResult {
  std::string run_dir;
  std::string last_checkpoint;
  std::string best_checkpoint;
  int64_t global_step = 0;
  std::vector<nlohmann::json> log_history;
  // Per optimizer step of this call, unrounded: mean loss over the step's target tokens and the
  // pre-clip gradient norm (tests compare them bit for bit).
  std::vector<double> step_losses, step_grad_norms;
};

// SFT / PT: trains on `train` (evaluating on `val` when not empty). Throws Error for bad settings.
TrainResult train(const TrainArgs& args, const std::vector<TokenizedSample>& train,
                  const std::vector<TokenizedSample>& val);
// Any task: the one trainer loop.
TrainResult train(const TrainArgs& args, TrainTask& task);

// `<output_dir>/v<N>-<stamp>` with N one more than the highest existing version.
std::string next_version_dir(const std::string& output_dir);

}  // namespace swiftlet
