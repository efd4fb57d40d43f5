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
#include "tuner/lora.h"

namespace swiftlet {
namespace {

using testing::TempDir;

// Two packed samples; the first has a prompt without targets.
TrainBatch test_batch(int64_t vocab) {
  TokenizedSample a, b;
  for (int i = 0; i < 11; ++i) {
    a.input_ids.push_back(int32_t((37 * i + 5) % vocab));
    a.labels.push_back(i < 4 ? kIgnoreIndex : a.input_ids.back());
  }
  for (int i = 0; i < 7; ++i) {
    b.input_ids.push_back(int32_t((91 * i + 1000) % vocab));
    b.labels.push_back(b.input_ids.back());
  }
  return make_train_batch({&a, &b});
}

void write_batch(const std::string& path, const TrainBatch& b) {
  nlohmann::json j = {{"input_ids", b.input_ids}, {"targets", b.targets}, {"samples", nlohmann::json::array()}};
  for (auto& [f, n] : b.samples) j["samples"].push_back({f, n});
  std::ofstream(path) << j.dump();
}

int64_t target_count(const TrainBatch& b) {
  int64_t n = 0;
  for (int32_t t : b.targets) n += t != kIgnoreIndex;
  return n;
}

// The loss and gradients of `batch` on the model in `model_dir` (with the PEFT adapter in
// `adapter` when given) from the PyTorch reference script.
io::SafetensorsFile torch_grads(const TempDir& tmp, const std::string& model_dir, const TrainBatch& batch,
                                const std::string& adapter = "") {
  write_batch(tmp / "batch.json", batch);
  const std::string cmd = fmt::format("/usr/bin/python3 {} --grads {} {} {} {}", testing::reference_script(),
                                      model_dir, tmp / "batch.json", tmp / "grads.safetensors", adapter);
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("the reference failed: " + cmd);
  return io::load_safetensors(tmp / "grads.safetensors");
}

// `got` against the reference tensor `name`, which must exist; `label` names it in messages.
void expect_close(const io::SafetensorsFile& ref, const std::string& name, const Tensor& got,
                  const std::string& label) {
  const Tensor* want = ref.find(name);
  ASSERT_NE(want, nullptr) << label;
  ASSERT_EQ(got.shape(), want->shape()) << label;
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    max_ref = std::max(max_ref, double(std::fabs(want->item_f32(i))));
    max_diff = std::max(max_diff, double(std::fabs(got.item_f32(i) - want->item_f32(i))));
  }
  EXPECT_LE(max_diff, 1e-4 * max_ref + 1e-12) << label << ": max |dgrad| " << max_diff << " vs max |grad| " << max_ref;
}

TEST(GradReference, LoraGradientsMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const std::string dir = testing::tiny_model("tiny");
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  Rng rng(3);
  LoraAdapter ad = LoraAdapter::create(*dev, folder.config, lc, rng);
  for (auto& [name, t] : ad.named_tensors())  // B is zero after init; make it non-zero so dA != 0
    if (name.find("lora_B") != std::string::npos)
      for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = float(0.05 * rng.normal());
  TempDir tmp;
  ad.save(tmp / "adapter");
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
    std::vector<NamedSlot> slots = named_slots(folder.config, model.weights(), grads);
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
