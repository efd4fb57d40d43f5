// Sharded training states through the binary (--deepspeed zero1|zero2, --fsdp shard_grad_op) on
// 2 ranks: the same global batch logs the losses and gradient norms of plain data parallelism and
// of 1 rank accumulating twice, with LoRA and full fine-tuning and with clipping active; the
// checkpoint holds the whole optimizer state in a single process's layout, so it resumes on any
// number of ranks and infer reads it; what is not built is refused in one sentence, and optimizer
// offload on the CPU device runs (the states already are in host memory).
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

// Small buckets so that a tiny model has many, and shards cross parameter boundaries; a low
// clipping threshold so that every step clips.
constexpr double kMaxGradNorm = 0.05;

std::string sft(const std::string& tuner, const std::string& model, const std::string& data,
                const std::string& out, int accumulation, const std::string& env,
                const std::string& extra = "") {
  return fmt::format(
      "env {} {} sft --model {} --dataset {} --output_dir {} --max_steps 4 --tuner_type {} "
      "--gradient_accumulation_steps {} --per_device_train_batch_size 2 --logging_steps 1 "
      "--save_steps 2 --learning_rate 1e-3 --lora_rank 4 --lora_dropout 0.1 "
      "--max_grad_norm {} --ddp_bucket_cap_mb 0.02 --load_from_cache_file false {}",
      env, SWIFTLET_BINARY, model, data, out, tuner, accumulation, kMaxGradNorm, extra);
}

// "memory of rank R/2 (ZeRO stage K): ... parameters P MiB, gradients G MiB kept and H MiB at
// most, optimizer states O MiB" -> {P, G, H, O} of rank R.
std::array<double, 4> state_mib(const std::string& out, int rank) {
  static const std::regex re(
      "memory of rank (\\d+)/\\d+ \\(ZeRO stage \\d\\): peak RSS [0-9.]+ MiB; parameters "
      "([0-9.]+) MiB, gradients ([0-9.]+) MiB kept and ([0-9.]+) MiB at most, optimizer states "
      "([0-9.]+) MiB");
  for (std::sregex_iterator it(out.begin(), out.end(), re), end; it != end; ++it)
    if (std::stoi((*it)[1]) == rank)
      return {std::stod((*it)[2]), std::stod((*it)[3]), std::stod((*it)[4]), std::stod((*it)[5])};
  ADD_FAILURE() << "no memory line of rank " << rank << " in\n" << out;
  return {0, 0, 0, 0};
}

class ZeroTrain : public ::testing::TestWithParam<const char*> {};

TEST_P(ZeroTrain, ShardedStatesLogTheLossesOfPlainDataParallelAndOfOneRank) {
  const std::string tuner = GetParam();
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  // 20 of the 24 rows: the last step of the epoch has 2 micro-batches, so rank 1 has none and
  // contributes zeros to the gradient exchange.
  const std::string data = write_dataset(tmp) + "#20";
  const std::string two = "NPROC_PER_NODE=2";
  const ProcessRun one = run_command(sft(tuner, model, data, tmp / "one", 4, ""));
  ASSERT_EQ(one.status, 0) << one.out;
  const ProcessRun zero0 =
      run_command(sft(tuner, model, data, tmp / "zero0", 2, two, "--deepspeed zero0"));
  ASSERT_EQ(zero0.status, 0) << zero0.out;
  const ProcessRun zero1 =
      run_command(sft(tuner, model, data, tmp / "zero1", 2, two, "--deepspeed zero1"));
  ASSERT_EQ(zero1.status, 0) << zero1.out;
  EXPECT_NE(zero1.out.find("ZeRO stage 1: optimizer states sharded"), std::string::npos)
      << zero1.out;
  // FSDP's spelling of ZeRO-2.
  const ProcessRun zero2 =
      run_command(sft(tuner, model, data, tmp / "zero2", 2, two, "--fsdp shard_grad_op"));
  ASSERT_EQ(zero2.status, 0) << zero2.out;
  EXPECT_NE(zero2.out.find("ZeRO stage 2: optimizer states and gradients sharded"),
            std::string::npos)
      << zero2.out;

  const auto base = train_logs(tmp / "one");
  ASSERT_EQ(base.size(), 4u);
  for (const auto& rec : base) EXPECT_GT(rec["grad_norm"].get<double>(), kMaxGradNorm);  // clipped
  expect_same_steps(base, train_logs(tmp / "zero0"), 0, "zero0");
  expect_same_steps(base, train_logs(tmp / "zero1"), 0, "zero1");
  expect_same_steps(base, train_logs(tmp / "zero2"), 0, "zero2");

  // Each rank holds half the moments (zero1), and keeps half the gradients too (zero2); the
  // 0.002 MiB allow for the padding of each bucket to an even size.
  const auto s0 = state_mib(zero0.out, 1), s1 = state_mib(zero1.out, 1),
             s2 = state_mib(zero2.out, 1);
  EXPECT_GT(s0[3], 0);
  EXPECT_NEAR(s1[0], s0[0], 0.002);
  EXPECT_NEAR(s1[1], s0[1], 0.002);
  EXPECT_NEAR(s1[3], s0[3] / 2, 0.002);
  EXPECT_NEAR(s2[1], s0[1] / 2, 0.002);
  EXPECT_NEAR(s2[3], s0[3] / 2, 0.002);

  // The checkpoint of a sharded run: rank 0 wrote the optimizer state of every parameter whole,
  // as the single process did, with the same values up to float rounding.
  const fs::path ck2 = only_run(tmp / "zero2") / "checkpoint-4";
  const io::SafetensorsFile sharded =
      io::load_safetensors((ck2 / "optimizer.safetensors").string());
  const io::SafetensorsFile single = io::load_safetensors(
      (only_run(tmp / "one") / "checkpoint-4" / "optimizer.safetensors").string());
  ASSERT_EQ(sharded.tensors.size(), single.tensors.size());
  for (const auto& [name, t] : single.tensors) {
    const Tensor* u = sharded.find(name);
    ASSERT_NE(u, nullptr) << name;
    ASSERT_EQ(u->shape(), t.shape()) << name;
    const float* x = t.data<float>();
    const float* y = u->data<float>();
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      diff = std::max(diff, double(std::abs(x[i] - y[i])));
      norm = std::max(norm, double(std::abs(x[i])));
    }
    EXPECT_LE(diff, 1e-4 * norm + 1e-12) << name;
  }
  EXPECT_EQ(sharded.metadata.at("step"), "4");

  // Saved on 2 ranks with zero2, resumed on 1 rank (twice the accumulation): steps 3 and 4 as
  // the uninterrupted runs logged them.
  const fs::path ck2_2 = only_run(tmp / "zero2") / "checkpoint-2";
  const ProcessRun resumed1 = run_command(
      sft(tuner, model, data, tmp / "r1", 4, "", "--resume_from_checkpoint " + ck2_2.string()));
  ASSERT_EQ(resumed1.status, 0) << resumed1.out;
  expect_same_steps(base, train_logs(tmp / "r1"), 2, "2 ranks zero2 -> 1 rank");
  // Saved on 1 rank, resumed on 2 ranks with zero1.
  const fs::path ck1_2 = only_run(tmp / "one") / "checkpoint-2";
  const ProcessRun resumed2 =
      run_command(sft(tuner, model, data, tmp / "r2", 2, two,
                      "--deepspeed zero1 --resume_from_checkpoint " + ck1_2.string()));
  ASSERT_EQ(resumed2.status, 0) << resumed2.out;
  expect_same_steps(base, train_logs(tmp / "r2"), 2, "1 rank -> 2 ranks zero1");

  // infer reads the sharded run's checkpoint like any other.
  testing::write_text(tmp / "q.jsonl",
                      R"({"messages": [{"role": "user", "content": "Say red twice."}]})"
                      "\n");
  const std::string src =
      tuner == "lora" ? "--adapters " + ck2.string() : "--model " + ck2.string();
  const ProcessRun inf = run_command(fmt::format(
      "{} infer {} --val_dataset {} --result_path {} --max_new_tokens 3 --temperature 0",
      SWIFTLET_BINARY, src, tmp / "q.jsonl", tmp / "res.jsonl"));
  ASSERT_EQ(inf.status, 0) << inf.out;
  EXPECT_NE(testing::read_bytes(tmp / "res.jsonl").find("\"response\""), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Tuners, ZeroTrain, ::testing::Values("lora", "full"),
                         [](const auto& info) { return std::string(info.param); });

TEST(ZeroTrain, WhatIsNotBuiltIsRefusedInOneSentence) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--deepspeed ds_config.json",
       "error: --deepspeed ds_config.json is neither a preset (zero0, zero1, zero2, zero3, "
       "zero2_offload, zero3_offload) nor an existing JSON file"},
      {"--fsdp hybrid_shard", "error: --fsdp hybrid_shard: fsdp hybrid_shard is not supported"},
      {"--deepspeed zero2 --fsdp shard_grad_op",
       "error: --deepspeed and --fsdp exclude each other"},
  };
  for (const auto& [flags, says] : cases) {
    const ProcessRun r = run_command(sft("lora", model, data, tmp / "o", 1, "", flags));
    EXPECT_EQ(r.status, 1) << flags;
    EXPECT_NE(r.out.find(says), std::string::npos) << flags << "\n" << r.out;
  }
  // ZeRO on one process is allowed (every shard is the whole), as DeepSpeed allows it.
  const ProcessRun r = run_command(sft("lora", model, data, tmp / "o", 1, "", "--deepspeed zero2"));
  EXPECT_EQ(r.status, 0) << r.out;
  // Optimizer offload on the CPU device: the states already are in host memory, and it says so.
  const ProcessRun off =
      run_command(sft("lora", model, data, tmp / "off", 1, "", "--deepspeed zero2_offload"));
  EXPECT_EQ(off.status, 0) << off.out;
  EXPECT_NE(off.out.find("optimizer offload: the optimizer states stay in host memory, because "
                         "the training device cpu:0 is the host"),
            std::string::npos)
      << off.out;
}

}  // namespace
}  // namespace swiftlet
