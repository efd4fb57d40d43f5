// PPO's two objectives through the model against PyTorch on a fixed rollout: the policy's clipped
// ratio loss on logits / temperature (rlhf/ppo_objective.h, per chunk of the LM head) and the
// critic's clipped value loss through a score head on the final hidden states, their losses and
// the gradients of every weight (and of the score head) compared with autograd on the independent
// float64 model of tests/reference/torch_model.py. The old log-probs and values are the current
// ones moved by fixed offsets, so tokens fall on both sides of both clip ranges.
#include <gtest/gtest.h>

#include <cmath>

#include "model/folder.h"
#include "rlhf/ppo_objective.h"
#include "rlhf/reference_model.h"
#include "rlhf/rollout.h"
#include "rlhf/value_model.h"
#include "train/grad_reference.h"

namespace swiftlet {
namespace {

using testing::expect_close;
using testing::TempDir;
using testing::test_batch;
using testing::torch_grads;

struct Fixture {
  std::string dir = testing::tiny_model("tiny");
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool{2};
  std::unique_ptr<Device> dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model{*dev, folder.config, folder.weights, DType::kF32, true};
  TrainBatch batch = test_batch(folder.config.vocab_size);
  ModelGrads grads;
  std::vector<WeightSlot> slots;
  Fixture() {
    slots = weight_slots(folder.config, &model.weights(), &grads);
    for (auto& s : slots) *s.grad = dev->zeros(s.weight->shape(), DType::kF32);
    grads.lm_head = grads.embed_tokens;  // tied
  }
};

TEST(PpoModelReference, PolicyLossAndGradientsMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  Fixture f;
  const int64_t T = int64_t(f.batch.input_ids.size());
  const float temperature = 0.7f, scale = 0.5f;
  rlhf::LogprobCollector now(T, temperature);
  f.model.evaluate(f.batch, now);
  // Per row: old log-prob = current + 0.3 sin (ratios e^(+-0.3) reach past 1 +- 0.2), and an
  // advantage of either sign.
  std::vector<float> old_rows(size_t(T), 0.0f), adv_rows(size_t(T), 0.0f);
  std::vector<std::vector<double>> old, adv;
  for (const auto& rows : rlhf::target_rows(f.batch)) {
    std::vector<double> o, a;
    for (int64_t r : rows) {
      old_rows[size_t(r)] = now.logp[size_t(r)] + float(0.3 * std::sin(1.3 * double(r)));
      adv_rows[size_t(r)] = float(1.2 * std::cos(0.9 * double(r)) + 0.1);
      o.push_back(old_rows[size_t(r)]);
      a.push_back(adv_rows[size_t(r)]);
    }
    old.push_back(o);
    adv.push_back(a);
  }
  rlhf::PpoConfig cfg;
  cfg.cliprange = 0.2;
  std::vector<rlhf::PpoPolicyTarget> targets;
  for (size_t i = 0; i < old.size(); ++i) targets.push_back({&old[i], &adv[i]});
  TempDir tmp;
  io::SafetensorsFile ref = torch_grads(tmp, f.dir, f.batch, "",
                                        {{"type", "ppo_policy"},
                                         {"temperature", temperature},
                                         {"cliprange", 0.2},
                                         {"scale", scale},
                                         {"old", old_rows},
                                         {"advantages", adv_rows}});
  rlhf::PpoPolicyObjective obj(cfg, f.batch, targets, temperature, scale);
  TrainStepOptions opt;
  opt.loss_chunk = 4;  // several chunks per sample
  f.model.train_step(f.batch, f.grads, opt, obj);
  const double want = ref.find("loss")->item_f32(0);
  EXPECT_NEAR(scale * obj.loss, want, 1e-5 * std::max(1.0, std::abs(want)));
  EXPECT_GT(obj.clipped, 0) << "some tokens must be clipped";
  EXPECT_LT(obj.clipped, obj.tokens) << "some tokens must not be clipped";
  for (auto& s : f.slots) expect_close(ref, s.name, *s.grad, "ppo_policy " + s.name);
}

TEST(PpoModelReference, ValueLossAndGradientsMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  Fixture f;
  const int64_t H = f.folder.config.hidden_size;
  const float scale = 0.5f;
  std::vector<float> u;
  for (int64_t i = 0; i < H; ++i) u.push_back(float(0.4 * std::sin(1.7 * double(i) + 0.3)));
  Tensor score = f.dev->upload(Tensor::host_from(u, {1, H}));
  Tensor dscore = f.dev->zeros({1, H}, DType::kF32);
  rlhf::PpoConfig cfg;
  cfg.cliprange_value = 0.2;
  cfg.vf_coef = 0.1;
  // The current values, then old values 0.35 sin away (some beyond the clip range) and returns.
  rlhf::PpoValueObjective probe(cfg, f.batch, score, Tensor(), {}, 1.0f);
  f.model.evaluate(f.batch, probe);
  std::vector<int64_t> flat;
  std::vector<float> old_flat, ret_flat;
  std::vector<std::vector<double>> old, ret;
  const auto rows = rlhf::value_rows(f.batch);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<double> o, g;
    for (size_t j = 0; j < rows[i].size(); ++j) {
      const double k = double(flat.size());
      flat.push_back(rows[i][j]);
      old_flat.push_back(float(probe.values[i][j] + 0.35 * std::sin(1.1 * k)));
      ret_flat.push_back(float(probe.values[i][j] + 0.8 * std::cos(0.7 * k)));
      o.push_back(old_flat.back());
      g.push_back(ret_flat.back());
    }
    old.push_back(o);
    ret.push_back(g);
  }
  std::vector<rlhf::PpoValueTarget> targets;
  for (size_t i = 0; i < rows.size(); ++i)
    targets.push_back({&old[i], &ret[i], int64_t(rows[i].size())});
  TempDir tmp;
  io::SafetensorsFile ref = torch_grads(tmp, f.dir, f.batch, "",
                                        {{"type", "ppo_value"},
                                         {"rows", flat},
                                         {"old_values", old_flat},
                                         {"returns", ret_flat},
                                         {"cliprange_value", 0.2},
                                         {"vf_coef", 0.1},
                                         {"scale", scale},
                                         {"score", u}});
  rlhf::PpoValueObjective obj(cfg, f.batch, score, dscore, targets, scale);
  TrainStepOptions opt;
  f.model.train_step(f.batch, f.grads, opt, obj);
  const double want = ref.find("loss")->item_f32(0);
  EXPECT_NEAR(scale * cfg.vf_coef * obj.loss, want, 1e-5 * std::max(1.0, std::abs(want)));
  EXPECT_GT(obj.clipped, 0) << "some values must be clipped";
  EXPECT_LT(obj.clipped, obj.positions) << "some values must not be clipped";
  expect_close(ref, "score.weight", f.dev->download(dscore), "ppo_value score.weight");
  for (auto& s : f.slots) expect_close(ref, s.name, *s.grad, "ppo_value " + s.name);
}

}  // namespace
}  // namespace swiftlet
