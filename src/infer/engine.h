#pragma once
// The generation engine: requests join and leave a running batch between steps (continuous
// batching). Each step runs one Transformer::forward over the decode token of every running
// request plus prompt chunks of new ones (bounded so prefill never starves decoding), then samples
// each request with its own settings and checks its own stop conditions. Used by `infer`
// (one request or a batch) and by the HTTP server.
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/rng.h"
#include "infer/sampler.h"
#include "model/transformer.h"

namespace swiftlet {

// Streams token ids back to text; returns only whole UTF-8 characters.
class TextDecoder {
 public:
  virtual ~TextDecoder() = default;
  virtual std::string push(int32_t id) = 0;
  virtual std::string flush() = 0;
};
using DecoderFactory = std::function<std::unique_ptr<TextDecoder>()>;

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = -1;  // -1: until the context limit
  SamplingParams sampling;
  uint64_t seed = 42;
  std::vector<int32_t> stop_token_ids;  // end of generation, not part of the text
  std::vector<std::string> stop_strings;
  bool include_stop_str_in_output = false;
  int top_logprobs = -1;  // -1: no logprobs; 0: the chosen token's; k > 0: also the k most likely
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

struct GenerationOutput {
  std::vector<int32_t> tokens;  // generated tokens (a final stop token id excluded)
  std::string text;
  std::string finish_reason;  // "stop", "length" or "abort"
  std::vector<TokenLogprob> logprobs;
  int64_t prompt_tokens = 0;
};

struct GenerationCallbacks {
  // New text (may be empty when a token completes no character) and the token's logprob entry
  // when asked for. Return false to cancel the request (a client went away).
  std::function<bool(const std::string& delta, const TokenLogprob* logprob)> on_delta;
  std::function<void(const GenerationOutput&)> on_finish;
};

struct EngineOptions {
  int64_t max_batch_size = 16;      // running requests at once; more wait in the queue
  int64_t max_model_len = 0;        // prompt + generation limit; 0: the model's max positions
  int64_t prefill_chunk = 512;      // prompt tokens processed per step across new requests
};

class Engine {
 public:
  Engine(Transformer& model, DecoderFactory decoder, EngineOptions options);
  ~Engine();

  // Queues a request; throws Error when its prompt does not fit the context. Thread-safe.
  int64_t submit(GenerationRequest request, GenerationCallbacks callbacks = {});
  // Marks a request to stop at the next step (finish_reason "abort"). Thread-safe.
  void cancel(int64_t id);
  // Runs one batched forward step. Returns false when there was nothing to do.
  bool step();
  // Submits one request and steps until it finishes.
  GenerationOutput generate(GenerationRequest request, GenerationCallbacks callbacks = {});

  size_t running() const;
  size_t waiting() const;
  int64_t max_model_len() const { return max_model_len_; }

 private:
  struct Active;
  void finish(Active& a, const std::string& reason);
  bool emit(Active& a, int32_t token, const TokenLogprob* lp);

  Transformer& model_;
  DecoderFactory decoder_;
  EngineOptions opt_;
  int64_t max_model_len_;
  mutable std::mutex mu_;
  std::deque<std::unique_ptr<Active>> queue_;
  std::vector<std::unique_ptr<Active>> running_;
  std::vector<int64_t> cancelled_;
  int64_t next_id_ = 1;
};

}  // namespace swiftlet
