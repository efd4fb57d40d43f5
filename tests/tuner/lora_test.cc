// LoRA adapters in PEFT's format: one written by hand here (not by swiftlet's writer) loads and
// gives the logits of the hand-merged weights; swiftlet's save/load round-trips; export's merge
// gives the logits of base + adapter.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/device.h"
#include "export/merge.h"
#include "model/folder.h"
#include "model/model_fixture.h"
#include "model/transformer.h"
#include "tuner/lora.h"

namespace swiftlet {
namespace {

using testing::TempDir;

// A safetensors file assembled byte by byte: 8-byte header length, JSON header, f32 data.
void write_safetensors_by_hand(const std::string& path,
                               const std::vector<std::pair<std::string, std::pair<Shape, std::vector<float>>>>& ts) {
  nlohmann::json header;
  std::string data;
  for (const auto& [name, st] : ts) {
    const auto& [shape, values] = st;
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + values.size() * 4}}};
    data.append(reinterpret_cast<const char*>(values.data()), values.size() * 4);
  }
  std::string h = header.dump();
  uint64_t n = h.size();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << h << data;
}

double max_abs_diff(const Tensor& a, const Tensor& b, double* max_ref) {
  double d = 0, r = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    r = std::max(r, double(std::fabs(a.data<float>()[i])));
    d = std::max(d, double(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
  }
  *max_ref = r;
  return d;
}

TEST(Lora, HandWrittenPeftAdapterGivesHandMergedLogits) {
  const std::string dir = testing::tiny_model("tiny");
  ModelFolder folder = load_model_folder(dir);
  const ModelConfig& c = folder.config;
  const int64_t r = 2, H = c.hidden_size, qd = c.num_attention_heads * c.head_dim,
                kvd = c.num_key_value_heads * c.head_dim;
  const double alpha = 4.0, scale = alpha / double(r);
  TempDir tmp;
  const std::string ad = tmp / "adapter";
  std::filesystem::create_directories(ad);
  std::ofstream(ad + "/adapter_config.json") << nlohmann::json{
      {"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"r", r}, {"lora_alpha", alpha},
      {"lora_dropout", 0.1}, {"target_modules", {"v_proj", "q_proj"}}, {"bias", "none"},
      {"base_model_name_or_path", dir}, {"fan_in_fan_out", false}, {"use_rslora", false}}.dump();
  Rng rng(11);
  std::map<std::string, Tensor> merged = folder.weights;  // base + s B A computed here in double
  std::vector<std::pair<std::string, std::pair<Shape, std::vector<float>>>> tensors;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (const auto& [proj, out] : {std::pair<std::string, int64_t>{"q_proj", qd}, {"v_proj", kvd}}) {
      std::vector<float> A(size_t(r * H)), B(size_t(out * r));
      for (auto& x : A) x = float(0.2 * rng.normal());
      for (auto& x : B) x = float(0.2 * rng.normal());
      const std::string base = fmt::format("model.layers.{}.self_attn.{}", l, proj);
      tensors.push_back({"base_model.model." + base + ".lora_A.weight", {{r, H}, A}});
      tensors.push_back({"base_model.model." + base + ".lora_B.weight", {{out, r}, B}});
      const Tensor& w = folder.weights.at(base + ".weight");
      Tensor m = Tensor::host(w.shape(), DType::kF32);
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < H; ++i) {
          double s = w.item_f32(o * H + i);
          for (int64_t k = 0; k < r; ++k) s += scale * double(B[size_t(o * r + k)]) * double(A[size_t(k * H + i)]);
          m.data<float>()[o * H + i] = float(s);
        }
      merged[base + ".weight"] = m;
    }
  write_safetensors_by_hand(ad + "/adapter_model.safetensors", tensors);

  ThreadPool pool(2);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer with_adapter(*dev, c, folder.weights, DType::kF32);
  LoraAdapter adapter = LoraAdapter::load(*dev, ad, c);
  EXPECT_EQ(adapter.config().rank, r);
  adapter.attach(with_adapter);
  Transformer hand_merged(*dev, c, merged, DType::kF32);
  Transformer plain(*dev, c, folder.weights, DType::kF32);
  std::vector<int32_t> ids{1, 500, 2000, 30000, 7, 99, 151643, 42};
  Tensor a = with_adapter.logits(ids), b = hand_merged.logits(ids), p = plain.logits(ids);
  double ref = 0;
  double d = max_abs_diff(a, b, &ref);
  EXPECT_LE(d, 1e-5 * ref);
  d = max_abs_diff(a, p, &ref);
  EXPECT_GT(d, 1e-3 * ref);  // the adapter really changes the output

  // export --merge_lora: the merged folder's logits equal base + adapter.
  MergeOptions mo;
  mo.adapter_dir = ad;
  const std::string out = merge_lora(mo);
  EXPECT_EQ(out, ad + "-merged");
  ModelFolder mf = load_model_folder(out);
  Transformer exported(*dev, mf.config, mf.weights, DType::kF32);
  Tensor e = exported.logits(ids);
  d = max_abs_diff(a, e, &ref);
  EXPECT_LE(d, 1e-5 * ref);
  EXPECT_TRUE(std::filesystem::exists(out + "/tokenizer.json"));
  EXPECT_THROW(merge_lora(mo), Error);  // exists; needs exist_ok
  mo.exist_ok = true;
  EXPECT_NO_THROW(merge_lora(mo));
}

TEST(Lora, SaveLoadRoundTripAndPeftLayout) {
  const std::string dir = testing::tiny_model("tiny");
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(1);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  LoraConfig lc;
  lc.base_model_name_or_path = dir;
  Rng rng(1);
  LoraAdapter ad = LoraAdapter::create(*dev, folder.config, lc, rng);
  // PEFT init: A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0; all-linear = 7 projections x 2 layers.
  auto named = ad.named_tensors();
  ASSERT_EQ(named.size(), 2u * 7 * 2);
  EXPECT_EQ(named[0].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  const double bound = 1.0 / std::sqrt(double(folder.config.hidden_size));
  double amax = 0;
  for (int64_t i = 0; i < named[0].second.numel(); ++i) amax = std::max(amax, double(std::fabs(named[0].second.data<float>()[i])));
  EXPECT_LE(amax, bound);
  EXPECT_GT(amax, 0.5 * bound);
  for (int64_t i = 0; i < named[1].second.numel(); ++i) ASSERT_EQ(named[1].second.data<float>()[i], 0.0f);
  TempDir tmp;
  ad.save(tmp / "a");
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(tmp / "a/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 8);
  EXPECT_EQ(cfg["lora_alpha"], 32.0);
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
  LoraAdapter back = LoraAdapter::load(*dev, tmp / "a", folder.config);
  auto named2 = back.named_tensors();
  ASSERT_EQ(named2.size(), named.size());
  for (size_t i = 0; i < named.size(); ++i) {
    EXPECT_EQ(named2[i].first, named[i].first);
    EXPECT_EQ(0, std::memcmp(named2[i].second.raw_ptr(), named[i].second.raw_ptr(), named[i].second.nbytes()));
  }
}

TEST(Lora, RefusesWhatItCannotApply) {
  const std::string dir = testing::tiny_model("tiny");
  ModelFolder folder = load_model_folder(dir);
  ThreadPool pool(1);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  TempDir tmp;
  auto write_cfg = [&](nlohmann::json j) {
    std::filesystem::create_directories(tmp / "x");
    std::ofstream(tmp / "x/adapter_config.json") << j.dump();
    write_safetensors_by_hand(tmp / "x/adapter_model.safetensors",
                              {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {{2, 64}, std::vector<float>(128)}},
                               {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {{64, 2}, std::vector<float>(128)}}});
  };
  auto expect_error = [&](const std::string& needle) {
    try {
      LoraAdapter::load(*dev, tmp / "x", folder.config);
      FAIL() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  write_cfg({{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"target_modules", {"q_proj"}}, {"use_dora", true}});
  expect_error("DoRA");
  write_cfg({{"peft_type", "IA3"}, {"r", 2}, {"target_modules", {"q_proj"}}});
  expect_error("IA3");
  write_cfg({{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 4}, {"target_modules", {"q_proj"}}});
  expect_error("shape");
  write_cfg({{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"target_modules", {"lm_head"}}});
  expect_error("lm_head");
  EXPECT_THROW(LoraAdapter::load(*dev, tmp / "missing", folder.config), Error);
}

}  // namespace
}  // namespace swiftlet
