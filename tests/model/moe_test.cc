// Qwen3-MoE: config parsing and layer kinds, the fused expert layout, and the whole model against
// the independent PyTorch implementation (tests/reference/torch_model.py, float64): logits and
// greedy continuations on the CPU and sim devices, gradients of every weight (with the
// load-balancing loss) and of LoRA adapters on the router and every expert projection.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/device.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/folder.h"
#include "model/init.h"
#include "model/model_fixture.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "train/grad_reference.h"
#include "tuner/lora.h"

namespace swiftlet {
namespace {

using testing::greedy;
using testing::TempDir;

std::string moe_config_json(int64_t layers, int64_t step, std::vector<int64_t> mlp_only,
                            bool norm_topk, int64_t k) {
  nlohmann::json j = {{"architectures", {"Qwen3MoeForCausalLM"}},
                      {"model_type", "qwen3_moe"},
                      {"vocab_size", 151936},
                      {"hidden_size", 64},
                      {"intermediate_size", 96},
                      {"num_hidden_layers", layers},
                      {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},
                      {"max_position_embeddings", 4096},
                      {"rms_norm_eps", 1e-6},
                      {"rope_theta", 1e6},
                      {"tie_word_embeddings", false},
                      {"num_experts", 4},
                      {"num_experts_per_tok", k},
                      {"moe_intermediate_size", 32},
                      {"norm_topk_prob", norm_topk},
                      {"decoder_sparse_step", step},
                      {"mlp_only_layers", mlp_only},
                      {"torch_dtype", "float32"}};
  return j.dump();
}

TEST(MoeConfig, ParsesKeysAndChoosesLayerKinds) {
  ModelConfig c = parse_model_config(moe_config_json(4, 2, {3}, false, 2), "config.json");
  EXPECT_EQ(c.architecture, "Qwen3MoeForCausalLM");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 16);  // no head_dim key: hidden / heads, unlike Qwen3's 128
  EXPECT_EQ(c.num_experts, 4);
  EXPECT_EQ(c.moe_intermediate_size, 32);
  EXPECT_FALSE(c.norm_topk_prob);
  // (i + 1) % 2 == 0 -> layers 1 and 3; 3 is forced dense by mlp_only_layers.
  std::vector<LayerKind> kinds = layer_kinds(c);
  ASSERT_EQ(kinds.size(), 4u);
  EXPECT_EQ(kinds[0].mlp, MlpKind::kDense);
  EXPECT_EQ(kinds[1].mlp, MlpKind::kMoe);
  EXPECT_EQ(kinds[2].mlp, MlpKind::kDense);
  EXPECT_EQ(kinds[3].mlp, MlpKind::kDense);
  // Round trip through config.json.
  ModelConfig back = parse_model_config(model_config_to_json(c), "written");
  EXPECT_EQ(back.num_experts_per_tok, 2);
  EXPECT_EQ(back.mlp_only_layers, std::vector<int64_t>{3});
  EXPECT_EQ(back.decoder_sparse_step, 2);
  EXPECT_EQ(model_weight_specs(back).size(), model_weight_specs(c).size());
  // num_local_experts is an alias; a top-k above the experts and a bad layer index are refused.
  auto j = nlohmann::json::parse(moe_config_json(2, 1, {}, true, 2));
  j.erase("num_experts");
  j["num_local_experts"] = 8;
  EXPECT_EQ(parse_model_config(j.dump(), "c").num_experts, 8);
  EXPECT_THROW(parse_model_config(moe_config_json(2, 1, {}, true, 5), "c"), Error);
  EXPECT_THROW(parse_model_config(moe_config_json(2, 1, {2}, true, 2), "c"), Error);
}

TEST(MoeConfig, WeightNamesOfAnMoeLayer) {
  ModelConfig c = parse_model_config(moe_config_json(2, 1, {0}, true, 2), "config.json");
  std::vector<std::string> layer1;
  for (const auto& s : model_weight_specs(c))
    if (s.layer == 1 && s.name.find(".mlp.") != std::string::npos) layer1.push_back(s.name);
  ASSERT_EQ(layer1.size(), 1u + 4 * 3);
  EXPECT_EQ(layer1[0], "model.layers.1.mlp.gate.weight");
  EXPECT_EQ(layer1[1], "model.layers.1.mlp.experts.0.gate_proj.weight");
  EXPECT_EQ(layer1[12], "model.layers.1.mlp.experts.3.down_proj.weight");
  for (const auto& s : model_weight_specs(c)) {
    if (s.name == "model.layers.1.mlp.gate.weight") {
      EXPECT_EQ(s.shape, (Shape{4, 64}));
    } else if (s.name == "model.layers.1.mlp.experts.2.down_proj.weight") {
      EXPECT_EQ(s.shape, (Shape{64, 32}));
    } else if (s.name == "model.layers.0.mlp.down_proj.weight") {
      EXPECT_EQ(s.shape, (Shape{64, 96}));
    }
  }
  EXPECT_EQ(lora_module_names(c),
            (std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "up_proj", "down_proj", "gate"}));
}

TEST(MoeConfig, Qwen3_30B_A3BPresetHasThePublishedSize) {
  ModelConfig c = init_preset_config("qwen3-30b-a3b");
  c.vocab_size = 151936;
  EXPECT_EQ(c.architecture, "Qwen3MoeForCausalLM");
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.head_dim, 128);  // not hidden / heads (64)
  // 30.5B parameters in all, about 3.3B of them used per token (8 of 128 experts).
  EXPECT_NEAR(double(count_parameters(c)) / 1e9, 30.53, 0.01);
  ModelConfig back = parse_model_config(model_config_to_json(c), "written");
  EXPECT_EQ(back.num_experts, 128);
  EXPECT_EQ(back.head_dim, 128);
}

// Rewrites a per-expert folder's weights with fused experts (gate_up_proj [E, 2I, H],
// down_proj [E, H, I]), as transformers 5 keeps them.
void fuse_experts(const std::string& dir, const ModelConfig& c) {
  io::SafetensorsFile f = io::load_safetensors(io::path_join(dir, "model.safetensors"));
  std::map<std::string, Tensor> by_name(f.tensors.begin(), f.tensors.end());
  std::vector<std::pair<std::string, Tensor>> out;
  const int64_t E = c.num_experts, I = c.moe_intermediate_size, H = c.hidden_size;
  for (const auto& [name, t] : f.tensors)
    if (name.find(".mlp.experts.") == std::string::npos) out.emplace_back(name, t);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (!c.is_moe_layer(l)) continue;
    const std::string p = fmt::format("model.layers.{}.mlp.experts.", l);
    Tensor gu = Tensor::host({E, 2 * I, H}, DType::kF32),
           down = Tensor::host({E, H, I}, DType::kF32);
    for (int64_t e = 0; e < E; ++e) {
      const Tensor& g = by_name.at(fmt::format("{}{}.gate_proj.weight", p, e));
      const Tensor& u = by_name.at(fmt::format("{}{}.up_proj.weight", p, e));
      const Tensor& d = by_name.at(fmt::format("{}{}.down_proj.weight", p, e));
      for (int64_t i = 0; i < I * H; ++i) {
        gu.set_f32(e * 2 * I * H + i, g.item_f32(i));
        gu.set_f32(e * 2 * I * H + I * H + i, u.item_f32(i));
        down.set_f32(e * H * I + i, d.item_f32(i));
      }
    }
    out.emplace_back(p + "gate_up_proj", gu);
    out.emplace_back(p + "down_proj", down);
  }
  io::save_safetensors(io::path_join(dir, "model.safetensors"), out, {{"format", "pt"}});
}

// tiny-moe: 2 MoE layers, 4 experts, top-2, norm_topk_prob, per-expert tensors.
std::string per_expert_model() { return testing::tiny_model("tiny-moe"); }

// A folder from a config.json through `init --config`; fused: its experts rewritten fused.
std::string model_from_config(const std::string& config_json, bool fused, uint64_t seed) {
  static TempDir root;
  static std::map<std::string, std::string> made;
  if (auto it = made.find(config_json); it != made.end()) return it->second;
  const std::string sub = root / std::to_string(made.size());
  std::filesystem::create_directories(sub);
  std::ofstream(sub + "/config.json") << config_json;
  InitOptions o;
  o.config_path = sub + "/config.json";
  o.tokenizer_dir = testing::qwen3_tokenizer_dir();
  o.output_dir = sub + "/model";
  o.seed = seed;
  init_model_folder(o);
  if (fused) fuse_experts(o.output_dir, load_model_folder(o.output_dir).config);
  made[config_json] = o.output_dir;
  return o.output_dir;
}

// 3 layers, layer 1 dense (mlp_only_layers), 4 experts, top-3, no renormalisation, fused experts.
std::string fused_model() {
  return model_from_config(moe_config_json(3, 1, {1}, false, 3), true, 11);
}

// 4 layers, decoder_sparse_step 2: layers 1 and 3 sparse, 0 and 2 dense; per expert.
std::string sparse_step_model() {
  return model_from_config(moe_config_json(4, 2, {}, true, 2), false, 13);
}

using testing::Reference;

Reference run_reference(const std::string& model, const std::vector<int32_t>& ids, int steps) {
  TempDir tmp;
  std::ofstream(tmp / "ids.json") << nlohmann::json(ids).dump();
  const std::string cmd =
      fmt::format("/usr/bin/python3 {} {} {} {} {}", testing::reference_script(), model,
                  tmp / "ids.json", tmp / "ref", steps);
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("the reference failed: " + cmd);
  Reference r = testing::read_reference(tmp / "ref");
  return r;
}

std::vector<int32_t> prompt() {
  std::vector<int32_t> ids;
  for (int i = 0; i < 16; ++i) ids.push_back(int32_t((1009 * i + 17) % 120000));
  return ids;
}

double max_abs_diff(const Tensor& a, const float* b, double* max_ref) {
  double d = 0;
  *max_ref = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    *max_ref = std::max(*max_ref, double(std::fabs(b[i])));
    d = std::max(d, double(std::fabs(a.data<float>()[i] - b[i])));
  }
  return d;
}

class MoeReference : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(MoeReference, LogitsAndGreedyMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const auto& [which, device_name] = GetParam();
  const std::string dir = which == "fused"         ? fused_model()
                          : which == "sparse_step" ? sparse_step_model()
                                                   : per_expert_model();
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  testing::ScopedEnv visible("SWIFTLET_VISIBLE_DEVICES", "cpu:0,sim:0");
  auto dev = DeviceRegistry::create(device_name, pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  const std::vector<int32_t> ids = prompt();
  const int steps = 24;
  static std::map<std::string, Reference> refs;  // one PyTorch run per model
  if (!refs.count(dir)) refs[dir] = run_reference(dir, ids, steps);
  const Reference& ref = refs[dir];
  Tensor got = model.logits(ids);
  ASSERT_EQ(got.numel(), int64_t(ref.logits.size()));
  double max_ref = 0, diff = max_abs_diff(got, ref.logits.data(), &max_ref);
  EXPECT_GT(max_ref, 0.0);
  EXPECT_LE(diff, 1e-4 * max_ref) << which << " on " << device_name;
  EXPECT_EQ(greedy(model, ids, steps), ref.greedy) << which << " on " << device_name;
}

INSTANTIATE_TEST_SUITE_P(Models, MoeReference,
                         ::testing::Combine(::testing::Values("per_expert", "fused", "sparse_step"),
                                            ::testing::Values("cpu:0", "sim:0")),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           for (auto& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(Moe, FusedAndPerExpertFilesGiveTheSameModel) {
  const std::string dir = fused_model();
  ModelFolder fused = load_model_folder(dir);
  // The same weights per expert: split back by hand into a second folder.
  TempDir tmp;
  std::vector<std::pair<std::string, Tensor>> per;
  for (const auto& [name, t] : fused.weights) per.emplace_back(name, t);
  io::save_safetensors(tmp / "model.safetensors", per, {{"format", "pt"}});
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"})
    io::write_file_atomic(tmp / f, io::read_file(io::path_join(dir, f)));
  ModelFolder split = load_model_folder(tmp.path());
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer a(*dev, fused.config, fused.weights, DType::kF32);
  Transformer b(*dev, split.config, split.weights, DType::kF32);
  const auto ids = prompt();
  Tensor la = a.logits(ids), lb = b.logits(ids);
  EXPECT_EQ(0, std::memcmp(la.raw_ptr(), lb.raw_ptr(), la.nbytes()));
  // A fused tensor of the wrong shape is an Error naming it.
  std::map<std::string, Tensor> bad = {
      {"model.layers.0.mlp.experts.gate_up_proj", Tensor::host_zeros({4, 32, 64}, DType::kF32)},
      {"model.layers.0.mlp.experts.down_proj", Tensor::host_zeros({4, 64, 32}, DType::kF32)}};
  EXPECT_THROW(split_fused_experts(fused.config, bad), Error);
}

TEST(Moe, CachedAndBatchedDecodingEqualFullForward) {
  ModelFolder folder = load_model_folder(per_expert_model());
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer m(*dev, folder.config, folder.weights, DType::kF32);
  std::vector<int32_t> a = prompt(), b = {5, 6, 7};
  Tensor full = m.logits(a);
  DecodeCache ca = m.new_cache(4), cb = m.new_cache(4);
  std::vector<int32_t> a1(a.begin(), a.begin() + 10), a2(a.begin() + 10, a.end());
  SequenceStep s1[2] = {{a1, &ca, false}, {b, &cb, false}};
  m.forward(s1);
  SequenceStep s2[2] = {{b, &cb, false}, {a2, &ca, true}};
  Tensor part = m.forward(s2);
  const int64_t V = full.dim(1);
  double max_ref = 0,
         diff = max_abs_diff(part.slice(1, part.dim(0)), full.data<float>() + 10 * V, &max_ref);
  EXPECT_LE(diff, 1e-5 * max_ref);
}

// One training step of `model` with `ad` (saved in tmp/adapter) attached: the loss and every
// adapter gradient (by PEFT key) against PyTorch's. Returns the gradients.
std::vector<std::pair<std::string, Tensor>> expect_lora_grads_match_torch(
    Device& dev, Transformer& model, const LoraAdapter& ad, const std::string& dir,
    const TempDir& tmp) {
  ad.attach(model);
  TrainBatch batch = testing::test_batch(model.config().vocab_size);
  io::SafetensorsFile ref = testing::torch_grads(tmp, dir, batch, tmp / "adapter");
  ModelGrads grads;  // the returned tensors share their storage
  ad.make_grads(dev, grads);
  TrainStepOptions opt;
  opt.grad_scale = 1.0f / float(testing::target_count(batch));
  LossStats st = model.train_step(batch, grads, opt);
  EXPECT_NEAR(st.loss_sum / double(st.tokens), ref.find("loss")->item_f32(0), 1e-5);
  auto named = ad.named_grads(grads);
  for (auto& [name, g] : named) testing::expect_close(ref, name, g, name);
  return named;
}

// Full-training gradients of every weight, with the load-balancing loss in the objective.
TEST(MoeGradReference, FullGradientsWithAuxLossMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const std::string dir = per_expert_model();
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32, true);
  TrainBatch batch = testing::test_batch(folder.config.vocab_size);
  const double coef = 0.05;
  TempDir tmp;
  testing::write_batch(tmp / "batch.json", batch);
  {
    nlohmann::json j = nlohmann::json::parse(io::read_file(tmp / "batch.json"));
    j["router_aux_loss_coef"] = coef;
    std::ofstream(tmp / "batch.json") << j.dump();
  }
  const std::string cmd =
      fmt::format("/usr/bin/python3 {} --grads {} {} {}", testing::reference_script(), dir,
                  tmp / "batch.json", tmp / "grads.safetensors");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  io::SafetensorsFile ref = io::load_safetensors(tmp / "grads.safetensors");
  for (bool ckpt : {true, false}) {
    ModelGrads grads;
    std::vector<WeightSlot> slots = weight_slots(folder.config, &model.weights(), &grads);
    for (auto& s : slots) *s.grad = dev->zeros(s.weight->shape(), DType::kF32);
    TrainStepOptions opt;
    opt.grad_scale = 1.0f / float(testing::target_count(batch));
    opt.router_aux_weight = float(coef);
    opt.gradient_checkpointing = ckpt;
    LossStats st = model.train_step(batch, grads, opt);
    const double aux = model.router_aux_loss();
    EXPECT_NEAR(aux, ref.find("aux")->item_f32(0), 1e-5);
    EXPECT_NEAR(st.loss_sum / double(st.tokens) + coef * aux, ref.find("loss")->item_f32(0), 1e-5);
    int routed_experts_with_grad = 0;
    for (auto& s : slots) {
      testing::expect_close(ref, s.name, *s.grad, s.name);
      if (s.name.find(".experts.") != std::string::npos && dev->sum_squares(*s.grad) > 0)
        ++routed_experts_with_grad;
    }
    EXPECT_GT(routed_experts_with_grad, 0);
  }
}

// LoRA on attention, the router and every expert projection (PEFT's per-expert module keys), on
// the fused-storage model with a dense layer and top-3 without renormalisation.
TEST(MoeGradReference, LoraOnRouterAndExpertsMatchesPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const std::string dir = fused_model();
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  TempDir tmp;
  LoraAdapter ad = testing::random_lora(*dev, folder.config, 9, tmp / "adapter");
  bool expert_key = false, router_key = false;
  for (auto& [name, t] : ad.named_tensors()) {
    expert_key |= name == "base_model.model.model.layers.2.mlp.experts.3.down_proj.lora_B.weight";
    router_key |= name == "base_model.model.model.layers.0.mlp.gate.lora_A.weight";
  }
  EXPECT_TRUE(expert_key);
  EXPECT_TRUE(router_key);
  expect_lora_grads_match_torch(*dev, model, ad, dir, tmp);
}

// LoRA on the fused expert parameters (PEFT target_parameters): the adapter file holds PEFT's
// ParamWrapper layout (one lora_A / lora_B per layer and parameter, gate_up_proj nested inside
// down_proj), reloads to the same tensors, and its gradients match PyTorch applying PEFT's delta
// einsum to the fused parameters. The second case targets gate_up_proj everywhere and down_proj
// of layer 2 only (a single wrapper on layer 0, no ".base_layer" there).
class MoeFusedLora : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(MoeFusedLora, AdapterLayoutAndGradientsMatchPyTorch) {
  SWIFTLET_REQUIRE_TORCH();
  const std::string dir = fused_model();  // layers 0 and 2 sparse, 4 experts, H 64, Ie 32
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  TempDir tmp;
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  lc.dropout = 0;
  lc.target_parameters = GetParam();
  Rng rng(21);
  LoraAdapter made = LoraAdapter::create(*dev, folder.config, lc, rng);
  for (auto& t : made.trainable(nullptr))  // both factors non-zero, so every gradient is checked
    for (int64_t i = 0; i < t.value->numel(); ++i)
      t.value->data<float>()[i] = float(0.1 * rng.normal());
  made.save(tmp / "adapter");
  const bool down_everywhere = GetParam()[1] == "mlp.experts.down_proj";
  const int64_t r = 4, E = 4, H = 64, I = 32;
  std::map<std::string, Shape> want = {
      {"base_model.model.model.layers.2.mlp.experts.base_layer.lora_A.weight", {r * E, 2 * I}},
      {"base_model.model.model.layers.2.mlp.experts.base_layer.lora_B.weight", {H, r * E}},
      {"base_model.model.model.layers.2.mlp.experts.lora_A.weight", {r * E, H}},
      {"base_model.model.model.layers.2.mlp.experts.lora_B.weight", {I, r * E}}};
  const std::string l0 = down_everywhere ? "base_model.model.model.layers.0.mlp.experts.base_layer"
                                         : "base_model.model.model.layers.0.mlp.experts";
  want[l0 + ".lora_A.weight"] = {r * E, 2 * I};
  want[l0 + ".lora_B.weight"] = {H, r * E};
  if (down_everywhere) {
    want["base_model.model.model.layers.0.mlp.experts.lora_A.weight"] = {r * E, H};
    want["base_model.model.model.layers.0.mlp.experts.lora_B.weight"] = {I, r * E};
  }
  io::SafetensorsFile file = io::load_safetensors(tmp / "adapter/adapter_model.safetensors");
  std::map<std::string, Shape> got;
  for (const auto& [name, t] : file.tensors)
    if (name.find(".mlp.experts.") != std::string::npos) got[name] = t.shape();
  EXPECT_EQ(got, want);  // no per-expert keys
  const nlohmann::json acfg =
      nlohmann::json::parse(io::read_file(tmp / "adapter/adapter_config.json"));
  EXPECT_EQ(acfg["target_parameters"], nlohmann::json(GetParam()));

  LoraAdapter ad = LoraAdapter::load(*dev, tmp / "adapter", folder.config);
  auto before = made.named_tensors(), after = ad.named_tensors();
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(before[i].first, after[i].first);
    for (int64_t k = 0; k < before[i].second.numel(); ++k)
      ASSERT_EQ(before[i].second.data<float>()[k], after[i].second.data<float>()[k]) << before[i].first;
  }
  EXPECT_EQ(ad.num_parameters(), made.num_parameters());

  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  int fused_grads = 0;
  for (auto& [name, g] : expect_lora_grads_match_torch(*dev, model, ad, dir, tmp))
    if (name.find(".mlp.experts.") != std::string::npos && dev->sum_squares(g) > 0) ++fused_grads;
  EXPECT_EQ(fused_grads, int(want.size()));
}

INSTANTIATE_TEST_SUITE_P(
    Targets, MoeFusedLora,
    ::testing::Values(std::vector<std::string>{"mlp.experts.gate_up_proj", "mlp.experts.down_proj"},
                      std::vector<std::string>{"experts.gate_up_proj",
                                               "model.layers.2.mlp.experts.down_proj"}));

TEST(MoeFusedLoraConfig, RefusesWhatPeftRefuses) {
  ModelFolder moe = load_model_folder(fused_model());
  ModelFolder dense = load_model_folder(testing::tiny_model("tiny"));
  ThreadPool pool(1);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  auto error_of = [&](const ModelConfig& c, std::vector<std::string> targets, double dropout) {
    LoraConfig lc;
    lc.dropout = dropout;
    lc.target_parameters = std::move(targets);
    Rng rng(1);
    try {
      LoraAdapter::create(*dev, c, lc, rng);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of(moe.config, {"mlp.experts.down_proj"}, 0.05).find("--lora_dropout 0"),
            std::string::npos);
  EXPECT_NE(error_of(moe.config, {"mlp.experts.gate_proj"}, 0).find("'mlp.experts.gate_proj'"),
            std::string::npos);
  EXPECT_NE(error_of(dense.config, {"mlp.experts.down_proj"}, 0).find("no fused expert"),
            std::string::npos);
  EXPECT_EQ(error_of(moe.config, {"mlp.experts.down_proj"}, 0), "");
}

}  // namespace
}  // namespace swiftlet
