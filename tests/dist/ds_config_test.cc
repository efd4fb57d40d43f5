// --deepspeed and --fsdp beyond the bare presets: ms-swift's DeepSpeed configs (as it ships them,
// full of "auto") and FSDP configs parse to the ZeRO stage and offload flags they stand for;
// explicit values fill flags not given and conflict with flags given, in one sentence naming
// both; malformed, missing and unsupported configs are refused naming the path or key. Optimizer
// offload on the sim device (an accelerator's own memory) trains exactly as the device step does,
// writes the same checkpoints, resumes, and leaves no moments in device memory.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "backend/sim/sim_device.h"
#include "cli/train_args.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "io/test_util.h"
#include "model/config.h"
#include "model/weights.h"
#include "train/offload.h"
#include "train/param_buckets.h"
#include "train/trainer.h"

namespace swiftlet {
namespace {

namespace fs = std::filesystem;
using testing::ScopedEnv;
using testing::TempDir;

// ms-swift's swift/config/*.json, as it ships them.
const char* kZero2 = R"({
    "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000,
             "initial_scale_power": 16, "hysteresis": 2, "min_loss_scale": 1},
    "bf16": {"enabled": "auto"},
    "zero_optimization": {
        "stage": 2,
        "offload_optimizer": {"device": "none", "pin_memory": true},
        "allgather_partitions": true, "allgather_bucket_size": 2e8, "overlap_comm": false,
        "reduce_scatter": true, "reduce_bucket_size": 2e8, "contiguous_gradients": true
    },
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 2000,
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
    "wall_clock_breakdown": false
})";
const char* kZero3 = R"({
    "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000,
             "initial_scale_power": 16, "hysteresis": 2, "min_loss_scale": 1},
    "bf16": {"enabled": "auto"},
    "zero_optimization": {
        "stage": 3,
        "offload_optimizer": {"device": "none", "pin_memory": true},
        "offload_param": {"device": "none", "pin_memory": true},
        "overlap_comm": false, "contiguous_gradients": true, "sub_group_size": 1e9,
        "reduce_bucket_size": "auto", "zero_quantized_weights": false,
        "zero_quantized_gradients": false, "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": 1e9,
        "stage3_max_reuse_distance": 1e9, "stage3_gather_16bit_weights_on_model_save": true
    },
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 2000,
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
    "wall_clock_breakdown": false
})";
const char* kZero2Offload = R"({
    "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000,
             "initial_scale_power": 16, "hysteresis": 2, "min_loss_scale": 1},
    "bf16": {"enabled": "auto"},
    "zero_optimization": {
        "stage": 2,
        "offload_optimizer": {"device": "cpu", "pin_memory": true},
        "allgather_partitions": true, "allgather_bucket_size": 2e8, "overlap_comm": false,
        "reduce_scatter": true, "reduce_bucket_size": 2e8, "contiguous_gradients": true
    },
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 2000,
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
    "wall_clock_breakdown": false
})";
const char* kZero3Offload = R"({
    "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000,
             "initial_scale_power": 16, "hysteresis": 2, "min_loss_scale": 1},
    "bf16": {"enabled": "auto"},
    "zero_optimization": {
        "stage": 3,
        "offload_optimizer": {"device": "cpu", "pin_memory": true},
        "offload_param": {"device": "cpu", "pin_memory": true},
        "overlap_comm": false, "contiguous_gradients": true, "sub_group_size": 1e9,
        "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": 1e9,
        "stage3_max_reuse_distance": 1e9, "stage3_gather_16bit_weights_on_model_save": true
    },
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 2000,
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
    "wall_clock_breakdown": false
})";
// ms-swift's fsdp2.json (with its documentation keys) and fsdp_zero2_offload.json.
const char* kFsdp2 = R"({
    "_description": "FSDP2 configuration", "_param_docs": {"fsdp": "strategy string"},
    "fsdp": "full_shard auto_wrap",
    "fsdp_config": {"fsdp_version": 2, "reshard_after_forward": true,
                    "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                    "cpu_ram_efficient_loading": true, "state_dict_type": "SHARDED_STATE_DICT",
                    "activation_checkpointing": true}
})";
const char* kFsdpZero2Offload = R"({
    "_note": "SHARD_GRAD_OP with CPU offload for optimizer states",
    "fsdp": "shard_grad_op auto_wrap offload",
    "fsdp_config": {"fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                    "cpu_ram_efficient_loading": true, "state_dict_type": "SHARDED_STATE_DICT",
                    "limit_all_gathers": true, "backward_prefetch": "BACKWARD_PRE"}
})";

// train_args of `swiftlet sft --model m --dataset d <args>`.
TrainArgs parse(std::vector<std::string> args) {
  cli::Flags f("sft", cli::train_flags(false));
  std::vector<std::string> all = {"swiftlet", "sft", "--model", "m", "--dataset", "d.jsonl"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  f.parse(int(argv.size()), argv.data());
  return cli::train_args(f, "sft");
}

std::string error_text(std::vector<std::string> args) {
  return testing::error_of([&] { parse(args); });
}

struct Expect {
  int stage;
  bool offload_optimizer, offload_param;
};

void expect_maps(const TrainArgs& a, Expect e, const std::string& what) {
  EXPECT_EQ(a.zero_stage, e.stage) << what;
  EXPECT_EQ(a.offload_optimizer, e.offload_optimizer) << what;
  EXPECT_EQ(a.offload_param, e.offload_param) << what;
  // "auto" everywhere: the flags' values (and defaults) stand.
  EXPECT_EQ(a.per_device_train_batch_size, 2) << what;
  EXPECT_EQ(a.gradient_accumulation_steps, 3) << what;
  EXPECT_EQ(a.max_grad_norm, 0.5) << what;
  EXPECT_EQ(a.torch_dtype, "") << what;
}

TEST(DsConfig, MsSwiftFilesAndPresetsMapToStageAndOffload) {
  TempDir tmp;
  const std::vector<std::string> flags = {"--per_device_train_batch_size",
                                          "2",
                                          "--gradient_accumulation_steps",
                                          "3",
                                          "--max_grad_norm",
                                          "0.5"};
  const std::map<std::string, std::pair<const char*, Expect>> files = {
      {"zero2", {kZero2, {2, false, false}}},
      {"zero3", {kZero3, {3, false, false}}},
      {"zero2_offload", {kZero2Offload, {2, true, false}}},
      {"zero3_offload", {kZero3Offload, {3, true, true}}},
  };
  for (const auto& [name, spec] : files) {
    const std::string path = tmp / (name + ".json");
    testing::write_text(path, spec.first);
    auto args = flags;
    args.insert(args.end(), {"--deepspeed", path});
    expect_maps(parse(args), spec.second, path);
    // The built-in preset of the same name is the same config.
    args = flags;
    args.insert(args.end(), {"--deepspeed", name});
    expect_maps(parse(args), spec.second, name);
  }
  for (const auto& [name, stage] : std::map<std::string, int>{{"zero0", 0}, {"zero1", 1}}) {
    auto args = flags;
    args.insert(args.end(), {"--deepspeed", name});
    expect_maps(parse(args), {stage, false, false}, name);
  }
  // Inline JSON, as ms-swift's json_parse_to_dict takes it.
  auto args = flags;
  args.insert(args.end(),
              {"--deepspeed", R"({"zero_optimization": {"stage": 1, "cpu_offload": true}})"});
  expect_maps(parse(args), {1, true, false}, "inline");
}

TEST(DsConfig, ExplicitValuesFillFlagsNotGivenAndConflictWithFlagsGiven) {
  TempDir tmp;
  const std::string cfg = tmp / "ds.json";
  testing::write_text(cfg, R"({"train_micro_batch_size_per_gpu": 4, "gradient_clipping": 0.25,
      "bf16": {"enabled": true},
      "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.999], "eps": 1e-6,
                                                 "weight_decay": "auto"}},
      "zero_optimization": {"stage": 2, "reduce_bucket_size": 5e8}})");
  const TrainArgs a = parse({"--deepspeed", cfg});
  EXPECT_EQ(a.zero_stage, 2);
  EXPECT_EQ(a.per_device_train_batch_size, 4);
  EXPECT_EQ(a.max_grad_norm, 0.25);
  EXPECT_EQ(a.learning_rate, 3e-4);
  EXPECT_EQ(a.adam_beta1, 0.9);
  EXPECT_EQ(a.adam_beta2, 0.999);
  EXPECT_EQ(a.adam_epsilon, 1e-6);
  EXPECT_EQ(a.weight_decay, 0.1);  // "auto": the flag's default
  EXPECT_EQ(a.torch_dtype, "bfloat16");
  EXPECT_EQ(a.ddp_bucket_cap_mb, 0);  // reduce_bucket_size is a DeepSpeed tuning knob only
  EXPECT_EQ(a.args_json["per_device_train_batch_size"], "4");  // args.json records what ran

  // The same values given on the command line agree.
  const TrainArgs same = parse({"--deepspeed", cfg, "--per_device_train_batch_size", "4",
                                "--max_grad_norm", "0.25", "--torch_dtype", "bfloat16"});
  EXPECT_EQ(same.per_device_train_batch_size, 4);

  EXPECT_EQ(error_text({"--deepspeed", cfg, "--per_device_train_batch_size", "1"}),
            "--deepspeed " + cfg +
                ": train_micro_batch_size_per_gpu is 4 and --per_device_train_batch_size is 1\n"
                "set train_micro_batch_size_per_gpu to \"auto\" to take "
                "--per_device_train_batch_size, or make the two equal");
  EXPECT_EQ(error_text({"--deepspeed", cfg, "--max_grad_norm", "1.0"}),
            "--deepspeed " + cfg +
                ": gradient_clipping is 0.25 and --max_grad_norm is 1\n"
                "set gradient_clipping to \"auto\" to take --max_grad_norm, or make the two equal");
  EXPECT_EQ(error_text({"--deepspeed", cfg, "--learning_rate", "1e-4"}),
            "--deepspeed " + cfg +
                ": optimizer.params.lr is 0.0003 and --learning_rate is 0.0001\n"
                "set optimizer.params.lr to \"auto\" to take --learning_rate, or make the two "
                "equal");
  EXPECT_EQ(error_text({"--deepspeed", cfg, "--torch_dtype", "float32"}),
            "--deepspeed " + cfg +
                ": bf16.enabled is true and --torch_dtype is float32\n"
                "set bf16.enabled to \"auto\" to take --torch_dtype");

  // train_batch_size = micro-batch x accumulation x ranks: it sets an automatic accumulation and
  // must agree with a given one.
  const std::string tbs = tmp / "tbs.json";
  testing::write_text(tbs, R"({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4,
      "gradient_accumulation_steps": "auto"})");
  EXPECT_EQ(parse({"--deepspeed", tbs}).gradient_accumulation_steps, 8);
  EXPECT_EQ(
      parse({"--deepspeed", tbs, "--gradient_accumulation_steps", "8"}).gradient_accumulation_steps,
      8);
  EXPECT_EQ(error_text({"--deepspeed", tbs, "--gradient_accumulation_steps", "2"}),
            "--deepspeed " + tbs +
                ": train_batch_size is 32 and --per_device_train_batch_size x "
                "--gradient_accumulation_steps x ranks is 4 x 2 x 1 = 8\n"
                "set train_batch_size to \"auto\", or make them agree");
  const std::string gas = tmp / "gas.json";
  testing::write_text(gas, R"({"gradient_accumulation_steps": 6})");
  EXPECT_EQ(parse({"--deepspeed", gas}).gradient_accumulation_steps, 6);
  EXPECT_EQ(error_text({"--deepspeed", gas, "--gradient_accumulation_steps", "4"}),
            "--deepspeed " + gas +
                ": gradient_accumulation_steps is 6 and --gradient_accumulation_steps is 4\n"
                "set gradient_accumulation_steps to \"auto\" to take "
                "--gradient_accumulation_steps, or make the two equal");
}

TEST(DsConfig, MalformedMissingAndUnsupportedConfigsAreRefusedInOneSentence) {
  TempDir tmp;
  const std::string bad = tmp / "bad.json";
  testing::write_text(bad, "{\n  \"zero_optimization\": {\"stage\": 2,}\n}\n");
  EXPECT_EQ(error_text({"--deepspeed", bad}),
            "--deepspeed " + bad + " is not valid JSON (line 2, column 36)\n");
  EXPECT_EQ(error_text({"--deepspeed", tmp / "missing.json"}),
            "--deepspeed " + (tmp / "missing.json") +
                " is neither a preset (zero0, zero1, zero2, zero3, zero2_offload, zero3_offload) "
                "nor an existing JSON file\npass a preset name, or the path of a JSON config");
  EXPECT_EQ(error_text({"--fsdp", tmp / "missing.json"}),
            "--fsdp " + (tmp / "missing.json") +
                " is neither a preset (fsdp2) nor an existing JSON file\npass a preset name, or "
                "the path of a JSON config");
  const std::string arr = tmp / "array.json";
  testing::write_text(arr, "[1, 2]");
  EXPECT_ERROR_HAS(parse({"--deepspeed", arr}),
                   "--deepspeed " + arr + ": the config must be a JSON object");

  const std::vector<std::pair<std::string, std::string>> refused = {
      {R"({"fp16": {"enabled": true}})",
       "fp16.enabled true is not supported: swiftlet trains f32 master weights"},
      {R"({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "nvme"}}})",
       "zero_optimization.offload_optimizer.device nvme is not supported: swiftlet offloads to "
       "host memory only"},
      {R"({"zero_optimization": {"stage": 4}})",
       "zero_optimization.stage must be 0, 1, 2 or 3, not 4"},
      {R"({"zero_optimization": {"stage": 3, "zero_quantized_weights": true}})",
       "zero_optimization.zero_quantized_weights true is not supported"},
      {R"({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu", "ratio": 0.3}}})",
       "zero_optimization.offload_optimizer.ratio 0.3 (offloading part of the optimizer) is not "
       "supported"},
      {R"({"zero_optimization": {"stage": 2, "stage2_magic": 1}})",
       "zero_optimization.stage2_magic is not a setting swiftlet supports"},
      {R"({"scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": "auto"}}})",
       "scheduler is not supported: the learning-rate schedule is --lr_scheduler_type"},
      {R"({"optimizer": {"type": "Lamb"}})", "optimizer.type \"Lamb\" is not supported"},
      {R"({"communication_data_type": "bf16"})",
       "communication_data_type \"bf16\" is not supported"},
      {R"({"pipeline": {"stages": 2}})", "pipeline is not a setting swiftlet supports"},
      {R"({"train_micro_batch_size_per_gpu": 1.5})",
       "train_micro_batch_size_per_gpu must be a whole number or \"auto\", not 1.5"},
  };
  for (const auto& [text, says] : refused) {
    const std::string path = tmp / "refused.json";
    testing::write_text(path, text);
    const std::string e = error_text({"--deepspeed", path});
    EXPECT_EQ(e.rfind("--deepspeed " + path + ": " + says, 0), 0u) << text << "\n" << e;
  }
}

TEST(DsConfig, FsdpStrategiesPresetAndConfigs) {
  TempDir tmp;
  const std::map<std::string, Expect> strings = {
      {"no_shard", {0, false, false}},
      {"shard_grad_op", {2, false, false}},
      {"shard_grad_op auto_wrap offload", {2, true, false}},
      {"full_shard auto_wrap", {3, false, false}},
      {"full_shard offload", {3, true, true}},
      {"no_shard offload", {0, true, false}},
  };
  for (const auto& [s, e] : strings) {
    const TrainArgs a = parse({"--fsdp", s});
    EXPECT_EQ(a.zero_stage, e.stage) << s;
    EXPECT_EQ(a.offload_optimizer, e.offload_optimizer) << s;
    EXPECT_EQ(a.offload_param, e.offload_param) << s;
  }
  // fsdp2: full_shard, and FSDP's activation checkpointing is swiftlet's gradient checkpointing.
  const std::string f2 = tmp / "fsdp2.json";
  testing::write_text(f2, kFsdp2);
  for (const std::string& v : {std::string("fsdp2"), f2}) {
    const TrainArgs a = parse({"--fsdp", v, "--gradient_checkpointing", "false"});
    EXPECT_EQ(a.zero_stage, 3) << v;
    EXPECT_FALSE(a.offload_optimizer) << v;
    EXPECT_TRUE(a.gradient_checkpointing) << v;
  }
  const std::string z2o = tmp / "fsdp_zero2_offload.json";
  testing::write_text(z2o, kFsdpZero2Offload);
  const TrainArgs b = parse({"--fsdp", z2o});
  EXPECT_EQ(b.zero_stage, 2);
  EXPECT_TRUE(b.offload_optimizer);
  EXPECT_FALSE(b.offload_param);
  EXPECT_TRUE(b.gradient_checkpointing);  // the flag's default, untouched

  // accelerate's keys, with or without the fsdp_ prefix; no "fsdp" string.
  const std::string acc = tmp / "accelerate.json";
  testing::write_text(acc, R"({"fsdp_config": {"fsdp_sharding_strategy": "SHARD_GRAD_OP",
      "fsdp_offload_params": true, "fsdp_transformer_layer_cls_to_wrap": "Qwen3DecoderLayer"}})");
  const TrainArgs c = parse({"--fsdp", acc});
  EXPECT_EQ(c.zero_stage, 2);
  EXPECT_TRUE(c.offload_optimizer);
  const std::string r2 = tmp / "reshard.json";
  testing::write_text(r2, R"({"fsdp_config": {"reshard_after_forward": false}})");
  EXPECT_EQ(parse({"--fsdp", r2}).zero_stage, 2);

  const std::string conflict = tmp / "conflict.json";
  testing::write_text(conflict,
                      R"({"fsdp": "full_shard", "fsdp_config": {"reshard_after_forward": false}})");
  EXPECT_EQ(error_text({"--fsdp", conflict}),
            "--fsdp " + conflict +
                ": fsdp_config.reshard_after_forward is false and fsdp names full_shard\nmake "
                "them agree, or leave one of them out");
  EXPECT_EQ(error_text({"--fsdp", "hybrid_shard"}),
            "--fsdp hybrid_shard: fsdp hybrid_shard is not supported: swiftlet shards over every "
            "rank of the job, not within nodes\nuse full_shard or shard_grad_op");
  EXPECT_EQ(error_text({"--fsdp", "full_shard shard_grad_op"}),
            "--fsdp full_shard shard_grad_op: fsdp names two sharding strategies, full_shard and "
            "shard_grad_op\n");
  EXPECT_ERROR_HAS(parse({"--fsdp", "full_shard cpu_offload"}),
                   "--fsdp full_shard cpu_offload: fsdp option cpu_offload is not supported");
  const std::string unknown = tmp / "unknown.json";
  testing::write_text(unknown, R"({"fsdp": "full_shard", "fsdp_config": {"xla": true}})");
  EXPECT_ERROR_HAS(parse({"--fsdp", unknown}),
                   "--fsdp " + unknown + ": fsdp_config.xla is not a setting swiftlet supports");
}

// ---- optimizer offload on the sim device ----

// Qwen3 with an untied head, as tests/train/sim_device_train_test.cc makes it.
constexpr const char* kConfig = R"({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
  "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
  "max_position_embeddings": 128, "tie_word_embeddings": false, "eos_token_id": 1,
  "bos_token_id": 0, "torch_dtype": "float32"})";
constexpr int kSteps = 6;

const std::string& tiny_model() {
  static TempDir root;
  static const std::string dir = [] {
    const std::string d = root / "model";
    fs::create_directories(d);
    testing::write_text(d + "/config.json", kConfig);
    Rng rng(11);
    std::vector<std::pair<std::string, Tensor>> weights;
    for (const WeightSpec& s : model_weight_specs(parse_model_config(kConfig, "test"))) {
      Tensor t = Tensor::host(s.shape, DType::kF32);
      for (int64_t i = 0; i < t.numel(); ++i)
        t.data<float>()[i] = s.kind == WeightKind::kNorm ? 1.0f : float(0.1 * rng.normal());
      weights.emplace_back(s.name, t);
    }
    io::save_safetensors_sharded(d, weights);
    return d;
  }();
  return dir;
}

std::vector<TokenizedSample> samples(int n) {
  std::vector<TokenizedSample> out;
  for (int k = 0; k < n; ++k) {
    TokenizedSample s;
    const int len = 9 + (k * 3) % 5, start = (5 * k) % 24;
    for (int t = 0; t < len; ++t) {
      s.input_ids.push_back(int32_t(2 + (start + t) % 24));
      s.labels.push_back(t < 3 ? kIgnoreIndex : s.input_ids.back());
    }
    out.push_back(std::move(s));
  }
  return out;
}

TrainArgs offload_args(const std::string& tuner, const std::string& device, const std::string& out,
                       bool offload) {
  TrainArgs a;
  a.model = tiny_model();
  a.tuner_type = tuner;
  a.lora.rank = 4;
  a.lora.alpha = 8;
  if (tuner == "lora") a.lora.modules_to_save = {"all-norm"};
  a.output_dir = out;
  a.add_version = false;
  a.max_steps = kSteps;
  a.per_device_train_batch_size = 2;
  a.gradient_accumulation_steps = 2;
  a.learning_rate = tuner == "lora" ? 2e-2 : 3e-3;
  a.max_grad_norm = 0.5;
  a.logging_steps = 1;
  a.save_steps = kSteps / 2;
  a.threads = 2;
  a.device = device;
  a.offload_optimizer = offload;
  return a;
}

std::map<int64_t, nlohmann::json> numbers(const TrainResult& r) {
  std::map<int64_t, nlohmann::json> out;
  for (const auto& rec : r.log_history)
    for (const char* k : {"loss", "grad_norm", "token_acc", "learning_rate", "eval_loss"})
      if (rec.contains(k)) out[rec["step"].get<int64_t>()][k] = rec[k];
  return out;
}

std::string bytes(const TrainResult& r, int64_t step, const std::string& file) {
  const std::string p = (fs::path(r.run_dir) / fmt::format("checkpoint-{}", step) / file).string();
  EXPECT_TRUE(fs::exists(p)) << p;
  return testing::read_bytes(p);
}

class OffloadOnSim : public ::testing::TestWithParam<const char*> {};

// The offloaded run is the device run, exactly: the host step runs the same f32 AdamW kernel.
TEST_P(OffloadOnSim, TrainsChecksPointsAndResumesAsTheDeviceStep) {
  const std::string tuner = GetParam();
  ScopedEnv env("SWIFTLET_VISIBLE_DEVICES", "cpu:0,sim:0");
  TempDir tmp;
  const auto train_set = samples(12), val_set = samples(3);
  const TrainResult plain =
      train(offload_args(tuner, "sim:0", tmp / "plain", false), train_set, val_set);
  const TrainResult off =
      train(offload_args(tuner, "sim:0", tmp / "off", true), train_set, val_set);
  ASSERT_EQ(plain.step_losses.size(), size_t(kSteps));
  EXPECT_EQ(off.step_losses, plain.step_losses);
  EXPECT_EQ(off.step_grad_norms, plain.step_grad_norms);
  EXPECT_EQ(numbers(off), numbers(plain));
  EXPECT_LT(plain.step_losses.back(), plain.step_losses.front());  // it trains
  const std::vector<std::string> files =
      tuner == "lora"
          ? std::vector<std::string>{"adapter_model.safetensors", "optimizer.safetensors"}
          : std::vector<std::string>{"model.safetensors", "optimizer.safetensors"};
  for (int64_t step : {kSteps / 2, kSteps})
    for (const auto& f : files)
      EXPECT_TRUE(bytes(off, step, f) == bytes(plain, step, f)) << step << f;
  // The optimizer state file holds every parameter's moments under its name, at the step.
  const io::SafetensorsFile st = io::load_safetensors(
      (fs::path(off.run_dir) / fmt::format("checkpoint-{}", kSteps) / "optimizer.safetensors")
          .string());
  EXPECT_EQ(st.metadata.at("step"), std::to_string(kSteps));
  EXPECT_GT(st.tensors.size(), 0u);

  // Resumed with offload from the middle checkpoint: the uninterrupted run's end.
  TrainArgs ra = offload_args(tuner, "sim:0", tmp / "resumed", true);
  ra.resume_from_checkpoint =
      (fs::path(off.run_dir) / fmt::format("checkpoint-{}", kSteps / 2)).string();
  const TrainResult resumed = train(ra, train_set, val_set);
  EXPECT_EQ(resumed.global_step, kSteps);
  EXPECT_EQ(numbers(resumed), numbers(off));
  for (const auto& f : files) EXPECT_TRUE(bytes(resumed, kSteps, f) == bytes(off, kSteps, f)) << f;

  // On cpu:0 the flag moves nothing (the states already are in host memory): the same run.
  const TrainResult cpu =
      train(offload_args(tuner, "cpu:0", tmp / "cpu", false), train_set, val_set);
  const TrainResult cpu_off =
      train(offload_args(tuner, "cpu:0", tmp / "cpu_off", true), train_set, val_set);
  EXPECT_EQ(cpu_off.step_losses, cpu.step_losses);
  EXPECT_EQ(cpu.step_losses, plain.step_losses);  // and sim is cpu (see sim_device_train_test)
}

INSTANTIATE_TEST_SUITE_P(Tuners, OffloadOnSim, ::testing::Values("lora", "full"),
                         [](const auto& info) { return std::string(info.param); });

// With offload the device holds values and gradients only; the step on the host gives the values
// the device step gives.
TEST(OffloadOnSimDevice, DeviceMemoryHoldsNoMomentsAndTheHostStepIsTheDeviceStep) {
  ThreadPool pool(2);
  SimDevice sim(pool);
  auto make = [&](std::vector<Tensor>& values, std::vector<Tensor>& grads) {
    Rng rng(3);
    values.clear();
    grads.assign(3, Tensor());
    // Multiples of 16 floats: the sim allocator rounds to 64 bytes, and the counts below are exact.
    for (const Shape& s : {Shape{8, 8}, Shape{16}, Shape{4, 12}}) {
      Tensor h = Tensor::host(s, DType::kF32);
      for (int64_t i = 0; i < h.numel(); ++i) h.data<float>()[i] = float(rng.normal());
      values.push_back(sim.upload(h));
    }
  };
  std::vector<Tensor> v1, g1, v2, g2;
  make(v1, g1);
  make(v2, g2);
  const std::vector<std::string> names = {"a.weight", "b.norm.weight", "c.weight"};
  auto slots = [&](std::vector<Tensor>& v, std::vector<Tensor>& g) {
    std::vector<TrainableSlot> s;
    for (size_t i = 0; i < v.size(); ++i) s.push_back({names[i], &v[i], &g[i]});
    return s;
  };
  ParamBuckets on_device(sim, slots(v1, g1), 64 * sizeof(float));
  auto offload = OptimizerOffload::create(sim, pool, true, false, 0);
  ASSERT_NE(offload, nullptr);
  ParamBuckets offloaded(sim, slots(v2, g2), 64 * sizeof(float));
  // The buckets' former tensors go (as the trainer drops the model's copies).
  v1.clear();
  v2.clear();
  size_t before = sim.allocated_bytes();
  on_device.allocate_states(sim);
  const size_t device_states = sim.allocated_bytes() - before;
  before = sim.allocated_bytes();
  offloaded.allocate_states(sim, &offload->host());
  const size_t offloaded_states = sim.allocated_bytes() - before;
  // Gradients only (a bucket's gradients are as large as its values): no moments on the device.
  size_t grad_bytes = 0;
  for (auto& b : offloaded.buckets()) grad_bytes += b.grads.nbytes();
  EXPECT_EQ(offloaded_states, grad_bytes);
  EXPECT_EQ(device_states, 3 * grad_bytes);
  EXPECT_EQ(offloaded.moment_bytes(), on_device.moment_bytes());
  for (auto& b : offloaded.buckets()) EXPECT_TRUE(b.exp_avg.host_accessible());

  AdamW dev_opt(sim, {}), off_opt(sim, {});
  for (size_t i = 0; i < names.size(); ++i) {
    dev_opt.add(names[i], on_device.value(i), on_device.grad(i), on_device.exp_avg(i),
                on_device.exp_avg_sq(i));
    off_opt.add(names[i], offloaded.value(i), offloaded.grad(i), offloaded.exp_avg(i),
                offloaded.exp_avg_sq(i));
  }
  offload->attach(off_opt);
  for (int step = 0; step < 3; ++step) {
    Rng rng(100 + uint64_t(step));
    for (size_t i = 0; i < names.size(); ++i) {
      Tensor h = Tensor::host(on_device.grad(i).shape(), DType::kF32);
      for (int64_t k = 0; k < h.numel(); ++k) h.data<float>()[k] = float(rng.normal());
      sim.copy(on_device.grad(i), sim.upload(h));
      sim.copy(offloaded.grad(i), sim.upload(h));
    }
    dev_opt.step(1e-2);
    offload->step(off_opt, 1e-2);
    EXPECT_EQ(off_opt.step_count(), dev_opt.step_count());
    for (size_t i = 0; i < names.size(); ++i) {
      EXPECT_EQ(sim.download(offloaded.value(i)).to_f32_vector(),
                sim.download(on_device.value(i)).to_f32_vector())
          << names[i] << " step " << step;
      EXPECT_EQ(offloaded.exp_avg_sq(i).to_f32_vector(),
                sim.download(on_device.exp_avg_sq(i)).to_f32_vector())
          << names[i] << " step " << step;
    }
  }
  EXPECT_EQ(offload->host_bytes(), 3 * offloaded.moment_bytes() / 2);
}

TEST(OffloadOnSimDevice, WhatIsNotBuiltIsRefusedAndTheHostNeedsNoCopies) {
  ThreadPool pool(1);
  SimDevice sim(pool);
  CpuDevice cpu(pool);
  EXPECT_EQ(OptimizerOffload::create(cpu, pool, true, false, 2), nullptr);  // already host memory
  EXPECT_EQ(OptimizerOffload::create(sim, pool, false, false, 2), nullptr);
  EXPECT_EQ(testing::error_of([&] { OptimizerOffload::create(sim, pool, true, true, 2); }),
            "offload_param moves the parameters that ZeRO stage 3 shards to host memory, and this "
            "run uses ZeRO stage 2\ndrop offload_param (offload_optimizer, as in zero2_offload, "
            "moves the optimizer states)");
  EXPECT_ERROR_HAS(OptimizerOffload::create(sim, pool, true, true, 3),
                   "parameter offload (offload_param) is not built: the parameters stay in the "
                   "memory of sim:0");
  EXPECT_EQ(OptimizerOffload::create(cpu, pool, true, true, 3),
            nullptr);  // they are in host memory
}

}  // namespace
}  // namespace swiftlet
