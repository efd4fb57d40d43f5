#pragma once
// The generation engine: requests join and leave a running batch between steps (continuous
// batching). Each step runs Transformer::forward over the decode token of every running request
// plus prompt chunks of new ones (bounded so prefill never starves decoding), then samples each
// request with its own settings and checks its own stop conditions. Requests may name a LoRA
// adapter: a step with one adapter attaches it; a step mixing adapters gives every projection
// per-row adapters, so it is still one forward that reads the weights once.
// KV caches live within a memory budget: a request is admitted only when its prompt fits, and
// when decoding outgrows the budget the most recently admitted request is preempted (its cache
// freed, recomputed from prompt + generated tokens when it is admitted again).
// Used by `infer` (one request or a batch) and by the HTTP server (one engine thread steps, HTTP
// threads submit and cancel).
// A sequence classifier (a reward model: config num_labels > 0) is batched the same way but
// generates nothing: once its prompt is prefilled, a request finishes ("stop") with the score
// head's values at the prompt's last token in GenerationOutput::scores.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "infer/sampler.h"
#include "model/transformer.h"

namespace swiftlet {

class LoraAdapter;

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
  // -1: none; k >= 0: the log-probability of every prompt token after the first given the ones
  // before it (plus the k most likely alternatives), as OpenAI's echo + logprobs returns.
  int prompt_logprobs = -1;
  // Adapter for this request; nullptr: the engine's base adapter (EngineOptions::base_adapter).
  // Must outlive the request.
  const LoraAdapter* adapter = nullptr;
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

struct GenerationOutput {
  std::vector<int32_t> tokens;  // generated tokens (a final stop token id excluded)
  std::string text;
  std::string finish_reason;   // "stop", "length", "abort" or "error"
  std::string error;           // what went wrong when finish_reason is "error"
  int32_t stop_token_id = -1;  // the stop token that ended generation, if one did
  std::vector<TokenLogprob> logprobs;
  std::vector<TokenLogprob> prompt_logprobs;  // prompt tokens 1.. when asked for
  int64_t prompt_tokens = 0;
  std::vector<float> scores;  // a sequence classifier's num_labels values (nothing generated)
};

struct GenerationCallbacks {
  // New text (may be empty when a token completes no character) and the token's logprob entry
  // when asked for. Return false to cancel the request (a client went away).
  std::function<bool(const std::string& delta, const TokenLogprob* logprob)> on_delta;
  std::function<void(const GenerationOutput&)> on_finish;
};

struct EngineOptions {
  int64_t max_batch_size = 16;  // running requests at once; more wait in the queue
  int64_t max_model_len = 0;    // prompt + generation limit; 0: the model's max positions
  int64_t prefill_chunk = 512;  // prompt tokens processed per step across new requests
  int64_t kv_cache_bytes = 0;   // KV cache memory budget; 0: unlimited
  int64_t max_waiting = 0;      // queued requests before submit refuses; 0: unlimited
  const LoraAdapter* base_adapter = nullptr;  // applied to requests that name none
};

// submit() refused a request because the queue is full (HTTP 503).
class EngineBusy : public Error {
 public:
  using Error::Error;
};

struct EngineStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_cache_used_bytes = 0;    // capacity held by the running requests' caches
  int64_t kv_cache_budget_bytes = 0;  // 0: unlimited
  int64_t preemptions = 0;
  int64_t steps = 0;
};

// One engine drives a model at a time: it sets which adapter the model's layers point at.
class Engine {
 public:
  Engine(Transformer& model, DecoderFactory decoder, EngineOptions options);
  ~Engine();

  // Queues a request. Throws Error when its prompt is empty or does not fit the context (or asks
  // a sequence classifier for prompt log-probabilities), and EngineBusy when max_waiting requests are already queued. Thread-safe.
  int64_t submit(GenerationRequest request, GenerationCallbacks callbacks = {});
  // Marks a request to stop at the next step (finish_reason "abort"). Thread-safe.
  void cancel(int64_t id);
  // Cancels every queued and running request. Thread-safe.
  void cancel_all();
  // Runs one batched forward step. Returns false when there was nothing to do. If the model
  // throws, the requests of that step finish with "error" and the exception propagates.
  bool step();
  // Blocks until a request is queued or cancelled, or `max_wait` passes. Thread-safe.
  void wait_for_work(std::chrono::milliseconds max_wait);
  // Submits one request and steps until it finishes.
  GenerationOutput generate(GenerationRequest request, GenerationCallbacks callbacks = {});

  size_t running() const { return size_t(running_count_.load()); }
  size_t waiting() const;
  EngineStats stats() const;
  int64_t max_model_len() const { return max_model_len_; }
  // Bytes of KV cache one token takes (all layers, keys and values).
  int64_t kv_bytes_per_token() const { return kv_token_bytes_; }

 private:
  struct Active;
  struct Work;
  void finish(Active& a, const std::string& reason);
  bool emit(Active& a, int32_t token, const TokenLogprob* lp);
  void admit();
  std::vector<Work> plan();
  bool reserve_caches(const std::vector<Work>& work);
  void preempt_latest();
  void set_attached(const LoraAdapter* adapter);
  void run_step(std::vector<Work>& work);
  void forward_and_sample(std::vector<Work>& work);
  void sample_next(Active& a, const float* logits_row, int64_t V);
  int64_t cache_tokens_used() const;
  int64_t cache_tokens_allocated() const;
  const std::vector<int32_t>& feed(const Active& a) const;

  Transformer& model_;
  DecoderFactory decoder_;
  EngineOptions opt_;
  int64_t max_model_len_;
  int64_t kv_token_bytes_;
  int64_t budget_tokens_;        // INT64_MAX when unlimited
  const LoraAdapter* attached_;  // adapter currently attached to the model's linear layers
  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::deque<std::unique_ptr<Active>> queue_;     // guarded by mu_
  std::vector<int64_t> cancelled_;                // guarded by mu_
  bool cancel_everything_ = false;                // guarded by mu_
  int64_t next_id_ = 1;                           // guarded by mu_
  std::vector<std::unique_ptr<Active>> running_;  // engine thread only
  int64_t admissions_ = 0;
  bool trimmed_ = true;  // memory returned to the system since the engine went idle
  std::chrono::steady_clock::time_point last_busy_;
  std::vector<float> row_, lsm_;  // scratch rows of logits and log-probabilities
  std::atomic<int64_t> running_count_{0}, kv_used_bytes_{0}, preemptions_{0}, steps_{0};
};

}  // namespace swiftlet
