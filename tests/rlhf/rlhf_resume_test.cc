// `swiftlet rlhf` resumes exactly: a DPO run with bco_pair (whose running mean of the rewards is
// carried from step to step, in trainer_state.json's task_state) and a plain sigmoid run, each
// resumed from its middle checkpoint, log the same losses and metrics as the uninterrupted run.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/test_util.h"
#include "model/model_fixture.h"

namespace swiftlet {
namespace {

using testing::TempDir;
using json = nlohmann::json;

std::vector<json> train_logs(const std::string& path) {
  std::vector<json> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) {
      json j = json::parse(line);
      if (j.contains("loss")) out.push_back(j);
    }
  return out;
}

int sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(RlhfResume, ResumedRunsLogWhatTheUninterruptedOnesDo) {
  TempDir tmp;
  {
    std::ofstream f(tmp / "pairs.jsonl");
    for (int i = 0; i < 24; ++i)
      f << json{{"messages",
                 {{{"role", "user"}, {"content", fmt::format("Question {}?", i)}},
                  {{"role", "assistant"}, {"content", fmt::format("Answer {}.", i)}}}},
                {"rejected_response", fmt::format("Wrong {}.", i + 1)}}
               .dump()
        << "\n";
  }
  const std::string model = testing::tiny_model("tiny");
  for (const std::string loss : {"bco_pair", "sigmoid"}) {
    SCOPED_TRACE(loss);
    auto run = [&](const std::string& out, const std::string& extra) {
      const std::string cmd = fmt::format(
          "{} rlhf --model {} --dataset {} --rlhf_type dpo --loss_type {} --max_steps 6 "
          "--save_steps 3 "
          "--logging_steps 1 --per_device_train_batch_size 2 --gradient_accumulation_steps 2 "
          "--learning_rate 2e-3 --output_dir {} --add_version false {} > {}.log 2>&1",
          SWIFTLET_BINARY, model, tmp / "pairs.jsonl", loss, out, extra, out);
      EXPECT_EQ(sh(cmd), 0) << testing::read_bytes(out + ".log");
    };
    const std::string whole = tmp / (loss + "-whole"), resumed = tmp / (loss + "-resumed");
    run(whole, "");
    run(resumed, "--resume_from_checkpoint " + whole + "/checkpoint-3");
    const auto a = train_logs(whole + "/logging.jsonl"), b = train_logs(resumed + "/logging.jsonl");
    ASSERT_EQ(a.size(), 6u);
    ASSERT_EQ(b.size(), 3u);  // the resumed run's logging.jsonl holds its own steps 4-6
    for (size_t i = 0; i < 3; ++i)
      for (const char* k :
           {"loss", "grad_norm", "rewards/chosen", "rewards/margins", "logps/rejected"})
        EXPECT_EQ(a[3 + i][k], b[i][k]) << k << " at step " << i + 4;
    if (loss == "bco_pair") {
      const json st = json::parse(testing::read_bytes(whole + "/checkpoint-3/trainer_state.json"));
      EXPECT_TRUE(st.contains("task_state")) << st.dump();
    }
  }
}

// GRPO: the rollouts of a step depend only on the step (prompts, sampling seeds) and the weights,
// so a resumed run samples, rewards and trains exactly as the uninterrupted one. With
// num_iterations 2 every rollout is trained twice against old log-probs kept from generation time.
TEST(RlhfResume, GrpoResumesExactly) {
  TempDir tmp;
  {
    std::ofstream f(tmp / "prompts.jsonl");
    for (int i = 0; i < 12; ++i)
      f << json{{"messages", {{{"role", "user"}, {"content", fmt::format("Say {}.", i % 3)}}}},
                {"solution", std::to_string(i % 3)}}
               .dump()
        << "\n";
  }
  const std::string model = testing::tiny_model("tiny");
  for (const std::string extra : {"", "--num_iterations 2"}) {
    SCOPED_TRACE(extra);
    auto run = [&](const std::string& out, const std::string& more) {
      const std::string cmd = fmt::format(
          "{} rlhf --rlhf_type grpo --model {} --dataset {} --reward_funcs accuracy repetition "
          "--num_generations 4 --per_device_train_batch_size 4 --gradient_accumulation_steps 2 "
          "--max_completion_length 6 --max_steps 4 --save_steps 2 --logging_steps 1 "
          "--learning_rate 5e-3 --output_dir {} --add_version false {} {} > {}.log 2>&1",
          SWIFTLET_BINARY, model, tmp / "prompts.jsonl", out, extra, more, out);
      EXPECT_EQ(sh(cmd), 0) << testing::read_bytes(out + ".log");
    };
    const std::string tag = extra.empty() ? "mu1" : "mu2";
    const std::string whole = tmp / (tag + "-whole"), resumed = tmp / (tag + "-resumed");
    run(whole, "");
    run(resumed, "--resume_from_checkpoint " + whole + "/checkpoint-2");
    const auto a = train_logs(whole + "/logging.jsonl"), b = train_logs(resumed + "/logging.jsonl");
    ASSERT_EQ(a.size(), 4u);
    ASSERT_EQ(b.size(), 2u);
    for (size_t i = 0; i < 2; ++i)
      for (const char* k : {"loss", "grad_norm", "reward", "kl", "completions/mean_length"}) {
        // Steps without a generation log no reward or completion metrics, in both runs.
        ASSERT_EQ(a[2 + i].contains(k), b[i].contains(k)) << k << " at step " << i + 3;
        if (a[2 + i].contains(k)) {
          EXPECT_EQ(a[2 + i][k], b[i][k]) << k << " at step " << i + 3;
        }
      }
    // Steps 2 and 4 of the mu = 2 run train on the rollouts of steps 1 and 3 again: nothing is
    // generated (no reward logged); they train against the old log-probs kept at generation.
    EXPECT_EQ(a[1].contains("reward"), extra.empty());
    EXPECT_TRUE(a[2].contains("reward"));
  }
}

}  // namespace
}  // namespace swiftlet
