#pragma once
// Shared by the gradient reference tests: a packed test batch, and gradients of it from the
// independent PyTorch implementation (tests/reference/torch_model.py).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/test_util.h"
#include "model/model_fixture.h"
#include "train/trainer.h"
#include "tuner/lora.h"

namespace swiftlet::testing {

// Two packed samples; the first has a prompt without targets.
inline TrainBatch test_batch(int64_t vocab) {
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

// The batch for the reference script; `objective` (optional) names the loss it computes instead of
// mean cross-entropy (see objective_loss in torch_model.py).
inline void write_batch(const std::string& path, const TrainBatch& b,
                        const nlohmann::json& objective = nullptr) {
  nlohmann::json j = {
      {"input_ids", b.input_ids}, {"targets", b.targets}, {"samples", nlohmann::json::array()}};
  if (!objective.is_null()) j["objective"] = objective;
  for (auto& [f, n] : b.samples) j["samples"].push_back({f, n});
  std::ofstream(path) << j.dump();
}

inline int64_t target_count(const TrainBatch& b) {
  int64_t n = 0;
  for (int32_t t : b.targets) n += t != kIgnoreIndex;
  return n;
}

// The loss and gradients of `batch` on the model in `model_dir` (with the PEFT adapter in
// `adapter` when given) from the PyTorch reference script.
inline io::SafetensorsFile torch_grads(const TempDir& tmp, const std::string& model_dir,
                                       const TrainBatch& batch, const std::string& adapter = "",
                                       const nlohmann::json& objective = nullptr) {
  write_batch(tmp / "batch.json", batch, objective);
  const std::string cmd =
      fmt::format("/usr/bin/python3 {} --grads {} {} {} {}", testing::reference_script(), model_dir,
                  tmp / "batch.json", tmp / "grads.safetensors", adapter);
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("the reference failed: " + cmd);
  return io::load_safetensors(tmp / "grads.safetensors");
}

// `got` against the reference tensor `name`, which must exist; `label` names it in messages.
inline void expect_close(const io::SafetensorsFile& ref, const std::string& name, const Tensor& got,
                         const std::string& label) {
  const Tensor* want = ref.find(name);
  ASSERT_NE(want, nullptr) << label;
  ASSERT_EQ(got.shape(), want->shape()) << label;
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    max_ref = std::max(max_ref, double(std::fabs(want->item_f32(i))));
    max_diff = std::max(max_diff, double(std::fabs(got.item_f32(i) - want->item_f32(i))));
  }
  EXPECT_LE(max_diff, 1e-4 * max_ref + 1e-12)
      << label << ": max |dgrad| " << max_diff << " vs max |grad| " << max_ref;
}

// A rank-4 LoRA adapter over every projection with lora_B made non-zero (it is zero after init,
// which would leave dA = 0), saved to `dir` for the reference script.
inline LoraAdapter random_lora(Device& dev, const ModelConfig& config, uint64_t seed,
                               const std::string& dir) {
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  Rng rng(seed);
  LoraAdapter ad = LoraAdapter::create(dev, config, lc, rng);
  for (auto& [name, t] : ad.named_tensors())
    if (name.find("lora_B") != std::string::npos)
      for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = float(0.05 * rng.normal());
  ad.save(dir);
  return ad;
}

}  // namespace swiftlet::testing
