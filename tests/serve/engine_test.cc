// The continuous-batching engine: requests that share steps (joining late, with different
// sampling, adapters, or preempted by the KV cache budget) produce exactly the tokens they produce
// alone; prompt logprobs match the model's full-sequence logits; cancel and a full queue behave.
#include "infer/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "infer/runtime.h"
#include "serve/serve_fixture.h"

namespace swiftlet {
namespace {

using serve_testing::make_random_adapter;
using testing::TempDir;

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    adapter_dir_ = new TempDir();
    const std::string model = testing::tiny_model("tiny");
    make_random_adapter(model, adapter_dir_->path() + "/a", 11);
    make_random_adapter(model, adapter_dir_->path() + "/b", 12);
    RuntimeOptions o;
    o.model = model;
    o.threads = 2;
    rt_ = new Runtime(o);
    adapter_ = new LoraAdapter(
        LoraAdapter::load(rt_->device(), adapter_dir_->path() + "/a", rt_->folder().config));
    adapter2_ = new LoraAdapter(
        LoraAdapter::load(rt_->device(), adapter_dir_->path() + "/b", rt_->folder().config));
  }
  static void TearDownTestSuite() {
    delete adapter_;
    delete adapter2_;
    delete rt_;
    delete adapter_dir_;
  }

  static GenerationRequest request(const std::string& text, int64_t max_new, double temperature,
                                   uint64_t seed) {
    GenerationRequest r;
    r.prompt = rt_->tokenizer().encode(text);
    r.max_new_tokens = max_new;
    r.sampling.temperature = temperature;
    r.sampling.top_k = temperature > 0 ? 50 : 0;
    r.seed = seed;
    r.stop_token_ids = rt_->stop_token_ids();
    return r;
  }

  // Tokens of a request run alone on a fresh engine.
  static std::vector<int32_t> alone(const GenerationRequest& r) {
    Engine e(rt_->model(), rt_->decoder_factory(), {});
    return e.generate(r).tokens;
  }

  static TempDir* adapter_dir_;
  static Runtime* rt_;
  static LoraAdapter* adapter_;
  static LoraAdapter* adapter2_;
};

TempDir* EngineTest::adapter_dir_ = nullptr;
Runtime* EngineTest::rt_ = nullptr;
LoraAdapter* EngineTest::adapter_ = nullptr;
LoraAdapter* EngineTest::adapter2_ = nullptr;

TEST_F(EngineTest, RequestsJoiningARunningBatchGetTheirSoloTokens) {
  std::vector<GenerationRequest> reqs = {
      request("The first request is rather long, so that its prompt takes a few steps", 20, 0, 1),
      request("second", 25, 1.0, 7), request("third one, sampled", 18, 0.8, 99),
      request("fourth joins last", 12, 0, 5)};
  reqs[1].sampling.presence_penalty = 0.5;
  reqs[2].sampling.repetition_penalty = 1.3;
  std::vector<std::vector<int32_t>> expected;
  for (const auto& r : reqs) expected.push_back(alone(r));

  EngineOptions o;
  o.max_batch_size = 3;  // the fourth waits for a free slot
  o.prefill_chunk = 8;   // prompts take several steps, interleaved with decoding
  Engine e(rt_->model(), rt_->decoder_factory(), o);
  std::vector<GenerationOutput> got(reqs.size());
  auto submit = [&](size_t i) {
    GenerationCallbacks cb;
    cb.on_finish = [&got, i](const GenerationOutput& out) { got[i] = out; };
    e.submit(reqs[i], cb);
  };
  submit(0);
  for (int s = 0; s < 3; ++s) e.step();
  submit(1);
  e.step();
  submit(2);
  submit(3);
  size_t max_running = 0;
  while (e.step()) max_running = std::max(max_running, e.running());
  EXPECT_EQ(max_running, 3u);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(got[i].tokens, expected[i]) << "request " << i;
    EXPECT_EQ(got[i].finish_reason, "length");
    EXPECT_EQ(int64_t(got[i].tokens.size()), reqs[i].max_new_tokens);
  }
}

TEST_F(EngineTest, AdapterRequestsShareStepsWithBaseRequests) {
  GenerationRequest base = request("an adapter test prompt", 16, 0, 1);
  GenerationRequest tuned = base;
  tuned.adapter = adapter_;
  const std::vector<int32_t> base_alone = alone(base);
  const std::vector<int32_t> tuned_alone = alone(tuned);
  // Reference for the adapter: the plain Transformer with the adapter attached, greedy by hand.
  adapter_->attach(rt_->model());
  std::vector<int32_t> seq = base.prompt, manual;
  for (int i = 0; i < 16; ++i) {
    Tensor logits = rt_->model().logits(seq);
    const float* last = logits.data<float>() + (logits.dim(0) - 1) * logits.dim(1);
    const int32_t t = int32_t(std::max_element(last, last + logits.dim(1)) - last);
    manual.push_back(t);
    seq.push_back(t);
  }
  LoraAdapter::detach(rt_->model());
  EXPECT_EQ(tuned_alone, manual);
  EXPECT_NE(tuned_alone, base_alone);

  GenerationRequest other = base;
  other.adapter = adapter2_;
  other.max_new_tokens = 10;
  const std::vector<int32_t> other_alone = alone(other);
  EXPECT_NE(other_alone, std::vector<int32_t>(tuned_alone.begin(), tuned_alone.begin() + 10));

  // Base, adapter a and adapter b requests in one batch (one forward with per-row adapters),
  // joining at different steps so prefill chunks and decode rows of all three mix.
  EngineOptions o;
  o.prefill_chunk = 4;
  Engine e(rt_->model(), rt_->decoder_factory(), o);
  const std::vector<const GenerationRequest*> reqs = {&base, &tuned, &other, &tuned, &base, &other};
  std::vector<GenerationOutput> got(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    GenerationCallbacks cb;
    cb.on_finish = [&got, i](const GenerationOutput& out) { got[i] = out; };
    e.submit(*reqs[i], cb);
    e.step();
  }
  while (e.step()) {
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    const auto& want = reqs[i] == &base    ? base_alone
                       : reqs[i] == &tuned ? tuned_alone
                                           : other_alone;
    EXPECT_EQ(got[i].tokens, want) << i;
  }
}

TEST_F(EngineTest, KvCacheBudgetPreemptsAndResumesWithoutChangingTokens) {
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 4; ++i)
    reqs.push_back(request(fmt::format("budget request number {}", i), 90, i % 2 ? 0.9 : 0, 3 + i));
  std::vector<std::vector<int32_t>> expected;
  for (const auto& r : reqs) expected.push_back(alone(r));

  EngineOptions o;
  o.max_batch_size = 4;
  o.max_model_len = 200;
  Engine probe(rt_->model(), nullptr, o);
  o.kv_cache_bytes = 260 * probe.kv_bytes_per_token();  // 4 x ~100 tokens do not fit at once
  Engine e(rt_->model(), rt_->decoder_factory(), o);
  std::vector<GenerationOutput> got(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    GenerationCallbacks cb;
    cb.on_finish = [&got, i](const GenerationOutput& out) { got[i] = out; };
    e.submit(reqs[i], cb);
  }
  while (e.step()) {
    EXPECT_LE(e.stats().kv_cache_used_bytes, o.kv_cache_bytes);
  }
  EXPECT_GT(e.stats().preemptions, 0);
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(got[i].tokens, expected[i]) << "request " << i;
}

TEST_F(EngineTest, BudgetSmallerThanTheContextLowersMaxModelLen) {
  EngineOptions o;
  Engine probe(rt_->model(), nullptr, o);
  o.kv_cache_bytes = 1000 * probe.kv_bytes_per_token();
  Engine e(rt_->model(), nullptr, o);
  EXPECT_EQ(e.max_model_len(), 1000);
  o.max_model_len = 2000;  // asked for explicitly: an error instead
  EXPECT_ERROR_HAS(Engine(rt_->model(), nullptr, o), "--max_model_len");
}

TEST_F(EngineTest, PromptLogprobsMatchTheFullSequenceLogits) {
  GenerationRequest r = request(
      "prompt logprobs are the log-softmax of each earlier position's logits "
      "over a prompt longer than one chunk of thirty-two tokens, which this "
      "sentence, going on and on about nothing in particular, surely is",
      3, 0, 1);
  ASSERT_GT(r.prompt.size(), 32u);
  r.prompt_logprobs = 2;
  Engine e(rt_->model(), rt_->decoder_factory(), {});
  GenerationOutput out = e.generate(r);
  ASSERT_EQ(out.prompt_logprobs.size(), r.prompt.size() - 1);
  Tensor logits = rt_->model().logits(r.prompt);
  const int64_t V = logits.dim(1);
  std::vector<float> lsm(static_cast<size_t>(V));
  for (size_t i = 0; i + 1 < r.prompt.size(); ++i) {
    log_softmax(std::span<const float>(logits.data<float>() + int64_t(i) * V, size_t(V)), lsm);
    const TokenLogprob& lp = out.prompt_logprobs[i];
    EXPECT_EQ(lp.token, r.prompt[i + 1]);
    EXPECT_NEAR(lp.logprob, lsm[size_t(r.prompt[i + 1])], 1e-4) << i;
    ASSERT_EQ(lp.top.size(), 2u);
    EXPECT_EQ(lp.top[0].first, int32_t(std::max_element(lsm.begin(), lsm.end()) - lsm.begin()));
  }
}

TEST_F(EngineTest, CancelFreesTheSlotAtTheNextStep) {
  EngineOptions o;
  o.max_batch_size = 1;
  Engine e(rt_->model(), rt_->decoder_factory(), o);
  GenerationOutput first, second;
  GenerationCallbacks cb1, cb2;
  int deltas = 0;
  cb1.on_delta = [&](const std::string&, const TokenLogprob*) {
    return ++deltas < 5;
  };  // client leaves
  cb1.on_finish = [&](const GenerationOutput& out) { first = out; };
  cb2.on_finish = [&](const GenerationOutput& out) { second = out; };
  e.submit(request("long", 1000, 0, 1), cb1);
  const int64_t id2 = e.submit(request("waits", 1000, 0, 1), cb2);
  for (int i = 0; i < 8; ++i) e.step();
  EXPECT_EQ(first.finish_reason, "abort");
  EXPECT_EQ(first.tokens.size(), 5u);
  EXPECT_EQ(e.running(), 1u);  // the second took the slot
  e.cancel(id2);
  e.step();
  EXPECT_EQ(second.finish_reason, "abort");
  EXPECT_EQ(e.running(), 0u);
  EXPECT_EQ(e.stats().kv_cache_used_bytes, 0);
}

TEST_F(EngineTest, FullQueueRefusesAndStopStringsCut) {
  EngineOptions o;
  o.max_batch_size = 1;
  o.max_waiting = 2;
  Engine e(rt_->model(), rt_->decoder_factory(), o);
  e.submit(request("a", 4, 0, 1));
  e.submit(request("b", 4, 0, 1));
  EXPECT_THROW(e.submit(request("c", 4, 0, 1)), EngineBusy);
  e.cancel_all();
  e.step();
  EXPECT_EQ(e.waiting(), 0u);
  EXPECT_EQ(e.running(), 0u);

  GenerationRequest r = request("stop strings", 30, 1.0, 42);
  const std::string full = e.generate(r).text;
  ASSERT_GT(full.size(), 12u);
  const std::string stop = full.substr(6, 3);
  r.stop_strings = {stop};
  GenerationOutput cut = e.generate(r);
  EXPECT_EQ(cut.text, full.substr(0, full.find(stop)));
  EXPECT_EQ(cut.finish_reason, "stop");
  r.include_stop_str_in_output = true;
  EXPECT_EQ(e.generate(r).text, full.substr(0, full.find(stop) + stop.size()));
}

// The sampler's large-vocabulary paths (no top-k: one pass for the whole distribution, a growing
// sorted prefix for top-p / min-p) against the plain definition: softmax, sort, cut, renormalise.
// A mixture-of-experts model in continuous batching: requests joining a running batch (their
// tokens routed together with the others') get exactly their solo tokens.
TEST(EngineMoe, RequestsSharingStepsGetTheirSoloTokens) {
  RuntimeOptions ro;
  ro.model = testing::tiny_model("tiny-moe");
  ro.threads = 2;
  Runtime rt(ro);
  auto request = [&](const std::string& text, int64_t max_new, double temperature, uint64_t seed) {
    GenerationRequest r;
    r.prompt = rt.tokenizer().encode(text);
    r.max_new_tokens = max_new;
    r.sampling.temperature = temperature;
    r.sampling.top_k = temperature > 0 ? 50 : 0;
    r.seed = seed;
    r.stop_token_ids = rt.stop_token_ids();
    return r;
  };
  std::vector<GenerationRequest> reqs = {request("a long first prompt that takes steps", 16, 0, 1),
                                         request("second", 12, 1.0, 7),
                                         request("third, sampled", 10, 0.8, 9)};
  std::vector<std::vector<int32_t>> expected;
  for (const auto& r : reqs) {
    Engine e(rt.model(), rt.decoder_factory(), {});
    expected.push_back(e.generate(r).tokens);
  }
  EngineOptions o;
  o.max_batch_size = 3;
  o.prefill_chunk = 4;
  Engine e(rt.model(), rt.decoder_factory(), o);
  std::vector<GenerationOutput> got(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    GenerationCallbacks cb;
    cb.on_finish = [&got, i](const GenerationOutput& out) { got[i] = out; };
    e.submit(reqs[i], cb);
    e.step();
  }
  while (e.step()) {
  }
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(got[i].tokens, expected[i]) << "request " << i;
}

TEST(SamplerLargeVocabulary, TopPAndMinPKeepExactlyTheReferenceSet) {
  const int V = 2000;
  Rng gen(3);
  for (const double spread : {0.5, 4.0}) {  // a flat and a peaked distribution
    std::vector<float> logits(V);
    for (auto& l : logits) l = float(spread * gen.normal());
    for (const auto& [top_p, min_p] : std::vector<std::pair<double, double>>{
             {1.0, 0.0}, {0.9, 0.0}, {0.3, 0.0}, {1.0, 0.05}, {0.8, 0.01}}) {
      // Reference: probabilities sorted descending, the top-p prefix, then the min-p floor.
      std::vector<int32_t> idx(V);
      std::iota(idx.begin(), idx.end(), 0);
      std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) {
        return logits[size_t(a)] > logits[size_t(b)] ||
               (logits[size_t(a)] == logits[size_t(b)] && a < b);
      });
      std::vector<double> p(V);
      double z = 0;
      for (int i = 0; i < V; ++i)
        z += p[size_t(i)] =
            std::exp(double(logits[size_t(idx[size_t(i)])] - logits[size_t(idx[0])]));
      size_t cut = V;
      double acc = 0;
      for (size_t i = 0; i < size_t(V) && top_p < 1; ++i)
        if ((acc += p[i] / z) >= top_p) {
          cut = i + 1;
          break;
        }
      size_t n = 1;
      while (min_p > 0 && n < cut && p[n] >= min_p * p[0]) ++n;
      if (min_p > 0) cut = n;
      std::vector<double> expected(V, 0.0);
      double kept = 0;
      for (size_t i = 0; i < cut; ++i) kept += p[i];
      for (size_t i = 0; i < cut; ++i) expected[size_t(idx[i])] = p[i] / kept;

      SamplingParams sp;
      sp.top_p = top_p;
      sp.min_p = min_p;
      Rng rng(11);
      const int draws = 2000;
      std::vector<int> counts(V, 0);
      for (int d = 0; d < draws; ++d) {
        std::vector<float> row = logits;
        const int32_t t = sample_token(row, sp, rng);
        ASSERT_GT(expected[size_t(t)], 0.0)
            << "token outside the kept set; top_p " << top_p << " min_p " << min_p;
        ++counts[size_t(t)];
      }
      // The most likely token's frequency within 4 standard deviations of its probability.
      const int32_t best = idx[0];
      const double q = expected[size_t(best)], sd = std::sqrt(q * (1 - q) / draws);
      EXPECT_NEAR(counts[size_t(best)] / double(draws), q, 4 * sd + 1e-9)
          << "spread " << spread << " top_p " << top_p << " min_p " << min_p;
    }
  }
}

}  // namespace
}  // namespace swiftlet
