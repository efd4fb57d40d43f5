// Qwen3.5 dense (hybrid Gated DeltaNet / gated attention): config parsing and refusals, and the
// whole tiny-qwen35 model against the independent PyTorch transcription of transformers' torch
// path (tests/reference/torch_qwen35.py, float64, chunked delta rule): logits of a full forward
// and greedy continuations decoded token by token through the cache (conv + recurrent state).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/device.h"
#include "model/config.h"
#include "model/folder.h"
#include "model/init.h"
#include "model/model_fixture.h"
#include "model/transformer.h"
#include "model/weights.h"

namespace swiftlet {
namespace {

using testing::greedy;
using testing::TempDir;

nlohmann::json qwen35_json() {
  return {{"architectures", {"Qwen3_5ForCausalLM"}},
          {"model_type", "qwen3_5_text"},
          {"vocab_size", 1000},
          {"hidden_size", 64},
          {"intermediate_size", 96},
          {"num_hidden_layers", 8},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"head_dim", 16},
          {"max_position_embeddings", 4096},
          {"linear_num_key_heads", 2},
          {"linear_num_value_heads", 4},
          {"linear_key_head_dim", 8},
          {"linear_value_head_dim", 12},
          {"linear_conv_kernel_dim", 4},
          {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 1e7},
                               {"partial_rotary_factor", 0.25}}},
          {"attn_output_gate", true}};
}

TEST(Qwen35Config, ParsesHybridLayersAndRefusesUnsupportedValues) {
  ModelConfig c = parse_model_config(qwen35_json().dump(), "config.json");
  EXPECT_EQ(c.family, ModelFamily::kQwen35);
  EXPECT_EQ(c.rotary_dim(), 4);
  EXPECT_TRUE(c.zero_centered_norms);
  std::vector<LayerKind> kinds = layer_kinds(c);  // full_attention_interval 4: layers 3 and 7
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(kinds[size_t(i)].mixer,
              (i + 1) % 4 == 0 ? MixerKind::kFullAttention : MixerKind::kLinearAttention);
  ModelConfig back = parse_model_config(model_config_to_json(c), "written");
  EXPECT_EQ(back.layer_types, c.layer_types);
  EXPECT_EQ(back.linear_value_head_dim, 12);
  auto names = model_weight_specs(c);
  bool conv = false;
  for (const auto& s : names)
    if (s.name == "model.layers.0.linear_attn.conv1d.weight") {
      conv = true;
      EXPECT_EQ(s.shape, (Shape{2 * 2 * 8 + 4 * 12, 1, 4}));
    }
  EXPECT_TRUE(conv);
  // The vision-language layout: text keys nested, weights under model.language_model.
  nlohmann::json vl = {{"architectures", {"Qwen3_5ForConditionalGeneration"}},
                       {"model_type", "qwen3_5"},
                       {"tie_word_embeddings", true},
                       {"text_config", qwen35_json()}};
  vl["text_config"]["model_type"] = "qwen3_5_text";
  ModelConfig v = parse_model_config(vl.dump(), "vl");
  EXPECT_TRUE(v.tie_word_embeddings);
  EXPECT_EQ(model_weight_specs(v)[0].name, "model.language_model.embed_tokens.weight");
  EXPECT_EQ(parse_model_config(model_config_to_json(v), "vl2").layer_types, v.layer_types);
  // Refusals, each one sentence naming the key.
  for (auto mutate : std::vector<std::function<void(nlohmann::json&)>>{
           [](auto& j) { j["linear_num_value_heads"] = 3; },
           [](auto& j) { j["attn_output_gate"] = false; },
           [](auto& j) { j["layer_types"] = {"full_attention"}; },
           [](auto& j) {
             j["layer_types"] = std::vector<std::string>(8, "sliding_attention");
           },
           [](auto& j) { j["rope_parameters"]["partial_rotary_factor"] = 0.1; },
           [](auto& j) { j["num_experts"] = 8; }}) {
    nlohmann::json j = qwen35_json();
    mutate(j);
    EXPECT_THROW(parse_model_config(j.dump(), "c"), Error) << j.dump();
  }
}

using testing::Reference;

Reference run_reference(const std::string& model, const std::vector<int32_t>& ids, int steps) {
  TempDir tmp;
  std::ofstream(tmp / "ids.json") << nlohmann::json(ids).dump();
  const std::string script =
      (std::filesystem::path(SWIFTLET_SOURCE_DIR) / "tests" / "reference" / "torch_qwen35.py")
          .string();
  const std::string cmd = fmt::format("/usr/bin/python3 {} {} {} {} {}", script, model,
                                      tmp / "ids.json", tmp / "ref", steps);
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("the reference failed: " + cmd);
  Reference r = testing::read_reference(tmp / "ref");
  return r;
}

class Qwen35Reference : public ::testing::TestWithParam<std::tuple<double, std::string>> {};

TEST_P(Qwen35Reference, LogitsAndGreedyMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const auto& [std_dev, device_name] = GetParam();
  const std::string dir = testing::tiny_model("tiny-qwen35", "float32", std_dev);
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  testing::ScopedEnv visible("SWIFTLET_VISIBLE_DEVICES", "cpu:0,sim:0");
  auto dev = DeviceRegistry::create(device_name, pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  std::vector<int32_t> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(int32_t((1009 * i + 17) % 120000));
  const int steps = 16;
  static std::map<std::string, Reference> refs;
  if (!refs.count(dir)) refs[dir] = run_reference(dir, ids, steps);
  const Reference& ref = refs[dir];
  Tensor got = model.logits(ids);
  ASSERT_EQ(got.numel(), int64_t(ref.logits.size()));
  double max_ref = 0, diff = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    max_ref = std::max(max_ref, double(std::fabs(ref.logits[size_t(i)])));
    diff = std::max(diff, double(std::fabs(got.data<float>()[i] - ref.logits[size_t(i)])));
  }
  std::printf("qwen35 std %g on %s: max |logit| %.4g, max abs diff %.3g\n", std_dev,
              device_name.c_str(), max_ref, diff);
  EXPECT_GT(max_ref, 0.0);
  EXPECT_LE(diff, 1e-4 * max_ref);
  EXPECT_EQ(greedy(model, ids, steps), ref.greedy);
}

INSTANTIATE_TEST_SUITE_P(Tiny, Qwen35Reference,
                         ::testing::Combine(::testing::Values(0.02, 0.2),
                                            ::testing::Values("cpu:0", "sim:0")),
                         [](const auto& info) {
                           std::string n = fmt::format("std{}_{}", std::get<0>(info.param),
                                                       std::get<1>(info.param));
                           for (auto& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

}  // namespace
}  // namespace swiftlet
