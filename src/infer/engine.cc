#include "infer/engine.h"

#include <algorithm>
#include <limits>
#include <span>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "core/log.h"
#include "tuner/lora.h"

namespace swiftlet {

namespace {
constexpr int64_t kCacheHeadroom = 64;       // tokens allocated beyond a prompt for decoding
constexpr int64_t kPromptLogprobChunk = 32;  // prompt rows per step whose logits are all kept

}  // namespace

struct Engine::Active {
  int64_t id = 0;
  GenerationRequest req;
  GenerationCallbacks cb;
  DecodeCache cache;
  Rng rng;
  TokenHistory history;
  std::unique_ptr<TextDecoder> decoder;
  // After a preemption: prompt + generated tokens but the last, recomputed into a fresh cache;
  // the last generated token is then fed as a normal decode step.
  std::vector<int32_t> resume;
  bool resumed = false;
  int64_t prefilled = 0;    // tokens of feed() already in the cache
  int32_t next_input = -1;  // token to feed at the next decode step
  std::string pending;      // text held back because it may start a stop string
  GenerationOutput out;
  int64_t admit_seq = 0;  // admission order; the latest is preempted first
  bool done = false;
  bool cancelled = false;
};

// One running request's share of a step.
struct Engine::Work {
  Active* a = nullptr;
  std::span<const int32_t> tokens;
  bool prefill = false;
  bool all_logits = false;  // prompt logprobs: keep the logits of every prompt row
};

Engine::Engine(Transformer& model, DecoderFactory decoder, EngineOptions options)
    : model_(model), decoder_(std::move(decoder)), opt_(options), attached_(options.base_adapter) {
  const ModelConfig& c = model_.config();
  max_model_len_ = opt_.max_model_len > 0 ? opt_.max_model_len : c.max_position_embeddings;
  if (max_model_len_ <= 0) max_model_len_ = 4096;
  // Caches hold the keys and values of every layer: 2 * layers * kv_heads * head_dim elements.
  kv_token_bytes_ = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim *
                    int64_t(dtype_size(model_.kv_dtype()));
  budget_tokens_ = std::numeric_limits<int64_t>::max();
  if (opt_.kv_cache_bytes > 0) {
    budget_tokens_ = opt_.kv_cache_bytes / kv_token_bytes_;
    if (budget_tokens_ < max_model_len_) {
      const double gb = double(max_model_len_ * kv_token_bytes_) / 1e9;
      if (opt_.max_model_len > 0 || budget_tokens_ < 16)
        throw Error(
            fmt::format("a KV cache of {:.2f} GB holds {} tokens, fewer than the {} of "
                        "--max_model_len (which needs {:.2f} GB)",
                        double(opt_.kv_cache_bytes) / 1e9, budget_tokens_, max_model_len_, gb),
            "raise the KV cache budget or lower --max_model_len");
      log_warning(
          "the KV cache budget of {:.2f} GB holds {} tokens: max_model_len lowered from {} to {}",
          double(opt_.kv_cache_bytes) / 1e9, budget_tokens_, max_model_len_, budget_tokens_);
      max_model_len_ = budget_tokens_;
    }
  }
  if (opt_.max_batch_size < 1) throw Error("--max_batch_size must be at least 1");
  if (opt_.prefill_chunk < 1) opt_.prefill_chunk = 1;
  // The engine owns which adapter the model's layers point at from here on.
  if (attached_) {
    attached_->attach(model_);
  } else {
    LoraAdapter::detach(model_);
  }
}

Engine::~Engine() = default;

const std::vector<int32_t>& Engine::feed(const Active& a) const {
  return a.resumed ? a.resume : a.req.prompt;
}

int64_t Engine::submit(GenerationRequest request, GenerationCallbacks callbacks) {
  const int64_t n = int64_t(request.prompt.size());
  if (n == 0) throw Error("the prompt is empty");
  if (n >= max_model_len_)
    throw Error(fmt::format("the prompt has {} tokens but the model allows at most {} in total", n,
                            max_model_len_),
                "shorten the prompt or raise --max_model_len");
  if (model_.config().seq_cls() && request.prompt_logprobs >= 0)
    throw Error("a sequence classifier (reward model) scores the prompt; it has no token "
                "log-probabilities");
  auto a = std::make_unique<Active>();
  a->req = std::move(request);
  a->cb = std::move(callbacks);
  a->rng.reseed(a->req.seed);
  a->history.add_prompt(a->req.prompt);
  a->decoder = decoder_ ? decoder_() : nullptr;
  a->out.prompt_tokens = n;
  int64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (opt_.max_waiting > 0 && int64_t(queue_.size()) >= opt_.max_waiting)
      throw EngineBusy(fmt::format("{} requests are already waiting", queue_.size()),
                       "retry later or raise the queue size");
    a->id = next_id_++;
    id = a->id;
    queue_.push_back(std::move(a));
  }
  work_cv_.notify_all();
  return id;
}

void Engine::cancel(int64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.push_back(id);
  }
  work_cv_.notify_all();
}

void Engine::cancel_all() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_everything_ = true;
  }
  work_cv_.notify_all();
}

void Engine::wait_for_work(std::chrono::milliseconds max_wait) {
  std::unique_lock<std::mutex> lock(mu_);
  work_cv_.wait_for(lock, max_wait, [&] {
    return !queue_.empty() || !cancelled_.empty() || cancel_everything_ || running_count_ > 0;
  });
}

size_t Engine::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.running = running_count_;
  s.waiting = int64_t(waiting());
  s.kv_cache_used_bytes = kv_used_bytes_;
  s.kv_cache_budget_bytes = opt_.kv_cache_bytes;
  s.preemptions = preemptions_;
  s.steps = steps_;
  return s;
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
    if (a.cb.on_delta) a.cb.on_delta(keep, lp);
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

int64_t Engine::cache_tokens_allocated() const {
  int64_t used = 0;
  for (const auto& a : running_) used += a->cache.capacity;
  return used;
}

// Cache tokens a running request holds, or will take for its prompt when it has no cache yet.
int64_t Engine::cache_tokens_used() const {
  int64_t used = 0;
  for (const auto& a : running_)
    used += a->cache.capacity > 0
                ? a->cache.capacity
                : std::min(max_model_len_, int64_t(feed(*a).size()) + kCacheHeadroom);
  return used;
}

void Engine::admit() {
  std::vector<std::unique_ptr<Active>> aborted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto mark = [&](auto pred) {
      for (auto& a : running_)
        if (pred(*a)) a->cancelled = true;
      for (auto& a : queue_)
        if (pred(*a)) a->cancelled = true;
    };
    if (cancel_everything_) mark([](const Active&) { return true; });
    cancel_everything_ = false;
    for (int64_t id : cancelled_) mark([id](const Active& a) { return a.id == id; });
    cancelled_.clear();
    // Cancelled requests leave the queue at once so they stop holding its places.
    for (auto it = queue_.begin(); it != queue_.end();) {
      if ((*it)->cancelled) {
        aborted.push_back(std::move(*it));
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    // First come, first served, within the batch size and the KV cache budget.
    int64_t used = cache_tokens_used();
    while (!queue_.empty() && int64_t(running_.size()) < opt_.max_batch_size) {
      Active& a = *queue_.front();
      const int64_t need = std::min(max_model_len_, int64_t(feed(a).size()) + kCacheHeadroom);
      if (!running_.empty() && used + need > budget_tokens_) break;
      used += need;
      a.admit_seq = ++admissions_;
      running_.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
  }
  for (auto& a : aborted) finish(*a, "abort");
}

std::vector<Engine::Work> Engine::plan() {
  // Decode tokens of prefilled requests first, then prompt chunks within the prefill budget.
  std::vector<Work> work;
  for (auto& up : running_) {
    Active& a = *up;
    if (a.prefilled == int64_t(feed(a).size()))
      work.push_back({&a, std::span<const int32_t>(&a.next_input, 1), false, false});
  }
  int64_t budget = opt_.prefill_chunk;
  for (auto& up : running_) {
    Active& a = *up;
    const std::vector<int32_t>& f = feed(a);
    const int64_t len = int64_t(f.size());
    if (a.prefilled == len || (budget <= 0 && !work.empty())) continue;
    int64_t n = std::min(len - a.prefilled, std::max<int64_t>(budget, 1));
    const bool all_logits = a.req.prompt_logprobs >= 0 && !a.resumed;
    if (all_logits) n = std::min(n, kPromptLogprobChunk);
    work.push_back(
        {&a, std::span<const int32_t>(f.data() + a.prefilled, size_t(n)), true, all_logits});
    budget -= n;
  }
  return work;
}

// Grows the caches the planned work needs; false (nothing changed) when the budget is short.
bool Engine::reserve_caches(const std::vector<Work>& work) {
  std::vector<int64_t> target(work.size(), 0);
  int64_t growth = 0;
  for (size_t i = 0; i < work.size(); ++i) {
    const Active& a = *work[i].a;
    const int64_t need = a.cache.length + int64_t(work[i].tokens.size());
    const int64_t cap = a.cache.capacity;
    if (need <= cap) continue;
    // First allocation: the whole prompt plus headroom; later: grow by a quarter (>= 64 tokens)
    // so copies stay rare without holding much unused memory.
    int64_t t = cap == 0 ? int64_t(feed(a).size()) + kCacheHeadroom
                         : cap + std::max<int64_t>(kCacheHeadroom, cap / 4);
    target[i] = std::max(need, std::min(max_model_len_, t));
    growth += target[i] - cap;
  }
  if (growth > 0 && cache_tokens_allocated() + growth > budget_tokens_) return false;
  for (size_t i = 0; i < work.size(); ++i)
    if (target[i] > 0) model_.reserve(work[i].a->cache, target[i]);
  return true;
}

void Engine::preempt_latest() {
  auto it = std::max_element(running_.begin(), running_.end(), [](const auto& x, const auto& y) {
    return x->admit_seq < y->admit_seq;
  });
  std::unique_ptr<Active> a = std::move(*it);
  running_.erase(it);
  a->cache = DecodeCache{};
  a->prefilled = 0;
  if (a->out.tokens.empty()) {
    a->resumed = false;
    a->out.prompt_logprobs.clear();
  } else {
    a->resume = a->req.prompt;
    a->resume.insert(a->resume.end(), a->out.tokens.begin(), a->out.tokens.end() - 1);
    a->resumed = true;
  }
  ++preemptions_;
  log_debug("engine: KV cache budget full, request {} preempted after {} tokens", a->id,
            a->out.tokens.size());
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_front(std::move(a));
}

void Engine::sample_next(Active& a, const float* src, int64_t V) {
  row_.assign(src, src + V);
  TokenLogprob lp;
  const bool want_lp = a.req.top_logprobs >= 0;
  apply_penalties(row_, a.req.sampling, a.history);
  if (want_lp) {
    lsm_.resize(size_t(V));
    log_softmax(std::span<const float>(src, size_t(V)), lsm_);
    if (a.req.top_logprobs > 0) lp.top = top_entries(lsm_, a.req.top_logprobs);
  }
  const int32_t tok = sample_token(row_, a.req.sampling, a.rng);
  if (want_lp) {
    lp.token = tok;
    lp.logprob = lsm_[size_t(tok)];
  }
  a.history.add_generated(tok);
  const auto& stop_ids = a.req.stop_token_ids;
  if (std::find(stop_ids.begin(), stop_ids.end(), tok) != stop_ids.end()) {
    a.out.stop_token_id = tok;
    finish(a, "stop");
    return;
  }
  if (emit(a, tok, want_lp ? &lp : nullptr)) return;
  const int64_t plen = int64_t(a.req.prompt.size());
  const int64_t generated = int64_t(a.out.tokens.size());
  if ((a.req.max_new_tokens >= 0 && generated >= a.req.max_new_tokens) ||
      plen + generated >= max_model_len_) {
    finish(a, "length");
    return;
  }
  if (a.cancelled) {
    finish(a, "abort");
    return;
  }
  a.next_input = tok;
}

void Engine::set_attached(const LoraAdapter* adapter) {
  if (adapter == attached_) return;
  if (adapter) {
    adapter->attach(model_);
  } else {
    LoraAdapter::detach(model_);
  }
  attached_ = adapter;
}

// Requests on different adapters still share one forward, so the weights are read once per step:
// each adapter's rows are made contiguous and every projection gets per-row LoRA pairs.
void Engine::run_step(std::vector<Work>& work) {
  auto adapter_of = [&](const Work& w) {
    return w.a->req.adapter ? w.a->req.adapter : opt_.base_adapter;
  };
  std::vector<const LoraAdapter*> adapters;
  for (const Work& w : work)
    if (std::find(adapters.begin(), adapters.end(), adapter_of(w)) == adapters.end())
      adapters.push_back(adapter_of(w));
  if (adapters.size() == 1) {
    set_attached(adapters.front());
    forward_and_sample(work);
    return;
  }
  auto group = [&](const Work& w) {
    return size_t(std::find(adapters.begin(), adapters.end(), adapter_of(w)) - adapters.begin());
  };
  std::stable_sort(work.begin(), work.end(),
                   [&](const Work& x, const Work& y) { return group(x) < group(y); });
  std::vector<std::pair<int64_t, int64_t>> range(adapters.size(), {-1, 0});  // packed rows
  int64_t row = 0;
  for (const Work& w : work) {
    auto& r = range[group(w)];
    if (r.first < 0) r.first = row;
    row += int64_t(w.tokens.size());
    r.second = row;
  }
  set_attached(nullptr);
  std::vector<WeightSlot> modules = module_slots(model_.config(), &model_.weights());
  std::vector<std::vector<LoraRows>> rows(modules.size());
  for (size_t m = 0; m < modules.size(); ++m) {
    for (size_t g = 0; g < adapters.size(); ++g)
      if (const LoraPair* p = adapters[g] ? adapters[g]->pair(m) : nullptr)
        rows[m].push_back({range[g].first, range[g].second, p});
    modules[m].linear->lora_rows = rows[m];
  }
  auto clear = [&] {
    for (auto& m : modules) m.linear->lora_rows = {};
  };
  try {
    forward_and_sample(work);
  } catch (...) {
    clear();
    throw;
  }
  clear();
}

void Engine::forward_and_sample(std::vector<Work>& work) {
  std::vector<SequenceStep> steps;
  std::vector<int64_t> first_row;  // logits row of each work item's first returned row
  int64_t rows = 0;
  for (const Work& w : work) {
    steps.push_back({w.tokens, &w.a->cache, w.all_logits});
    first_row.push_back(rows);
    rows += w.all_logits ? int64_t(w.tokens.size()) : 1;
  }
  Tensor logits;
  try {
    logits = model_.forward(steps);
  } catch (const std::exception& e) {
    for (const Work& w : work) {
      w.a->out.error = e.what();
      finish(*w.a, "error");
    }
    throw;
  }
  const int64_t V = logits.dim(1);
  const float* data = logits.data<float>();
  for (size_t i = 0; i < work.size(); ++i) {
    Active& a = *work[i].a;
    const int64_t n = int64_t(work[i].tokens.size());
    const float* last = data + (first_row[i] + (work[i].all_logits ? n - 1 : 0)) * V;
    if (work[i].prefill) {
      if (work[i].all_logits) {
        // Row r predicts prompt token prefilled + r + 1.
        const int64_t plen = int64_t(a.req.prompt.size());
        lsm_.resize(size_t(V));
        for (int64_t r = 0; r < n && a.prefilled + r + 1 < plen; ++r) {
          log_softmax(std::span<const float>(data + (first_row[i] + r) * V, size_t(V)), lsm_);
          TokenLogprob lp;
          lp.token = a.req.prompt[size_t(a.prefilled + r + 1)];
          lp.logprob = lsm_[size_t(lp.token)];
          if (a.req.prompt_logprobs > 0) lp.top = top_entries(lsm_, a.req.prompt_logprobs);
          a.out.prompt_logprobs.push_back(std::move(lp));
        }
      }
      a.prefilled += n;
      if (a.prefilled < int64_t(feed(a).size())) continue;  // more prompt to go before sampling
      if (a.resumed) continue;  // recomputed after a preemption: next_input is already known
    }
    if (a.cancelled) {
      finish(a, "abort");
      continue;
    }
    if (model_.config().seq_cls()) {  // the row holds the score head's values
      a.out.scores.assign(last, last + V);
      finish(a, "stop");
      continue;
    }
    sample_next(a, last, V);
  }
}

bool Engine::step() {
  admit();
  // Requests cancelled (client gone) leave before any work is spent on them.
  for (auto& a : running_)
    if (a->cancelled) finish(*a, "abort");
  std::erase_if(running_, [](const auto& a) { return a->done; });
  running_count_ = int64_t(running_.size());
  if (running_.empty()) {
    kv_used_bytes_ = 0;
    // Once idle for a moment (so the request threads have freed their side too), give freed
    // caches and activations back to the system.
    if (!trimmed_ &&
        std::chrono::steady_clock::now() - last_busy_ > std::chrono::milliseconds(200)) {
#ifdef __GLIBC__
      malloc_trim(0);
#endif
      trimmed_ = true;
    }
    return false;
  }
  trimmed_ = false;
  last_busy_ = std::chrono::steady_clock::now();

  std::vector<Work> work;
  for (;;) {
    work = plan();
    if (reserve_caches(work)) break;
    SWIFTLET_CHECK(running_.size() > 1, "engine: one request needs more KV cache than the budget");
    preempt_latest();
  }
  kv_used_bytes_ = cache_tokens_allocated() * kv_token_bytes_;

  try {
    run_step(work);
  } catch (...) {
    std::erase_if(running_, [](const auto& a) { return a->done; });
    running_count_ = int64_t(running_.size());
    throw;
  }
  std::erase_if(running_, [](const auto& a) { return a->done; });
  running_count_ = int64_t(running_.size());
  kv_used_bytes_ = cache_tokens_allocated() * kv_token_bytes_;
  ++steps_;
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
