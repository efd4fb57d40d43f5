// The whole model against an independent PyTorch implementation (tests/reference/torch_model.py,
// float64): logits of tiny random Qwen3, Qwen2 and Llama folders (weights of the config's std 0.02
// and large ones of std 0.2), greedy continuations, on the CPU device and on the test-only sim
// device (whose memory the host cannot touch). The same file runs again in swiftlet_avx2_tests,
// where every layer is compiled without AVX-512.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "backend/device.h"
#include "model/folder.h"
#include "model/model_fixture.h"
#include "model/transformer.h"

namespace swiftlet {
namespace {

using testing::greedy;
using testing::TempDir;

using testing::Reference;

Reference run_reference(const std::string& model, const std::vector<int32_t>& ids, int steps) {
  static std::map<std::string, Reference> cache;  // one PyTorch run per model folder
  if (auto it = cache.find(model); it != cache.end()) return it->second;
  TempDir tmp;
  {
    std::ofstream f(tmp / "ids.json");
    f << nlohmann::json(ids).dump();
  }
  const std::string cmd = fmt::format("/usr/bin/python3 {} {} {} {} {}", testing::reference_script(), model,
                                      tmp / "ids.json", tmp / "ref", steps);
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  Reference r = testing::read_reference(tmp / "ref");
  cache[model] = r;
  return r;
}

std::vector<int32_t> prompt_ids(int64_t vocab) {
  std::vector<int32_t> ids;
  for (int i = 0; i < 16; ++i) ids.push_back(int32_t((1009 * i + 17) % std::min<int64_t>(vocab, 120000)));
  return ids;
}

class ModelReference : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(ModelReference, LogitsAndGreedyMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const auto& [model_name, device_name] = GetParam();
  // "tiny std0.2": the preset with large random weights (activations and logits far from 0).
  const size_t sp = model_name.find(' ');
  const std::string preset = model_name.substr(0, sp);
  const double std = sp == std::string::npos ? 0 : std::stod(model_name.substr(sp + 4));
  const std::string dir = testing::tiny_model(preset, "float32", std);
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  testing::ScopedEnv visible("SWIFTLET_VISIBLE_DEVICES", "cpu:0,sim:0");
  auto dev = DeviceRegistry::create(device_name, pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  const std::vector<int32_t> ids = prompt_ids(folder.config.vocab_size);
  const int steps = 32;
  Reference ref = run_reference(dir, ids, steps);
  Tensor got = model.logits(ids);
  const int64_t V = folder.config.vocab_size;
  ASSERT_EQ(got.numel(), int64_t(ref.logits.size()));
  ASSERT_EQ(got.dim(1), V);
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    ASSERT_TRUE(std::isfinite(got.data<float>()[i]));
    max_ref = std::max(max_ref, double(std::fabs(ref.logits[size_t(i)])));
    max_diff = std::max(max_diff, double(std::fabs(got.data<float>()[i] - ref.logits[size_t(i)])));
  }
  EXPECT_GT(max_ref, 0.0);
  EXPECT_LE(max_diff, 1e-4 * max_ref) << preset << " on " << device_name << ": max |dlogit| " << max_diff
                                      << " vs max |logit| " << max_ref;
  EXPECT_EQ(greedy(model, ids, steps), ref.greedy) << preset << " on " << device_name;
}

INSTANTIATE_TEST_SUITE_P(Presets, ModelReference,
                         ::testing::Combine(::testing::Values("tiny", "tiny-qwen2", "tiny-llama",
                                                              "tiny std0.2", "tiny-qwen2 std0.2",
                                                              "tiny-llama std0.2"),
                                            ::testing::Values("cpu:0", "sim:0")),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           for (auto& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(Model, Bf16WeightsStayCloseToF32) {
  const std::string dir = testing::tiny_model("tiny");
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer f32(*dev, folder.config, folder.weights, DType::kF32);
  Transformer bf16(*dev, folder.config, folder.weights, DType::kBF16);
  const auto ids = prompt_ids(folder.config.vocab_size);
  Tensor a = f32.logits(ids), b = bf16.logits(ids);
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    max_ref = std::max(max_ref, double(std::fabs(a.data<float>()[i])));
    max_diff = std::max(max_diff, double(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
  }
  EXPECT_LE(max_diff, 2e-2 * max_ref);
  EXPECT_GT(max_diff, 0.0);  // the bf16 path really ran on rounded weights
}

TEST(Model, CachedDecodingEqualsFullForwardAndBatchingIsIndependent) {
  const std::string dir = testing::tiny_model("tiny-qwen2");
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer m(*dev, folder.config, folder.weights, DType::kF32);
  std::vector<int32_t> a = prompt_ids(folder.config.vocab_size), b = {5, 6, 7};
  Tensor full = m.logits(a);
  // a in two pieces through the cache, batched with an unrelated sequence b.
  DecodeCache ca = m.new_cache(4), cb = m.new_cache(4);  // too small: forward grows them
  std::vector<int32_t> a1(a.begin(), a.begin() + 10), a2(a.begin() + 10, a.end());
  SequenceStep s1[2] = {{a1, &ca, false}, {b, &cb, false}};
  m.forward(s1);
  SequenceStep s2[2] = {{b, &cb, false}, {a2, &ca, true}};
  Tensor part = m.forward(s2);
  ASSERT_EQ(part.dim(0), 1 + int64_t(a2.size()));
  const int64_t V = full.dim(1);
  double max_diff = 0, max_ref = 0;
  for (size_t t = 0; t < a2.size(); ++t)
    for (int64_t v = 0; v < V; ++v) {
      const float x = full.data<float>()[(10 + int64_t(t)) * V + v], y = part.data<float>()[(1 + int64_t(t)) * V + v];
      max_ref = std::max(max_ref, double(std::fabs(x)));
      max_diff = std::max(max_diff, double(std::fabs(x - y)));
    }
  EXPECT_LE(max_diff, 1e-5 * max_ref);
  EXPECT_EQ(ca.length, int64_t(a.size()));
  EXPECT_EQ(cb.length, 6);
}

}  // namespace
}  // namespace swiftlet
