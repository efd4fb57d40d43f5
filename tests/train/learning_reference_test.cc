// Training learns as PyTorch does, step for step: a LoRA run (rank 8, every projection, lr 5e-3
// cosine, batch 4, AdamW with ms-swift's defaults, clipping at 1) on the tiny random Qwen3 with
// the real 152k vocabulary and tied embeddings, on a token-reversal task, against the same run in
// PyTorch float64 from the same weights, adapter and batches (tests/reference/torch_train.py).
// It runs in swiftlet_tests (the build machine's SIMD level) and again in swiftlet_avx2_tests
// (every layer compiled without AVX-512), so training on AVX2 is checked to learn like on AVX-512.
//
// What such a model can learn: the LM head is the frozen random embedding (std 0.02, so |E_v| is
// about 0.16), and the final RMSNorm (weights 1, frozen) holds |h| at sqrt(64) = 8. A logit is
// h . E_v <= 8 * 0.16 = 1.3, while the other 152k logits spread with std 0.16: the best LoRA can
// do is a loss near ln(151936) - 1.3 = 10.6, from 11.9. The loss falls by a few tenths in 60 steps
// (the test asserts how much) in both implementations alike.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/device.h"
#include "core/rng.h"
#include "model/folder.h"
#include "model/model_fixture.h"
#include "model/transformer.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/sft_task.h"
#include "tuner/lora.h"

namespace swiftlet {
namespace {

using testing::TempDir;

// "a b c d e f <sep>" -> "f e d c b a <eos>", trained on the answer only.
TokenizedSample reversal_sample(Rng& rng) {
  const int32_t first = 1000, letters = 16, sep = 151643, eos = 151645;
  std::vector<int32_t> word;
  for (int i = 0; i < 6; ++i) word.push_back(first + int32_t(rng.uniform() * letters) % letters);
  TokenizedSample s;
  for (int32_t t : word) {
    s.input_ids.push_back(t);
    s.labels.push_back(kIgnoreIndex);
  }
  s.input_ids.push_back(sep);
  s.labels.push_back(kIgnoreIndex);
  for (auto it = word.rbegin(); it != word.rend(); ++it) {
    s.input_ids.push_back(*it);
    s.labels.push_back(*it);
  }
  s.input_ids.push_back(eos);
  s.labels.push_back(eos);
  return s;
}

// The run with the frozen head, and with the (tied) embedding trained too (modules_to_save
// embed_tokens), which lifts the cap described above.
class LearningReference : public ::testing::TestWithParam<bool> {};

TEST_P(LearningReference, LoraRunLogsThePyTorchLosses) {
  SWIFTLET_REQUIRE_TORCH();
  const bool train_embedding = GetParam();
  const std::string dir = testing::tiny_model("tiny");
  ModelFolder folder = load_model_folder(dir);
  ASSERT_EQ(folder.config.hidden_size, 64);
  ASSERT_EQ(folder.config.vocab_size, 151936);
  ASSERT_TRUE(folder.config.tie_word_embeddings);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  TempDir tmp;
  LoraConfig lc;
  lc.rank = 8;
  lc.alpha = 32;
  lc.dropout = 0;  // the masks are swiftlet's own; the comparison needs the same math
  Rng rng(5);
  if (train_embedding) lc.modules_to_save = {"embed_tokens"};
  LoraAdapter ad = LoraAdapter::create(*dev, folder.config, lc, rng);
  ad.init_modules_to_save(*dev, model);
  ad.save(tmp / "adapter");  // the initial adapter, for PyTorch
  ad.attach(model);
  ModelGrads grads;
  ad.make_grads(*dev, grads);
  if (train_embedding) grads.lm_head = grads.embed_tokens;  // tied, as the trainer does
  AdamWOptions ao;  // ms-swift: betas (0.9, 0.95), eps 1e-8, weight decay 0.1
  AdamW opt(*dev, ao);
  for (auto& t : ad.trainable(&grads)) opt.add(t.name, *t.value, *t.grad);
  const int steps = train_embedding ? 25 : 60;  // (an AdamW step over 9.7M embedding values)
  const LrSchedule sched{"cosine", 5e-3, 0, steps};
  const double max_grad_norm = 1.0;

  nlohmann::json plan = {{"betas", {ao.beta1, ao.beta2}},
                         {"eps", ao.eps},
                         {"weight_decay", ao.weight_decay},
                         {"max_grad_norm", max_grad_norm},
                         {"steps", nlohmann::json::array()}};
  std::vector<double> losses;
  Rng data_rng(11);
  for (int s = 0; s < steps; ++s) {
    std::vector<TokenizedSample> samples;
    for (int i = 0; i < 4; ++i) samples.push_back(reversal_sample(data_rng));
    TrainBatch batch = make_train_batch({&samples[0], &samples[1], &samples[2], &samples[3]});
    nlohmann::json step = {{"lr", sched.at(s)},
                           {"input_ids", batch.input_ids},
                           {"targets", batch.targets},
                           {"samples", nlohmann::json::array()}};
    for (auto& [f, n] : batch.samples) step["samples"].push_back({f, n});
    plan["steps"].push_back(step);
    opt.zero_grad();
    int64_t targets = 0;
    for (int32_t t : batch.targets) targets += t != kIgnoreIndex;
    TrainStepOptions o;
    o.grad_scale = 1.0f / float(targets);
    LossStats st = model.train_step(batch, grads, o);
    losses.push_back(st.loss_sum / double(st.tokens));
    opt.clip(max_grad_norm);
    opt.step(sched.at(s));
  }
  std::ofstream(tmp / "plan.json") << plan.dump();
  const std::string script =
      (std::filesystem::path(SWIFTLET_SOURCE_DIR) / "tests/reference/torch_train.py").string();
  const std::string cmd = fmt::format("/usr/bin/python3 {} {} {} {} {}", script, dir,
                                      tmp / "adapter", tmp / "plan.json", tmp / "torch.json");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::vector<double> ref =
      nlohmann::json::parse(testing::read_bytes(tmp / "torch.json"))["loss"].get<std::vector<double>>();
  ASSERT_EQ(ref.size(), losses.size());
  double worst = 0;
  for (size_t s = 0; s < losses.size(); ++s) worst = std::max(worst, std::fabs(losses[s] - ref[s]));
  EXPECT_LE(worst, 5e-3) << "largest per-step loss difference from PyTorch";
  auto mean = [](const std::vector<double>& v, size_t from, size_t to) {
    double m = 0;
    for (size_t i = from; i < to; ++i) m += v[i];
    return m / double(to - from);
  };
  const double first = mean(losses, 0, 5), last = mean(losses, losses.size() - 5, losses.size());
  std::printf("loss: first 5 steps %.4f, last 5 steps %.4f (PyTorch %.4f -> %.4f), max step "
              "difference %.2e\n",
              first, last, mean(ref, 0, 5), mean(ref, ref.size() - 5, ref.size()), worst);
  if (train_embedding) {
    EXPECT_LT(last, first - 2.0);  // the head can now single out the 16 letters
  } else {
    EXPECT_LT(last, first - 0.1);  // it learns, within what the frozen head allows (see above)
    EXPECT_GT(last, 10.5);
  }
}

INSTANTIATE_TEST_SUITE_P(Head, LearningReference, ::testing::Values(false, true),
                         [](const auto& info) {
                           return std::string(info.param ? "EmbeddingTrained" : "Frozen");
                         });

}  // namespace
}  // namespace swiftlet
