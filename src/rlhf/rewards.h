#pragma once
// GRPO's reward functions (`--reward_funcs`, MS-SWIFT-REFERENCE §7.3). Each scores a batch of
// completions; it sees every completion's text, its token count, whether it hit the length limit,
// and its dataset row (all columns: `messages`, `solution`, anything else). NaN means "no reward"
// (ms-swift's None): ignored in the weighted sum.
//
//   accuracy       MathAccuracy: 1 when the completion's answer equals the `solution` column,
//                  else 0 (0 when the solution yields no answer). The answer is the text inside
//                  <answer>...</answer> when present, else the last \boxed{...}, else the last
//                  number; the solution's the same way. Two answers are equal when both read as
//                  numbers (integers, decimals, a/b fractions, thousands commas, a trailing %)
//                  within 1e-6 relative, else when the texts match after removing spaces, '$'
//                  and a trailing '.', case-insensitively.
//   format         Format: 1 for exactly <think>...</think> then <answer>...</answer> (whitespace
//                  between and around), else 0.
//   cosine         CosineReward: correctness (accuracy) shaped by length over cosine_max_len
//                  tokens: correct 1.0 (short) -> 0.5 (long), wrong -0.5 (short) -> 0.0 (long).
//   repetition     RepetitionPenalty: -(1 - distinct n-grams / n-grams) * |max_penalty| over the
//                  lower-cased whitespace-split words (n = 3, max_penalty -1); 0 below n words.
//   soft_overlong  SoftOverlong (DAPO): 0 up to soft_max_length - soft_cache_length tokens, then
//                  linearly down to -1 at soft_max_length.
//   an external command (--external_reward_command, see ExternalCommandReward): any program, no
//                  recompilation.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "template/chat_template.h"

namespace swiftlet {
class Device;
class Engine;
class Tokenizer;
class Transformer;
struct ModelFolder;
}  // namespace swiftlet

namespace swiftlet::rlhf {

struct RewardBatch {
  std::vector<std::string> completions;
  std::vector<int64_t> lengths;      // completion tokens
  std::vector<bool> truncated;       // hit max_completion_length
  std::vector<nlohmann::json> rows;  // the dataset row of each completion (every column)
  std::vector<std::vector<ChatMessage>> prompts;  // the prompt conversation of each completion
};

class RewardFunction {
 public:
  virtual ~RewardFunction() = default;
  // The metric name: rewards/<name>/mean.
  virtual std::string name() const = 0;
  virtual std::vector<double> score(const RewardBatch& batch) = 0;
  // Before the first score(), with the training's device (a reward model puts its weights there).
  virtual void bind(Device& device) {}
};

struct RewardOptions {
  int64_t max_completion_length = 512;
  // cosine
  double cosine_min_len_value_wrong = -0.5, cosine_max_len_value_wrong = 0.0;
  double cosine_min_len_value_correct = 1.0, cosine_max_len_value_correct = 0.5;
  int64_t cosine_max_len = 0;  // 0: max_completion_length
  // repetition
  int64_t repetition_n_grams = 3;
  double repetition_max_penalty = -1.0;
  // soft_overlong
  int64_t soft_max_length = 0;  // 0: max_completion_length
  std::optional<int64_t> soft_cache_length;
};

// A built-in by its --reward_funcs name; Error for an unknown name or missing options.
std::unique_ptr<RewardFunction> make_builtin_reward(const std::string& name,
                                                    const RewardOptions& options);
const std::vector<std::string>& builtin_reward_names();

// The protocol of an external reward (also in the README): the command runs through /bin/sh
// once per generation batch with a JSON object on its standard input:
//   {"completions": [text, ...], "completion_lengths": [tokens, ...],
//    "truncated": [bool, ...], "<column>": [value per completion, ...] for every dataset column}
// (the columns of all rows, null where a row lacks one) and must print either a JSON array of
// numbers (null for "no reward") with one entry per completion, or {"rewards": [...]}, and exit 0.
// Anything else is an Error quoting what it printed. An HTTP endpoint is one `curl` away:
//   --external_reward_command 'curl -s -H "Content-Type: application/json" -d @- http://host/score'
class ExternalCommandReward : public RewardFunction {
 public:
  ExternalCommandReward(std::string command, std::string name)
      : command_(std::move(command)), name_(std::move(name)) {}
  std::string name() const override { return name_; }
  std::vector<double> score(const RewardBatch& batch) override;

 private:
  std::string command_, name_;
};

// --reward_model DIR: a sequence classifier with one label (`rlhf --rlhf_type rm`, or any
// ...ForSequenceClassification folder; a LoRA rm checkpoint through its merged folder) scores the
// prompt conversation with the completion as the assistant's reply, rendered as the reward model
// was trained (infer/scoring.h), on its own engine. Named after the folder.
class RewardModelReward : public RewardFunction {
 public:
  explicit RewardModelReward(const std::string& path);  // reads and checks the folder
  ~RewardModelReward() override;
  std::string name() const override { return name_; }
  void bind(Device& device) override;
  std::vector<double> score(const RewardBatch& batch) override;

 private:
  std::string name_, template_name_;
  std::unique_ptr<ModelFolder> folder_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<ChatTemplate> tmpl_;
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<Engine> engine_;
};

// The answer of a text as `accuracy` extracts it ("" when there is none), and whether two answers
// are equivalent.
std::string extract_answer(const std::string& text);
bool answers_equal(const std::string& a, const std::string& b);

}  // namespace swiftlet::rlhf
