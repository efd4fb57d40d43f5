#pragma once
// Turning a row of logits into the next token: repetition/presence/frequency penalties, then
// temperature, top-k, top-p, min-p (the order of Hugging Face's logits processors), then a draw
// from the seeded generator, or argmax when temperature is 0.
#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/rng.h"

namespace swiftlet {

struct SamplingParams {
  double temperature = 1.0;  // <= 0: greedy
  int64_t top_k = 0;         // <= 0: off
  double top_p = 1.0;        // >= 1: off
  double min_p = 0.0;        // <= 0: off
  double repetition_penalty = 1.0;  // HF: logit / p if > 0 else logit * p, on every seen token
  double presence_penalty = 0.0;    // OpenAI: - p if the token was generated
  double frequency_penalty = 0.0;   // OpenAI: - p * count in the generated text
};

// Tokens seen so far by one request (for the penalties).
struct TokenHistory {
  std::unordered_map<int32_t, int> prompt_counts;
  std::unordered_map<int32_t, int> generated_counts;
  void add_prompt(std::span<const int32_t> ids) {
    for (int32_t t : ids) ++prompt_counts[t];
  }
  void add_generated(int32_t t) { ++generated_counts[t]; }
};

// Applies the penalties to logits in place (they also shape the returned log-probabilities).
void apply_penalties(std::span<float> logits, const SamplingParams& p, const TokenHistory& h);

// Chooses the next token from penalised logits; `logits` is used as scratch.
int32_t sample_token(std::span<float> logits, const SamplingParams& p, Rng& rng);

// log softmax of a row, for logprobs: fills `out` (same size), returns nothing.
void log_softmax(std::span<const float> logits, std::span<float> out);

// The k largest entries of a row as (id, value), largest first, ties by lower id.
std::vector<std::pair<int32_t, float>> top_entries(std::span<const float> row, int k);

}  // namespace swiftlet
