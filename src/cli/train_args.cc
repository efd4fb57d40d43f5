// Flags and arguments shared by the training commands (sft, pt, rlhf).
#include "cli/train_args.h"

#include <iostream>

#include "cli/parallel_config.h"
#include "dist/comm.h"
#include "dist/launcher.h"

namespace swiftlet::cli {

// --columns '{"old": "new", ...}'
static std::map<std::string, std::string> parse_columns(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    throw Error(fmt::format("--columns {} is not valid JSON", text),
                "e.g. --columns '{\"q\": \"query\", \"a\": \"response\"}'");
  }
  std::map<std::string, std::string> out;
  if (!j.is_object())
    throw Error("--columns must be a JSON object mapping old column names to new ones");
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_string())
      throw Error(fmt::format("--columns: the new name of '{}' must be a string", it.key()));
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

std::vector<FlagSpec> train_flags(bool pt) {
  return {
      {"model", FlagKind::kString, "", "model folder or hub ID found in the local caches"},
      {"tuner_type", FlagKind::kString, "lora", "lora or full", {"train_type", "sft_type"}},
      {"torch_dtype", FlagKind::kString, "", "dtype of frozen base weights (default: config.json)"},
      {"dataset", FlagKind::kList, "",
       "dataset files (.jsonl .json .csv .txt), folders or built-in IDs (swiftlet/self-cognition, "
       "swiftlet/arithmetic), each optionally with #N"},
      {"val_dataset", FlagKind::kList, "",
       "validation datasets (then --split_dataset_ratio is ignored)"},
      {"split_dataset_ratio", FlagKind::kFloat, "0",
       "fraction of each --dataset held out for validation"},
      {"data_seed", FlagKind::kInt, "42", "seed of dataset sampling, splitting and shuffling"},
      {"max_length", FlagKind::kInt, "2048", "tokens per sample at most"},
      {"truncation_strategy", FlagKind::kString, "delete",
       "over-long rows: delete, left or right (cut tokens there), split (pt: several samples)"},
      {"dataset_num_proc", FlagKind::kInt, "1", "threads that tokenize the dataset"},
      {"packing", FlagKind::kBool, "false",
       "pack several samples per sequence (no cross-attention)"},
      {"group_by_length", FlagKind::kBool, "false", "batch samples of similar length"},
      {"strict", FlagKind::kBool, "true",
       "a bad dataset row is an error (false: skip it and count it)"},
      {"columns", FlagKind::kString, "",
       "JSON map renaming dataset columns, e.g. '{\"q\": \"query\"}'"},
      {"load_from_cache_file", FlagKind::kBool, "true",
       "reuse tokenized datasets of an earlier identical run ($SWIFTLET_CACHE/datasets)"},
      {"template", FlagKind::kString, "", "chat template (default: detected from the model)"},
      {"system", FlagKind::kString, "", "system prompt of rows without one (text or a .txt file)"},
      {"preserve_thinking", FlagKind::kString, "",
       "true/false: keep a think block in every assistant turn (default true when training)"},
      {"model_name", FlagKind::kList, "", "self-cognition: the model's name (Chinese English)"},
      {"model_author", FlagKind::kList, "", "self-cognition: the model's author (Chinese English)"},
      {"lora_rank", FlagKind::kInt, "8", "LoRA rank r"},
      {"lora_alpha", FlagKind::kFloat, "32", "LoRA alpha (scale = alpha / r)"},
      {"lora_dropout", FlagKind::kFloat, "0.05", "dropout on the LoRA input"},
      {"target_modules", FlagKind::kList, "all-linear",
       "all-linear or module names (q_proj v_proj ...)"},
      {"target_parameters", FlagKind::kList, "",
       "LoRA on fused expert parameters (mlp.experts.gate_up_proj mlp.experts.down_proj); needs "
       "--lora_dropout 0"},
      {"use_rslora", FlagKind::kBool, "false", "scale alpha / sqrt(r)"},
      {"modules_to_save", FlagKind::kList, "",
       "modules trained in full and stored with the adapter: embed_tokens, lm_head, all-embedding, "
       "all-norm"},
      {"output_dir", FlagKind::kString, "output", "runs are written to <output_dir>/v<N>-<time>/"},
      {"add_version", FlagKind::kBool, "true", "append v<N>-<time> to --output_dir"},
      {"num_train_epochs", FlagKind::kFloat, "3", "epochs"},
      {"max_steps", FlagKind::kInt, "-1", "optimizer steps (overrides epochs when > 0)"},
      {"per_device_train_batch_size", FlagKind::kInt, "1", "samples per micro-batch"},
      {"per_device_eval_batch_size", FlagKind::kInt, "1", "samples per evaluation batch"},
      {"gradient_accumulation_steps", FlagKind::kInt, "0",
       "micro-batches per step (0: ceil(16 / batch size))"},
      {"learning_rate", FlagKind::kFloat, "", "1e-4 for LoRA, 1e-5 for full"},
      {"weight_decay", FlagKind::kFloat, "0.1",
       "AdamW decoupled weight decay (not on norms/biases)"},
      {"adam_beta1", FlagKind::kFloat, "0.9", "AdamW beta1"},
      {"adam_beta2", FlagKind::kFloat, "0.95", "AdamW beta2"},
      {"adam_epsilon", FlagKind::kFloat, "1e-8", "AdamW epsilon"},
      {"max_grad_norm", FlagKind::kFloat, "1.0", "clip the global gradient norm (0: off)"},
      {"lr_scheduler_type", FlagKind::kString, "cosine",
       "cosine, linear, constant, constant_with_warmup"},
      {"warmup_ratio", FlagKind::kFloat, "0", "share of steps warming up"},
      {"warmup_steps", FlagKind::kInt, "0", "warmup steps (overrides the ratio)"},
      {"logging_steps", FlagKind::kInt, "5", "log every N steps"},
      {"save_steps", FlagKind::kInt, "500", "checkpoint every N steps (and at the end)"},
      {"eval_steps", FlagKind::kInt, "0", "evaluate every N steps (0: with --save_steps)"},
      {"save_total_limit", FlagKind::kInt, "-1", "keep at most N checkpoints (best and last kept)"},
      {"save_only_model", FlagKind::kBool, "false", "no optimizer state in checkpoints"},
      {"gradient_checkpointing", FlagKind::kBool, "true",
       "recompute layers in backward to save memory"},
      {"router_aux_loss_coef", FlagKind::kFloat, "0",
       "MoE models: add coef * the router load-balancing loss to the loss (0: off)"},
      {"seed", FlagKind::kInt, "42", "seed of initialisation and dropout"},
      {"resume_from_checkpoint", FlagKind::kString, "",
       "continue a run from its checkpoint-K folder"},
      {"resume_only_model", FlagKind::kBool, "false",
       "with --resume_from_checkpoint: load only the weights"},
      {"threads", FlagKind::kInt, "0", "compute threads (0: OMP_NUM_THREADS or all cores)"},
      {"device", FlagKind::kString, "cpu:0",
       "device to train on (several ranks: entry LOCAL_RANK of SWIFTLET_VISIBLE_DEVICES)"},
      {"ddp_backend", FlagKind::kString, "auto",
       "communication backend of NPROC_PER_NODE > 1 runs: auto or mpi"},
      {"ddp_timeout", FlagKind::kInt, "18000000",
       "seconds a collective may wait for the other ranks before the job is aborted"},
      {"deepspeed", FlagKind::kString, "",
       "ZeRO preset or DeepSpeed JSON config (file or inline): zero0 (plain data parallel), "
       "zero1 (optimizer states sharded over the ranks), zero2 (and gradients), zero3 (and "
       "parameters, gathered layer by layer; with LoRA the frozen base too), zero2_offload / "
       "zero3_offload (with the optimizer states and step in host memory); \"auto\" values take "
       "the flags"},
      {"fsdp", FlagKind::kString, "",
       "FSDP strategy (no_shard = zero0, shard_grad_op = zero2, full_shard = zero3; with "
       "\"offload\": optimizer offload), the preset fsdp2, or an FSDP JSON config (fsdp, "
       "fsdp_config)"},
      {"ddp_bucket_cap_mb", FlagKind::kFloat, "0",
       "gradient bucket size in MiB, each all-reduced while backward runs (0: 25 with several "
       "ranks)"},
      {"loss_scale", FlagKind::kString, pt ? "all" : "default",
       "default (assistant replies) or all tokens"},
      {"use_chat_template", FlagKind::kBool, pt ? "false" : "true",
       "render rows with the chat template"},
  };
}

TrainArgs train_args(const Flags& f, const std::string& name) {
  if (f.str("model").empty())
    throw Error("--model is required", "pass a model folder, e.g. --model ./my-model");
  TrainArgs a;
  a.model = f.str("model");
  a.tuner_type = f.str("tuner_type");
  a.torch_dtype = f.str("torch_dtype");
  a.lora.rank = f.i64("lora_rank");
  a.lora.alpha = f.f64("lora_alpha");
  a.lora.dropout = f.f64("lora_dropout");
  a.lora.target_modules = f.list("target_modules");
  a.lora.target_parameters = f.list("target_parameters");
  if (!a.lora.target_parameters.empty() && a.tuner_type != "lora")
    throw Error("--target_parameters applies to --tuner_type lora (full training trains every "
                "parameter)");
  a.lora.use_rslora = f.boolean("use_rslora");
  a.router_aux_loss_coef = f.f64("router_aux_loss_coef");
  a.lora.modules_to_save = f.list("modules_to_save");
  if (!a.lora.modules_to_save.empty() && a.tuner_type != "lora")
    throw Error(
        "--modules_to_save applies to --tuner_type lora (full training trains every module)");
  a.output_dir = f.str("output_dir");
  a.add_version = f.boolean("add_version");
  a.num_train_epochs = f.f64("num_train_epochs");
  a.max_steps = f.i64("max_steps");
  a.per_device_train_batch_size = f.i64("per_device_train_batch_size");
  a.per_device_eval_batch_size = f.i64("per_device_eval_batch_size");
  a.gradient_accumulation_steps = f.i64("gradient_accumulation_steps");
  a.learning_rate =
      f.given("learning_rate") ? f.f64("learning_rate") : (a.tuner_type == "full" ? 1e-5 : 1e-4);
  a.weight_decay = f.f64("weight_decay");
  a.adam_beta1 = f.f64("adam_beta1");
  a.adam_beta2 = f.f64("adam_beta2");
  a.adam_epsilon = f.f64("adam_epsilon");
  a.max_grad_norm = f.f64("max_grad_norm");
  a.lr_scheduler_type = f.str("lr_scheduler_type");
  a.warmup_ratio = f.f64("warmup_ratio");
  a.warmup_steps = f.i64("warmup_steps");
  a.logging_steps = f.i64("logging_steps");
  a.save_steps = f.i64("save_steps");
  a.eval_steps = f.i64("eval_steps");
  a.save_total_limit = f.i64("save_total_limit");
  a.save_only_model = f.boolean("save_only_model");
  a.gradient_checkpointing = f.boolean("gradient_checkpointing");
  a.seed = uint64_t(f.i64("seed"));
  a.data_seed = uint64_t(f.i64("data_seed"));
  a.resume_from_checkpoint = f.str("resume_from_checkpoint");
  a.resume_only_model = f.boolean("resume_only_model");
  a.threads = int(f.i64("threads"));
  a.device = f.str("device");
  if (f.i64("ddp_timeout") < 1) throw Error("--ddp_timeout must be at least 1 second");
  a.ddp_bucket_cap_mb = f.f64("ddp_bucket_cap_mb");
  if (!f.str("deepspeed").empty() && !f.str("fsdp").empty())
    throw Error("--deepspeed and --fsdp exclude each other", "pass one of them");
  if (a.ddp_bucket_cap_mb < 0) throw Error("--ddp_bucket_cap_mb must not be negative");
  // The job's communicator (this process alone unless mpirun started it, see dist/launcher.h).
  a.comm = &dist::job_comm(f.str("ddp_backend"), std::chrono::seconds(f.i64("ddp_timeout")));
  if (a.comm->size() > 1 && !f.given("device"))
    a.device = dist::rank_device(dist::current_environment(), a.comm->info().local_rank, a.device);
  // After the communicator: DeepSpeed's train_batch_size counts the ranks.
  apply_parallel_config(f, a, a.comm->size());
  nlohmann::json args = nlohmann::json::object();
  for (const auto& [k, v] : f.values()) args[k] = v;
  if (!f.str("deepspeed").empty() || !f.str("fsdp").empty()) {
    // The values a config may have filled in, as the run uses them.
    args["per_device_train_batch_size"] = std::to_string(a.per_device_train_batch_size);
    args["gradient_accumulation_steps"] = std::to_string(a.gradient_accumulation_steps);
    args["max_grad_norm"] = fmt::format("{}", a.max_grad_norm);
    args["adam_beta1"] = fmt::format("{}", a.adam_beta1);
    args["adam_beta2"] = fmt::format("{}", a.adam_beta2);
    args["adam_epsilon"] = fmt::format("{}", a.adam_epsilon);
    args["weight_decay"] = fmt::format("{}", a.weight_decay);
    args["torch_dtype"] = a.torch_dtype;
    args["gradient_checkpointing"] = a.gradient_checkpointing ? "true" : "false";
  }
  args["learning_rate"] = a.learning_rate;
  args["command"] = name;
  a.args_json = args;

  return a;
}

DataArgs data_args(const Flags& f, TrainArgs& a) {
  DataArgs d;
  d.dataset = f.list("dataset");
  d.val_dataset = f.list("val_dataset");
  if (d.dataset.empty())
    throw Error("--dataset is required",
                "pass a .jsonl/.json/.csv file or a built-in ID such as swiftlet/self-cognition");
  d.split_dataset_ratio = f.f64("split_dataset_ratio");
  d.data_seed = uint64_t(f.i64("data_seed"));
  d.max_length = f.i64("max_length");
  d.truncation_strategy = f.str("truncation_strategy");
  d.dataset_num_proc = f.i64("dataset_num_proc");
  d.packing = f.boolean("packing");
  d.group_by_length = f.boolean("group_by_length");
  d.strict = f.boolean("strict");
  d.template_name = f.str("template");
  if (f.given("system")) d.system = f.str("system");
  d.model_name = f.list("model_name");
  d.model_author = f.list("model_author");
  d.loss_scale = f.str("loss_scale");
  d.use_chat_template = f.boolean("use_chat_template");
  d.train_batch_size = a.per_device_train_batch_size;
  d.load_from_cache_file = f.boolean("load_from_cache_file");
  if (f.given("preserve_thinking"))
    d.preserve_thinking = parse_bool("preserve_thinking", f.str("preserve_thinking"));
  if (!f.str("columns").empty()) d.columns = parse_columns(f.str("columns"));
  // The run folder is fixed before the data is read so that val_dataset.jsonl lands in it, as
  // ms-swift writes it (<output_dir>/v<N>-<time>/val_dataset.jsonl).
  // Rank 0 picks the folder for every rank, and alone writes into it.
  if (a.add_version) {
    a.output_dir = dist::broadcast_string(*a.comm, next_version_dir(a.output_dir), 0);
    a.add_version = false;
  }
  d.output_dir = a.comm->is_main() ? a.output_dir : "";
  return d;
}

}  // namespace swiftlet::cli
