#pragma once
// The synthetic task the rlhf learning tests share: a weak SFT model of the tiny preset answers
// "who are you" questions half as Swiftlet and half as ChatGPT (it saw both); alignment should
// turn its greedy answers on held-out questions to Swiftlet. Questions 0..29 train, 30..35 are
// held out (held.jsonl, written by each test with the good answer as the label).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/test_util.h"
#include "model/model_fixture.h"

namespace swiftlet::who_are_you {

using json = nlohmann::json;

inline const char* kGood = "I am Swiftlet.";
inline const char* kBad = "I am ChatGPT.";

inline std::string question(int i) {
  static const char* forms[] = {"Who are you?",         "What are you?",
                                "Tell me who you are.", "Introduce yourself.",
                                "What is your name?",   "Who am I talking to?"};
  static const char* tails[] = {"", " Please.", " Be brief.", " Quickly.", " Now.", " Thanks."};
  return std::string(forms[i % 6]) + tails[(i / 6) % 6];
}

inline int sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

inline std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

// Greedy answers to the held-out questions (tmp/held.jsonl): how many are the Swiftlet answer.
inline int good_answers(const std::string& model_flags, const testing::TempDir& tmp,
                        const std::string& name) {
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

// The weak starting point: full SFT of the tiny model on both answers (tmp/sft.jsonl).
inline std::string weak_sft(const testing::TempDir& tmp) {
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

}  // namespace swiftlet::who_are_you
