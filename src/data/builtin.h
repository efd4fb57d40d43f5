#pragma once
// Datasets built into swiftlet, usable as --dataset IDs without files:
//
//   swiftlet/self-cognition  (alias swift/self-cognition, ms-swift's ID)
//       Questions about who the model is ("who are you?", "你是谁？"), in Chinese and English,
//       answered with {{NAME}} / {{AUTHOR}} filled from --model_name / --model_author. Those flags
//       take two values each, Chinese then English, as ms-swift takes them; with one value only
//       the English rows are used.
//   swiftlet/arithmetic      "What is 23 + 58?" -> "81": 4000 additions of two numbers below 100,
//       a fixed set (the same on every machine). `swiftlet/arithmetic:test` holds 500 other
//       additions, none of which is in the training set: a held-out set a tiny model learns to
//       answer within minutes on a CPU.
//   swiftlet/preference-arithmetic   the same 4000 questions as preference pairs for `swiftlet
//       rlhf` (dpo, orpo, simpo, cpo, rm): {"query": "What is 23 + 58?", "response": "81",
//       "rejected_response": "84"}, the rejected answer off by 1 to 9 (never negative).
//       `:test` holds the 500 held-out questions of swiftlet/arithmetic:test the same way.
//   swiftlet/preference-arithmetic:kto   the 4000 questions for `--rlhf_type kto`, unpaired: every
//       other row has the correct answer and "label": true, the others a wrong one and "label":
//       false (2000 of each). `:kto-test` does the same with the 500 held-out questions.
//   Every set is fixed (the same on every machine), so a trainer test can show that the chosen /
//   desirable answers gain probability over the rejected ones.
#include <string>
#include <vector>

#include "data/readers.h"

namespace swiftlet {

struct BuiltinOptions {
  std::vector<std::string> model_name;    // --model_name (Chinese, English)
  std::vector<std::string> model_author;  // --model_author (Chinese, English)
};

// The IDs (with their subsets) for listings and errors.
const std::vector<std::string>& builtin_dataset_ids();

// True when `id` (without #N) names a built-in dataset, subset included
// ("swiftlet/arithmetic:test").
bool is_builtin_dataset(const std::string& id);

// The rows of a built-in dataset in ms-swift's query/response format. Throws Error when the rows
// need a name or author that was not given.
std::vector<DataRow> builtin_dataset_rows(const std::string& id, const BuiltinOptions& options);

}  // namespace swiftlet
