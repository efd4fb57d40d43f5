// End to end: the built `swiftlet sft` / `swiftlet pt` binary trains a tiny random Qwen3 model for
// a few steps on small datasets and writes its run folder (checkpoint, val_dataset.jsonl); a bad
// dataset ends the process with one error line naming the file and line.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "data/data_fixture.h"

namespace swiftlet {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::write_text;

struct CliRun {
  int status;
  std::string output;
};

CliRun run_swiftlet(const TempDir& dir, const std::string& args) {
  const std::string log = dir / "log.txt";
  const std::string cmd = fmt::format("cd '{}' && SWIFTLET_CACHE='{}' '{}' {} > '{}' 2>&1",
                                      dir.path(), dir / "cache", SWIFTLET_BINARY, args, log);
  const int status = std::system(cmd.c_str());
  return {status, testing::read_bytes(log)};
}

std::string only_run_folder(const std::string& output_dir) {
  std::vector<fs::path> runs;
  for (const auto& e : fs::directory_iterator(output_dir)) runs.push_back(e.path());
  EXPECT_EQ(runs.size(), 1u);
  return runs.empty() ? "" : runs[0].string();
}

class DataSftCli : public ::testing::Test {
 protected:
  void SetUp() override { SWIFTLET_REQUIRE_QWEN3_TOKENIZER(); }
  TempDir dir;
};

TEST_F(DataSftCli, SftTrainsAFewStepsAndWritesACheckpointAndTheValSplit) {
  const std::string model = testing::tiny_model("tiny");
  std::string rows;
  for (int i = 0; i < 24; ++i)
    rows +=
        fmt::format(
            R"({{"messages": [{{"role": "user", "content": "What is {} + {}?"}}, {{"role": "assistant", "content": "{}"}}]}})",
            i, i + 1, 2 * i + 1) +
        "\n";
  write_text(dir / "train.jsonl", rows);
  const CliRun r = run_swiftlet(
      dir,
      fmt::format("sft --model '{}' --dataset train.jsonl swiftlet/self-cognition#8 "
                  "--model_name Tiny --model_author Tests --split_dataset_ratio 0.25 "
                  "--max_steps 2 --per_device_train_batch_size 2 --gradient_accumulation_steps 2 "
                  "--group_by_length true --save_steps 2 --output_dir out --threads 1",
                  model));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("dataset train.jsonl: 24 rows"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("split 18 train / 6 val"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("group_by_length: 24 train samples in 12 micro-batches"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("batch 1 x accumulation 2"), std::string::npos) << r.output;
  const std::string run = only_run_folder(dir / "out");
  EXPECT_TRUE(fs::exists(fs::path(run) / "checkpoint-2" / "adapter_model.safetensors")) << r.output;
  EXPECT_TRUE(fs::exists(fs::path(run) / "args.json"));
  // 6 rows of train.jsonl and 2 of the 8 self-cognition rows were carved out for validation.
  const std::string val = testing::read_bytes(fs::path(run) / "val_dataset.jsonl");
  EXPECT_EQ(std::count(val.begin(), val.end(), '\n'), 8) << val;
}

TEST_F(DataSftCli, PtWithPackingTrains) {
  const std::string model = testing::tiny_model("tiny");
  std::string text;
  for (int i = 0; i < 20; ++i)
    text += fmt::format("Paragraph {} of a small corpus about counting.\n", i);
  write_text(dir / "corpus.txt", text);
  const CliRun r = run_swiftlet(
      dir, fmt::format("pt --model '{}' --dataset corpus.txt --packing true --max_length 64 "
                       "--max_steps 1 --gradient_accumulation_steps 1 --output_dir out --threads 1",
                       model));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("template plain, loss on every token"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("packing: 20 train samples into"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(fs::path(only_run_folder(dir / "out")) / "checkpoint-1"));
}

TEST_F(DataSftCli, ABadRowEndsTheRunWithAnErrorNamingFileAndLine) {
  const std::string model = testing::tiny_model("tiny");
  write_text(dir / "bad.jsonl", R"({"query": "a", "response": "b"})"
                                "\n"
                                R"({"query": "a", "response": )"
                                "\n");
  const CliRun r =
      run_swiftlet(dir, fmt::format("sft --model '{}' --dataset bad.jsonl --split_dataset_ratio "
                                    "0.5 --max_steps 1 --output_dir out",
                                    model));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("error: bad.jsonl line 2: malformed JSON"), std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(dir / "out")) << "no run folder for a run that never started";
}

}  // namespace
}  // namespace swiftlet
