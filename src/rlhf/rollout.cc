#include "rlhf/rollout.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "infer/engine.h"
#include "rlhf/reference_model.h"

namespace swiftlet::rlhf {

namespace {

class Decoder : public TextDecoder {
 public:
  explicit Decoder(const Tokenizer& t) : dec_(t) {}
  std::string push(int32_t id) override { return dec_.feed(id); }
  std::string flush() override { return dec_.flush(); }

 private:
  IncrementalDecoder dec_;
};

}  // namespace

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9e3779b97f4a7c15ull + b * 0xbf58476d1ce4e5b9ull + 0x94d049bb133111ebull;
  z = (z ^ (z >> 31)) * 0x94d049bb133111ebull;
  return z ^ (z >> 29);
}

SampledBatch sample_completions(Transformer& model, LoraAdapter* adapter, const Tokenizer& tok,
                                const std::vector<PromptSample>& prompts,
                                const std::vector<size_t>& which, int64_t copies,
                                const RolloutSampling& s, uint64_t seed, size_t first) {
  SampledBatch out;
  if (which.empty()) return out;
  out.completions.resize(which.size() * size_t(copies));
  int64_t longest = 0;
  for (size_t p : which) longest = std::max<int64_t>(longest, int64_t(prompts[p].prompt.size()));
  {
    // The engine sets which adapter the layers point at; the trainer's is back afterwards.
    struct Restore {
      Transformer& model;
      LoraAdapter* adapter;
      ~Restore() {
        LoraAdapter::detach(model);
        if (adapter) adapter->attach(model);
      }
    } restore{model, adapter};
    EngineOptions eo;
    eo.max_batch_size = int64_t(out.completions.size());
    eo.max_model_len = longest + s.max_completion_length + 1;
    if (model.config().max_position_embeddings > 0)
      eo.max_model_len =
          std::min<int64_t>(model.config().max_position_embeddings, eo.max_model_len);
    eo.base_adapter = adapter;
    const Tokenizer* t = &tok;
    Engine engine(
        model, [t] { return std::make_unique<Decoder>(*t); }, eo);
    for (size_t i = 0; i < out.completions.size(); ++i) {
      SampledCompletion& r = out.completions[i];
      r.prompt = which[i / size_t(copies)];
      GenerationRequest req;
      req.prompt = prompts[r.prompt].prompt;
      req.max_new_tokens =
          std::min<int64_t>(s.max_completion_length, eo.max_model_len - int64_t(req.prompt.size()));
      req.sampling = s.sampling;
      req.seed = mix(seed, first + i);
      req.stop_token_ids = s.stop_token_ids;
      GenerationCallbacks cb;
      cb.on_finish = [&r](const GenerationOutput& o) {
        if (o.finish_reason == "error") throw Error("a rollout failed: " + o.error);
        r.completion = o.tokens;
        if (o.finish_reason == "stop" && o.stop_token_id >= 0)
          r.completion.push_back(o.stop_token_id);
        r.text = o.text;
        r.truncated = o.finish_reason == "length";
      };
      engine.submit(std::move(req), std::move(cb));
    }
    const auto t0 = std::chrono::steady_clock::now();
    while (engine.step()) {
    }
    out.engine_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  for (const SampledCompletion& r : out.completions) out.tokens += double(r.completion.size());
  // A completion of zero tokens (the context was full) would train nothing: give it the stop id.
  for (SampledCompletion& r : out.completions)
    if (r.completion.empty() && !s.stop_token_ids.empty())
      r.completion.push_back(s.stop_token_ids.front());
  return out;
}

Share share_of(size_t n, int rank, int ranks) {
  return {n * size_t(rank) / size_t(ranks), n * size_t(rank + 1) / size_t(ranks)};
}

std::vector<std::vector<int64_t>> target_rows(const TrainBatch& b) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& [first, len] : b.samples) {
    std::vector<int64_t> rows;
    for (int64_t r = first; r < first + len; ++r)
      if (b.targets[size_t(r)] >= 0) rows.push_back(r);
    out.push_back(std::move(rows));
  }
  return out;
}

std::vector<std::vector<double>> per_sample(const TrainBatch& b, const std::vector<float>& lp) {
  std::vector<std::vector<double>> out;
  for (const auto& rows : target_rows(b)) {
    std::vector<double> v;
    for (int64_t row : rows) v.push_back(lp[size_t(row)]);
    out.push_back(std::move(v));
  }
  return out;
}

std::vector<std::vector<double>> completion_logprobs(Transformer& model, const TrainBatch& b,
                                                     float temperature) {
  LogprobCollector c(int64_t(b.input_ids.size()), temperature);
  model.evaluate(b, c);
  return per_sample(b, c.logp);
}

}  // namespace swiftlet::rlhf
