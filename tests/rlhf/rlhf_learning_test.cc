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
#include <httplib.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/test_util.h"
#include "model/model_fixture.h"
#include "rlhf/who_are_you.h"
#include "serve/serve_fixture.h"

namespace swiftlet {
namespace {

using testing::TempDir;
using json = nlohmann::json;
using namespace who_are_you;

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

// `infer --val_dataset` of the held-out pairs with a reward model: one row per pair, with the
// chosen side's `score` and `rejected_score`.
std::vector<json> score_pairs(const std::string& model_flags, const TempDir& tmp,
                              const std::string& name) {
  const std::string out = tmp / (name + "-scores.jsonl");
  EXPECT_EQ(sh(fmt::format("{} infer {} --val_dataset {} --result_path {} --torch_dtype float32 "
                           "> {} 2>&1",
                           SWIFTLET_BINARY, model_flags, tmp / "val_pairs.jsonl", out,
                           tmp / (name + "-scores.log"))),
            0)
      << testing::read_bytes(tmp / (name + "-scores.log"));
  EXPECT_NE(testing::read_bytes(tmp / (name + "-scores.log")).find("6 pairs: the chosen side scored higher"),
            std::string::npos);
  return read_jsonl(out);
}

// `deploy` of a reward model answers a chat completion with the conversation's score (the one
// `infer` wrote), and refuses what a score cannot be: streams, several choices, completions.
void serve_the_reward_model(const std::string& model, const json& scored_row) {
  serve_testing::DeployProcess s({"--model", model, "--port", "0", "--torch_dtype", "float32",
                                  "--log_interval", "-1"});
  httplib::Client c("127.0.0.1", s.port());
  json req = {{"messages", scored_row["messages"]}};
  auto r = c.Post("/v1/chat/completions", req.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_NEAR(std::stod(j["choices"][0]["message"]["content"].get<std::string>()),
              scored_row["score"].get<double>(), 1e-5)
      << r->body;
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["completion_tokens"], 1);
  for (const auto& [field, value] : {std::pair<const char*, json>{"stream", true}, {"n", 2}}) {
    json bad = req;
    bad[field] = value;
    auto b = c.Post("/v1/chat/completions", bad.dump(), "application/json");
    ASSERT_TRUE(b);
    EXPECT_EQ(b->status, 400) << field;
    EXPECT_NE(b->body.find("reward model"), std::string::npos) << b->body;
  }
  auto comp = c.Post("/v1/completions", json{{"prompt", "hi"}}.dump(), "application/json");
  ASSERT_TRUE(comp);
  EXPECT_EQ(comp->status, 400);
  EXPECT_NE(comp->body.find("/v1/chat/completions"), std::string::npos) << comp->body;
  EXPECT_EQ(s.stop(SIGTERM, 30), 0) << s.err();
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
    // `infer` scores the held-out pairs with the inference engine: the same scores as the
    // training's evaluation (its own forward) at the last step.
    const std::vector<json> scored =
        score_pairs(tuner == "full" ? "--model " + ckpt : "--adapters " + ckpt, tmp, "rm-" + tuner);
    ASSERT_EQ(scored.size(), 6u);
    double chosen = 0, rejected = 0, correct = 0;
    for (const json& r : scored) {
      EXPECT_EQ(r["response"].get<std::string>(), fmt::format("{}", r["score"].get<double>()));
      chosen += r["score"].get<double>() / 6;
      rejected += r["rejected_score"].get<double>() / 6;
      correct += (r["score"].get<double>() > r["rejected_score"].get<double>()) / 6.0;
    }
    EXPECT_NEAR(chosen, l.eval.back()["eval_rewards/chosen"].get<double>(), 2e-3);
    EXPECT_NEAR(rejected, l.eval.back()["eval_rewards/rejected"].get<double>(), 2e-3);
    EXPECT_NEAR(correct, l.eval.back()["eval_rewards/accuracies"].get<double>(), 1e-9);
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
      // The merged folder scores exactly as the adapter on its base does.
      const std::vector<json> merged_scores = score_pairs("--model " + ckpt + "-merged", tmp, "rm-merged");
      const std::vector<json> adapter_scores = score_pairs("--adapters " + ckpt, tmp, "rm-adapter");
      ASSERT_EQ(merged_scores.size(), adapter_scores.size());
      for (size_t i = 0; i < merged_scores.size(); ++i)
        EXPECT_NEAR(merged_scores[i]["score"].get<double>(), adapter_scores[i]["score"].get<double>(), 1e-4);
      serve_the_reward_model(ckpt + "-merged", merged_scores.front());
      // A chat on the terminal has no reply to score: refused with what to do instead.
      EXPECT_NE(sh(fmt::format("echo hi | {} infer --model {} > {} 2>&1", SWIFTLET_BINARY,
                               ckpt + "-merged", tmp / "rm-chat.log")),
                0);
      EXPECT_NE(testing::read_bytes(tmp / "rm-chat.log").find("scores whole conversations"),
                std::string::npos)
          << testing::read_bytes(tmp / "rm-chat.log");
    }
  }
}

}  // namespace
}  // namespace swiftlet
