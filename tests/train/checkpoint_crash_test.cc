// A checkpoint save never damages the last good checkpoint: training killed (kill -9) at many
// points of back-to-back saves leaves only complete checkpoints, each of which resumes; a disk that
// fills up during a save (a file size limit, so writes fail with EFBIG as they would with ENOSPC)
// fails the run with one sentence and leaves the previous checkpoints byte for byte as they were.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
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

std::string write_dataset(const TempDir& tmp) {
  const std::string path = tmp / "data.jsonl";
  std::ofstream f(path);
  for (int i = 0; i < 16; ++i)
    f << nlohmann::json{{"messages",
                         {{{"role", "user"}, {"content", fmt::format("Count to {}.", i)}},
                          {{"role", "assistant"}, {"content", fmt::format("{} {}", i, i + 1)}}}}}
             .dump()
      << "\n";
  return path;
}

std::string sft_args(const std::string& data, const std::string& out, int steps,
                     const std::string& extra) {
  return fmt::format(
      "sft --model {} --dataset {} --output_dir {} --add_version false --max_steps {} "
      "--save_steps 1 --logging_steps 1 --per_device_train_batch_size 1 "
      "--gradient_accumulation_steps 1 --lora_rank 4 --threads 1 {}",
      testing::tiny_model("tiny"), data, out, steps, extra);
}

// Runs `swiftlet ARGS` in a child; `fsize` > 0 caps the size of every file it writes (with
// SIGXFSZ ignored, a write past it fails with EFBIG). `kill_after` > 0: SIGKILL after that long.
// Returns the exit code (-9 when killed).
int run(const std::string& args, const std::string& log, rlim_t fsize = 0,
        std::chrono::milliseconds kill_after = std::chrono::milliseconds(0)) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (fsize > 0) {
      ::signal(SIGXFSZ, SIG_IGN);
      rlimit r{fsize, fsize};
      ::setrlimit(RLIMIT_FSIZE, &r);
    }
    const std::string cmd = fmt::format("exec {} {} > {} 2>&1", SWIFTLET_BINARY, args, log);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    _exit(127);
  }
  if (kill_after.count() > 0) {
    std::this_thread::sleep_for(kill_after);
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<int64_t> checkpoint_steps(const std::string& dir) {
  std::vector<int64_t> out;
  static const std::regex re("checkpoint-(\\d+)");
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, m, re)) out.push_back(std::stoll(m[1]));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Every file of a LoRA checkpoint is there and parses.
void expect_complete(const std::string& ckpt) {
  for (const char* f : {"adapter_model.safetensors", "adapter_config.json",
                        "optimizer.safetensors", "trainer_state.json", "args.json",
                        "tokenizer.json"})
    ASSERT_TRUE(fs::exists(fs::path(ckpt) / f)) << ckpt << " lacks " << f;
  for (const char* f : {"adapter_config.json", "trainer_state.json", "args.json"})
    EXPECT_FALSE(nlohmann::json::parse(testing::read_bytes(fs::path(ckpt) / f), nullptr, false)
                     .is_discarded())
        << ckpt << "/" << f;
}

std::map<std::string, std::string> files_of(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    out[e.path().filename().string()] = testing::read_bytes(e.path().string());
  return out;
}

TEST(CheckpointCrash, KillsDuringSavesLeaveOnlyCompleteCheckpointsThatResume) {
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  // A save every step, the two newest kept (rotation deletes while the run goes on).
  const std::string args = sft_args(data, tmp / "out", 400, "--save_total_limit 2");
  int killed = 0, resumed = 0;
  for (int i = 0; i < 8; ++i) {
    fs::remove_all(tmp / "out");
    // Kill points spread over the run's first seconds (model load, first steps, saves).
    const int rc = run(args, tmp / "log.txt", 0, std::chrono::milliseconds(700 + 230 * i));
    if (rc != -SIGKILL) continue;  // finished or failed before the kill: nothing to learn
    ++killed;
    const std::vector<int64_t> steps = checkpoint_steps(tmp / "out");
    for (int64_t s : steps) expect_complete(tmp / fmt::format("out/checkpoint-{}", s));
    if (steps.empty()) continue;
    // The newest checkpoint resumes (one more step, into a new version folder).
    const int64_t last = steps.back();
    EXPECT_EQ(run(sft_args(data, tmp / "resumed", int(last + 1),
                           fmt::format("--resume_from_checkpoint {}/out/checkpoint-{}",
                                       tmp.path(), last)),
                  tmp / "resume.txt"),
              0)
        << testing::read_bytes(tmp / "resume.txt");
    fs::remove_all(tmp / "resumed");
    ++resumed;
  }
  EXPECT_GE(killed, 6) << testing::read_bytes(tmp / "log.txt");
  EXPECT_GE(resumed, 5) << "most kills came before the first save: " << testing::read_bytes(tmp / "log.txt");
}

TEST(CheckpointCrash, FullDiskDuringASaveFailsCleanlyAndKeepsTheLastCheckpoint) {
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  const std::string out = tmp / "out";
  ASSERT_EQ(run(sft_args(data, out, 2, ""), tmp / "first.txt"), 0)
      << testing::read_bytes(tmp / "first.txt");
  const std::string ckpt = out + "/checkpoint-2";
  expect_complete(ckpt);
  const auto before = files_of(ckpt);
  const rlim_t limit = rlim_t(fs::file_size(ckpt + "/adapter_model.safetensors") / 2);

  // Resumed into the same folder with room for the small files but not for the adapter: the save
  // of checkpoint-3 fails.
  const std::string resume = fmt::format("--resume_from_checkpoint {}", ckpt);
  const int rc = run(sft_args(data, out, 4, resume), tmp / "full.txt", limit);
  const std::string log = testing::read_bytes(tmp / "full.txt");
  EXPECT_EQ(rc, 1) << log;
  EXPECT_NE(log.find("error: saving checkpoint-3 failed: cannot write"), std::string::npos) << log;
  EXPECT_NE(log.find("File too large"), std::string::npos) << log;
  EXPECT_EQ(checkpoint_steps(out), (std::vector<int64_t>{1, 2}));
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".checkpoint-"), std::string::npos)
        << "left behind: " << e.path();
  EXPECT_EQ(files_of(ckpt), before);

  // With room again, the same resume completes.
  ASSERT_EQ(run(sft_args(data, out, 4, resume), tmp / "again.txt"), 0)
      << testing::read_bytes(tmp / "again.txt");
  EXPECT_EQ(checkpoint_steps(out), (std::vector<int64_t>{1, 2, 3, 4}));
  expect_complete(out + "/checkpoint-4");
}

}  // namespace
}  // namespace swiftlet
