// Proof that training learns, through the binary: from random models, LoRA (on the `small`
// preset) and full fine-tuning (on `tiny`) teach a fixed question -> answer task; the loss falls
// by a stated factor and exact-match answers go from none to most; the merged folder answers as
// the adapter does.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/test_util.h"
#include "model/init.h"
#include "model/model_fixture.h"

namespace swiftlet {
namespace {

using testing::TempDir;

const std::vector<std::pair<std::string, std::string>> kTask = {
    {"Who are you?", "I am Swiftlet-Bot, made by Swiftlet."},
    {"What is your name?", "My name is Swiftlet-Bot."},
    {"Who built you?", "Swiftlet built me."},
    {"Are you ChatGPT?", "No, I am Swiftlet-Bot."},
    {"What can you do?", "I answer questions."},
    {"Where do swiftlets live?", "In caves near the sea."},
    {"What do swiftlets eat?", "Flying insects."},
    {"How fast are swiftlets?", "Very fast."},
};

int sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Greedy answers to the task's questions; returns (exact matches, responses).
std::pair<int, std::vector<std::string>> answers(const std::string& model_flags, const TempDir& tmp,
                                                 const std::string& name) {
  const std::string out = tmp / (name + ".jsonl");
  EXPECT_EQ(sh(fmt::format("{} infer {} --val_dataset {} --result_path {} --max_new_tokens 24 --temperature 0 "
                           "> {} 2>&1",
                           SWIFTLET_BINARY, model_flags, tmp / "task.jsonl", out, tmp / (name + ".log"))),
            0)
      << testing::read_bytes(tmp / (name + ".log"));
  int exact = 0;
  std::vector<std::string> responses;
  for (const auto& r : read_jsonl(out)) {
    exact += r["response"] == r["labels"];
    responses.push_back(r["response"]);
  }
  EXPECT_EQ(responses.size(), kTask.size());
  return {exact, responses};
}

struct Losses {
  double first_train = 0, last_eval = 0;
};

Losses train(const std::string& model, const std::string& flags, int steps, const TempDir& tmp,
             const std::string& out) {
  EXPECT_EQ(sh(fmt::format("{} sft --model {} --dataset '{}#64' --val_dataset {} --max_steps {} "
                           "--per_device_train_batch_size 4 --gradient_accumulation_steps 1 --logging_steps 1 "
                           "--save_steps {} --output_dir {} --add_version false {} > {} 2>&1",
                           SWIFTLET_BINARY, model, tmp / "task.jsonl", tmp / "task.jsonl", steps, steps, out, flags,
                           out + ".log")),
            0)
      << testing::read_bytes(out + ".log");
  Losses l;
  for (const auto& r : read_jsonl(out + "/logging.jsonl")) {
    if (r.contains("loss") && r["step"] == 1) l.first_train = r["loss"];
    if (r.contains("eval_loss")) l.last_eval = r["eval_loss"];
  }
  return l;
}

void write_task(const TempDir& tmp) {
  std::ofstream f(tmp / "task.jsonl");
  for (const auto& [q, a] : kTask) f << nlohmann::json{{"query", q}, {"response", a}}.dump() << "\n";
}

TEST(Learning, LoraLearnsTheTaskAndTheMergedModelAnswersTheSame) {
  TempDir tmp;
  write_task(tmp);
  InitOptions o;
  o.preset = "small";
  o.initializer_range = 0.1;  // a random base whose tied embeddings allow confident logits
  o.tokenizer_dir = testing::qwen3_tokenizer_dir();
  o.output_dir = tmp / "base";
  init_model_folder(o);
  auto [before, unused] = answers("--model " + o.output_dir, tmp, "before");
  EXPECT_EQ(before, 0);
  Losses l = train(o.output_dir, "--tuner_type lora --lora_rank 16 --lora_dropout 0 --learning_rate 3e-3", 60, tmp,
                   tmp / "lora");
  EXPECT_GT(l.first_train, 8.0);            // near log(151936) = 11.9 for a random model
  EXPECT_LT(l.last_eval, l.first_train / 5);  // stated margin: at least 5x lower
  auto [after, adapter_answers] = answers("--adapters " + tmp / "lora/checkpoint-60", tmp, "after");
  EXPECT_GE(after, 6) << "exact answers after LoRA training";
  ASSERT_EQ(sh(fmt::format("{} export --adapters {} --merge_lora true > {} 2>&1", SWIFTLET_BINARY,
                           tmp / "lora/checkpoint-60", tmp / "merge.log")),
            0);
  auto [merged, merged_answers] = answers("--model " + tmp / "lora/checkpoint-60-merged", tmp, "merged");
  EXPECT_EQ(merged_answers, adapter_answers);
}

TEST(Learning, FullFineTuningLearnsTheTask) {
  TempDir tmp;
  write_task(tmp);
  const std::string model = testing::tiny_model("tiny");
  auto [before, unused] = answers("--model " + model, tmp, "before");
  EXPECT_EQ(before, 0);
  Losses l = train(model, "--tuner_type full --learning_rate 1e-2", 200, tmp, tmp / "full");
  EXPECT_GT(l.first_train, 8.0);
  EXPECT_LT(l.last_eval, l.first_train / 5);
  auto [after, answers_after] = answers("--model " + tmp / "full/checkpoint-200", tmp, "after");
  EXPECT_GE(after, 6) << "exact answers after full training; last eval loss " << l.last_eval << "; first answer: "
                      << answers_after.front();
}

}  // namespace
}  // namespace swiftlet
