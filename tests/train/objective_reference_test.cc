// The objective interface against PyTorch: test objectives driven each of the three ways the head
// can drive one (fixed per-token weights; a gradient that depends on each token's log-prob; a
// sequence-level loss over the whole batch) and one on the final hidden states (a value head),
// their losses and every gradient compared with autograd on the independent float64 model of
// tests/reference/torch_model.py, for full training (all weights) and LoRA.
#include <gtest/gtest.h>

#include <cmath>

#include "model/folder.h"
#include "rlhf/grpo_objective.h"
#include "train/grad_reference.h"
#include "tuner/lora.h"

namespace swiftlet {
namespace {

using testing::expect_close;
using testing::TempDir;
using testing::test_batch;
using testing::torch_grads;

// sum_t c_t * p_t: d/d log p_t = c_t * exp(log p_t), known only once log p is.
class ExpLogpObjective : public Objective {
 public:
  explicit ExpLogpObjective(std::vector<float> coef) : coef_(std::move(coef)) {}
  void chunk(const HeadChunk& c, std::span<float> dlogp) override {
    for (int64_t i = 0; i < c.rows(); ++i) {
      const double v = coef_[size_t(c.begin + i)] * std::exp(double(c.logprobs[size_t(i)]));
      loss += v;
      if (!dlogp.empty()) dlogp[size_t(i)] = float(v);
    }
    rows_seen += c.rows();
  }
  double loss = 0;
  int64_t rows_seen = 0;

 private:
  std::vector<float> coef_;
};

// -log sigmoid(beta * (S_0 - S_1)) over the batch's two samples, S_i the sum of sample i's target
// log-probs: the gradient of every token depends on all of them (a DPO-shaped loss).
class SequenceSigmoidObjective : public Objective {
 public:
  SequenceSigmoidObjective(std::vector<std::pair<int64_t, int64_t>> samples, int64_t rows,
                           float beta)
      : samples_(std::move(samples)), logp_(size_t(rows), 0.0f), beta_(beta) {}
  bool whole_batch() const override { return true; }
  void chunk(const HeadChunk& c, std::span<float> dlogp) override {
    EXPECT_TRUE(dlogp.empty());
    for (int64_t i = 0; i < c.rows(); ++i) logp_[size_t(c.begin + i)] = c.logprobs[size_t(i)];
  }
  void batch_grad(std::span<float> dlogp) override {
    double s[2] = {0, 0};
    for (int k = 0; k < 2; ++k)
      for (int64_t r = samples_[size_t(k)].first;
           r < samples_[size_t(k)].first + samples_[size_t(k)].second; ++r)
        s[k] += logp_[size_t(r)];
    const double z = beta_ * (s[0] - s[1]);
    loss = std::log1p(std::exp(-z));
    const double dz = -1.0 / (1.0 + std::exp(z));  // d/dz -log sigmoid(z)
    for (int k = 0; k < 2; ++k)
      for (int64_t r = samples_[size_t(k)].first;
           r < samples_[size_t(k)].first + samples_[size_t(k)].second; ++r)
        dlogp[size_t(r)] = float(dz * beta_ * (k == 0 ? 1.0 : -1.0));
  }
  double loss = 0;

 private:
  std::vector<std::pair<int64_t, int64_t>> samples_;
  std::vector<float> logp_;
  float beta_;
};

// scale * sum_t 0.5 * (h_t . u)^2 on the final hidden states, without the LM head.
class ValueHeadObjective : public Objective {
 public:
  ValueHeadObjective(std::vector<float> u, float scale) : u_(std::move(u)), scale_(scale) {}
  bool uses_lm_head() const override { return false; }
  void chunk(const HeadChunk&, std::span<float>) override { ADD_FAILURE() << "no LM head asked"; }
  void hidden_states(const Tensor& h, const Tensor& dh) override {
    Device& dev = *h.device();
    const int64_t T = h.dim(0), H = h.dim(1);
    Tensor u = dev.upload(Tensor::host_from(u_, {H, 1}));
    Tensor v = dev.empty({T, 1}, DType::kF32);
    dev.gemm(h, false, u, false, v);  // v = h u
    Tensor hv = dev.download(v);
    loss = 0;
    for (int64_t t = 0; t < T; ++t)
      loss += scale_ * 0.5 * double(hv.data<float>()[t]) * hv.data<float>()[t];
    if (!dh.defined()) return;
    dev.scale_inplace(v, scale_);
    dev.gemm(v, false, u, true, dh, 1.0f, 1.0f);  // dh += scale * v u^T
  }
  double loss = 0;

 private:
  std::vector<float> u_;
  float scale_;
};

std::vector<float> pattern(int64_t n, double a, double b) {
  std::vector<float> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(float(a + b * std::sin(1.7 * double(i) + 0.3)));
  return out;
}

struct Case {
  std::string label;
  nlohmann::json json;
  std::function<std::unique_ptr<Objective>()> make;
  std::function<double(const Objective&)> loss;
};

std::vector<Case> cases(const TrainBatch& batch, int64_t hidden, int64_t vocab) {
  const int64_t T = int64_t(batch.input_ids.size());
  const std::vector<float> w = pattern(T, 1.0, 0.8), c = pattern(T, 0.0, 2.0),
                           u = pattern(hidden, 0.0, 0.5);
  const float scale = 1.0f / 13.0f;
  std::vector<Case> out;
  // Per-token weights (ms-swift's loss_scale): the one-pass path.
  out.push_back({"weighted_ce",
                 {{"type", "weighted_ce"}, {"token_weights", w}, {"scale", scale}},
                 [=] { return std::make_unique<CrossEntropyObjective>(scale, w); },
                 [](const Objective& o) {
                   auto& ce = static_cast<const CrossEntropyObjective&>(o);
                   return ce.loss_sum * (1.0 / 13.0);
                 }});
  out.push_back({"exp_logp",
                 {{"type", "exp_logp"}, {"coef", c}},
                 [=] { return std::make_unique<ExpLogpObjective>(c); },
                 [](const Objective& o) { return static_cast<const ExpLogpObjective&>(o).loss; }});
  out.push_back(
      {"sequence_sigmoid",
       {{"type", "sequence_sigmoid"}, {"beta", 0.5}},
       [=] { return std::make_unique<SequenceSigmoidObjective>(batch.samples, T, 0.5f); },
       [](const Objective& o) { return static_cast<const SequenceSigmoidObjective&>(o).loss; }});
  // GRPO's clipped ratio with the k3 KL on logits / 0.7 (the per-chunk mode, a temperature):
  // old log-probs on both sides of the clip range, one advantage per sample.
  {
    auto old = std::make_shared<std::vector<std::vector<double>>>();
    auto ref = std::make_shared<std::vector<std::vector<double>>>();
    std::vector<double> advantages;
    std::vector<float> old_rows(size_t(T), 0.0f), ref_rows(size_t(T), 0.0f);
    const auto rows = rlhf::target_rows(batch);
    for (size_t i = 0; i < rows.size(); ++i) {
      advantages.push_back(i % 2 ? -0.8 : 1.1);
      std::vector<double> o, q;
      for (size_t k = 0; k < rows[i].size(); ++k) {
        const int64_t r = rows[i][k];
        // Near the log-prob of a random tiny model (about -log V), off by up to +-0.6.
        o.push_back(-std::log(double(vocab)) + 0.6 * std::sin(1.3 * double(r)));
        q.push_back(-std::log(double(vocab)) + 0.4 * std::cos(0.7 * double(r)));
        old_rows[size_t(r)] = float(o.back());
        ref_rows[size_t(r)] = float(q.back());
        o.back() = old_rows[size_t(r)];  // both sides see the same float values
        q.back() = ref_rows[size_t(r)];
      }
      old->push_back(o);
      ref->push_back(q);
    }
    rlhf::GrpoLossConfig cfg;
    cfg.beta = 0.04;
    cfg.epsilon_low = 0.2;
    cfg.epsilon_high = 0.28;
    out.push_back({"grpo",
                   {{"type", "grpo"},
                    {"temperature", 0.7},
                    {"beta", 0.04},
                    {"eps_low", 0.2},
                    {"eps_high", 0.28},
                    {"scale", scale},
                    {"advantages", advantages},
                    {"old", old_rows},
                    {"ref", ref_rows}},
                   [=] {
                     std::vector<rlhf::GrpoTarget> t;
                     for (size_t i = 0; i < advantages.size(); ++i)
                       t.push_back({advantages[i], &(*old)[i], &(*ref)[i]});
                     return std::make_unique<rlhf::GrpoObjective>(cfg, batch, std::move(t), 0.7f,
                                                                  scale);
                   },
                   [](const Objective& o) {
                     return double(1.0f / 13.0f) * static_cast<const rlhf::GrpoObjective&>(o).loss;
                   }});
  }
  out.push_back(
      {"value_head",
       {{"type", "value_head"}, {"u", u}, {"scale", scale}},
       [=] { return std::make_unique<ValueHeadObjective>(u, scale); },
       [](const Objective& o) { return static_cast<const ValueHeadObjective&>(o).loss; }});
  return out;
}

TEST(ObjectiveReference, FullGradientsOfEachObjectiveMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const std::string dir = testing::tiny_model("tiny");
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32, true);
  const TrainBatch batch = test_batch(folder.config.vocab_size);
  for (const Case& k : cases(batch, folder.config.hidden_size, folder.config.vocab_size)) {
    SCOPED_TRACE(k.label);
    TempDir tmp;
    io::SafetensorsFile ref = torch_grads(tmp, dir, batch, "", k.json);
    ModelGrads grads;
    std::vector<WeightSlot> slots = weight_slots(folder.config, &model.weights(), &grads);
    for (auto& s : slots) *s.grad = dev->zeros(s.weight->shape(), DType::kF32);
    grads.lm_head = grads.embed_tokens;  // tied
    TrainStepOptions opt;
    opt.loss_chunk = 4;  // several chunks per sample
    std::unique_ptr<Objective> obj = k.make();
    model.train_step(batch, grads, opt, *obj);
    const double want = ref.find("loss")->item_f32(0);
    EXPECT_NEAR(k.loss(*obj), want, 1e-5 * std::max(1.0, std::abs(want)));
    for (auto& s : slots) expect_close(ref, s.name, *s.grad, k.label + " " + s.name);
    // Evaluation sees the same loss without gradients.
    std::unique_ptr<Objective> eval = k.make();
    model.evaluate(batch, *eval, 4);
    if (k.label != "sequence_sigmoid") {  // its loss is formed in batch_grad, a gradient step only
      EXPECT_NEAR(k.loss(*eval), want, 1e-5 * std::max(1.0, std::abs(want)));
    }
  }
}

TEST(ObjectiveReference, LoraGradientsOfEachObjectiveMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const std::string dir = testing::tiny_model("tiny-qwen2");  // biases, untied LM head
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  TempDir adir;
  LoraAdapter ad = testing::random_lora(*dev, folder.config, 9, adir / "adapter");
  ad.attach(model);
  const TrainBatch batch = test_batch(folder.config.vocab_size);
  for (const Case& k : cases(batch, folder.config.hidden_size, folder.config.vocab_size)) {
    SCOPED_TRACE(k.label);
    TempDir tmp;
    io::SafetensorsFile ref = torch_grads(tmp, dir, batch, adir / "adapter", k.json);
    ModelGrads grads;
    ad.make_grads(*dev, grads);
    TrainStepOptions opt;
    opt.loss_chunk = 5;
    std::unique_ptr<Objective> obj = k.make();
    model.train_step(batch, grads, opt, *obj);
    const double want = ref.find("loss")->item_f32(0);
    EXPECT_NEAR(k.loss(*obj), want, 1e-5 * std::max(1.0, std::abs(want)));
    for (auto& [name, g] : ad.named_grads(grads)) expect_close(ref, name, g, k.label + " " + name);
  }
}

}  // namespace
}  // namespace swiftlet
