#pragma once
// What the online-RL tasks (grpo, ppo) share: completions sampled on the continuous-batching
// engine (infer/engine.h) over the very Transformer being trained — the LoRA adapter attached
// unmerged, or the full weights — so nothing is copied or synchronised; the trainer's attach
// state is restored after every rollout. Then the rollouts as packed training samples, and their
// per-token log-probs on logits / temperature.
#include <cstdint>
#include <string>
#include <vector>

#include "data/prompts.h"
#include "infer/sampler.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"
#include "train/sft_task.h"
#include "tuner/lora.h"

namespace swiftlet::rlhf {

// A seeded 64-bit mix (splitmix64's finaliser over a and b).
uint64_t mix(uint64_t a, uint64_t b);

struct SampledCompletion {
  size_t prompt = 0;  // index into the prompt set
  // The generated tokens; a completion that ended on a stop token keeps it (the model learns to
  // stop). Never empty: a completion of zero tokens (a full context) gets the first stop id.
  std::vector<int32_t> completion;
  std::string text;        // decoded, the stop token's text not included
  bool truncated = false;  // hit the length limit (no stop token)
};

struct RolloutSampling {
  int64_t max_completion_length = 512;
  SamplingParams sampling;
  std::vector<int32_t> stop_token_ids;
};

struct SampledBatch {
  std::vector<SampledCompletion> completions;
  double engine_seconds = 0;  // time spent in the engine
  double tokens = 0;          // completion tokens sampled
};

// `copies` completions of each prompt of `which` (consecutively), completion i seeded with
// mix(seed, first + i): a rank sampling its share of a batch passes the index of its first
// completion in the whole batch, so that a completion does not depend on which rank samples it.
// `adapter` is the trainer's (null for full training); it is attached again after.
SampledBatch sample_completions(Transformer& model, LoraAdapter* adapter, const Tokenizer& tok,
                                const std::vector<PromptSample>& prompts,
                                const std::vector<size_t>& which, int64_t copies,
                                const RolloutSampling& s, uint64_t seed, size_t first = 0);

// The share [begin, end) of n items that rank `rank` of `ranks` takes (contiguous, in rank order).
struct Share {
  size_t begin = 0, end = 0;
};
Share share_of(size_t n, int rank, int ranks);

// Rollouts [begin, end) as training samples: prompt (no loss) then the completion's tokens.
// R is SampledCompletion or a task's rollout type derived from it.
template <class R>
TrainBatch rollout_batch(const std::vector<R>& r, size_t begin, size_t end,
                         const std::vector<PromptSample>& prompts) {
  std::vector<TokenizedSample> samples;
  for (size_t i = begin; i < end; ++i) {
    const SampledCompletion& c = r[i];
    TokenizedSample s;
    s.input_ids = prompts[c.prompt].prompt;
    s.labels.assign(s.input_ids.size(), kIgnoreIndex);
    s.input_ids.insert(s.input_ids.end(), c.completion.begin(), c.completion.end());
    s.labels.insert(s.labels.end(), c.completion.begin(), c.completion.end());
    samples.push_back(std::move(s));
  }
  std::vector<const TokenizedSample*> ptrs;
  for (const auto& s : samples) ptrs.push_back(&s);
  return make_train_batch(ptrs);
}

// Per sample of a batch, its target rows in order.
std::vector<std::vector<int64_t>> target_rows(const TrainBatch& b);

// Per sample, the log-probs `lp` (one per batch row) of its target rows.
std::vector<std::vector<double>> per_sample(const TrainBatch& b, const std::vector<float>& lp);

// Per sample, log p(completion token) under `model` as it is now, on logits / temperature,
// without gradients.
std::vector<std::vector<double>> completion_logprobs(Transformer& model, const TrainBatch& b,
                                                     float temperature);

}  // namespace swiftlet::rlhf
