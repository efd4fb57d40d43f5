#include "infer/engine.h"

#include <algorithm>

namespace swiftlet {

struct Engine::Active {
  int64_t id = 0;
  GenerationRequest req;
  GenerationCallbacks cb;
  KvCache cache;
  Rng rng;
  TokenHistory history;
  std::unique_ptr<TextDecoder> decoder;
  int64_t prefilled = 0;       // prompt tokens already in the cache
  int32_t next_input = -1;     // token to feed at the next decode step
  std::string pending;         // text held back because it may start a stop string
  GenerationOutput out;
  bool done = false;
  bool cancelled = false;
};

Engine::Engine(Transformer& model, DecoderFactory decoder, EngineOptions options)
    : model_(model), decoder_(std::move(decoder)), opt_(options) {
  max_model_len_ = opt_.max_model_len > 0 ? opt_.max_model_len : model_.config().max_position_embeddings;
  if (max_model_len_ <= 0) max_model_len_ = 4096;
}

Engine::~Engine() = default;

int64_t Engine::submit(GenerationRequest request, GenerationCallbacks callbacks) {
  const int64_t n = int64_t(request.prompt.size());
  if (n == 0) throw Error("the prompt is empty");
  if (n >= max_model_len_)
    throw Error(fmt::format("the prompt has {} tokens but the model allows at most {} in total", n,
                            max_model_len_),
                "shorten the prompt or raise --max_model_len");
  auto a = std::make_unique<Active>();
  a->req = std::move(request);
  a->cb = std::move(callbacks);
  a->rng.reseed(a->req.seed);
  a->history.add_prompt(a->req.prompt);
  a->decoder = decoder_ ? decoder_() : nullptr;
  a->out.prompt_tokens = n;
  std::lock_guard<std::mutex> lock(mu_);
  a->id = next_id_++;
  const int64_t id = a->id;
  queue_.push_back(std::move(a));
  return id;
}

void Engine::cancel(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_.push_back(id);
}

size_t Engine::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_.size();
}

size_t Engine::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

void Engine::finish(Active& a, const std::string& reason) {
  if (a.done) return;
  a.done = true;
  if (a.decoder && reason != "abort") {
    a.pending += a.decoder->flush();
  }
  if (reason != "abort" && !a.pending.empty()) {
    a.out.text += a.pending;
    if (a.cb.on_delta) a.cb.on_delta(a.pending, nullptr);
    a.pending.clear();
  }
  a.out.finish_reason = reason;
  if (a.cb.on_finish) a.cb.on_finish(a.out);
}

// Adds a generated token's text; returns true when a stop string ended the request.
bool Engine::emit(Active& a, int32_t token, const TokenLogprob* lp) {
  a.out.tokens.push_back(token);
  if (lp) a.out.logprobs.push_back(*lp);
  std::string piece = a.decoder ? a.decoder->push(token) : std::string();
  a.pending += piece;
  const auto& stops = a.req.stop_strings;
  // A stop string anywhere in the held text ends the request (text after it is dropped).
  size_t cut = std::string::npos, cut_len = 0;
  for (const auto& s : stops) {
    if (s.empty()) continue;
    size_t at = a.pending.find(s);
    if (at != std::string::npos && at < cut) cut = at, cut_len = s.size();
  }
  if (cut != std::string::npos) {
    std::string keep = a.pending.substr(0, a.req.include_stop_str_in_output ? cut + cut_len : cut);
    a.pending.clear();
    a.out.text += keep;
    bool go_on = true;
    if (a.cb.on_delta) go_on = a.cb.on_delta(keep, lp);
    (void)go_on;
    finish(a, "stop");
    return true;
  }
  // Hold back the longest tail that could still grow into a stop string.
  size_t hold = 0;
  for (const auto& s : stops)
    for (size_t k = std::min(s.empty() ? 0 : s.size() - 1, a.pending.size()); k > hold; --k)
      if (a.pending.compare(a.pending.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  std::string ready = a.pending.substr(0, a.pending.size() - hold);
  a.pending.erase(0, a.pending.size() - hold);
  a.out.text += ready;
  if (a.cb.on_delta && !a.cb.on_delta(ready, lp)) {
    a.cancelled = true;
  }
  return false;
}

bool Engine::step() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int64_t id : cancelled_) {
      for (auto& a : running_)
        if (a->id == id) a->cancelled = true;
      for (auto& a : queue_)
        if (a->id == id) a->cancelled = true;
    }
    cancelled_.clear();
    while (!queue_.empty() && int64_t(running_.size()) < opt_.max_batch_size) {
      running_.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
  }
  // Requests cancelled (client gone) leave before any work is spent on them.
  for (auto& a : running_)
    if (a->cancelled) finish(*a, "abort");
  std::erase_if(running_, [](const auto& a) { return a->done; });
  if (running_.empty()) return false;

  // Decode tokens of prefilled requests first, then prompt chunks within the prefill budget.
  std::vector<SequenceStep> steps;
  std::vector<Active*> owners;
  std::vector<int32_t> single(running_.size());
  int64_t budget = opt_.prefill_chunk;
  for (size_t i = 0; i < running_.size(); ++i) {
    Active& a = *running_[i];
    const int64_t plen = int64_t(a.req.prompt.size());
    if (a.prefilled == plen) {
      single[i] = a.next_input;
      steps.push_back({std::span<const int32_t>(&single[i], 1), &a.cache, false});
      owners.push_back(&a);
    }
  }
  for (auto& up : running_) {
    Active& a = *up;
    const int64_t plen = int64_t(a.req.prompt.size());
    if (a.prefilled == plen || (budget <= 0 && !steps.empty())) continue;
    const int64_t n = std::min(plen - a.prefilled, std::max<int64_t>(budget, 1));
    if (a.cache.capacity == 0) {
      a.cache = model_.new_cache(std::min<int64_t>(max_model_len_, plen + 64));
    }
    steps.push_back({std::span<const int32_t>(a.req.prompt.data() + a.prefilled, size_t(n)), &a.cache, false});
    owners.push_back(&a);
    budget -= n;
  }
  Tensor logits = model_.forward(steps);
  const int64_t V = logits.dim(1);
  std::vector<float> row(static_cast<size_t>(V)), lsm;

  for (size_t s = 0; s < steps.size(); ++s) {
    Active& a = *owners[s];
    const int64_t plen = int64_t(a.req.prompt.size());
    if (a.prefilled < plen) {
      a.prefilled += int64_t(steps[s].tokens.size());
      if (a.prefilled < plen) continue;  // more prompt to go before sampling
    }
    const float* src = logits.data<float>() + int64_t(s) * V;
    std::copy(src, src + V, row.begin());
    TokenLogprob lp;
    const bool want_lp = a.req.top_logprobs >= 0;
    apply_penalties(row, a.req.sampling, a.history);
    if (want_lp) {
      lsm.resize(size_t(V));
      log_softmax(std::span<const float>(src, size_t(V)), lsm);
      if (a.req.top_logprobs > 0) lp.top = top_entries(lsm, a.req.top_logprobs);
    }
    const int32_t tok = sample_token(row, a.req.sampling, a.rng);
    if (want_lp) {
      lp.token = tok;
      lp.logprob = lsm[size_t(tok)];
    }
    a.history.add_generated(tok);
    const bool is_stop_id = std::find(a.req.stop_token_ids.begin(), a.req.stop_token_ids.end(), tok) !=
                            a.req.stop_token_ids.end();
    if (is_stop_id) {
      finish(a, "stop");
      continue;
    }
    if (emit(a, tok, want_lp ? &lp : nullptr)) continue;
    const int64_t generated = int64_t(a.out.tokens.size());
    if ((a.req.max_new_tokens >= 0 && generated >= a.req.max_new_tokens) ||
        plen + generated >= max_model_len_) {
      finish(a, "length");
      continue;
    }
    if (a.cancelled) {
      finish(a, "abort");
      continue;
    }
    a.next_input = tok;
  }
  std::erase_if(running_, [](const auto& a) { return a->done; });
  return true;
}

GenerationOutput Engine::generate(GenerationRequest request, GenerationCallbacks callbacks) {
  GenerationOutput result;
  bool finished = false;
  auto user_finish = callbacks.on_finish;
  callbacks.on_finish = [&](const GenerationOutput& o) {
    result = o;
    finished = true;
    if (user_finish) user_finish(o);
  };
  submit(std::move(request), std::move(callbacks));
  while (!finished && step()) {
  }
  return result;
}

}  // namespace swiftlet
