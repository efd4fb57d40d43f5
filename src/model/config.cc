// config.json <-> ModelConfig for the supported families. Defaults follow transformers' config
// classes (LlamaConfig, Qwen2Config, Qwen3Config) so a field left out means what it means in HF.
#include "model/config.h"

#include "core/error.h"
#include "io/json.h"

namespace swiftlet {

namespace {

using io::Json;

struct Architecture {
  const char* name;
  const char* model_type;
  ModelFamily family;
  bool seq_cls = false;
};
constexpr Architecture kArchitectures[] = {
    {"LlamaForCausalLM", "llama", ModelFamily::kLlama},
    {"Qwen2ForCausalLM", "qwen2", ModelFamily::kQwen2},
    {"Qwen3ForCausalLM", "qwen3", ModelFamily::kQwen3},
    {"Qwen3MoeForCausalLM", "qwen3_moe", ModelFamily::kQwen3},
    {"Qwen3_5ForCausalLM", "qwen3_5_text", ModelFamily::kQwen35},
    {"Qwen3_5ForConditionalGeneration", "qwen3_5", ModelFamily::kQwen35},
    {"Qwen3_5MoeForCausalLM", "qwen3_5_moe_text", ModelFamily::kQwen35},
    {"Qwen3_5MoeForConditionalGeneration", "qwen3_5_moe", ModelFamily::kQwen35},
    {"Qwen3NextForCausalLM", "qwen3_next", ModelFamily::kQwen35},
    {"LlamaForSequenceClassification", "llama", ModelFamily::kLlama, true},
    {"Qwen2ForSequenceClassification", "qwen2", ModelFamily::kQwen2, true},
    {"Qwen3ForSequenceClassification", "qwen3", ModelFamily::kQwen3, true},
    {"Qwen3MoeForSequenceClassification", "qwen3_moe", ModelFamily::kQwen3, true},
};

std::string supported_architectures() {
  std::string s;
  for (const auto& a : kArchitectures) s += (s.empty() ? "" : ", ") + std::string(a.name);
  return s;
}

int64_t positive_int(const Json& j, const std::string& key, const std::string& where) {
  int64_t v = io::json_int(j, key, where);
  if (v <= 0) throw Error(fmt::format("field {} of {} must be positive, got {}", key, where, v));
  return v;
}

std::vector<int64_t> token_ids(const Json& j, const std::string& key, const std::string& where) {
  std::vector<int64_t> ids;
  if (!io::json_has(j, key)) return ids;
  const Json& v = j.at(key);
  std::string what = fmt::format("field {} of {}", key, where);
  if (v.is_array()) {
    for (const Json& x : v) ids.push_back(io::json_as_int(x, what));
  } else {
    ids.push_back(io::json_as_int(v, what));
  }
  for (int64_t id : ids)
    if (id < 0) throw Error(fmt::format("{} must not be negative, got {}", what, id));
  return ids;
}

// rope_scaling: null | {"rope_type" (or older "type"): "default" | "linear" | "llama3", ...}.
RopeScaling parse_rope_scaling(const Json& r, const std::string& where) {
  RopeScaling s;
  if (r.is_null()) return s;
  std::string what = fmt::format("rope_scaling in {}", where);
  if (!r.is_object())
    throw Error(fmt::format("{} must be an object or null, got {}", what, r.dump()));
  std::string type = io::json_opt_string(r, "rope_type", what)
                         .value_or(io::json_opt_string(r, "type", what).value_or("default"));
  s.rope_type = type;
  if (type == "default") return s;
  if (type == "linear") {
    s.factor = io::json_number(r, "factor", what);
  } else if (type == "llama3") {
    s.factor = io::json_number(r, "factor", what);
    s.low_freq_factor = io::json_number(r, "low_freq_factor", what);
    s.high_freq_factor = io::json_number(r, "high_freq_factor", what);
    s.original_max_position_embeddings = io::json_int(r, "original_max_position_embeddings", what);
    if (s.high_freq_factor <= s.low_freq_factor || s.original_max_position_embeddings <= 0)
      throw Error(
          fmt::format("{}: llama3 scaling needs high_freq_factor > low_freq_factor and a "
                      "positive original_max_position_embeddings",
                      what));
  } else {
    throw Error(
        fmt::format("{}: rope type '{}' is not supported (supported: default, linear, llama3)",
                    what, type),
        "remove rope_scaling from config.json to use the model at its original context length");
  }
  if (!(s.factor > 0))
    throw Error(fmt::format("{}: factor must be positive, got {}", what, s.factor));
  return s;
}

// The mixture-of-experts keys of one config class, with that class's defaults for keys left out.
struct MoeClass {
  int64_t num_experts, num_experts_per_tok, moe_intermediate_size;
  int64_t shared_expert_intermediate_size;  // 0: the class has no shared expert
  bool norm_topk_prob;
  // Qwen3_5MoeTextConfig has neither norm_topk_prob (always renormalised) nor
  // decoder_sparse_step / mlp_only_layers (every layer is MoE); the model reads no such key.
  bool reads_layout_keys;
};
constexpr MoeClass kQwen3Moe{128, 8, 768, 0, false, true};
constexpr MoeClass kQwen35Moe{256, 8, 512, 512, true, false};
constexpr MoeClass kQwen3Next{512, 10, 512, 512, true, true};

void parse_moe(const Json& j, const std::string& where, const MoeClass& k, ModelConfig& c) {
  if (io::json_has(j, "num_experts"))
    c.num_experts = positive_int(j, "num_experts", where);
  else if (io::json_has(j, "num_local_experts"))
    c.num_experts = positive_int(j, "num_local_experts", where);
  else
    c.num_experts = k.num_experts;
  c.num_experts_per_tok = io::json_has(j, "num_experts_per_tok")
                              ? positive_int(j, "num_experts_per_tok", where)
                              : k.num_experts_per_tok;
  if (c.num_experts_per_tok > c.num_experts)
    throw Error(fmt::format("{}: num_experts_per_tok {} is more than num_experts {}", where,
                            c.num_experts_per_tok, c.num_experts));
  c.moe_intermediate_size = io::json_has(j, "moe_intermediate_size")
                                ? positive_int(j, "moe_intermediate_size", where)
                                : k.moe_intermediate_size;
  c.router_aux_loss_coef = io::json_opt_number(j, "router_aux_loss_coef", where).value_or(0.001);
  const int64_t shared = io::json_opt_int(j, "shared_expert_intermediate_size", where).value_or(0);
  if (k.shared_expert_intermediate_size == 0) {
    if (shared > 0)
      throw Error(
          fmt::format("{}: shared experts are not part of Qwen3-MoE and are not supported", where));
  } else {
    c.shared_expert_intermediate_size =
        io::json_has(j, "shared_expert_intermediate_size")
            ? positive_int(j, "shared_expert_intermediate_size", where)
            : k.shared_expert_intermediate_size;
  }
  c.mlp_only_layers.clear();
  if (!k.reads_layout_keys) {
    c.norm_topk_prob = true;
    c.decoder_sparse_step = 1;
    return;
  }
  c.norm_topk_prob = io::json_opt_bool(j, "norm_topk_prob", where).value_or(k.norm_topk_prob);
  c.decoder_sparse_step =
      io::json_has(j, "decoder_sparse_step") ? positive_int(j, "decoder_sparse_step", where) : 1;
  if (io::json_has(j, "mlp_only_layers") && !j["mlp_only_layers"].is_null()) {
    const Json& m = j["mlp_only_layers"];
    if (!m.is_array())
      throw Error(
          fmt::format("field mlp_only_layers of {} must be a list of layer indices", where));
    for (const Json& v : m) {
      int64_t i = io::json_as_int(v, fmt::format("an entry of mlp_only_layers in {}", where));
      if (i < 0 || i >= c.num_hidden_layers)
        throw Error(fmt::format("{}: mlp_only_layers holds {}, not a layer index below {}", where,
                                i, c.num_hidden_layers));
      c.mlp_only_layers.push_back(i);
    }
  }
}

// Qwen3_5TextConfig's hybrid-attention keys (defaults from the class for keys left out).
void parse_qwen35(const Json& j, const std::string& where, ModelConfig& c) {
  auto opt_pos = [&](const char* key, int64_t dflt) {
    return io::json_has(j, key) ? positive_int(j, key, where) : dflt;
  };
  c.linear_num_key_heads = opt_pos("linear_num_key_heads", 16);
  c.linear_num_value_heads = opt_pos("linear_num_value_heads", 32);
  c.linear_key_head_dim = opt_pos("linear_key_head_dim", 128);
  c.linear_value_head_dim = opt_pos("linear_value_head_dim", 128);
  c.linear_conv_kernel_dim = opt_pos("linear_conv_kernel_dim", 4);
  if (c.linear_num_value_heads % c.linear_num_key_heads != 0)
    throw Error(
        fmt::format("{}: linear_num_value_heads {} is not a multiple of "
                    "linear_num_key_heads {}",
                    where, c.linear_num_value_heads, c.linear_num_key_heads));
  c.layer_types.clear();
  if (io::json_has(j, "layer_types") && !j["layer_types"].is_null()) {
    const Json& t = j["layer_types"];
    if (!t.is_array() || int64_t(t.size()) != c.num_hidden_layers)
      throw Error(
          fmt::format("field layer_types of {} must be a list of {} layer types (one per "
                      "layer), got {}",
                      where, c.num_hidden_layers, t.dump()));
    for (const Json& v : t) {
      std::string type = v.is_string() ? v.get<std::string>() : v.dump();
      if (type == "attention") type = "full_attention";  // legacy names
      if (type == "mamba") type = "linear_attention";
      if (type != "full_attention" && type != "linear_attention")
        throw Error(
            fmt::format("{}: layer_types holds '{}'; supported: full_attention, "
                        "linear_attention",
                        where, type));
      c.layer_types.push_back(type);
    }
  } else {
    const int64_t n = opt_pos("full_attention_interval", 4);
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)
      c.layer_types.push_back((i + 1) % n == 0 ? "full_attention" : "linear_attention");
  }
  const Json none;
  const Json& rp = io::json_has(j, "rope_parameters") ? j["rope_parameters"] : none;
  c.partial_rotary_factor =
      io::json_opt_number(j, "partial_rotary_factor", where)
          .value_or(io::json_opt_number(rp, "partial_rotary_factor",
                                        fmt::format("rope_parameters in {}", where))
                        .value_or(0.25));
  const int64_t rot = c.rotary_dim();
  if (!(c.partial_rotary_factor > 0 && c.partial_rotary_factor <= 1) || rot < 2 || rot % 2 != 0)
    throw Error(
        fmt::format("{}: partial_rotary_factor {} must give an even number of rotated "
                    "channels between 2 and head_dim {} (got {})",
                    where, c.partial_rotary_factor, c.head_dim, rot));
  if (!io::json_opt_bool(j, "attn_output_gate", where).value_or(true))
    throw Error(
        fmt::format("{}: attn_output_gate is false; Qwen3.5 attention always has the "
                    "output gate and attention without it is not supported",
                    where));
  c.attn_output_gate = true;
  c.zero_centered_norms = true;
  c.linear_fused_projections = c.model_type == "qwen3_next";
  if (c.model_type == "qwen3_5_text")
    for (const char* key : {"num_experts", "num_local_experts"})
      if (io::json_opt_int(j, key, where).value_or(0) > 0)
        throw Error(fmt::format("{}: {} is set in a dense Qwen3.5 config (model_type "
                                "qwen3_5_text), whose model has no experts",
                                where, key),
                    "a Qwen3.5 mixture-of-experts model is Qwen3_5MoeForCausalLM (model_type "
                    "qwen3_5_moe_text)");
}

}  // namespace

bool ModelConfig::is_moe_layer(int64_t layer) const {
  if (num_experts <= 0) return false;
  for (int64_t i : mlp_only_layers)
    if (i == layer) return false;
  return (layer + 1) % decoder_sparse_step == 0;
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& where) {
  Json j = io::parse_json(json_text, where);
  if (!j.is_object()) throw Error(fmt::format("{} must hold a JSON object", where));

  if (io::json_has(j, "quantization_config")) {
    const Json& q = j["quantization_config"];
    std::string method =
        q.is_object() && q.contains("quant_method") && q["quant_method"].is_string()
            ? q["quant_method"].get<std::string>()
            : std::string("unknown");
    throw Error(fmt::format("{} describes a quantized model (quant_method {}); swiftlet loads only "
                            "bf16, f16 or f32 weights",
                            where, method),
                "use a bf16/f16 copy of the model (for Qwen, the release without -FP8/-AWQ/-GPTQ "
                "in its name)");
  }

  ModelConfig c;
  std::string arch;
  if (io::json_has(j, "architectures")) {
    const Json& a = j["architectures"];
    if (!a.is_array() || a.empty() || !a[0].is_string())
      throw Error(fmt::format("field architectures of {} must be a list of names, got {}", where,
                              a.dump()));
    arch = a[0].get<std::string>();
  } else {
    // Configs written without a model class name only their model_type.
    std::string type = io::json_string(j, "model_type", where);
    for (const auto& a : kArchitectures)
      if (type == a.model_type && !a.seq_cls && arch.empty()) arch = a.name;
    if (arch.empty())
      throw Error(fmt::format("{}: model_type '{}' is not supported (supported architectures: {})",
                              where, type, supported_architectures()));
  }
  const Architecture* found = nullptr;
  for (const auto& a : kArchitectures)
    if (arch == a.name) found = &a;
  if (!found)
    throw Error(fmt::format("{}: architecture {} is not supported (supported: {})", where, arch,
                            supported_architectures()));
  c.architecture = found->name;
  c.family = found->family;
  if (found->seq_cls) {
    // HF's num_labels is the size of id2label (2 when neither is written).
    c.num_labels = io::json_opt_int(j, "num_labels", where)
                       .value_or(io::json_has(j, "id2label") && j["id2label"].is_object()
                                     ? int64_t(j["id2label"].size())
                                     : 2);
    if (c.num_labels < 1)
      throw Error(fmt::format("{}: num_labels must be at least 1, got {}", where, c.num_labels));
  }
  c.model_type = io::json_opt_string(j, "model_type", where).value_or(found->model_type);
  if (c.model_type != found->model_type)
    throw Error(fmt::format("{}: model_type '{}' does not match architecture {} (expected '{}')",
                            where, c.model_type, arch, found->model_type));

  // The vision-language class keeps the text model's keys under text_config (tie_word_embeddings
  // and torch_dtype may sit at the top level); only the text part runs here.
  const Json top = j;
  if (c.model_type == "qwen3_5" || c.model_type == "qwen3_5_moe") {
    if (!io::json_has(j, "text_config") || !j["text_config"].is_object())
      throw Error(fmt::format("{}: a {} config needs a text_config object", where, arch));
    Json text = j["text_config"];
    for (const char* key : {"tie_word_embeddings", "torch_dtype", "dtype"})
      if (!io::json_has(text, key) && io::json_has(top, key)) text[key] = top[key];
    j = text;
    c.weight_prefix = "model.language_model.";
  }

  c.vocab_size = positive_int(j, "vocab_size", where);
  c.hidden_size = positive_int(j, "hidden_size", where);
  // Qwen3.5-MoE has no dense MLP (no key); Qwen3-Next's serves its mlp_only_layers.
  const bool moe35 = c.model_type == "qwen3_5_moe" || c.model_type == "qwen3_5_moe_text";
  if (moe35)
    c.intermediate_size = io::json_has(j, "intermediate_size") && !j["intermediate_size"].is_null()
                              ? positive_int(j, "intermediate_size", where)
                              : 0;
  else if (c.model_type == "qwen3_next" && !io::json_has(j, "intermediate_size"))
    c.intermediate_size = 5632;
  else
    c.intermediate_size = positive_int(j, "intermediate_size", where);
  c.num_hidden_layers = positive_int(j, "num_hidden_layers", where);
  c.num_attention_heads = positive_int(j, "num_attention_heads", where);
  c.max_position_embeddings = positive_int(j, "max_position_embeddings", where);
  c.num_key_value_heads = io::json_has(j, "num_key_value_heads")
                              ? positive_int(j, "num_key_value_heads", where)
                              : c.num_attention_heads;
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw Error(
        fmt::format("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", where,
                    c.num_attention_heads, c.num_key_value_heads));
  if (io::json_has(j, "head_dim")) {
    c.head_dim = positive_int(j, "head_dim", where);
  } else if (c.family == ModelFamily::kQwen3 && c.model_type == "qwen3") {
    c.head_dim = 128;  // Qwen3Config's default (Qwen3MoeConfig has none: hidden / heads)
  } else if (c.family == ModelFamily::kQwen35) {
    c.head_dim = 256;  // Qwen3_5TextConfig's, Qwen3_5MoeTextConfig's and Qwen3NextConfig's default
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      throw Error(
          fmt::format("{}: hidden_size {} is not a multiple of num_attention_heads {} and "
                      "head_dim is not given",
                      where, c.hidden_size, c.num_attention_heads));
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }

  if (c.model_type == "qwen3_moe") parse_moe(j, where, kQwen3Moe, c);
  if (moe35) parse_moe(j, where, kQwen35Moe, c);
  if (c.model_type == "qwen3_next") parse_moe(j, where, kQwen3Next, c);
  if (c.family == ModelFamily::kQwen35) parse_qwen35(j, where, c);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    if (!c.is_moe_layer(l) && c.intermediate_size <= 0)
      throw Error(
          fmt::format("{}: layer {} has a dense MLP but intermediate_size is not set", where, l));

  c.rms_norm_eps = io::json_opt_number(j, "rms_norm_eps", where).value_or(1e-6);
  c.initializer_range = io::json_opt_number(j, "initializer_range", where).value_or(0.02);
  if (!(c.rms_norm_eps > 0))
    throw Error(fmt::format("field rms_norm_eps of {} must be positive", where));
  // transformers >= 4.56 may write rope_parameters {rope_theta, rope_type, ...} instead.
  const Json none;
  const Json& rope_params = io::json_has(j, "rope_parameters") ? j["rope_parameters"] : none;
  c.rope_theta = io::json_opt_number(j, "rope_theta", where)
                     .value_or(io::json_opt_number(rope_params, "rope_theta",
                                                   fmt::format("rope_parameters in {}", where))
                                   .value_or(10000.0));
  if (!(c.rope_theta > 0))
    throw Error(fmt::format("field rope_theta of {} must be positive", where));
  c.rope_scaling =
      parse_rope_scaling(io::json_has(j, "rope_scaling") ? j["rope_scaling"] : rope_params, where);

  if (auto act = io::json_opt_string(j, "hidden_act", where); act && *act != "silu")
    throw Error(fmt::format(
        "{}: hidden_act '{}' is not supported (the supported families use silu)", where, *act));
  if (io::json_opt_bool(j, "use_sliding_window", where).value_or(false))
    throw Error(fmt::format("{}: use_sliding_window is true; sliding-window attention is not "
                            "supported",
                            where),
                "set use_sliding_window to false in config.json (Qwen's releases ship it off)");
  // Per-layer mixer kinds (transformers >= 4.5x writes "layer_types"): full attention only outside
  // Qwen3.5 (parse_qwen35 reads them there).
  if (c.family != ModelFamily::kQwen35 && io::json_has(j, "layer_types") &&
      !j["layer_types"].is_null()) {
    if (!j["layer_types"].is_array())
      throw Error(fmt::format("field layer_types of {} must be a list", where));
    for (const auto& t : j["layer_types"])
      if (!t.is_string() || t.get<std::string>() != "full_attention")
        throw Error(
            fmt::format("{}: layer_types holds {}; only full_attention layers are supported", where,
                        t.dump()),
            "swiftlet runs full-attention layers only (no sliding-window or linear attention)");
  }
  if (io::json_opt_bool(j, "mlp_bias", where).value_or(false))
    throw Error(fmt::format("{}: mlp_bias is true; MLP biases are not supported", where));

  c.tie_word_embeddings = io::json_opt_bool(j, "tie_word_embeddings", where).value_or(false);
  switch (c.family) {
    case ModelFamily::kQwen2:  // Qwen2 always has q/k/v biases and no o_proj bias
      c.attention_bias = true;
      c.o_proj_bias = false;
      c.qk_norm = false;
      break;
    case ModelFamily::kQwen35:  // zero-centred q/k norms, no biases
      if (io::json_opt_bool(j, "attention_bias", where).value_or(false))
        throw Error(
            fmt::format("{}: attention_bias is true; Qwen3.5 attention biases are not "
                        "supported",
                        where));
      c.attention_bias = c.o_proj_bias = false;
      c.qk_norm = true;
      break;
    case ModelFamily::kQwen3:
    case ModelFamily::kLlama:  // attention_bias adds biases to q, k, v and o
      c.attention_bias = io::json_opt_bool(j, "attention_bias", where).value_or(false);
      c.o_proj_bias = c.attention_bias;
      c.qk_norm = c.family == ModelFamily::kQwen3;
      break;
  }

  std::optional<std::string> dtype = io::json_opt_string(j, "torch_dtype", where);
  if (!dtype) dtype = io::json_opt_string(j, "dtype", where);  // name used by newer transformers
  c.torch_dtype = dtype.value_or("float32");
  if (c.torch_dtype != "float32" && c.torch_dtype != "bfloat16" && c.torch_dtype != "float16")
    throw Error(
        fmt::format("{}: torch_dtype '{}' is not supported (supported: float32, bfloat16, "
                    "float16)",
                    where, c.torch_dtype));
  c.eos_token_id = token_ids(j, "eos_token_id", where);
  std::vector<int64_t> bos = token_ids(j, "bos_token_id", where);
  if (bos.size() > 1)
    throw Error(fmt::format("field bos_token_id of {} must be one id, got {}", where,
                            j["bos_token_id"].dump()));
  c.bos_token_id = bos.empty() ? -1 : bos[0];
  for (int64_t id : c.eos_token_id)
    if (id >= c.vocab_size)
      throw Error(
          fmt::format("{}: eos_token_id {} is not below vocab_size {}", where, id, c.vocab_size));
  if (c.bos_token_id >= c.vocab_size)
    throw Error(fmt::format("{}: bos_token_id {} is not below vocab_size {}", where, c.bos_token_id,
                            c.vocab_size));
  return c;
}

ModelConfig as_sequence_classifier(const ModelConfig& causal, int64_t num_labels) {
  ModelConfig c = causal;
  if (!c.seq_cls()) {
    const std::string suffix = "ForCausalLM";
    SWIFTLET_CHECK(c.architecture.size() > suffix.size() &&
                       c.architecture.compare(c.architecture.size() - suffix.size(), suffix.size(),
                                              suffix) == 0,
                   "as_sequence_classifier: {}", c.architecture);
    c.architecture = c.architecture.substr(0, c.architecture.size() - suffix.size()) +
                     "ForSequenceClassification";
  }
  c.num_labels = num_labels;
  return c;
}

std::string model_config_to_json(const ModelConfig& c) {
  // nlohmann's object keeps keys sorted, as transformers writes config.json (sort_keys=True).
  Json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = c.model_type;
  if (c.num_labels > 0) {
    Json id2label = Json::object(), label2id = Json::object();
    for (int64_t i = 0; i < c.num_labels; ++i) {
      id2label[std::to_string(i)] = fmt::format("LABEL_{}", i);
      label2id[fmt::format("LABEL_{}", i)] = i;
    }
    j["id2label"] = id2label;
    j["label2id"] = label2id;
  }
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.rope_type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    Json r = {{"rope_type", c.rope_scaling.rope_type}, {"factor", c.rope_scaling.factor}};
    if (c.rope_scaling.rope_type == "llama3") {
      r["low_freq_factor"] = c.rope_scaling.low_freq_factor;
      r["high_freq_factor"] = c.rope_scaling.high_freq_factor;
      r["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = r;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = c.torch_dtype;
  j["hidden_act"] = "silu";
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = c.initializer_range;
  j["use_cache"] = true;
  switch (c.family) {
    case ModelFamily::kLlama:
      j["attention_bias"] = c.attention_bias;
      j["mlp_bias"] = false;
      j["pretraining_tp"] = 1;
      break;
    case ModelFamily::kQwen35:
      j["attention_bias"] = false;
      j["attn_output_gate"] = true;
      j["layer_types"] = c.layer_types;
      j["linear_num_key_heads"] = c.linear_num_key_heads;
      j["linear_num_value_heads"] = c.linear_num_value_heads;
      j["linear_key_head_dim"] = c.linear_key_head_dim;
      j["linear_value_head_dim"] = c.linear_value_head_dim;
      j["linear_conv_kernel_dim"] = c.linear_conv_kernel_dim;
      j["partial_rotary_factor"] = c.partial_rotary_factor;
      break;
    case ModelFamily::kQwen3:
      j["attention_bias"] = c.attention_bias;
      [[fallthrough]];
    case ModelFamily::kQwen2:
      j["use_sliding_window"] = false;
      j["sliding_window"] = nullptr;
      j["max_window_layers"] = c.num_hidden_layers;
      break;
  }
  if (c.moe()) {
    j["num_experts"] = c.num_experts;
    j["num_experts_per_tok"] = c.num_experts_per_tok;
    j["moe_intermediate_size"] = c.moe_intermediate_size;
    j["norm_topk_prob"] = c.norm_topk_prob;
    j["decoder_sparse_step"] = c.decoder_sparse_step;
    j["mlp_only_layers"] = c.mlp_only_layers;
    j["router_aux_loss_coef"] = c.router_aux_loss_coef;
    j["output_router_logits"] = false;
    if (c.shared_expert_intermediate_size > 0)
      j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
    if (c.model_type == "qwen3_5_moe" || c.model_type == "qwen3_5_moe_text") {
      // Qwen3_5MoeTextConfig has no such keys: always renormalised, every layer MoE.
      j.erase("norm_topk_prob");
      j.erase("decoder_sparse_step");
      j.erase("mlp_only_layers");
    }
  }
  if (c.intermediate_size == 0) j.erase("intermediate_size");
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id.size() == 1) {
    j["eos_token_id"] = c.eos_token_id[0];
  } else if (!c.eos_token_id.empty()) {
    j["eos_token_id"] = c.eos_token_id;
  }
  // The vision-language layout: text keys under text_config.
  if (c.model_type == "qwen3_5" || c.model_type == "qwen3_5_moe") {
    Json top;
    for (const char* key : {"architectures", "model_type", "tie_word_embeddings", "torch_dtype"})
      top[key] = j[key];
    j.erase("architectures");
    j["model_type"] = c.model_type + "_text";
    top["text_config"] = j;
    return top.dump(2) + "\n";
  }
  return j.dump(2) + "\n";
}

}  // namespace swiftlet
