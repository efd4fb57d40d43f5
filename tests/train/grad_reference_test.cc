// Gradients of a whole tiny model (LoRA A/B, and every weight for full training) against
// PyTorch autograd on an independent float64 implementation (tests/reference/torch_model.py).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/device.h"
#include "io/safetensors.h"
#include "model/folder.h"
#include "model/model_fixture.h"
#include "model/transformer.h"
#include "train/trainer.h"
#include "train/grad_reference.h"
#include "tuner/lora.h"

namespace swiftlet {
namespace {

using testing::TempDir;
using testing::expect_close;
using testing::target_count;
using testing::test_batch;
using testing::torch_grads;

TEST(GradReference, LoraGradientsMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const std::string dir = testing::tiny_model("tiny");
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  TempDir tmp;
  LoraAdapter ad = testing::random_lora(*dev, folder.config, 3, tmp / "adapter");
  ad.attach(model);
  TrainBatch batch = test_batch(folder.config.vocab_size);
  io::SafetensorsFile ref = torch_grads(tmp, dir, batch, tmp / "adapter");

  for (bool ckpt : {true, false}) {
    ModelGrads grads;
    ad.make_grads(*dev, grads);
    TrainStepOptions opt;
    opt.grad_scale = 1.0f / float(target_count(batch));
    opt.gradient_checkpointing = ckpt;
    opt.loss_chunk = 5;  // several chunks, so the fused head loss is exercised across boundaries
    LossStats st = model.train_step(batch, grads, opt);
    EXPECT_NEAR(st.loss_sum / double(st.tokens), ref.find("loss")->item_f32(0), 1e-5);
    for (auto& [name, g] : ad.named_grads(grads)) expect_close(ref, name, g, name);
  }
}

TEST(GradReference, LoraWithModulesToSaveMatchesPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const std::string dir = testing::tiny_model("tiny");  // tied embeddings: embed_tokens is the LM head too
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  LoraConfig lc;
  lc.rank = 4;
  lc.target_modules = {"q_proj", "down_proj"};
  lc.modules_to_save = {"embed_tokens", "all-norm"};
  Rng rng(5);
  LoraAdapter ad = LoraAdapter::create(*dev, folder.config, lc, rng);
  ad.init_modules_to_save(*dev, model);
  for (auto& [name, t] : ad.named_tensors())
    if (name.find("lora_B") != std::string::npos || name.find("norm") != std::string::npos)
      for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] += float(0.05 * rng.normal());
  TempDir tmp;
  ad.save(tmp / "adapter");
  LoraAdapter back = LoraAdapter::load(*dev, tmp / "adapter", folder.config);  // round trip too
  back.attach(model);
  TrainBatch batch = test_batch(folder.config.vocab_size);
  io::SafetensorsFile ref = torch_grads(tmp, dir, batch, tmp / "adapter");
  ModelGrads grads;
  back.make_grads(*dev, grads);
  grads.lm_head = grads.embed_tokens;  // tied
  TrainStepOptions opt;
  opt.grad_scale = 1.0f / float(target_count(batch));
  LossStats st = model.train_step(batch, grads, opt);
  EXPECT_NEAR(st.loss_sum / double(st.tokens), ref.find("loss")->item_f32(0), 1e-5);
  auto named = back.named_grads(grads);
  EXPECT_EQ(named.size(), 2u * 2 * 2 + 1 + (2 * 4 + 1));  // A/B x 2 modules x 2 layers, embed, 9 norms
  for (auto& [name, g] : named) expect_close(ref, name, g, name);
  // Detaching restores the base model exactly.
  LoraAdapter::detach(model);
  Transformer plain(*dev, folder.config, folder.weights, DType::kF32);
  std::vector<int32_t> ids{1, 2, 3};
  Tensor a = model.logits(ids), b = plain.logits(ids);
  EXPECT_EQ(0, std::memcmp(a.raw_ptr(), b.raw_ptr(), a.nbytes()));
}

TEST(GradReference, FullGradientsMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  for (const std::string preset : {"tiny", "tiny-qwen2"}) {
    const std::string dir = testing::tiny_model(preset);
    ModelFolder folder = load_model_folder(dir);
    ThreadPool pool(2);
    auto dev = DeviceRegistry::create("cpu:0", pool);
    Transformer model(*dev, folder.config, folder.weights, DType::kF32, true);
    TrainBatch batch = test_batch(folder.config.vocab_size);
    TempDir tmp;
    io::SafetensorsFile ref = torch_grads(tmp, dir, batch);
    ModelGrads grads;
    std::vector<WeightSlot> slots = weight_slots(folder.config, &model.weights(), &grads);
    for (auto& s : slots) *s.grad = dev->zeros(s.weight->shape(), DType::kF32);
    if (folder.config.tie_word_embeddings) grads.lm_head = grads.embed_tokens;
    TrainStepOptions opt;
    opt.grad_scale = 1.0f / float(target_count(batch));
    LossStats st = model.train_step(batch, grads, opt);
    EXPECT_NEAR(st.loss_sum / double(st.tokens), ref.find("loss")->item_f32(0), 1e-5);
    for (auto& s : slots) expect_close(ref, s.name, *s.grad, preset + " " + s.name);
  }
}

}  // namespace
}  // namespace swiftlet
