// Proof that `swiftlet rlhf --rlhf_type grpo` learns, through the binary, with rollouts on the
// engine over the weights being trained. A weak SFT model answers "who are you" questions half as
// Swiftlet and half as ChatGPT (it saw both); GRPO with the programmatic `accuracy` reward against
// a `solution` column ("I am Swiftlet.") turns its greedy answers to held-out questions to the
// rewarded one, and the logged reward rises. The run also writes completions.jsonl and the
// ms-swift metric names. LoRA (reference: the adapter switched off) and full training (reference: a
// frozen copy) both learn.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/test_util.h"
#include "model/model_fixture.h"
#include "rlhf/who_are_you.h"

namespace swiftlet {
namespace {

using testing::TempDir;
using json = nlohmann::json;
using namespace who_are_you;

json user(const std::string& q) { return json::array({{{"role", "user"}, {"content", q}}}); }

void write_data(const TempDir& tmp) {
  std::ofstream sft(tmp / "sft.jsonl"), prompts(tmp / "prompts.jsonl"), val(tmp / "val.jsonl"),
      held(tmp / "held.jsonl");
  for (int i = 0; i < 30; ++i) {
    json m = user(question(i));
    m.push_back({{"role", "assistant"}, {"content", i % 2 ? kGood : kBad}});
    sft << json{{"messages", m}}.dump() << "\n";
    prompts << json{{"messages", user(question(i))}, {"solution", kGood}}.dump() << "\n";
  }
  for (int i = 30; i < 36; ++i) {
    val << json{{"messages", user(question(i))}, {"solution", kGood}}.dump() << "\n";
    json m = user(question(i));
    m.push_back({{"role", "assistant"}, {"content", kGood}});
    held << json{{"messages", m}}.dump() << "\n";
  }
}

TEST(GrpoLearning, AccuracyRewardTurnsHeldOutAnswers) {
  TempDir tmp;
  write_data(tmp);
  const std::string sft = weak_sft(tmp);
  const int before = good_answers("--model " + sft, tmp, "before");
  EXPECT_LE(before, 4) << "the weak model should not already prefer one answer";
  for (const std::string tuner : {"lora", "full"}) {
    SCOPED_TRACE(tuner);
    const std::string out = tmp / ("grpo-" + tuner);
    const int steps = 16;
    ASSERT_EQ(sh(fmt::format(
                  "{} rlhf --rlhf_type grpo --model {} --dataset {} --val_dataset {} "
                  "--reward_funcs accuracy --num_generations 8 --per_device_train_batch_size 16 "
                  "--max_completion_length 10 --temperature 1.0 --tuner_type {} "
                  "--learning_rate {} --max_steps {} --save_steps {} --eval_steps {} "
                  "--logging_steps 1 --log_completions true --output_dir {} --add_version false "
                  "> {} 2>&1",
                  SWIFTLET_BINARY, sft, tmp / "prompts.jsonl", tmp / "val.jsonl", tuner,
                  tuner == "lora" ? "5e-3" : "3e-4", steps, steps, steps / 2, out, out + ".log")),
              0)
        << testing::read_bytes(out + ".log");
    std::vector<json> train, eval;
    for (const auto& r : read_jsonl(out + "/logging.jsonl"))
      (r.contains("eval_reward") ? eval : train).push_back(r);
    ASSERT_GE(train.size(), size_t(steps));
    ASSERT_EQ(eval.size(), 2u);
    for (const char* k :
         {"loss", "reward", "reward_std", "frac_reward_zero_std", "rewards/MathAccuracy/mean",
          "rewards/MathAccuracy/std", "kl", "clip_ratio/low_mean", "clip_ratio/high_mean",
          "clip_ratio/region_mean", "clip_ratio/low_min", "clip_ratio/high_max",
          "completions/mean_length", "completions/min_length", "completions/max_length",
          "completions/clipped_ratio", "time/rollout_s", "time/train_s"})
      EXPECT_TRUE(train.front().contains(k)) << k;
    // num_iterations 1: the old policy is the current one, so nothing is clipped.
    EXPECT_EQ(train.front()["clip_ratio/region_mean"].get<double>(), 0.0);
    EXPECT_NEAR(train.front()["kl"].get<double>(), 0.0,
                1e-6);  // the policy starts as the reference
    // Sampled rewards are noisy with two prompts a step: compare the first two steps with the last
    // eight.
    double first = 0, last = 0;
    for (size_t i = 0; i < 2; ++i) first += train[i]["reward"].get<double>() / 2;
    for (size_t i = train.size() - 8; i < train.size(); ++i)
      last += train[i]["reward"].get<double>() / 8;
    EXPECT_GT(last, first + 0.1) << "mean reward of the last 8 steps over the first 2";
    EXPECT_GE(eval.back()["eval_reward"].get<double>(), 0.5);
    const auto completions = read_jsonl(out + "/completions.jsonl");
    ASSERT_EQ(completions.size(), size_t(16 * steps));
    for (const char* k : {"step", "prompt", "completion", "MathAccuracy", "reward", "advantage"})
      EXPECT_TRUE(completions.front().contains(k)) << k;
    EXPECT_EQ(completions.back()["step"], steps);
    const std::string ckpt = out + "/checkpoint-" + std::to_string(steps);
    const int after =
        good_answers((tuner == "lora" ? "--adapters " : "--model ") + ckpt, tmp, "after-" + tuner);
    EXPECT_GE(after, 5) << "held-out greedy answers that are the rewarded one, of 6 (before: "
                        << before << ")";
  }
}

// --reward_model: a reward model trained by `rlhf --rlhf_type rm` (full, so its checkpoint is a
// sequence-classifier folder) scores every completion; the reward logged for a completion is the
// score `infer` gives the prompt with that completion as the reply.
TEST(GrpoLearning, RewardModelScoresCompletionsAsInferDoes) {
  TempDir tmp;
  write_data(tmp);
  {
    std::ofstream pairs(tmp / "pairs.jsonl");
    for (int i = 0; i < 8; ++i) {
      json m = user(question(i));
      m.push_back({{"role", "assistant"}, {"content", kGood}});
      pairs << json{{"messages", m}, {"rejected_response", kBad}}.dump() << "\n";
    }
  }
  const std::string model = testing::tiny_model("tiny");
  ASSERT_EQ(
      sh(fmt::format("{} rlhf --rlhf_type rm --tuner_type full --model {} --dataset {} "
                     "--max_steps 2 --save_steps 2 --per_device_train_batch_size 4 "
                     "--gradient_accumulation_steps 1 --output_dir {} --add_version false "
                     "> {} 2>&1",
                     SWIFTLET_BINARY, model, tmp / "pairs.jsonl", tmp / "rm", tmp / "rm.log")),
      0)
      << testing::read_bytes(tmp / "rm.log");
  const std::string rm = tmp / "rm/checkpoint-2";
  const std::string out = tmp / "grpo-rm";
  ASSERT_EQ(sh(fmt::format("{} rlhf --rlhf_type grpo --model {} --dataset {} --reward_model {} "
                           "--num_generations 4 --per_device_train_batch_size 4 "
                           "--max_completion_length 6 --max_steps 1 --logging_steps 1 "
                           "--log_completions true --output_dir {} --add_version false > {} 2>&1",
                           SWIFTLET_BINARY, model, tmp / "prompts.jsonl", rm, out, out + ".log")),
            0)
      << testing::read_bytes(out + ".log");
  const auto logged = read_jsonl(out + "/logging.jsonl");
  ASSERT_FALSE(logged.empty());
  EXPECT_TRUE(logged.front().contains("rewards/checkpoint-2/mean")) << logged.front().dump();
  const auto completions = read_jsonl(out + "/completions.jsonl");
  ASSERT_EQ(completions.size(), 4u);
  // The prompt of the run's first generation, found by its rendered text.
  std::string question_text;
  for (int i = 0; i < 30; ++i)
    if (completions[0]["prompt"].get<std::string>().find(question(i) + "<|im_end|>") !=
        std::string::npos)
      question_text = question(i);
  ASSERT_FALSE(question_text.empty());
  {
    std::ofstream rows(tmp / "scored.jsonl");
    for (const auto& c : completions) {
      json m = user(question_text);
      m.push_back({{"role", "assistant"}, {"content", c["completion"]}});
      rows << json{{"messages", m}}.dump() << "\n";
    }
  }
  ASSERT_EQ(sh(fmt::format("{} infer --model {} --val_dataset {} --result_path {} > {} 2>&1",
                           SWIFTLET_BINARY, rm, tmp / "scored.jsonl", tmp / "scores.jsonl",
                           tmp / "scores.log")),
            0)
      << testing::read_bytes(tmp / "scores.log");
  const auto scores = read_jsonl(tmp / "scores.jsonl");
  ASSERT_EQ(scores.size(), 4u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_NEAR(completions[i]["checkpoint-2"].get<double>(), scores[i]["score"].get<double>(),
                1e-5)
        << completions[i]["completion"];
}

}  // namespace
}  // namespace swiftlet
