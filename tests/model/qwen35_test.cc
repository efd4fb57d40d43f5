// The Qwen3.5 family (hybrid Gated DeltaNet / gated attention): Qwen3.5 dense, Qwen3.5-MoE and
// Qwen3-Next (a sparse MoE block with a shared expert; Qwen3-Next's fused in_proj_qkvz /
// in_proj_ba): their config classes and defaults, refusals, weight names (the hub's fused experts
// under the vision-language prefix), and the tiny presets against the independent PyTorch
// transcription of transformers' torch path (tests/reference/torch_qwen35.py, float64, chunked
// delta rule): logits of a full forward, greedy continuations decoded token by token through the
// cache (conv + recurrent state), and cached == full forward.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "backend/device.h"
#include "core/rng.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/folder.h"
#include "model/init.h"
#include "model/model_fixture.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "tuner/lora.h"

namespace swiftlet {
namespace {

using testing::TempDir;

nlohmann::json hybrid_json(const std::string& arch, const std::string& model_type) {
  return {{"architectures", {arch}},
          {"model_type", model_type},
          {"vocab_size", 1000},
          {"hidden_size", 64},
          {"num_hidden_layers", 4},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"head_dim", 16},
          {"max_position_embeddings", 4096},
          {"linear_num_key_heads", 2},
          {"linear_num_value_heads", 4},
          {"linear_key_head_dim", 8},
          {"linear_value_head_dim", 12},
          {"num_experts", 8},
          {"num_experts_per_tok", 2},
          {"moe_intermediate_size", 24}};
}

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
          {"rope_parameters",
           {{"rope_type", "default"}, {"rope_theta", 1e7}, {"partial_rotary_factor", 0.25}}},
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
           [](auto& j) { j["layer_types"] = std::vector<std::string>(8, "sliding_attention"); },
           [](auto& j) { j["rope_parameters"]["partial_rotary_factor"] = 0.1; },
           [](auto& j) { j["num_experts"] = 8; }}) {
    nlohmann::json j = qwen35_json();
    mutate(j);
    EXPECT_THROW(parse_model_config(j.dump(), "c"), Error) << j.dump();
  }
}

std::map<std::string, Shape> weight_shapes(const ModelConfig& c) {
  std::map<std::string, Shape> m;
  for (const auto& s : model_weight_specs(c)) m[s.name] = s.shape;
  return m;
}

TEST(Qwen35MoeConfig, Qwen35MoeIsMoeEverywhereWithASharedExpertAndRenormalisedTopK) {
  nlohmann::json j = hybrid_json("Qwen3_5MoeForCausalLM", "qwen3_5_moe_text");
  // Keys Qwen3_5MoeTextConfig does not have mean nothing to its model, as in transformers.
  j["norm_topk_prob"] = false;
  j["mlp_only_layers"] = {0};
  j["decoder_sparse_step"] = 2;
  ModelConfig c = parse_model_config(j.dump(), "config.json");
  EXPECT_EQ(c.family, ModelFamily::kQwen35);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.shared_expert_intermediate_size, 512);  // the class default
  EXPECT_EQ(c.intermediate_size, 0);                  // no dense MLP anywhere
  EXPECT_FALSE(c.linear_fused_projections);
  for (int64_t l = 0; l < 4; ++l) EXPECT_TRUE(c.is_moe_layer(l)) << l;
  auto shapes = weight_shapes(c);
  EXPECT_EQ(shapes.at("model.layers.0.mlp.shared_expert.gate_proj.weight"), (Shape{512, 64}));
  EXPECT_EQ(shapes.at("model.layers.0.mlp.shared_expert.down_proj.weight"), (Shape{64, 512}));
  EXPECT_EQ(shapes.at("model.layers.0.mlp.shared_expert_gate.weight"), (Shape{1, 64}));
  EXPECT_EQ(shapes.at("model.layers.0.mlp.experts.7.up_proj.weight"), (Shape{24, 64}));
  EXPECT_EQ(shapes.at("model.layers.0.linear_attn.in_proj_qkv.weight"),
            (Shape{2 * 2 * 8 + 4 * 12, 64}));
  EXPECT_EQ(shapes.count("model.layers.0.mlp.gate_proj.weight"), 0u);
  // Written back as transformers writes that class: no dense width, no layout keys.
  const nlohmann::json back = nlohmann::json::parse(model_config_to_json(c));
  for (const char* key :
       {"intermediate_size", "norm_topk_prob", "mlp_only_layers", "decoder_sparse_step"})
    EXPECT_FALSE(back.contains(key)) << key;
  ModelConfig again = parse_model_config(back.dump(), "written");
  EXPECT_EQ(again.shared_expert_intermediate_size, 512);
  EXPECT_EQ(weight_shapes(again), shapes);

  // The hub's vision-language class: text keys under text_config, weights under
  // model.language_model., written back in the same layout.
  nlohmann::json vl = {{"architectures", {"Qwen3_5MoeForConditionalGeneration"}},
                       {"model_type", "qwen3_5_moe"},
                       {"tie_word_embeddings", false},
                       {"text_config", hybrid_json("x", "qwen3_5_moe_text")}};
  vl["text_config"].erase("architectures");
  ModelConfig v = parse_model_config(vl.dump(), "vl");
  EXPECT_EQ(v.weight_prefix, "model.language_model.");
  EXPECT_EQ(v.architecture, "Qwen3_5MoeForConditionalGeneration");
  EXPECT_EQ(weight_shapes(v).count("model.language_model.layers.3.mlp.shared_expert_gate.weight"),
            1u);
  const nlohmann::json vback = nlohmann::json::parse(model_config_to_json(v));
  EXPECT_EQ(vback["text_config"]["model_type"], "qwen3_5_moe_text");
  EXPECT_EQ(parse_model_config(vback.dump(), "vl2").num_experts, 8);
}

TEST(Qwen35MoeConfig, Qwen3NextHasFusedLinearProjectionsAndItsOwnLayerLayout) {
  nlohmann::json j = hybrid_json("Qwen3NextForCausalLM", "qwen3_next");
  j["mlp_only_layers"] = {2};
  j["norm_topk_prob"] = false;
  j["shared_expert_intermediate_size"] = 40;
  ModelConfig c = parse_model_config(j.dump(), "config.json");
  EXPECT_TRUE(c.linear_fused_projections);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.intermediate_size, 5632);  // Qwen3NextConfig's default, for layer 2's dense MLP
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_FALSE(c.is_moe_layer(2));
  auto shapes = weight_shapes(c);
  EXPECT_EQ(shapes.at("model.layers.0.linear_attn.in_proj_qkvz.weight"),
            (Shape{2 * 2 * 8 + 2 * 4 * 12, 64}));
  EXPECT_EQ(shapes.at("model.layers.0.linear_attn.in_proj_ba.weight"), (Shape{2 * 4, 64}));
  EXPECT_EQ(shapes.count("model.layers.0.linear_attn.in_proj_qkv.weight"), 0u);
  EXPECT_EQ(shapes.at("model.layers.2.mlp.gate_proj.weight"), (Shape{5632, 64}));
  EXPECT_EQ(shapes.at("model.layers.1.mlp.shared_expert.up_proj.weight"), (Shape{40, 64}));
  EXPECT_EQ(shapes.count("model.layers.3.self_attn.q_proj.weight"),
            1u);  // full_attention_interval 4
  ModelConfig back = parse_model_config(model_config_to_json(c), "written");
  EXPECT_EQ(weight_shapes(back), shapes);
  EXPECT_FALSE(back.norm_topk_prob);
}

TEST(Qwen35MoeConfig, RefusesWhatItCannotRun) {
  struct Case {
    std::string arch, type;
    std::function<void(nlohmann::json&)> mutate;
  };
  const std::vector<Case> cases = {
      // A dense Qwen3.5 config with experts names the MoE class in its hint.
      {"Qwen3_5ForCausalLM", "qwen3_5_text", [](auto& j) { j["intermediate_size"] = 96; }},
      // Qwen3-MoE has no shared expert.
      {"Qwen3MoeForCausalLM", "qwen3_moe",
       [](auto& j) {
         j["intermediate_size"] = 96;
         j["shared_expert_intermediate_size"] = 32;
       }},
      {"Qwen3NextForCausalLM", "qwen3_next", [](auto& j) { j["num_experts_per_tok"] = 9; }},
      {"Qwen3_5MoeForCausalLM", "qwen3_5_moe_text",
       [](auto& j) { j["shared_expert_intermediate_size"] = 0; }},
      {"Qwen3_5MoeForCausalLM", "qwen3_5_moe_text",
       [](auto& j) { j["linear_num_value_heads"] = 3; }},
  };
  for (const Case& k : cases) {
    nlohmann::json j = hybrid_json(k.arch, k.type);
    k.mutate(j);
    EXPECT_THROW(parse_model_config(j.dump(), "c"), Error) << j.dump();
  }
}

// The full-size presets (for benchmarks) have the published sizes: with the hub's vocabulary
// (248320 for Qwen3.5) the parameter counts land on the names.
TEST(Qwen35MoeConfig, FullSizePresetsHaveThePublishedShapes) {
  struct Want {
    const char* preset;
    int64_t vocab, linear_layers;
    double billions_lo, billions_hi;
  };
  for (const Want& w :
       {Want{"qwen3.5-4b", 248320, 24, 4.0, 5.0}, Want{"qwen3.5-35b-a3b", 248320, 30, 34.0, 36.5},
        Want{"qwen3-next-80b-a3b", 151936, 36, 79.0, 82.0}}) {
    ModelConfig c = init_preset_config(w.preset);
    c.vocab_size = w.vocab;
    c = parse_model_config(model_config_to_json(c), w.preset);  // valid as config.json
    int64_t linear = 0;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) linear += c.is_linear_layer(l) ? 1 : 0;
    EXPECT_EQ(linear, w.linear_layers) << w.preset;
    const double b = double(count_parameters(c)) / 1e9;
    std::printf("%s: %.2f B parameters\n", w.preset, b);
    EXPECT_GE(b, w.billions_lo) << w.preset;
    EXPECT_LE(b, w.billions_hi) << w.preset;
  }
}

// The tiny presets against PyTorch (float64 transcription of transformers' torch path).
class Qwen35Reference
    : public ::testing::TestWithParam<std::tuple<std::string, double, std::string>> {};

testing::Reference run_reference(const std::string& model, const std::vector<int32_t>& ids,
                                 int steps) {
  TempDir tmp;
  std::ofstream(tmp / "ids.json") << nlohmann::json(ids).dump();
  const std::string script =
      (std::filesystem::path(SWIFTLET_SOURCE_DIR) / "tests" / "reference" / "torch_qwen35.py")
          .string();
  const std::string cmd = fmt::format("/usr/bin/python3 {} {} {} {} {}", script, model,
                                      tmp / "ids.json", tmp / "ref", steps);
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("the reference failed: " + cmd);
  return testing::read_reference(tmp / "ref");
}

std::vector<int32_t> prompt() {
  std::vector<int32_t> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(int32_t((1009 * i + 17) % 120000));
  return ids;
}

double max_abs_diff(const float* a, const float* b, int64_t n, double* max_ref) {
  double d = 0;
  *max_ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    *max_ref = std::max(*max_ref, double(std::fabs(b[i])));
    d = std::max(d, double(std::fabs(a[i] - b[i])));
  }
  return d;
}

TEST_P(Qwen35Reference, LogitsAndGreedyMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const auto& [preset, std_dev, device_name] = GetParam();
  const std::string dir = testing::tiny_model(preset, "float32", std_dev);
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  testing::ScopedEnv visible("SWIFTLET_VISIBLE_DEVICES", "cpu:0,sim:0");
  auto dev = DeviceRegistry::create(device_name, pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  const std::vector<int32_t> ids = prompt();
  const int steps = 12;
  static std::map<std::string, testing::Reference> refs;
  if (!refs.count(dir)) refs[dir] = run_reference(dir, ids, steps);
  const testing::Reference& ref = refs[dir];
  Tensor got = model.logits(ids);
  ASSERT_EQ(got.numel(), int64_t(ref.logits.size()));
  double max_ref = 0;
  const double diff = max_abs_diff(got.data<float>(), ref.logits.data(), got.numel(), &max_ref);
  std::printf("%s std %g on %s: max |logit| %.4g, max abs diff %.3g\n", preset.c_str(), std_dev,
              device_name.c_str(), max_ref, diff);
  EXPECT_GT(max_ref, 0.0);
  EXPECT_LE(diff, 1e-4 * max_ref);
  EXPECT_EQ(testing::greedy(model, ids, steps), ref.greedy);
}

// std 0.02 keeps logits small (|logit| < 1); std 0.2 gives confident ones (|logit| ~ 8). The test
// device (sim:0) runs the larger case.
INSTANTIATE_TEST_SUITE_P(Tiny, Qwen35Reference,
                         ::testing::Values(std::make_tuple("tiny-qwen35", 0.02, "cpu:0"),
                                           std::make_tuple("tiny-qwen35", 0.02, "sim:0"),
                                           std::make_tuple("tiny-qwen35", 0.2, "cpu:0"),
                                           std::make_tuple("tiny-qwen35", 0.2, "sim:0"),
                                           std::make_tuple("tiny-qwen35-moe", 0.02, "cpu:0"),
                                           std::make_tuple("tiny-qwen35-moe", 0.2, "cpu:0"),
                                           std::make_tuple("tiny-qwen35-moe", 0.2, "sim:0"),
                                           std::make_tuple("tiny-qwen3-next", 0.02, "cpu:0"),
                                           std::make_tuple("tiny-qwen3-next", 0.2, "cpu:0"),
                                           std::make_tuple("tiny-qwen3-next", 0.2, "sim:0")),
                         [](const auto& info) {
                           std::string n =
                               fmt::format("{}_std{}_{}", std::get<0>(info.param),
                                           std::get<1>(info.param), std::get<2>(info.param));
                           for (auto& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

// Prefill in two parts through the cache, next to a second sequence, equals one full forward:
// the conv and recurrent state carry over, the routing is per token.
TEST(Qwen35Moe, CachedAndBatchedDecodingEqualFullForward) {
  for (const char* preset : {"tiny-qwen35-moe", "tiny-qwen3-next"}) {
    ModelFolder folder = load_model_folder(testing::tiny_model(preset, "float32", 0.2));
    ThreadPool pool(2);
    auto dev = DeviceRegistry::create("cpu:0", pool);
    Transformer m(*dev, folder.config, folder.weights, DType::kF32);
    std::vector<int32_t> a = prompt(), b = {5, 6, 7};
    Tensor full = m.logits(a);
    DecodeCache ca = m.new_cache(32), cb = m.new_cache(32);
    std::vector<int32_t> a1(a.begin(), a.begin() + 7), a2(a.begin() + 7, a.begin() + 19),
        a3(a.begin() + 19, a.end());
    SequenceStep s1[2] = {{a1, &ca, false}, {b, &cb, false}};
    m.forward(s1);
    SequenceStep s2[2] = {{b, &cb, false}, {a2, &ca, true}};
    Tensor part = m.forward(s2);
    SequenceStep s3[1] = {{a3, &ca, true}};
    Tensor last = m.forward(s3);
    const int64_t V = full.dim(1);
    double max_ref = 0;
    // part: b's last row, then a2's rows (a[7, 19)); last: a[19]'s row.
    ASSERT_EQ(part.dim(0), 13);
    double diff =
        max_abs_diff(part.data<float>() + V, full.data<float>() + 7 * V, 12 * V, &max_ref);
    EXPECT_LE(diff, 1e-4 * max_ref) << preset;
    diff = max_abs_diff(last.data<float>(), full.data<float>() + 19 * V, V, &max_ref);
    EXPECT_LE(diff, 1e-4 * max_ref) << preset;
  }
}

// The hub's Qwen3.5-MoE files: the vision-language class (weights under model.language_model.)
// with each layer's experts fused (gate_up_proj [E, 2I, H], down_proj [E, H, I]). Loaded, it is
// the same model as the text-only per-expert folder it was rewritten from.
TEST(Qwen35Moe, HubLayoutWithFusedExpertsLoadsAsTheSameModel) {
  const std::string dir = testing::tiny_model("tiny-qwen35-moe", "float32", 0.2);
  ModelFolder text = load_model_folder(dir);
  const ModelConfig& c = text.config;
  const int64_t E = c.num_experts, I = c.moe_intermediate_size, H = c.hidden_size;
  TempDir hub;
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : text.weights)
    if (name.find(".mlp.experts.") == std::string::npos)
      out.emplace_back(name.starts_with("model.") ? "model.language_model." + name.substr(6) : name,
                       t);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.mlp.experts.", l);
    Tensor gu = Tensor::host({E, 2 * I, H}, DType::kF32),
           down = Tensor::host({E, H, I}, DType::kF32);
    for (int64_t e = 0; e < E; ++e) {
      const Tensor& g = text.weights.at(fmt::format("{}{}.gate_proj.weight", p, e));
      const Tensor& u = text.weights.at(fmt::format("{}{}.up_proj.weight", p, e));
      const Tensor& d = text.weights.at(fmt::format("{}{}.down_proj.weight", p, e));
      for (int64_t i = 0; i < I * H; ++i) {
        gu.set_f32(e * 2 * I * H + i, g.item_f32(i));
        gu.set_f32(e * 2 * I * H + I * H + i, u.item_f32(i));
        down.set_f32(e * H * I + i, d.item_f32(i));
      }
    }
    const std::string q = fmt::format("model.language_model.layers.{}.mlp.experts.", l);
    out.emplace_back(q + "gate_up_proj", gu);
    out.emplace_back(q + "down_proj", down);
  }
  io::save_safetensors(hub / "model.safetensors", out, {{"format", "pt"}});
  nlohmann::json text_cfg = nlohmann::json::parse(io::read_file(io::path_join(dir, "config.json")));
  text_cfg.erase("architectures");
  const nlohmann::json vl = {{"architectures", {"Qwen3_5MoeForConditionalGeneration"}},
                             {"model_type", "qwen3_5_moe"},
                             {"tie_word_embeddings", false},
                             {"text_config", text_cfg}};
  io::write_file_atomic(hub / "config.json", vl.dump(2));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    io::write_file_atomic(hub / f, io::read_file(io::path_join(dir, f)));
  ModelFolder loaded = load_model_folder(hub.path());
  EXPECT_EQ(loaded.config.weight_prefix, "model.language_model.");
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer a(*dev, text.config, text.weights, DType::kF32);
  Transformer b(*dev, loaded.config, loaded.weights, DType::kF32);
  const auto ids = prompt();
  Tensor la = a.logits(ids), lb = b.logits(ids);
  EXPECT_EQ(0, std::memcmp(la.raw_ptr(), lb.raw_ptr(), la.nbytes()));
}

// LoRA on the fused expert parameters of the hub's vision-language Qwen3.5-MoE: PEFT's
// ParamWrapper keys sit under the model's own prefix (model.language_model.).
TEST(Qwen35Moe, FusedExpertLoraKeysFollowTheVisionLanguagePrefix) {
  nlohmann::json vl = {{"architectures", {"Qwen3_5MoeForConditionalGeneration"}},
                       {"model_type", "qwen3_5_moe"},
                       {"text_config", hybrid_json("x", "qwen3_5_moe_text")}};
  vl["text_config"].erase("architectures");
  const ModelConfig c = parse_model_config(vl.dump(), "vl");
  ThreadPool pool(1);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  LoraConfig lc;
  lc.dropout = 0;
  lc.target_parameters = {"mlp.experts.gate_up_proj", "mlp.experts.down_proj"};
  Rng rng(1);
  LoraAdapter ad = LoraAdapter::create(*dev, c, lc, rng);
  std::set<std::string> names;
  for (const auto& [name, t] : ad.named_tensors()) names.insert(name);
  const std::string p = "base_model.model.model.language_model.layers.3.mlp.experts.";
  EXPECT_EQ(names.count(p + "base_layer.lora_A.weight"), 1u);  // gate_up_proj, nested
  EXPECT_EQ(names.count(p + "lora_B.weight"), 1u);             // down_proj
  for (const auto& n : names) EXPECT_NE(n.find("model.language_model."), std::string::npos) << n;
}

}  // namespace
}  // namespace swiftlet
