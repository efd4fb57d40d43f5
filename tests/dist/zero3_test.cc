// ZeRO-3 (--deepspeed zero3, --fsdp full_shard) through the binary on 2 ranks: each rank keeps
// half of every parameter, gradient and optimizer state, and gathers a layer's weights only while
// it computes; the same global batch logs the losses and gradient norms of 1 rank accumulating
// twice (an idle rank at the end of the epoch included), for a tied Qwen3 and a Qwen3.5-MoE
// (gated delta net, experts, shared expert); the checkpoint holds the whole weights and optimizer
// state as one process writes them, resumes on 1 or 2 ranks, and infer reads it; reward models
// and DPO train under it (DPO's reference model sharded too). LoRA shards its pairs, its
// modules_to_save and the frozen base (in its own dtype), and logs and saves what one rank does,
// for SFT, reward models and DPO.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "dist/dist_fixture.h"
#include "io/safetensors.h"
#include "model/model_fixture.h"

namespace swiftlet {
namespace {

namespace fs = std::filesystem;
using testing::ProcessRun;
using testing::run_command;
using testing::TempDir;
using testing::train_logs;
using testing::expect_same_steps;
using testing::only_run;
using testing::write_dataset;
using testing::write_pairs;

constexpr double kMaxGradNorm = 0.05;  // every step clips

std::string sft(const std::string& model, const std::string& data, const std::string& out,
                int accumulation, const std::string& env, const std::string& extra = "") {
  return fmt::format(
      "env {} {} sft --model {} --dataset {} --output_dir {} --max_steps 4 --tuner_type full "
      "--gradient_accumulation_steps {} --per_device_train_batch_size 2 --logging_steps 1 "
      "--save_steps 2 --learning_rate 1e-3 --max_grad_norm {} --ddp_bucket_cap_mb 0.02 "
      "--load_from_cache_file false {}",
      env, SWIFTLET_BINARY, model, data, out, accumulation, kMaxGradNorm, extra);
}

// "memory of rank R/N (ZeRO stage K): ... parameters P MiB, gradients G MiB kept and H MiB at
// most, optimizer states O MiB[, whole parameters W MiB at most]" -> {P, G, H, O, W} of rank R.
std::array<double, 5> state_mib(const std::string& out, int rank) {
  static const std::regex re(
      "memory of rank (\\d+)/\\d+ \\(ZeRO stage \\d\\): peak RSS [0-9.]+ MiB; parameters "
      "([0-9.]+) MiB, gradients ([0-9.]+) MiB kept and ([0-9.]+) MiB at most, optimizer states "
      "([0-9.]+) MiB(, whole parameters ([0-9.]+) MiB at most)?");
  for (std::sregex_iterator it(out.begin(), out.end(), re), end; it != end; ++it)
    if (std::stoi((*it)[1]) == rank)
      return {std::stod((*it)[2]), std::stod((*it)[3]), std::stod((*it)[4]), std::stod((*it)[5]),
              (*it)[7].matched ? std::stod((*it)[7]) : -1.0};
  ADD_FAILURE() << "no memory line of rank " << rank << " in\n" << out;
  return {0, 0, 0, 0, 0};
}

// Every tensor of `file` in `ref` too, equal to `rel` (1e-4) of its largest magnitude.
void expect_same_tensors(const fs::path& ref, const fs::path& file, double rel = 1e-4) {
  const io::SafetensorsFile a = io::load_safetensors(ref.string());
  const io::SafetensorsFile b = io::load_safetensors(file.string());
  ASSERT_EQ(a.tensors.size(), b.tensors.size()) << file;
  for (const auto& [name, t] : a.tensors) {
    const Tensor* u = b.find(name);
    ASSERT_NE(u, nullptr) << name;
    ASSERT_EQ(u->shape(), t.shape()) << name;
    const float* x = t.data<float>();
    const float* y = u->data<float>();
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      diff = std::max(diff, double(std::abs(x[i] - y[i])));
      norm = std::max(norm, double(std::abs(x[i])));
    }
    EXPECT_LE(diff, rel * norm + 1e-12) << file << ": " << name;
  }
}

// A model preset's name as a test name ("tiny-qwen35-moe" -> "tiny_qwen35_moe").
std::string test_name(const ::testing::TestParamInfo<const char*>& info) {
  std::string n = info.param;
  for (char& c : n)
    if (c == '-') c = '_';
  return n;
}

class Zero3Train : public ::testing::TestWithParam<const char*> {};

TEST_P(Zero3Train, ParametersShardedLogTheLossesOfOneRank) {
  const std::string model = testing::tiny_model(GetParam());
  TempDir tmp;
  // 20 of the 24 rows: the last step of the epoch has 2 micro-batches, so rank 1 has none and
  // still takes part in rank 0's parameter gathers.
  const std::string data = write_dataset(tmp) + "#20";
  const std::string two = "NPROC_PER_NODE=2";
  const ProcessRun one = run_command(sft(model, data, tmp / "one", 4, ""));
  ASSERT_EQ(one.status, 0) << one.out;
  const ProcessRun zero3 =
      run_command(sft(model, data, tmp / "zero3", 2, two, "--deepspeed zero3"));
  ASSERT_EQ(zero3.status, 0) << zero3.out;
  EXPECT_NE(zero3.out.find("ZeRO stage 3: parameters, gradients and optimizer states sharded"),
            std::string::npos)
      << zero3.out;
  // FSDP's spelling, without recomputation (backward reads the layers' kept activations).
  const ProcessRun fsdp = run_command(
      sft(model, data, tmp / "fsdp", 2, two, "--fsdp full_shard --gradient_checkpointing false"));
  ASSERT_EQ(fsdp.status, 0) << fsdp.out;

  const auto base = train_logs(tmp / "one");
  ASSERT_EQ(base.size(), 4u);
  for (const auto& rec : base) EXPECT_GT(rec["grad_norm"].get<double>(), kMaxGradNorm);
  expect_same_steps(base, train_logs(tmp / "zero3"), 0, "zero3");
  expect_same_steps(base, train_logs(tmp / "fsdp"), 0, "fsdp full_shard");
  if (std::string(GetParam()) == "tiny") {
    // ms-swift's zero3_offload preset: on the host the moments and parameters already are in
    // host memory, so it trains as zero3 does, and says so.
    const ProcessRun off =
        run_command(sft(model, data, tmp / "offload", 2, two, "--deepspeed zero3_offload"));
    ASSERT_EQ(off.status, 0) << off.out;
    EXPECT_NE(off.out.find("optimizer offload: the optimizer states stay in host memory"),
              std::string::npos)
        << off.out;
    EXPECT_NE(off.out.find("parameter offload: the parameters stay in host memory"),
              std::string::npos)
        << off.out;
    expect_same_steps(base, train_logs(tmp / "offload"), 0, "zero3_offload");
  }

  // Each rank holds half of the parameters, gradients and moments (the allowance: each bucket's
  // padding to an even size), and at most a few layers' weights whole at once.
  const auto s1 = state_mib(one.out, 0);
  for (int rank : {0, 1}) {
    const auto s3 = state_mib(zero3.out, rank);
    EXPECT_NEAR(s3[0], s1[0] / 2, 0.002) << rank;
    EXPECT_NEAR(s3[1], s1[1] / 2, 0.002) << rank;
    EXPECT_NEAR(s3[3], s1[3] / 2, 0.002) << rank;
    EXPECT_GT(s3[4], 0) << rank;
    EXPECT_LT(s3[4], s1[0]) << rank;  // never the whole model, outside of saves
  }

  // The checkpoints: the whole weights and optimizer state, as the single process wrote them.
  for (const char* run : {"zero3", "fsdp"}) {
    const fs::path ck = only_run(tmp / run) / "checkpoint-4";
    const fs::path ref = only_run(tmp / "one") / "checkpoint-4";
    expect_same_tensors(ref / "model.safetensors", ck / "model.safetensors");
    expect_same_tensors(ref / "optimizer.safetensors", ck / "optimizer.safetensors");
  }

  // Saved on 2 ranks with zero3, resumed on 1 rank; saved on 1 rank, resumed on 2 with zero3.
  const ProcessRun r1 = run_command(
      sft(model, data, tmp / "r1", 4, "",
          "--resume_from_checkpoint " + (only_run(tmp / "zero3") / "checkpoint-2").string()));
  ASSERT_EQ(r1.status, 0) << r1.out;
  expect_same_steps(base, train_logs(tmp / "r1"), 2, "2 ranks zero3 -> 1 rank");
  const ProcessRun r2 = run_command(sft(model, data, tmp / "r2", 2, two,
                                        "--deepspeed zero3 --resume_from_checkpoint " +
                                            (only_run(tmp / "one") / "checkpoint-2").string()));
  ASSERT_EQ(r2.status, 0) << r2.out;
  expect_same_steps(base, train_logs(tmp / "r2"), 2, "1 rank -> 2 ranks zero3");

  // infer reads the sharded run's checkpoint like any other.
  testing::write_text(tmp / "q.jsonl",
                      R"({"messages": [{"role": "user", "content": "Say red twice."}]})"
                      "\n");
  const ProcessRun inf = run_command(fmt::format(
      "{} infer --model {} --val_dataset {} --result_path {} --max_new_tokens 3 --temperature 0",
      SWIFTLET_BINARY, (only_run(tmp / "zero3") / "checkpoint-4").string(), tmp / "q.jsonl",
      tmp / "res.jsonl"));
  ASSERT_EQ(inf.status, 0) << inf.out;
  EXPECT_NE(testing::read_bytes(tmp / "res.jsonl").find("\"response\""), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Models, Zero3Train, ::testing::Values("tiny", "tiny-qwen35-moe"),
                         test_name);

// `rlhf --rlhf_type type` on 1 rank accumulating twice (tmp/type-one) and on 2 ranks under
// ZeRO-3 (tmp/type-zero3), 3 steps each: the same losses and gradient norms, and the final
// checkpoint's `file` the same tensors. Returns the ZeRO-3 run's output (empty on failure).
std::string rlhf_zero3_as_one_rank(const TempDir& tmp, const std::string& type,
                                   const std::string& tuner, const std::string& file) {
  const std::string model = testing::tiny_model("tiny");
  const std::string pairs = write_pairs(tmp);
  auto rlhf = [&](const std::string& out, int accumulation, const std::string& env) {
    return fmt::format(
        "env {} {} rlhf --rlhf_type {} --tuner_type {} --model {} --dataset {} --output_dir {} "
        "--max_steps 3 --gradient_accumulation_steps {} --per_device_train_batch_size 2 "
        "--logging_steps 1 --save_steps 100 --learning_rate {} --ddp_bucket_cap_mb {} "
        "--load_from_cache_file false",
        env, SWIFTLET_BINARY, type, tuner, model, pairs, out, accumulation,
        tuner == "lora" ? 1e-2 : 1e-4, tuner == "lora" ? 0.002 : 0.02);
  };
  const std::string one_dir = tmp / (type + "-one"), two_dir = tmp / (type + "-zero3");
  const ProcessRun one = run_command(rlhf(one_dir, 2, ""));
  EXPECT_EQ(one.status, 0) << one.out;
  EXPECT_EQ(one.out.find("sharded over"), std::string::npos) << one.out;
  const ProcessRun two = run_command(rlhf(two_dir, 1, "NPROC_PER_NODE=2") + " --deepspeed zero3");
  EXPECT_EQ(two.status, 0) << two.out;
  if (one.status != 0 || two.status != 0) return "";
  const auto a = train_logs(one_dir);
  EXPECT_EQ(a.size(), 3u) << type;
  if (a.size() != 3u) return "";
  EXPECT_NE(a[0]["loss"], a[2]["loss"]) << type;  // it learns
  expect_same_steps(a, train_logs(two_dir), 0, type + " " + tuner + " zero3");
  expect_same_tensors(only_run(one_dir) / "checkpoint-3" / file,
                      only_run(two_dir) / "checkpoint-3" / file);
  return two.out;
}

// A reward model (the score head in the last part gathered) and DPO log under ZeRO-3 what one
// rank accumulating twice logs; DPO's reference, a frozen copy of the model, is partitioned as
// the policy is.
TEST(Zero3Train, RewardModelAndDpoLogWhatOneRankLogs) {
  TempDir tmp;
  EXPECT_NE(rlhf_zero3_as_one_rank(tmp, "rm", "full", "model.safetensors"), "");
  const std::string out = rlhf_zero3_as_one_rank(tmp, "dpo", "full", "model.safetensors");
  static const std::regex re(
      "reference model: a frozen copy of [^\\n]*, sharded over 2 ranks \\(([0-9.]+) MiB of "
      "([0-9.]+) MiB kept\\)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, re)) << out;
  EXPECT_GT(std::stod(m[2]), 0.5);
  EXPECT_NEAR(std::stod(m[1]), std::stod(m[2]) / 2, 0.01);
}

// "frozen base K MiB of W MiB kept (BF16, B bytes), whole base parts P MiB at most" of rank R
// -> {K, W, P}, with the dtype the shards hold.
std::array<double, 3> frozen_mib(const std::string& out, int rank, const std::string& dtype) {
  static const std::regex re(
      "memory of rank (\\d+)/\\d+ \\(ZeRO stage 3\\): [^\\n]*, frozen base ([0-9.]+) MiB of "
      "([0-9.]+) MiB kept \\(([A-Z0-9]+), \\d+ bytes\\), whole base parts ([0-9.]+) MiB at most");
  for (std::sregex_iterator it(out.begin(), out.end(), re), end; it != end; ++it)
    if (std::stoi((*it)[1]) == rank) {
      EXPECT_EQ((*it)[4].str(), dtype) << rank;
      return {std::stod((*it)[2]), std::stod((*it)[3]), std::stod((*it)[5])};
    }
  ADD_FAILURE() << "no frozen base bytes of rank " << rank << " in\n" << out;
  return {0, 0, 0};
}

std::string lora_sft(const std::string& model, const std::string& data, const std::string& out,
                     int accumulation, const std::string& env, const std::string& extra = "") {
  return fmt::format(
      "env {} {} sft --model {} --dataset {} --output_dir {} --max_steps 4 --tuner_type lora "
      "--lora_rank 4 --gradient_accumulation_steps {} --per_device_train_batch_size 2 "
      "--logging_steps 1 --save_steps 2 --learning_rate 1e-2 --max_grad_norm 1.0 "
      "--ddp_bucket_cap_mb 0.002 --load_from_cache_file false {}",
      env, SWIFTLET_BINARY, model, data, out, accumulation, extra);
}

// LoRA under ZeRO-3, as DeepSpeed runs a PEFT model: the LoRA pairs are the sharded trainable
// parameters and the frozen base is partitioned too, each rank keeping half of it in its own
// dtype and gathering a part while it computes. The same global batch logs what 1 rank
// accumulating twice logs, the adapter checkpoints are the same, and they resume on 1 or 2 ranks.
class Zero3Lora : public ::testing::TestWithParam<const char*> {};

TEST_P(Zero3Lora, FrozenBaseShardedLogsTheLossesOfOneRank) {
  // A bf16 base, as LoRA loads it (in the model's dtype), sharded in bf16.
  const std::string model = testing::tiny_model(GetParam(), "bfloat16");
  TempDir tmp;
  // 20 of the 24 rows: rank 1 has no micro-batch in the last step and replays one.
  const std::string data = write_dataset(tmp) + "#20";
  const std::string two = "NPROC_PER_NODE=2";
  const ProcessRun one = run_command(lora_sft(model, data, tmp / "one", 4, ""));
  ASSERT_EQ(one.status, 0) << one.out;
  const ProcessRun zero3 =
      run_command(lora_sft(model, data, tmp / "zero3", 2, two, "--deepspeed zero3"));
  ASSERT_EQ(zero3.status, 0) << zero3.out;
  EXPECT_NE(zero3.out.find("ZeRO stage 3: parameters, gradients and optimizer states sharded, "
                           "and the frozen base weights"),
            std::string::npos)
      << zero3.out;

  const auto base = train_logs(tmp / "one");
  ASSERT_EQ(base.size(), 4u);
  for (const auto& rec : base) EXPECT_GT(rec["grad_norm"].get<double>(), 0.0);
  EXPECT_NE(base[0]["loss"], base[3]["loss"]);  // it learns
  expect_same_steps(base, train_logs(tmp / "zero3"), 0, "zero3 lora");

  // Each rank keeps half of the base (up to each unit's padding to an even length) and of the
  // LoRA pairs and their states.
  const auto s1 = state_mib(one.out, 0);
  for (int rank : {0, 1}) {
    const auto f = frozen_mib(zero3.out, rank, "BF16");
    EXPECT_GT(f[1], s1[0]) << rank;  // the base outweighs the pairs
    EXPECT_NEAR(f[0], f[1] / 2, 0.002) << rank;
    EXPECT_GT(f[2], 0) << rank;
    EXPECT_LT(f[2], f[1]) << rank;  // never the whole base at once, outside of saves
    const auto s3 = state_mib(zero3.out, rank);
    EXPECT_NEAR(s3[0], s1[0] / 2, 0.002) << rank;
    EXPECT_NEAR(s3[3], s1[3] / 2, 0.002) << rank;
  }

  // Rank 0 writes the PEFT adapter as the single process does.
  for (const char* step : {"checkpoint-2", "checkpoint-4"}) {
    const fs::path ref = only_run(tmp / "one") / step;
    const fs::path ck = only_run(tmp / "zero3") / step;
    ASSERT_TRUE(fs::exists(ck / "adapter_config.json")) << ck;
    EXPECT_FALSE(fs::exists(ck / "model.safetensors")) << ck;
    // The MoE model's rarely routed experts and its bf16 activations: AdamW turns gradients
    // near zero that differ in their last bits (sums in another order) into steps of up to
    // 6e-4 of the tensor's largest value.
    expect_same_tensors(ref / "adapter_model.safetensors", ck / "adapter_model.safetensors",
                        std::string(GetParam()) == "tiny" ? 1e-4 : 1e-3);
  }

  const ProcessRun r1 = run_command(
      lora_sft(model, data, tmp / "r1", 4, "",
               "--resume_from_checkpoint " + (only_run(tmp / "zero3") / "checkpoint-2").string()));
  ASSERT_EQ(r1.status, 0) << r1.out;
  expect_same_steps(base, train_logs(tmp / "r1"), 2, "2 ranks zero3 lora -> 1 rank");
  const ProcessRun r2 = run_command(lora_sft(model, data, tmp / "r2", 2, two,
                                             "--deepspeed zero3 --resume_from_checkpoint " +
                                                 (only_run(tmp / "one") / "checkpoint-2").string()));
  ASSERT_EQ(r2.status, 0) << r2.out;
  expect_same_steps(base, train_logs(tmp / "r2"), 2, "1 rank -> 2 ranks zero3 lora");
}

INSTANTIATE_TEST_SUITE_P(Models, Zero3Lora, ::testing::Values("tiny", "tiny-qwen35-moe"),
                         test_name);

// Reward models and DPO with LoRA: the reward model's score head trains in full (PEFT's SEQ_CLS
// modules_to_save) and is sharded as the pairs are; DPO's reference is the base without the pairs
// (the adapter detached while the sharded base is gathered).
TEST(Zero3Lora, RewardModelAndDpoLogWhatOneRankLogs) {
  TempDir tmp;
  EXPECT_NE(rlhf_zero3_as_one_rank(tmp, "rm", "lora", "adapter_model.safetensors"), "");
  EXPECT_NE(io::load_safetensors(
                (only_run(tmp / "rm-zero3") / "checkpoint-3" / "adapter_model.safetensors").string())
                .find("base_model.model.score.weight"),
            nullptr);
  EXPECT_NE(rlhf_zero3_as_one_rank(tmp, "dpo", "lora", "adapter_model.safetensors"), "");
}

// modules_to_save under ZeRO-3 with LoRA: the tied embedding (which is also the LM head) and every
// norm train in full, sharded with the pairs and gathered with their unit, while the base copies
// they replace stay sharded for the reference; 1 rank's losses, adapter and resume.
TEST(Zero3Lora, ModulesToSaveTrainAsOnOneRank) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  const std::string extra = "--modules_to_save embed_tokens all-norm --learning_rate 1e-3";
  const std::string two = "NPROC_PER_NODE=2";
  const ProcessRun one = run_command(lora_sft(model, data, tmp / "one", 4, "", extra));
  ASSERT_EQ(one.status, 0) << one.out;
  const ProcessRun zero3 =
      run_command(lora_sft(model, data, tmp / "zero3", 2, two, extra + " --deepspeed zero3"));
  ASSERT_EQ(zero3.status, 0) << zero3.out;
  const auto base = train_logs(tmp / "one");
  ASSERT_EQ(base.size(), 4u);
  EXPECT_NE(base[0]["loss"], base[3]["loss"]);
  expect_same_steps(base, train_logs(tmp / "zero3"), 0, "zero3 lora modules_to_save");
  const fs::path ck = only_run(tmp / "zero3") / "checkpoint-4";
  expect_same_tensors(only_run(tmp / "one") / "checkpoint-4" / "adapter_model.safetensors",
                      ck / "adapter_model.safetensors");
  const io::SafetensorsFile f = io::load_safetensors((ck / "adapter_model.safetensors").string());
  EXPECT_NE(f.find("base_model.model.model.embed_tokens.weight"), nullptr);
  EXPECT_NE(f.find("base_model.model.model.norm.weight"), nullptr);
  const ProcessRun r1 = run_command(lora_sft(
      model, data, tmp / "r1", 4, "",
      extra + " --resume_from_checkpoint " + (only_run(tmp / "zero3") / "checkpoint-2").string()));
  ASSERT_EQ(r1.status, 0) << r1.out;
  expect_same_steps(base, train_logs(tmp / "r1"), 2, "2 ranks zero3 modules_to_save -> 1 rank");
}

}  // namespace
}  // namespace swiftlet
