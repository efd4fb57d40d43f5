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

}  // namespace
}  // namespace swiftlet
