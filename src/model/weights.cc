#include "model/weights.h"

#include <fmt/format.h>

namespace swiftlet {

namespace {

// Appends slots; w / g may be null (specs only).
struct Emit {
  std::vector<WeightSlot>& out;
  std::string prefix;
  int64_t layer;

  void tensor(const std::string& name, Shape shape, WeightKind kind, Tensor* w, Tensor* g) {
    out.push_back({prefix + name, std::move(shape), kind, layer, w, g, {}, nullptr, nullptr});
  }
  // A projection [out, in] with an optional bias [out].
  void linear(const std::string& path, const std::string& module, int64_t out_dim, int64_t in_dim,
              bool bias, Linear* w, LinearGrads* g) {
    out.push_back({prefix + path + ".weight",
                   {out_dim, in_dim},
                   WeightKind::kLinear,
                   layer,
                   w ? &w->weight : nullptr,
                   g ? &g->weight : nullptr,
                   module,
                   w,
                   g});
    if (bias)
      tensor(path + ".bias", {out_dim}, WeightKind::kBias, w ? &w->bias : nullptr,
             g ? &g->bias : nullptr);
  }
};

void visit_attention(const ModelConfig& c, Emit& e, AttentionWeights* w, AttentionGrads* g) {
  const int64_t H = c.hidden_size, D = c.head_dim;
  const int64_t q_dim = c.num_attention_heads * D, kv_dim = c.num_key_value_heads * D;
  const bool b = c.attention_bias;
  e.linear("self_attn.q_proj", "q_proj", q_dim, H, b, w ? &w->q_proj : nullptr,
           g ? &g->q_proj : nullptr);
  e.linear("self_attn.k_proj", "k_proj", kv_dim, H, b, w ? &w->k_proj : nullptr,
           g ? &g->k_proj : nullptr);
  e.linear("self_attn.v_proj", "v_proj", kv_dim, H, b, w ? &w->v_proj : nullptr,
           g ? &g->v_proj : nullptr);
  e.linear("self_attn.o_proj", "o_proj", H, q_dim, c.o_proj_bias, w ? &w->o_proj : nullptr,
           g ? &g->o_proj : nullptr);
  if (c.qk_norm) {
    e.tensor("self_attn.q_norm.weight", {D}, WeightKind::kNorm, w ? &w->q_norm : nullptr,
             g ? &g->q_norm : nullptr);
    e.tensor("self_attn.k_norm.weight", {D}, WeightKind::kNorm, w ? &w->k_norm : nullptr,
             g ? &g->k_norm : nullptr);
  }
}

void visit_dense_mlp(const ModelConfig& c, Emit& e, DenseMlpWeights* w, DenseMlpGrads* g) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  e.linear("mlp.gate_proj", "gate_proj", I, H, false, w ? &w->gate_proj : nullptr,
           g ? &g->gate_proj : nullptr);
  e.linear("mlp.up_proj", "up_proj", I, H, false, w ? &w->up_proj : nullptr,
           g ? &g->up_proj : nullptr);
  e.linear("mlp.down_proj", "down_proj", H, I, false, w ? &w->down_proj : nullptr,
           g ? &g->down_proj : nullptr);
}

}  // namespace

std::vector<LayerKind> layer_kinds(const ModelConfig& c) {
  return std::vector<LayerKind>(size_t(c.num_hidden_layers), LayerKind{});
}

std::vector<WeightSlot> weight_slots(const ModelConfig& c, ModelWeights* w, ModelGrads* g) {
  const int64_t V = c.vocab_size, H = c.hidden_size;
  const std::vector<LayerKind> kinds = layer_kinds(c);
  if (w) {
    w->layers.resize(kinds.size());
    for (size_t i = 0; i < kinds.size(); ++i) w->layers[i].kind = kinds[i];
  }
  if (g) g->layers.resize(kinds.size());
  std::vector<WeightSlot> out;
  Emit top{out, "", -1};
  top.tensor("model.embed_tokens.weight", {V, H}, WeightKind::kEmbedding,
             w ? &w->embed_tokens : nullptr, g ? &g->embed_tokens : nullptr);
  for (size_t i = 0; i < kinds.size(); ++i) {
    LayerWeights* L = w ? &w->layers[i] : nullptr;
    LayerGrads* G = g ? &g->layers[i] : nullptr;
    Emit e{out, fmt::format("model.layers.{}.", i), int64_t(i)};
    e.tensor("input_layernorm.weight", {H}, WeightKind::kNorm, L ? &L->input_layernorm : nullptr,
             G ? &G->input_layernorm : nullptr);
    switch (kinds[i].mixer) {
      case MixerKind::kFullAttention:
        visit_attention(c, e, L ? &L->attn : nullptr, G ? &G->attn : nullptr);
        break;
    }
    e.tensor("post_attention_layernorm.weight", {H}, WeightKind::kNorm,
             L ? &L->post_attention_layernorm : nullptr,
             G ? &G->post_attention_layernorm : nullptr);
    switch (kinds[i].mlp) {
      case MlpKind::kDense:
        visit_dense_mlp(c, e, L ? &L->mlp : nullptr, G ? &G->mlp : nullptr);
        break;
    }
  }
  top.tensor("model.norm.weight", {H}, WeightKind::kNorm, w ? &w->norm : nullptr,
             g ? &g->norm : nullptr);
  if (c.seq_cls())
    top.tensor("score.weight", {c.num_labels, H}, WeightKind::kLinear, w ? &w->score : nullptr,
               g ? &g->score : nullptr);
  else if (!c.tie_word_embeddings)
    top.tensor("lm_head.weight", {V, H}, WeightKind::kLinear, w ? &w->lm_head : nullptr,
               g ? &g->lm_head : nullptr);
  return out;
}

std::vector<WeightSlot> module_slots(const ModelConfig& c, ModelWeights* w, ModelGrads* g) {
  std::vector<WeightSlot> out;
  for (auto& s : weight_slots(c, w, g))
    if (s.is_module()) out.push_back(std::move(s));
  return out;
}

int64_t count_parameters(const ModelConfig& c) {
  int64_t n = 0;
  for (const auto& s : model_weight_specs(c)) n += shape_numel(s.shape);
  return n;
}

}  // namespace swiftlet
