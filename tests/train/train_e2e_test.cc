// `swiftlet sft` end to end through the binary: the run layout ms-swift users expect, exact resume
// after a kill -9, checkpoint limits, infer with the adapter, and merge.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "io/test_util.h"
#include "model/model_fixture.h"

namespace swiftlet {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

int sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string write_dataset(const TempDir& tmp) {
  const std::string path = tmp / "data.jsonl";
  std::ofstream f(path);
  const char* words[] = {"red", "blue", "green", "cat", "dog", "sun", "moon", "tree"};
  for (int i = 0; i < 24; ++i)
    f << nlohmann::json{{"messages", {{{"role", "user"}, {"content", fmt::format("Say {} twice.", words[i % 8])}},
                                      {{"role", "assistant"}, {"content", fmt::format("{0} {0}", words[i % 8])}}}}}
             .dump()
      << "\n";
  return path;
}

std::string only_run_dir(const std::string& out) {
  std::vector<std::string> runs;
  for (const auto& e : fs::directory_iterator(out)) runs.push_back(e.path().string());
  EXPECT_EQ(runs.size(), 1u) << out;
  return runs.empty() ? "" : runs.front();
}

std::string sft_cmd(const std::string& model, const std::string& data, const std::string& out, int steps,
                    const std::string& extra = "") {
  return fmt::format("{} sft --model {} --dataset {} --output_dir {} --max_steps {} --save_steps 4 "
                     "--logging_steps 1 --per_device_train_batch_size 2 --gradient_accumulation_steps 2 "
                     "--learning_rate 1e-3 --lora_rank 4 --threads 2 {} > {}/log.txt 2>&1",
                     SWIFTLET_BINARY, model, data, out, steps, extra, fs::path(out).parent_path().string());
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(TrainE2E, RunLayoutAndFilesAsMsSwift) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  ASSERT_EQ(sh(sft_cmd(model, data, tmp / "out", 6, "--split_dataset_ratio 0.25 --save_total_limit 1")), 0)
      << testing::read_bytes(tmp / "log.txt");
  const std::string run = only_run_dir(tmp / "out");
  EXPECT_TRUE(std::regex_match(fs::path(run).filename().string(), std::regex("v0-\\d{8}-\\d{6}")));
  for (const char* f : {"args.json", "logging.jsonl", "val_dataset.jsonl", "images/train_loss.png",
                        "images/eval_loss.png", "checkpoint-6/adapter_config.json",
                        "checkpoint-6/adapter_model.safetensors", "checkpoint-6/optimizer.safetensors",
                        "checkpoint-6/trainer_state.json", "checkpoint-6/tokenizer.json", "checkpoint-6/args.json"})
    EXPECT_TRUE(fs::exists(fs::path(run) / f)) << f;
  // save_total_limit 1 keeps the last (and best) checkpoint only.
  EXPECT_FALSE(fs::exists(fs::path(run) / "checkpoint-4"));
  bool events = false;
  for (const auto& e : fs::directory_iterator(fs::path(run) / "runs"))
    events |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0 && fs::file_size(e.path()) > 100;
  EXPECT_TRUE(events);
  auto logs = read_jsonl(run + "/logging.jsonl");
  int train_rows = 0;
  for (const auto& r : logs) {
    if (r.contains("loss")) {
      ++train_rows;
      for (const char* k : {"grad_norm", "learning_rate", "token_acc", "epoch", "global_step/max_steps",
                            "elapsed_time", "remaining_time", "memory(GiB)"})
        EXPECT_TRUE(r.contains(k)) << k;
      EXPECT_TRUE(std::isfinite(r["loss"].get<double>()));
    }
  }
  EXPECT_EQ(train_rows, 6);
  nlohmann::json state = nlohmann::json::parse(std::ifstream(run + "/checkpoint-6/trainer_state.json"));
  EXPECT_EQ(state["global_step"], 6);
  EXPECT_FALSE(state["best_model_checkpoint"].is_null());
  // A PNG file really.
  EXPECT_EQ(testing::read_bytes(run + "/images/train_loss.png").substr(1, 3), "PNG");

  // infer with the adapter alone: the base model comes from args.json.
  {
    std::ofstream q(tmp / "q.jsonl");
    q << R"({"messages": [{"role": "user", "content": "Say red twice."}, {"role": "assistant", "content": "red red"}]})" << "\n";
  }
  ASSERT_EQ(sh(fmt::format("{} infer --adapters {}/checkpoint-6 --val_dataset {} --result_path {} --max_new_tokens 4 "
                           "--temperature 0 > {} 2>&1",
                           SWIFTLET_BINARY, run, tmp / "q.jsonl", tmp / "res.jsonl", tmp / "infer.txt")),
            0)
      << testing::read_bytes(tmp / "infer.txt");
  auto res = read_jsonl(tmp / "res.jsonl");
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0]["labels"], "red red");
  EXPECT_TRUE(res[0].contains("response"));

  // --load_data_args: the run's carved validation split, with the run's template.
  ASSERT_EQ(sh(fmt::format("{} infer --adapters {}/checkpoint-6 --load_data_args true --result_path {} "
                           "--max_new_tokens 2 --temperature 0 > {} 2>&1",
                           SWIFTLET_BINARY, run, tmp / "val.jsonl", tmp / "infer3.txt")),
            0)
      << testing::read_bytes(tmp / "infer3.txt");
  EXPECT_EQ(read_jsonl(tmp / "val.jsonl").size(), read_jsonl(run + "/val_dataset.jsonl").size());
  EXPECT_EQ(read_jsonl(tmp / "val.jsonl").size(), 6u);

  // merge, then the merged folder answers exactly as base + adapter (greedy).
  ASSERT_EQ(sh(fmt::format("{} export --adapters {}/checkpoint-6 --merge_lora true > {} 2>&1", SWIFTLET_BINARY, run,
                           tmp / "export.txt")),
            0)
      << testing::read_bytes(tmp / "export.txt");
  ASSERT_EQ(sh(fmt::format("{} infer --model {}/checkpoint-6-merged --val_dataset {} --result_path {} "
                           "--max_new_tokens 4 --temperature 0 > {} 2>&1",
                           SWIFTLET_BINARY, run, tmp / "q.jsonl", tmp / "res2.jsonl", tmp / "infer2.txt")),
            0)
      << testing::read_bytes(tmp / "infer2.txt");
  auto res2 = read_jsonl(tmp / "res2.jsonl");
  ASSERT_EQ(res2.size(), 1u);
  EXPECT_EQ(res2[0]["response"], res[0]["response"]);
}

TEST(TrainE2E, ResumeAfterKillMatchesUninterruptedRunBitForBit) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  const int steps = 16;
  ASSERT_EQ(sh(sft_cmd(model, data, tmp / "full", steps)), 0) << testing::read_bytes(tmp / "log.txt");
  const std::string full = only_run_dir(tmp / "full");

  // Start the same run, kill -9 it as soon as its first checkpoint is complete.
  const std::string cmd = sft_cmd(model, data, tmp / "killed", steps, "--save_total_limit -1");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
    _exit(127);
  }
  std::string run;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(tmp / "killed"))
      for (const auto& e : fs::directory_iterator(tmp / "killed"))
        if (fs::exists(e.path() / "checkpoint-4" / "trainer_state.json")) run = e.path().string();
    if (!run.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_FALSE(run.empty()) << "no checkpoint appeared";
  // The latest complete checkpoint (a kill during a save leaves only a hidden .tmp folder).
  int64_t latest = 0;
  for (const auto& e : fs::directory_iterator(run)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, m, std::regex("checkpoint-(\\d+)"))) latest = std::max<int64_t>(latest, std::stoll(m[1]));
  }
  ASSERT_GE(latest, 4);
  if (latest >= steps) GTEST_SKIP() << "the run finished before it could be killed";
  ASSERT_EQ(sh(sft_cmd(model, data, tmp / "killed", steps,
                       fmt::format("--resume_from_checkpoint {}/checkpoint-{}", run, latest))),
            0)
      << testing::read_bytes(tmp / "log.txt");
  // The resumed run is a new version folder; its final adapter and optimizer state equal the
  // uninterrupted run's byte for byte, and so do its logged losses.
  std::string resumed;
  for (const auto& e : fs::directory_iterator(tmp / "killed"))
    if (e.path().string() != run) resumed = e.path().string();
  ASSERT_FALSE(resumed.empty());
  const std::string last = fmt::format("/checkpoint-{}/", steps);
  EXPECT_EQ(testing::read_bytes(full + last + "adapter_model.safetensors"),
            testing::read_bytes(resumed + last + "adapter_model.safetensors"));
  EXPECT_EQ(testing::read_bytes(full + last + "optimizer.safetensors"),
            testing::read_bytes(resumed + last + "optimizer.safetensors"));
  std::map<int64_t, double> a, b;
  for (const auto& r : read_jsonl(full + "/logging.jsonl"))
    if (r.contains("loss")) a[r["step"]] = r["loss"];
  for (const auto& r : read_jsonl(resumed + "/logging.jsonl"))
    if (r.contains("loss")) b[r["step"]] = r["loss"];
  ASSERT_FALSE(b.empty());
  for (const auto& [step, loss] : b) EXPECT_EQ(loss, a.at(step)) << "step " << step;
}

TEST(TrainE2E, BadSettingsAreOneLineErrors) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  auto run = [&](const std::string& args) {
    const int rc = sh(fmt::format("{} sft --model {} --dataset {} --output_dir {} {} > {} 2>&1", SWIFTLET_BINARY,
                                  model, data, tmp / "o", args, tmp / "err.txt"));
    return std::make_pair(rc, testing::read_bytes(tmp / "err.txt"));
  };
  auto [rc1, e1] = run("--tuner_type qlora --max_steps 1");
  EXPECT_NE(rc1, 0);
  EXPECT_NE(e1.find("error: --tuner_type qlora is not supported"), std::string::npos) << e1;
  auto [rc2, e2] = run("--lr_scheduler_type warmup_cosine --max_steps 1");
  EXPECT_NE(rc2, 0);
  EXPECT_NE(e2.find("--lr_scheduler_type warmup_cosine is not supported"), std::string::npos) << e2;
  auto [rc3, e3] = run("--resume_from_checkpoint /nonexistent/checkpoint-3 --max_steps 1");
  EXPECT_NE(rc3, 0);
  EXPECT_NE(e3.find("error:"), std::string::npos) << e3;
  auto [rc4, e4] = run("--lora_rnak 4");
  EXPECT_NE(rc4, 0);
  EXPECT_NE(e4.find("did you mean --lora_rank?"), std::string::npos) << e4;
}

TEST(TrainE2E, ModulesToSaveTrainMergeAndInfer) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  ASSERT_EQ(sh(sft_cmd(model, data, tmp / "out", 4, "--modules_to_save embed_tokens all-norm --learning_rate 1e-2")), 0)
      << testing::read_bytes(tmp / "log.txt");
  const std::string ckpt = only_run_dir(tmp / "out") + "/checkpoint-4";
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(ckpt + "/adapter_config.json"));
  EXPECT_EQ(cfg["modules_to_save"], nlohmann::json({"embed_tokens", "all-norm"}));
  ASSERT_EQ(sh(fmt::format("{} export --adapters {} --merge_lora true > {} 2>&1", SWIFTLET_BINARY, ckpt, tmp / "e.txt")), 0)
      << testing::read_bytes(tmp / "e.txt");
  {
    std::ofstream q(tmp / "q.jsonl");
    q << R"({"query": "Say red twice."})" << "\n" << R"({"query": "Say moon twice."})" << "\n";
  }
  for (const auto& [flags, out] : {std::pair<std::string, std::string>{"--adapters " + ckpt, "a.jsonl"},
                                   {"--model " + ckpt + "-merged", "m.jsonl"}, {"--model " + model, "b.jsonl"}})
    ASSERT_EQ(sh(fmt::format("{} infer {} --val_dataset {} --result_path {} --max_new_tokens 6 --temperature 0 > {} 2>&1",
                             SWIFTLET_BINARY, flags, tmp / "q.jsonl", tmp / out, tmp / "i.txt")),
              0)
        << testing::read_bytes(tmp / "i.txt");
  auto a = read_jsonl(tmp / "a.jsonl"), m = read_jsonl(tmp / "m.jsonl"), b = read_jsonl(tmp / "b.jsonl");
  ASSERT_EQ(a.size(), 2u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i]["response"], m[i]["response"]);
  EXPECT_NE(a, b);  // training changed the answers
  // Refused where it cannot apply.
  EXPECT_NE(sh(sft_cmd(model, data, tmp / "bad", 2, "--modules_to_save lm_head")), 0);
  EXPECT_NE(testing::read_bytes(tmp / "log.txt").find("ties lm_head to embed_tokens"), std::string::npos);
}

TEST(TrainE2E, ResumeOnlyModelFromAWeightsOnlyCheckpoint) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  ASSERT_EQ(sh(sft_cmd(model, data, tmp / "a", 4, "--save_only_model true")), 0) << testing::read_bytes(tmp / "log.txt");
  const std::string ckpt = only_run_dir(tmp / "a") + "/checkpoint-4";
  EXPECT_FALSE(std::filesystem::exists(ckpt + "/optimizer.safetensors"));
  // Without the optimizer state a full resume is refused with a hint; --resume_only_model works.
  EXPECT_NE(sh(sft_cmd(model, data, tmp / "b", 8, "--resume_from_checkpoint " + ckpt)), 0);
  EXPECT_NE(testing::read_bytes(tmp / "log.txt").find("--resume_only_model"), std::string::npos);
  ASSERT_EQ(sh(sft_cmd(model, data, tmp / "c", 8, "--resume_from_checkpoint " + ckpt + " --resume_only_model true")), 0)
      << testing::read_bytes(tmp / "log.txt");
  const std::string run = only_run_dir(tmp / "c");
  EXPECT_TRUE(std::filesystem::exists(run + "/checkpoint-8/adapter_model.safetensors"));
  int64_t first_step = -1;
  for (const auto& r : read_jsonl(run + "/logging.jsonl"))
    if (r.contains("loss") && first_step < 0) first_step = r["step"];
  EXPECT_EQ(first_step, 5);  // the step counter continues from the checkpoint
}

}  // namespace
}  // namespace swiftlet
