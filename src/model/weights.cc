#include "model/weights.h"

#include <fmt/format.h>

namespace swiftlet {

std::vector<WeightSpec> model_weight_specs(const ModelConfig& c) {
  const int64_t V = c.vocab_size, H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const int64_t q_dim = c.num_attention_heads * D, kv_dim = c.num_key_value_heads * D;
  std::vector<WeightSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {V, H}, WeightKind::kEmbedding, -1});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    auto add = [&](const char* name, Shape shape, WeightKind kind) {
      specs.push_back({p + name, std::move(shape), kind, i});
    };
    add("input_layernorm.weight", {H}, WeightKind::kNorm);
    add("self_attn.q_proj.weight", {q_dim, H}, WeightKind::kLinear);
    add("self_attn.k_proj.weight", {kv_dim, H}, WeightKind::kLinear);
    add("self_attn.v_proj.weight", {kv_dim, H}, WeightKind::kLinear);
    add("self_attn.o_proj.weight", {H, q_dim}, WeightKind::kLinear);
    if (c.attention_bias) {
      add("self_attn.q_proj.bias", {q_dim}, WeightKind::kBias);
      add("self_attn.k_proj.bias", {kv_dim}, WeightKind::kBias);
      add("self_attn.v_proj.bias", {kv_dim}, WeightKind::kBias);
    }
    if (c.o_proj_bias) add("self_attn.o_proj.bias", {H}, WeightKind::kBias);
    if (c.qk_norm) {
      add("self_attn.q_norm.weight", {D}, WeightKind::kNorm);
      add("self_attn.k_norm.weight", {D}, WeightKind::kNorm);
    }
    add("post_attention_layernorm.weight", {H}, WeightKind::kNorm);
    add("mlp.gate_proj.weight", {I, H}, WeightKind::kLinear);
    add("mlp.up_proj.weight", {I, H}, WeightKind::kLinear);
    add("mlp.down_proj.weight", {H, I}, WeightKind::kLinear);
  }
  specs.push_back({"model.norm.weight", {H}, WeightKind::kNorm, -1});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {V, H}, WeightKind::kLinear, -1});
  return specs;
}

int64_t count_parameters(const ModelConfig& c) {
  int64_t n = 0;
  for (const auto& s : model_weight_specs(c)) n += shape_numel(s.shape);
  return n;
}

}  // namespace swiftlet
