// Proof that `swiftlet rlhf --rlhf_type ppo` learns, through the binary: a reward model trained
// in-test (`rlhf --rlhf_type rm`, full) prefers "I am Swiftlet." over "I am ChatGPT."; PPO from
// the weak SFT model of who_are_you.h, with that reward model as reward and as the critic's start,
// raises the reward model's mean score of the greedy answers to held-out questions (scored by
// `infer` on the reward model) by at least 1.0 — the two answers are about 2.6 apart — and turns
// them to the rewarded one. The run logs TRL's metric names and the rollout / training time split,
// and its checkpoints hold value_model/. A run resumed from a checkpoint inside an update (PPO
// epochs of one rollout batch span several steps) logs and saves exactly what the uninterrupted
// one does, for LoRA and full training.
#include <cmath>
#include <gtest/gtest.h>

#include <filesystem>
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
  std::ofstream sft(tmp / "sft.jsonl"), prompts(tmp / "prompts.jsonl"), held(tmp / "held.jsonl"),
      pairs(tmp / "pairs.jsonl");
  for (int i = 0; i < 30; ++i) {
    json m = user(question(i));
    m.push_back({{"role", "assistant"}, {"content", i % 2 ? kGood : kBad}});
    sft << json{{"messages", m}}.dump() << "\n";
    prompts << json{{"messages", user(question(i))}}.dump() << "\n";
    json c = user(question(i));
    c.push_back({{"role", "assistant"}, {"content", kGood}});
    pairs << json{{"messages", c}, {"rejected_response", kBad}}.dump() << "\n";
  }
  for (int i = 30; i < 36; ++i) {
    json m = user(question(i));
    m.push_back({{"role", "assistant"}, {"content", kGood}});
    held << json{{"messages", m}}.dump() << "\n";
  }
}

// A full reward model of the tiny preset trained on the 30 pairs: tmp/rm/checkpoint-10.
std::string train_reward_model(const TempDir& tmp) {
  EXPECT_EQ(sh(fmt::format("{} rlhf --rlhf_type rm --tuner_type full --model {} --dataset {} "
                           "--learning_rate 1e-3 --max_steps 10 --save_steps 10 "
                           "--per_device_train_batch_size 4 --gradient_accumulation_steps 1 "
                           "--output_dir {} --add_version false > {} 2>&1",
                           SWIFTLET_BINARY, testing::tiny_model("tiny"), tmp / "pairs.jsonl",
                           tmp / "rm", tmp / "rm.log")),
            0)
      << testing::read_bytes(tmp / "rm.log");
  return tmp / "rm/checkpoint-10";
}

// The reward model's mean score of the greedy answers to the held-out questions.
double held_out_score(const std::string& model_flags, const std::string& rm, const TempDir& tmp,
                      const std::string& name) {
  const std::string answers = tmp / (name + ".jsonl");
  EXPECT_EQ(sh(fmt::format("{} infer {} --val_dataset {} --result_path {} --max_new_tokens 12 "
                           "--temperature 0 > {} 2>&1",
                           SWIFTLET_BINARY, model_flags, tmp / "held.jsonl", answers,
                           tmp / (name + ".log"))),
            0)
      << testing::read_bytes(tmp / (name + ".log"));
  {
    std::ofstream rows(tmp / (name + "-rows.jsonl"));
    int i = 30;
    for (const auto& r : read_jsonl(answers)) {
      json m = user(question(i++));
      m.push_back({{"role", "assistant"}, {"content", r["response"]}});
      rows << json{{"messages", m}}.dump() << "\n";
    }
  }
  const std::string scored = tmp / (name + "-scores.jsonl");
  EXPECT_EQ(sh(fmt::format("{} infer --model {} --val_dataset {} --result_path {} > {} 2>&1",
                           SWIFTLET_BINARY, rm, tmp / (name + "-rows.jsonl"), scored,
                           tmp / (name + "-scores.log"))),
            0)
      << testing::read_bytes(tmp / (name + "-scores.log"));
  const auto scores = read_jsonl(scored);
  EXPECT_EQ(scores.size(), 6u);
  double sum = 0;
  for (const auto& s : scores) sum += s["score"].get<double>();
  return sum / double(std::max<size_t>(1, scores.size()));
}

TEST(PpoLearning, RewardModelScoreOfHeldOutAnswersRises) {
  TempDir tmp;
  write_data(tmp);
  const std::string sft = weak_sft(tmp);
  const std::string rm = train_reward_model(tmp);
  const double before = held_out_score("--model " + sft, rm, tmp, "before");
  const int good_before = good_answers("--model " + sft, tmp, "good-before");
  EXPECT_LE(good_before, 4) << "the weak model should not already prefer one answer";
  for (const std::string tuner : {"lora", "full"}) {
    SCOPED_TRACE(tuner);
    const std::string out = tmp / ("ppo-" + tuner);
    const int steps = tuner == "lora" ? 16 : 24;  // 4 or 6 updates of 4 PPO epochs
    ASSERT_EQ(sh(fmt::format("{} rlhf --rlhf_type ppo --model {} --reward_model {} --dataset {} "
                             "--tuner_type {} --learning_rate {} --per_device_train_batch_size 8 "
                             "--gradient_accumulation_steps 1 --max_completion_length 10 "
                             "--temperature 1.0 --max_steps {} --save_steps {} --logging_steps 1 "
                             "--output_dir {} --add_version false > {} 2>&1",
                             SWIFTLET_BINARY, sft, rm, tmp / "prompts.jsonl", tuner,
                             tuner == "lora" ? "5e-3" : "3e-4", steps, steps, out, out + ".log")),
              0)
        << testing::read_bytes(out + ".log");
    const auto log = read_jsonl(out + "/logging.jsonl");
    ASSERT_EQ(log.size(), size_t(steps));
    // Once per update (steps 1, 5, ...): the rollout's metrics; every step: the losses.
    for (const char* k : {"objective/kl", "objective/entropy", "objective/non_score_reward",
                          "objective/rlhf_reward", "objective/scores", "val/num_eos_tokens",
                          "time/rollout_s", "rollout/tokens_per_second"})
      EXPECT_TRUE(log[0].contains(k)) << k;
    for (const char* k :
         {"loss", "loss/policy_avg", "loss/value_avg", "policy/approxkl_avg", "policy/clipfrac_avg",
          "policy/entropy_avg", "val/clipfrac_avg", "val/ratio", "episode", "time/train_s"})
      EXPECT_TRUE(log[1].contains(k)) << k;
    // The policy's mean entropy per response token lies between a point mass and uniform.
    for (const auto& step : log) {
      const double h = step["policy/entropy_avg"].get<double>();
      EXPECT_GT(h, 0.0);
      EXPECT_LT(h, std::log(151936.0));
    }
    EXPECT_FALSE(log[1].contains("objective/scores")) << "the second PPO epoch samples nothing";
    EXPECT_EQ(log[1]["time/rollout_s"].get<double>(), 0.0);
    EXPECT_TRUE(log[3].contains("val/ratio_var")) << "logged at the update's last step";
    // The first PPO epoch trains on the policy that sampled: ratio 1, nothing clipped, no KL.
    EXPECT_NEAR(log[0]["val/ratio"].get<double>(), 1.0, 1e-5);
    EXPECT_EQ(log[0]["policy/clipfrac_avg"].get<double>(), 0.0);
    EXPECT_NEAR(log[0]["objective/kl"].get<double>(), 0.0, 1e-6);
    EXPECT_EQ(log[4]["episode"].get<double>(), 16.0);
    const std::string ckpt = out + "/checkpoint-" + std::to_string(steps);
    EXPECT_TRUE(std::filesystem::exists(ckpt + "/value_model"));
    const std::string policy = (tuner == "lora" ? "--adapters " : "--model ") + ckpt;
    const double after = held_out_score(policy, rm, tmp, "after-" + tuner);
    EXPECT_GT(after, before + 1.0) << "mean reward-model score of the held-out greedy answers";
    EXPECT_GE(good_answers(policy, tmp, "good-after-" + tuner), 5)
        << "held-out greedy answers that are the rewarded one, of 6 (before: " << good_before
        << ")";
    std::cout << "[ppo " << tuner << "] held-out reward-model score " << before << " -> " << after
              << "\n";
  }
}

TEST(PpoResume, FromInsideAnUpdateMatchesTheUninterruptedRun) {
  TempDir tmp;
  write_data(tmp);
  const std::string rm = train_reward_model(tmp);
  const std::string model = testing::tiny_model("tiny");
  for (const std::string tuner : {"lora", "full"}) {
    SCOPED_TRACE(tuner);
    auto run = [&](const std::string& out, const std::string& more) {
      EXPECT_EQ(sh(fmt::format("{} rlhf --rlhf_type ppo --model {} --reward_model {} --dataset {} "
                               "--tuner_type {} --learning_rate {} --per_device_train_batch_size 4 "
                               "--gradient_accumulation_steps 2 --max_completion_length 6 "
                               "--max_steps 6 --save_steps 2 --logging_steps 1 --output_dir {} "
                               "--add_version false {} > {}.log 2>&1",
                               SWIFTLET_BINARY, model, rm, tmp / "prompts.jsonl", tuner,
                               tuner == "lora" ? "5e-3" : "3e-4", out, more, out)),
                0)
          << testing::read_bytes(out + ".log");
    };
    const std::string whole = tmp / (tuner + "-whole"), resumed = tmp / (tuner + "-resumed");
    run(whole, "");
    // checkpoint-2: the second of the first update's four PPO epochs.
    run(resumed, "--resume_from_checkpoint " + whole + "/checkpoint-2");
    const auto a = read_jsonl(whole + "/logging.jsonl"), b = read_jsonl(resumed + "/logging.jsonl");
    ASSERT_EQ(a.size(), 6u);
    ASSERT_EQ(b.size(), 4u);
    for (size_t i = 0; i < 4; ++i)
      for (const char* k :
           {"loss", "grad_norm", "loss/policy_avg", "loss/value_avg", "policy/approxkl_avg",
            "val/ratio", "val/ratio_var", "objective/scores", "objective/kl", "learning_rate"}) {
        ASSERT_EQ(a[2 + i].contains(k), b[i].contains(k)) << k << " at step " << i + 3;
        if (a[2 + i].contains(k)) {
          EXPECT_EQ(a[2 + i][k], b[i][k]) << k << " at step " << i + 3;
        }
      }
    EXPECT_TRUE(b[2].contains("objective/scores")) << "step 5 starts the second update";
    const std::string weights = tuner == "lora" ? "adapter_model.safetensors" : "model.safetensors";
    for (const std::string& f : {weights, "value_model/" + weights})
      EXPECT_EQ(testing::read_bytes(whole + "/checkpoint-6/" + f),
                testing::read_bytes(resumed + "/checkpoint-6/" + f))
          << f;
  }
}

// What the rollout batch needs, each refused with its sentence.
TEST(PpoCli, RolloutBatchRefusals) {
  TempDir tmp;
  write_data(tmp);
  const std::string model = testing::tiny_model("tiny");
  for (const auto& [flags, says] : std::vector<std::pair<std::string, std::string>>{
           {"--per_device_train_batch_size 1 --gradient_accumulation_steps 1",
            "must be at least 2"},
           {"--per_device_train_batch_size 8 --gradient_accumulation_steps 4",
            "30 training prompts are fewer than the 32 prompts of one rollout batch"},
       }) {
    const std::string log = tmp / "refused.log";
    EXPECT_NE(sh(fmt::format("{} rlhf --rlhf_type ppo --model {} --reward_model {} --dataset {} "
                             "{} --max_steps 1 --output_dir {} > {} 2>&1",
                             SWIFTLET_BINARY, model, model, tmp / "prompts.jsonl", flags,
                             tmp / "out", log)),
              0);
    EXPECT_NE(testing::read_bytes(log).find(says), std::string::npos) << testing::read_bytes(log);
  }
}

}  // namespace
}  // namespace swiftlet
