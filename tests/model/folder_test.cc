#include "model/folder.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "io/json.h"
#include "io/safetensors.h"
#include "io/test_util.h"
#include "model/weights.h"

namespace swiftlet {
namespace {

using io::Json;
using testing::ScopedEnv;
using testing::TempDir;
using testing::write_text;
namespace fs = std::filesystem;

const char* kTinyQwen3 = R"({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
  "vocab_size": 512, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
  "max_position_embeddings": 256, "tie_word_embeddings": true, "eos_token_id": 7,
  "bos_token_id": 5, "torch_dtype": "bfloat16"})";

using Weights = std::vector<std::pair<std::string, Tensor>>;

// Every weight of the config with distinct contents (value = 1000 * index + element).
Weights tiny_weights(const char* config_text, DType dtype = DType::kBF16) {
  Weights w;
  auto specs = model_weight_specs(parse_model_config(config_text, "test"));
  for (size_t i = 0; i < specs.size(); ++i) {
    Tensor t = Tensor::host(specs[i].shape, dtype);
    for (int64_t k = 0; k < t.numel(); ++k) {
      float v = float(i) + float(k % 7) * 0.125f;
      if (dtype == DType::kBF16)
        t.data<uint16_t>()[k] = f32_to_bf16(v);
      else if (dtype == DType::kF16)
        t.data<uint16_t>()[k] = f32_to_f16(v);
      else
        t.data<float>()[k] = v;
    }
    w.emplace_back(specs[i].name, t);
  }
  return w;
}

void make_folder(const std::string& dir, const char* config_text, const Weights& w,
                 uint64_t shard_bytes = io::kDefaultMaxShardBytes) {
  fs::create_directories(dir);
  write_text(dir + "/config.json", config_text);
  io::save_safetensors_sharded(dir, w, shard_bytes);
}

Weights without(Weights w, const std::string& name) {
  std::erase_if(w, [&](const auto& p) { return p.first == name; });
  return w;
}

TEST(ModelFolder, LoadsASingleFileFolder) {
  TempDir dir;
  Weights w = tiny_weights(kTinyQwen3);
  make_folder(dir.path(), kTinyQwen3, w);
  write_text(dir / "generation_config.json",
             R"({"eos_token_id": [7, 6], "temperature": 0.6, "top_p": 0.95, "top_k": 20,
                 "do_sample": true, "repetition_penalty": 1.05, "max_new_tokens": 64, "pad_token_id": 6})");
  ModelFolder m = load_model_folder(dir.path());
  EXPECT_EQ(m.path, dir.path());
  EXPECT_EQ(m.config.architecture, "Qwen3ForCausalLM");
  EXPECT_EQ(m.weight_files, (std::vector<std::string>{"model.safetensors"}));
  EXPECT_EQ(m.generation.eos_token_id, (std::vector<int64_t>{7, 6}));
  EXPECT_EQ(m.generation.bos_token_id, 5);  // from config.json
  EXPECT_EQ(m.generation.pad_token_id, 6);
  EXPECT_DOUBLE_EQ(m.generation.temperature.value(), 0.6);
  EXPECT_DOUBLE_EQ(m.generation.top_p.value(), 0.95);
  EXPECT_EQ(m.generation.top_k.value(), 20);
  EXPECT_DOUBLE_EQ(m.generation.repetition_penalty.value(), 1.05);
  EXPECT_TRUE(m.generation.do_sample.value());
  EXPECT_EQ(m.generation.max_new_tokens.value(), 64);
  ASSERT_EQ(m.weights.size(), w.size());
  for (const auto& [name, t] : w) {
    const Tensor& got = m.weights.at(name);
    EXPECT_EQ(got.shape(), t.shape()) << name;
    EXPECT_EQ(got.to_f32_vector(), t.to_f32_vector()) << name;
  }
  EXPECT_EQ(m.weights.at("model.norm.weight").item_f32(1), float(w.size() - 1) + 0.125f);
}

TEST(ModelFolder, GenerationDefaultsComeFromConfigWithoutTheFile) {
  TempDir dir;
  make_folder(dir.path(), kTinyQwen3, tiny_weights(kTinyQwen3));
  ModelFolder m = load_model_folder(dir.path());
  EXPECT_EQ(m.generation.eos_token_id, (std::vector<int64_t>{7}));
  EXPECT_FALSE(m.generation.temperature.has_value());
  write_text(dir / "generation_config.json", R"({"top_p": 1.5})");
  EXPECT_ERROR_HAS(
      load_model_folder(dir.path()),
      "field top_p of " + (dir / "generation_config.json") + " must be in (0, 1], got 1.5");
}

TEST(ModelFolder, LoadsShardsWithMixedDtypes) {
  TempDir dir;
  Weights w = tiny_weights(kTinyQwen3);
  w[3].second = tiny_weights(kTinyQwen3, DType::kF32)[3].second;  // mixed dtypes are fine
  w[4].second = tiny_weights(kTinyQwen3, DType::kF16)[4].second;
  make_folder(dir.path(), kTinyQwen3, w, 4096);
  ModelFolder m = load_model_folder(dir.path());
  EXPECT_GT(m.weight_files.size(), 2u);
  EXPECT_EQ(m.weight_files[0],
            fmt::format("model-00001-of-{:05d}.safetensors", m.weight_files.size()));
  EXPECT_EQ(m.weights.size(), w.size());
  EXPECT_EQ(m.weights.at(w[3].first).dtype(), DType::kF32);
  EXPECT_EQ(m.weights.at(w[4].first).dtype(), DType::kF16);
  for (const auto& [name, t] : w)
    EXPECT_EQ(m.weights.at(name).to_f32_vector(), t.to_f32_vector()) << name;
}

TEST(ModelFolder, RefusesAMissingShard) {
  TempDir dir;
  make_folder(dir.path(), kTinyQwen3, tiny_weights(kTinyQwen3), 4096);
  Json index = io::read_json_file(dir / "model.safetensors.index.json");
  std::string victim = index["weight_map"]["model.norm.weight"];
  fs::remove(dir / victim);
  EXPECT_ERROR_HAS(load_model_folder(dir.path()),
                   "is missing 1 shard file(s) named by model.safetensors.index.json: " + victim);
}

TEST(ModelFolder, RefusesAnIndexThatDisagreesWithTheShards) {
  TempDir dir;
  make_folder(dir.path(), kTinyQwen3, tiny_weights(kTinyQwen3), 4096);
  Json index = io::read_json_file(dir / "model.safetensors.index.json");
  index["weight_map"]["model.norm.weight"] = index["weight_map"]["model.embed_tokens.weight"];
  io::write_json_file(dir / "model.safetensors.index.json", index);
  EXPECT_ERROR_HAS(load_model_folder(dir.path()), "puts tensor model.norm.weight in");
}

TEST(ModelFolder, RefusesMissingTensorsNamingThem) {
  TempDir dir;
  Weights w = without(without(tiny_weights(kTinyQwen3), "model.layers.1.mlp.up_proj.weight"),
                      "model.norm.weight");
  make_folder(dir.path(), kTinyQwen3, w);
  EXPECT_ERROR_HAS(
      load_model_folder(dir.path()),
      "lacks 2 weight(s) that Qwen3ForCausalLM needs: model.layers.1.mlp.up_proj.weight, "
      "model.norm.weight");
}

TEST(ModelFolder, RefusesShapeMismatch) {
  TempDir dir;
  Weights w = tiny_weights(kTinyQwen3);
  for (auto& [name, t] : w)
    if (name == "model.layers.0.self_attn.k_proj.weight")
      t = Tensor::host_zeros({32, 32}, DType::kBF16);
  make_folder(dir.path(), kTinyQwen3, w);
  EXPECT_ERROR_HAS(
      load_model_folder(dir.path()),
      "tensor model.layers.0.self_attn.k_proj.weight in " + (dir / "model.safetensors") +
          " has shape [32, 32], but config.json (Qwen3ForCausalLM with hidden_size 32, "
          "vocab_size 512) needs [16, 32]");
}

TEST(ModelFolder, RefusesUnexpectedTensorsButIgnoresRotaryBuffersAndTiedHead) {
  TempDir dir;
  Weights w = tiny_weights(kTinyQwen3);
  w.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq",
                 Tensor::host_zeros({4}, DType::kF32));
  w.emplace_back("lm_head.weight", Tensor::host_zeros({512, 32}, DType::kBF16));  // tied: unused
  make_folder(dir.path(), kTinyQwen3, w);
  ModelFolder m = load_model_folder(dir.path());
  EXPECT_EQ(m.weights.count("lm_head.weight"), 0u);
  EXPECT_EQ(m.weights.size(), w.size() - 2);

  w.emplace_back("model.layers.0.mlp.gate_proj.bias", Tensor::host_zeros({48}, DType::kBF16));
  make_folder(dir.path(), kTinyQwen3, w);
  EXPECT_ERROR_HAS(
      load_model_folder(dir.path()),
      "has 1 tensor(s) that Qwen3ForCausalLM does not use: model.layers.0.mlp.gate_proj.bias");
}

TEST(ModelFolder, RefusesFp8AndIntegerWeights) {
  TempDir dir;
  make_folder(dir.path(), kTinyQwen3, tiny_weights(kTinyQwen3));
  // Rewrite the header of one tensor to FP8 with the same byte count (bf16 [32] -> fp8 [64]).
  std::string bytes = testing::read_bytes(dir / "model.safetensors");
  const std::string from = R"("model.norm.weight":{"dtype":"BF16","shape":[32])";
  const std::string to = R"("model.norm.weight":{"dtype":"F8_E4M3","shape":[64])";
  size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, from.size(), to);
  // Keep the header length: drop as many padding/trailing spaces as were added.
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  uint64_t grow = to.size() - from.size();
  n += grow;
  for (int i = 0; i < 8; ++i) bytes[i] = char((n >> (8 * i)) & 0xff);
  write_text(dir / "model.safetensors", bytes);
  EXPECT_ERROR_HAS(load_model_folder(dir.path()),
                   "tensor model.norm.weight of " + (dir / "model.safetensors") +
                       " has dtype F8_E4M3: FP8 weights are not supported");

  Weights w = tiny_weights(kTinyQwen3);
  w[1].second = Tensor::host_zeros({32}, DType::kI32);
  make_folder(dir.path(), kTinyQwen3, w);
  EXPECT_ERROR_HAS(load_model_folder(dir.path()),
                   "tensor model.layers.0.input_layernorm.weight in " +
                       (dir / "model.safetensors") +
                       " has dtype I32; model weights must be F32, BF16 or F16");
}

TEST(ModelFolder, ChecksTheConfigBeforeAnyWeights) {
  TempDir dir;
  EXPECT_ERROR_HAS(load_model_folder(dir.path()),
                   "model folder " + dir.path() + " has no config.json");
  Json q = Json::parse(kTinyQwen3);
  q["quantization_config"] = {{"quant_method", "fp8"}};
  write_text(dir / "config.json", q.dump());  // no weights at all: the config error comes first
  EXPECT_ERROR_HAS(load_model_folder(dir.path()), "describes a quantized model (quant_method fp8)");
  q = Json::parse(kTinyQwen3);
  q["architectures"] = {"GPT2LMHeadModel"};
  write_text(dir / "config.json", q.dump());
  EXPECT_ERROR_HAS(load_model_folder(dir.path()), "architecture GPT2LMHeadModel is not supported");
  write_text(dir / "config.json", kTinyQwen3);
  EXPECT_ERROR_HAS(load_model_folder(dir.path()),
                   "has no model.safetensors or model.safetensors.index.json");
  write_text(dir / "pytorch_model.bin", "x");
  EXPECT_ERROR_HAS(
      load_model_folder(dir.path()),
      "has no model.safetensors or model.safetensors.index.json, only pytorch_model.bin");
}

// Fake cache folders under a temporary HOME; every cache variable is overridden.
class ResolveModel : public ::testing::Test {
 protected:
  void make_model(const std::string& dir) { write_text(dir + "/config.json", kTinyQwen3); }
  TempDir home;
  ScopedEnv home_env{"HOME", home.path()};
  ScopedEnv ms{"MODELSCOPE_CACHE", std::nullopt};
  ScopedEnv hf_home{"HF_HOME", std::nullopt};
  ScopedEnv hf_hub{"HF_HUB_CACHE", std::nullopt};
  ScopedEnv xdg{"XDG_CACHE_HOME", std::nullopt};
};

TEST_F(ResolveModel, LocalFoldersAreTakenAsGiven) {
  make_model(home / "m");
  EXPECT_EQ(resolve_model_path(home / "m"), home / "m");
  EXPECT_ERROR_HAS(resolve_model_path(home / "m/config.json"), "is a file, not a model folder");
  EXPECT_ERROR_HAS(resolve_model_path("./no/such/folder"),
                   "model folder ./no/such/folder does not exist");
  EXPECT_ERROR_HAS(resolve_model_path(""), "no model given");
}

TEST_F(ResolveModel, FindsModelScopeLayouts) {
  make_model(home / ".cache/modelscope/hub/Qwen/Qwen3-0.6B");  // older layout
  EXPECT_EQ(resolve_model_path("Qwen/Qwen3-0.6B"), home / ".cache/modelscope/hub/Qwen/Qwen3-0.6B");
  make_model(home / ".cache/modelscope/hub/models/Qwen/Qwen3-0.6B");  // newer layout wins
  EXPECT_EQ(resolve_model_path("Qwen/Qwen3-0.6B"),
            home / ".cache/modelscope/hub/models/Qwen/Qwen3-0.6B");
  make_model(home / ".cache/modelscope/hub/models/Qwen/Qwen2___5-0___5B-Instruct");  // '.' escaped
  EXPECT_EQ(resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct"),
            home / ".cache/modelscope/hub/models/Qwen/Qwen2___5-0___5B-Instruct");

  TempDir custom;
  ScopedEnv env("MODELSCOPE_CACHE", custom.path());
  make_model(custom / "hub/models/Qwen/Qwen3-1.7B");
  EXPECT_EQ(resolve_model_path("Qwen/Qwen3-1.7B"), custom / "hub/models/Qwen/Qwen3-1.7B");
  make_model(custom / "Qwen/Qwen3-1.7B");
  EXPECT_EQ(resolve_model_path("Qwen/Qwen3-1.7B"), custom / "Qwen/Qwen3-1.7B");
}

TEST_F(ResolveModel, FindsHuggingFaceSnapshots) {
  const std::string repo = home / ".cache/huggingface/hub/models--Qwen--Qwen3-0.6B";
  make_model(repo + "/snapshots/0123abcd");
  make_model(repo + "/snapshots/4567ef01");
  write_text(repo + "/refs/main", "0123abcd\n");
  EXPECT_EQ(resolve_model_path("Qwen/Qwen3-0.6B"), repo + "/snapshots/0123abcd");
  fs::remove(repo + "/refs/main");
  fs::remove_all(repo + "/snapshots/4567ef01");
  EXPECT_EQ(resolve_model_path("Qwen/Qwen3-0.6B"), repo + "/snapshots/0123abcd");

  TempDir hf;
  ScopedEnv env("HF_HOME", hf.path());
  make_model(hf / "hub/models--meta-llama--Llama-3.2-1B/snapshots/aa");
  write_text(hf / "hub/models--meta-llama--Llama-3.2-1B/refs/main", "aa");
  EXPECT_EQ(resolve_model_path("meta-llama/Llama-3.2-1B"),
            hf / "hub/models--meta-llama--Llama-3.2-1B/snapshots/aa");
}

TEST_F(ResolveModel, MissingModelsListTheSearchAndHowToDownload) {
  fs::create_directories(home / ".cache/modelscope/hub/models/Qwen/Qwen3-8B");  // no config.json
  std::string msg = testing::error_of([&] { resolve_model_path("Qwen/Qwen3-8B"); });
  EXPECT_NE(msg.find("model Qwen/Qwen3-8B is not a local folder and is not in the local ModelScope "
                     "or Hugging Face caches (searched: " +
                     (home / ".cache/modelscope/hub/models/Qwen/Qwen3-8B")),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find(home / ".cache/huggingface/hub/models--Qwen--Qwen3-8B"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("has no config.json (an incomplete download?)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("modelscope download --model Qwen/Qwen3-8B --local_dir ./Qwen3-8B"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("huggingface-cli download Qwen/Qwen3-8B --local-dir ./Qwen3-8B"),
            std::string::npos)
      << msg;
  // load_model_folder resolves hub IDs the same way.
  make_model(home / ".cache/modelscope/hub/models/Qwen/Qwen3-8B");
  make_folder(home / ".cache/modelscope/hub/models/Qwen/Qwen3-8B", kTinyQwen3,
              tiny_weights(kTinyQwen3));
  EXPECT_EQ(load_model_folder("Qwen/Qwen3-8B").weights.size(), tiny_weights(kTinyQwen3).size());
}

}  // namespace
}  // namespace swiftlet
