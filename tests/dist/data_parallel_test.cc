// Data-parallel training through the binary (NPROC_PER_NODE=2 re-executes swiftlet under mpirun):
// the same global batch on 2 ranks logs the losses of 1 rank accumulating twice as many
// micro-batches, only rank 0 writes, and a rank that fails, dies or hangs brings the job down
// with a message naming it and leaves no process behind.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "dist/dist_fixture.h"
#include "io/test_util.h"
#include "model/model_fixture.h"

namespace swiftlet {
namespace {

namespace fs = std::filesystem;
using testing::ProcessRun;
using testing::run_command;
using testing::train_logs;
using testing::write_dataset;
using testing::write_pairs;
using testing::TempDir;

// A tag in the environment of every process a run starts, to find leftovers.
std::string new_tag() {
  std::random_device rd;
  return fmt::format("dist-test-{}", rd());
}

// Processes whose environment holds SWIFTLET_TEST_TAG=tag.
std::vector<int> processes_tagged(const std::string& tag) {
  std::vector<int> out;
  const std::string want = "SWIFTLET_TEST_TAG=" + tag;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "environ", std::ios::binary);
    std::string env((std::istreambuf_iterator<char>(f)), {});
    // A zombie waiting for its parent has an empty environ; only live processes count.
    if (env.find(want + '\0') != std::string::npos || env.ends_with(want)) out.push_back(std::stoi(name));
  }
  return out;
}

std::string sft(const std::string& model, const std::string& data, const std::string& out, int steps,
                int accumulation, const std::string& env) {
  return fmt::format("env {} {} sft --model {} --dataset {} --output_dir {} --max_steps {} "
                     "--gradient_accumulation_steps {} --per_device_train_batch_size 2 "
                     "--logging_steps 1 --save_steps 100 --learning_rate 1e-3 --lora_rank 4 "
                     "--lora_dropout 0.1 --load_from_cache_file false",
                     env, SWIFTLET_BINARY, model, data, out, steps, accumulation);
}

TEST(DistTrain, TwoRanksLogTheLossesOfOneRankAccumulatingTwice) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  const ProcessRun one = run_command(sft(model, data, tmp / "one", 4, 4, ""));
  ASSERT_EQ(one.status, 0) << one.out;
  const std::string tag = new_tag();
  const ProcessRun two =
      run_command(sft(model, data, tmp / "two", 4, 2, "NPROC_PER_NODE=2 SWIFTLET_TEST_TAG=" + tag));
  ASSERT_EQ(two.status, 0) << two.out;
  EXPECT_NE(two.out.find("run sh: `mpirun -np 2"), std::string::npos) << two.out;
  EXPECT_NE(two.out.find("batch 2 x accumulation 2 x 2 ranks"), std::string::npos) << two.out;
  const auto a = train_logs(tmp / "one"), b = train_logs(tmp / "two");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < a.size(); ++i) {
    // Same samples, same dropout masks; only the order of float sums differs (logged to 1e-6).
    EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), 2e-5) << i;
    EXPECT_NEAR(a[i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>(), 2e-5) << i;
    EXPECT_EQ(a[i]["token_acc"], b[i]["token_acc"]) << i;
    EXPECT_EQ(a[i]["epoch"], b[i]["epoch"]) << i;
  }
  // One run folder, written by rank 0 alone; its checkpoint resumes like any other.
  std::vector<fs::path> runs(fs::directory_iterator(tmp / "two"), fs::directory_iterator());
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_TRUE(fs::exists(runs[0] / "checkpoint-4" / "adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(runs[0] / "images"));
  EXPECT_TRUE(processes_tagged(tag).empty());
}

// A checkpoint saved by 2 ranks is one consolidated folder: resumed by 1 rank with the same global
// batch (twice the accumulation), the remaining steps log what the 2-rank run logged.
TEST(DistTrain, CheckpointOfTwoRanksResumesOnOne) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  const ProcessRun two = run_command(
      sft(model, data, tmp / "two", 4, 1, "NPROC_PER_NODE=2") + " --save_steps 2");
  ASSERT_EQ(two.status, 0) << two.out;
  std::vector<fs::path> runs(fs::directory_iterator(tmp / "two"), fs::directory_iterator());
  ASSERT_EQ(runs.size(), 1u);
  const fs::path ckpt = runs[0] / "checkpoint-2";
  ASSERT_TRUE(fs::exists(ckpt / "optimizer.safetensors"));
  const ProcessRun one = run_command(sft(model, data, tmp / "one", 4, 2, "") +
                                     " --save_steps 2 --resume_from_checkpoint " + ckpt.string());
  ASSERT_EQ(one.status, 0) << one.out;
  const auto a = train_logs(tmp / "two"), b = train_logs(tmp / "one");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 2u);  // the resumed run's own log: steps 3 and 4
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(b[i]["step"], a[i + 2]["step"]);
    EXPECT_NEAR(a[i + 2]["loss"].get<double>(), b[i]["loss"].get<double>(), 2e-5) << i;
    EXPECT_NEAR(a[i + 2]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>(), 2e-5) << i;
  }
}

// Preference training shares a step the same way (each micro-batch's loss is a mean over its
// pairs, the step averages every rank's micro-batches).
TEST(DistTrain, DpoOnTwoRanksLogsWhatOneRankAccumulatingTwiceLogs) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  write_pairs(tmp);
  auto dpo = [&](const std::string& out, int accumulation, const std::string& env) {
    return fmt::format("env {} {} rlhf --rlhf_type dpo --model {} --dataset {} --output_dir {} "
                       "--max_steps 3 --gradient_accumulation_steps {} "
                       "--per_device_train_batch_size 2 --logging_steps 1 --save_steps 100 "
                       "--learning_rate 1e-3 --lora_rank 4 --load_from_cache_file false",
                       env, SWIFTLET_BINARY, model, tmp / "pairs.jsonl", out, accumulation);
  };
  const ProcessRun one = run_command(dpo(tmp / "one", 2, ""));
  ASSERT_EQ(one.status, 0) << one.out;
  const ProcessRun two = run_command(dpo(tmp / "two", 1, "NPROC_PER_NODE=2"));
  ASSERT_EQ(two.status, 0) << two.out;
  // ZeRO-2 with small buckets: the same again.
  const ProcessRun zero2 = run_command(dpo(tmp / "zero2", 1, "NPROC_PER_NODE=2") +
                                       " --deepspeed zero2 --ddp_bucket_cap_mb 0.004");
  ASSERT_EQ(zero2.status, 0) << zero2.out;
  const auto a = train_logs(tmp / "one");
  ASSERT_EQ(a.size(), 3u);
  for (const char* run : {"two", "zero2"}) {
    const auto b = train_logs(tmp / run);
    ASSERT_EQ(b.size(), 3u) << run;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), 2e-5) << run << i;
      EXPECT_NEAR(a[i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>(), 2e-5)
          << run << i;
      EXPECT_EQ(a[i]["rewards/accuracies"], b[i]["rewards/accuracies"]) << run << i;
    }
  }
}

struct Fault {
  const char* kind;
  int status;
  std::vector<std::string> says;
};

class DistFaults : public ::testing::TestWithParam<Fault> {};

TEST_P(DistFaults, OneRankBringsTheJobDownNamingItself) {
  const Fault& f = GetParam();
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  const std::string tag = new_tag();
  const ProcessRun r = run_command(
      sft(model, data, tmp / "out", 6, 1,
          fmt::format("NPROC_PER_NODE=2 SWIFTLET_FAULT=1:3:{} SWIFTLET_TEST_TAG={}", f.kind, tag)) +
      " --ddp_timeout 3");
  EXPECT_EQ(r.status, f.status) << r.out;
  for (const auto& s : f.says) EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
  EXPECT_LT(r.seconds, 25) << r.out;
  // mpirun reaped every rank before it exited.
  EXPECT_TRUE(processes_tagged(tag).empty()) << r.out;
  // No checkpoint was written for the failed step.
  for (const auto& run : fs::directory_iterator(tmp / "out"))
    EXPECT_FALSE(fs::exists(run.path() / "checkpoint-6"));
}

INSTANTIATE_TEST_SUITE_P(
    DistKinds, DistFaults,
    ::testing::Values(
        Fault{"error",
              1,
              // (Open MPI's own MPI_ABORT banner is sometimes lost; the rank's line is not.)
              {"error: [rank 1/2] failed while step 3/6: starting: fault injected by SWIFTLET_FAULT"}},
        Fault{"exit",
              3,
              {"[rank 0/2] stopped by the launcher (another rank failed or the job was cancelled) "
               "while step 3/6",
               "Exit code:    3"}},
        Fault{"kill",
              137,
              {"process rank 1 with PID", "exited on signal 9",
               "[rank 0/2] stopped by the launcher"}},
        Fault{"hang",
              124,
              {"error: [rank 0/2] all_reduce #", "did not complete within --ddp_timeout 3 s",
               "this rank was step 3/6: waiting for the gradient all-reduce",
               "[rank 0/2] stack of the main thread:", "[rank 1/2] stack of the main thread:",
               "swiftlet4dist12inject_fault"}}),
    [](const auto& info) { return std::string(info.param.kind); });

}  // namespace
}  // namespace swiftlet
