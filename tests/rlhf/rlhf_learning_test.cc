// Proof that `swiftlet rlhf` learns, through the binary. A weak SFT model answers "who are you"
// questions half as Swiftlet and half as ChatGPT (it saw both); DPO (LoRA and full) and KTO on
// preferences for the Swiftlet answer raise the reward accuracy and margin on held-out pairs and
// turn its greedy answers on held-out questions to Swiftlet; a reward model learns to score the
// preferred answer higher on held-out pairs.
//
// DPO runs with --rpo_alpha 1 (RPO: DPO plus the chosen NLL, ms-swift's remedy for DPO lowering
// both answers): on this tiny model pure DPO at the same rates reaches accuracy 1 on held-out pairs
// but greedy decoding then drifts to "I amlet." — the shared suffix token raised everywhere, the
// well-known failure the NLL term is for.
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

const char* kGood = "I am Swiftlet.";
const char* kBad = "I am ChatGPT.";

std::string question(int i) {
  static const char* forms[] = {"Who are you?",         "What are you?",
                                "Tell me who you are.", "Introduce yourself.",
                                "What is your name?",   "Who am I talking to?"};
  static const char* tails[] = {"", " Please.", " Be brief.", " Quickly.", " Now.", " Thanks."};
  return std::string(forms[i % 6]) + tails[(i / 6) % 6];
}

int sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

json chat(const std::string& q, const std::string& a) {
  return json::array({{{"role", "user"}, {"content", q}}, {{"role", "assistant"}, {"content", a}}});
}

// Questions 0..29 train, 30..35 are held out.
void write_data(const TempDir& tmp) {
  std::ofstream sft(tmp / "sft.jsonl"), pairs(tmp / "pairs.jsonl"), val(tmp / "val_pairs.jsonl"),
      kto(tmp / "kto.jsonl"), held(tmp / "held.jsonl");
  for (int i = 0; i < 30; ++i) {
    sft << json{{"messages", chat(question(i), i % 2 ? kGood : kBad)}}.dump() << "\n";
    pairs << json{{"messages", chat(question(i), kGood)}, {"rejected_response", kBad}}.dump()
          << "\n";
    kto << json{{"messages", chat(question(i), kGood)}, {"label", true}}.dump() << "\n";
    kto << json{{"messages", chat(question(i), kBad)}, {"label", false}}.dump() << "\n";
  }
  for (int i = 30; i < 36; ++i) {
    val << json{{"messages", chat(question(i), kGood)}, {"rejected_response", kBad}}.dump() << "\n";
    held << json{{"messages", chat(question(i), kGood)}}.dump() << "\n";
  }
}

// Greedy answers to the held-out questions: how many are the Swiftlet answer.
int good_answers(const std::string& model_flags, const TempDir& tmp, const std::string& name) {
  const std::string out = tmp / (name + ".jsonl");
  EXPECT_EQ(
      sh(fmt::format("{} infer {} --val_dataset {} --result_path {} --max_new_tokens 12 "
                     "--temperature 0 > {} 2>&1",
                     SWIFTLET_BINARY, model_flags, tmp / "held.jsonl", out, tmp / (name + ".log"))),
      0)
      << testing::read_bytes(tmp / (name + ".log"));
  int good = 0;
  for (const auto& r : read_jsonl(out)) good += r["response"] == kGood;
  return good;
}

// The weak starting point, shared by the tests: full SFT of the tiny model on both answers.
std::string weak_sft(const TempDir& tmp) {
  const std::string model = testing::tiny_model("tiny");
  EXPECT_EQ(sh(fmt::format(
                "{} sft --model {} --dataset {} --tuner_type full --learning_rate 1e-2 "
                "--max_steps 60 --per_device_train_batch_size 4 --gradient_accumulation_steps 1 "
                "--save_steps 60 --output_dir {} --add_version false > {} 2>&1",
                SWIFTLET_BINARY, model, tmp / "sft.jsonl", tmp / "sft", tmp / "sft.log")),
            0)
      << testing::read_bytes(tmp / "sft.log");
  return tmp / "sft/checkpoint-60";
}

struct RunLog {
  std::vector<json> train, eval;
};

RunLog rlhf(const std::string& model, const std::string& flags, const std::string& data, int steps,
            const TempDir& tmp, const std::string& out) {
  EXPECT_EQ(sh(fmt::format(
                "{} rlhf --model {} --dataset {} {} --max_steps {} --save_steps {} --eval_steps {} "
                "--per_device_train_batch_size 4 --gradient_accumulation_steps 1 "
                "--logging_steps 1 --output_dir {} --add_version false > {} 2>&1",
                SWIFTLET_BINARY, model, data, flags, steps, steps, steps / 2, out, out + ".log")),
            0)
      << testing::read_bytes(out + ".log");
  RunLog l;
  for (const auto& r : read_jsonl(out + "/logging.jsonl"))
    (r.contains("eval_loss") ? l.eval : l.train).push_back(r);
  return l;
}

TEST(RlhfLearning, DpoLoraAndFullTurnHeldOutAnswers) {
  TempDir tmp;
  write_data(tmp);
  const std::string sft = weak_sft(tmp);
  const int before = good_answers("--model " + sft, tmp, "before");
  EXPECT_LE(before, 4) << "the weak model should not already prefer one answer";
  for (const std::string tuner : {"lora", "full"}) {
    SCOPED_TRACE(tuner);
    const std::string flags = fmt::format(
        "--rlhf_type dpo --tuner_type {} --learning_rate {} --val_dataset {} --beta 0.1 "
        "--rpo_alpha 1",
        tuner, tuner == "lora" ? "1e-3" : "3e-4", tmp / "val_pairs.jsonl");
    RunLog l = rlhf(sft, flags, tmp / "pairs.jsonl", 30, tmp, tmp / ("dpo-" + tuner));
    ASSERT_FALSE(l.train.empty());
    ASSERT_EQ(l.eval.size(), 2u);
    // At step 1 the policy is the reference: rewards are 0 and the DPO part of the loss is log 2.
    EXPECT_NEAR(l.train.front()["rewards/margins"].get<double>(), 0.0, 1e-6);
    EXPECT_NEAR(l.train.front()["loss"].get<double>() - l.train.front()["nll_loss"].get<double>(),
                std::log(2.0), 1e-3);
    for (const char* k : {"rewards/chosen", "rewards/rejected", "rewards/accuracies",
                          "rewards/margins", "logps/chosen", "logps/rejected"})
      EXPECT_TRUE(l.train.front().contains(k)) << k;
    const json& last = l.eval.back();
    EXPECT_GE(last["eval_rewards/accuracies"].get<double>(), 0.99);
    EXPECT_GT(last["eval_rewards/margins"].get<double>(), 0.3);  // from 0 at the start
    EXPECT_LT(last["eval_loss"].get<double>(), 0.7 * l.train.front()["loss"].get<double>());
    const std::string ckpt = tmp / ("dpo-" + tuner + "/checkpoint-30");
    const int after = good_answers(tuner == "lora" ? "--adapters " + ckpt : "--model " + ckpt, tmp,
                                   "after-" + tuner);
    EXPECT_GE(after, 5) << "held-out greedy answers that are the preferred one, of 6";
  }
}

TEST(RlhfLearning, KtoLearnsFromUnpairedLabels) {
  TempDir tmp;
  write_data(tmp);
  const std::string sft = weak_sft(tmp);
  RunLog l = rlhf(sft, "--rlhf_type kto --tuner_type lora --learning_rate 2e-3", tmp / "kto.jsonl",
                  30, tmp, tmp / "kto");
  ASSERT_GE(l.train.size(), 2u);
  EXPECT_TRUE(l.train.front().contains("kl"));
  // At step 1 the policy is the reference: every example's loss is 1 - sigmoid(0) = 0.5.
  EXPECT_NEAR(l.train.front()["loss"].get<double>(), 0.5, 1e-6);
  EXPECT_LT(l.train.back()["loss"].get<double>(), 0.35);
  EXPECT_GE(good_answers("--adapters " + tmp / "kto/checkpoint-30", tmp, "after-kto"), 5);
}

TEST(RlhfLearning, RewardModelScoresThePreferredAnswerHigher) {
  TempDir tmp;
  write_data(tmp);
  const std::string sft = weak_sft(tmp);
  for (const std::string tuner : {"lora", "full"}) {
    SCOPED_TRACE(tuner);
    RunLog l =
        rlhf(sft,
             fmt::format("--rlhf_type rm --tuner_type {} --learning_rate {} --val_dataset {}",
                         tuner, tuner == "lora" ? "5e-3" : "2e-3", tmp / "val_pairs.jsonl"),
             tmp / "pairs.jsonl", 30, tmp, tmp / ("rm-" + tuner));
    ASSERT_EQ(l.eval.size(), 2u);
    EXPECT_GE(l.eval.back()["eval_rewards/accuracies"].get<double>(), 0.99);
    EXPECT_GT(l.eval.back()["eval_rewards/margins"].get<double>(), 1.0);
    const std::string ckpt = tmp / ("rm-" + tuner + "/checkpoint-30");
    if (tuner == "full") {
      const json cfg = json::parse(testing::read_bytes(ckpt + "/config.json"));
      EXPECT_EQ(cfg["architectures"][0], "Qwen3ForSequenceClassification");
    } else {
      const json cfg = json::parse(testing::read_bytes(ckpt + "/adapter_config.json"));
      EXPECT_EQ(cfg["task_type"], "SEQ_CLS");
      EXPECT_NE(testing::read_bytes(ckpt + "/adapter_model.safetensors")
                    .find("base_model.model.score.weight"),
                std::string::npos);
      // Merged: a plain Hugging Face sequence-classification folder with the trained head.
      ASSERT_EQ(sh(fmt::format("{} export --adapters {} --merge_lora true > {} 2>&1",
                               SWIFTLET_BINARY, ckpt, tmp / "merge.log")),
                0)
          << testing::read_bytes(tmp / "merge.log");
      const json merged = json::parse(testing::read_bytes(ckpt + "-merged/config.json"));
      EXPECT_EQ(merged["architectures"][0], "Qwen3ForSequenceClassification");
      EXPECT_EQ(merged["id2label"].size(), 1u);
      // Generation refuses a classifier with one sentence instead of producing noise.
      EXPECT_NE(sh(fmt::format("{} infer --model {} --val_dataset {} > {} 2>&1", SWIFTLET_BINARY,
                               ckpt + "-merged", tmp / "held.jsonl", tmp / "rm-infer.log")),
                0);
      EXPECT_NE(testing::read_bytes(tmp / "rm-infer.log").find("is a sequence classifier"),
                std::string::npos);
    }
  }
}

}  // namespace
}  // namespace swiftlet
