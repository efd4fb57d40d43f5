#include "model/weights.h"

#include <fmt/format.h>

#include "core/error.h"

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
  e.linear("self_attn.q_proj", "q_proj", c.attn_output_gate ? 2 * q_dim : q_dim, H, b,
           w ? &w->q_proj : nullptr, g ? &g->q_proj : nullptr);
  e.linear("self_attn.k_proj", "k_proj", kv_dim, H, b, w ? &w->k_proj : nullptr,
           g ? &g->k_proj : nullptr);
  e.linear("self_attn.v_proj", "v_proj", kv_dim, H, b, w ? &w->v_proj : nullptr,
           g ? &g->v_proj : nullptr);
  e.linear("self_attn.o_proj", "o_proj", H, q_dim, c.o_proj_bias, w ? &w->o_proj : nullptr,
           g ? &g->o_proj : nullptr);
  if (c.qk_norm) {
    const WeightKind norm =
        c.zero_centered_norms ? WeightKind::kNormZeroCentered : WeightKind::kNorm;
    e.tensor("self_attn.q_norm.weight", {D}, norm, w ? &w->q_norm : nullptr,
             g ? &g->q_norm : nullptr);
    e.tensor("self_attn.k_norm.weight", {D}, norm, w ? &w->k_norm : nullptr,
             g ? &g->k_norm : nullptr);
  }
}

void visit_linear_attention(const ModelConfig& c, Emit& e, LinearAttentionWeights* w,
                            LinearAttentionGrads* g) {
  const int64_t H = c.hidden_size, HV = c.linear_num_value_heads;
  const int64_t key_dim = c.linear_num_key_heads * c.linear_key_head_dim;
  const int64_t value_dim = HV * c.linear_value_head_dim, C = 2 * key_dim + value_dim;
  auto lin = [&](const char* name, int64_t out, int64_t in, Linear LinearAttentionWeights::*wm,
                 LinearGrads LinearAttentionGrads::*gm) {
    e.linear(fmt::format("linear_attn.{}", name), name, out, in, false, w ? &(w->*wm) : nullptr,
             g ? &(g->*gm) : nullptr);
  };
  auto ten = [&](const char* name, Shape shape, WeightKind kind, Tensor LinearAttentionWeights::*wm,
                 Tensor LinearAttentionGrads::*gm) {
    e.tensor(fmt::format("linear_attn.{}", name), std::move(shape), kind, w ? &(w->*wm) : nullptr,
             g ? &(g->*gm) : nullptr);
  };
  using W = LinearAttentionWeights;
  using G = LinearAttentionGrads;
  if (c.linear_fused_projections) {
    lin("in_proj_qkvz", C + value_dim, H, &W::in_proj_qkvz, &G::in_proj_qkvz);
    lin("in_proj_ba", 2 * HV, H, &W::in_proj_ba, &G::in_proj_ba);
  } else {
    lin("in_proj_qkv", C, H, &W::in_proj_qkv, &G::in_proj_qkv);
    lin("in_proj_z", value_dim, H, &W::in_proj_z, &G::in_proj_z);
    lin("in_proj_b", HV, H, &W::in_proj_b, &G::in_proj_b);
    lin("in_proj_a", HV, H, &W::in_proj_a, &G::in_proj_a);
  }
  ten("conv1d.weight", {C, 1, c.linear_conv_kernel_dim}, WeightKind::kConv, &W::conv1d, &G::conv1d);
  ten("dt_bias", {HV}, WeightKind::kDtBias, &W::dt_bias, &G::dt_bias);
  ten("A_log", {HV}, WeightKind::kALog, &W::a_log, &G::a_log);
  ten("norm.weight", {c.linear_value_head_dim}, WeightKind::kNorm, &W::norm, &G::norm);
  lin("out_proj", H, value_dim, &W::out_proj, &G::out_proj);
}

// A SwiGLU block of width I under `path` ("mlp", "mlp.shared_expert").
void visit_swiglu(const ModelConfig& c, Emit& e, const std::string& path, int64_t I,
                  DenseMlpWeights* w, DenseMlpGrads* g) {
  const int64_t H = c.hidden_size;
  e.linear(path + ".gate_proj", "gate_proj", I, H, false, w ? &w->gate_proj : nullptr,
           g ? &g->gate_proj : nullptr);
  e.linear(path + ".up_proj", "up_proj", I, H, false, w ? &w->up_proj : nullptr,
           g ? &g->up_proj : nullptr);
  e.linear(path + ".down_proj", "down_proj", H, I, false, w ? &w->down_proj : nullptr,
           g ? &g->down_proj : nullptr);
}

void visit_dense_mlp(const ModelConfig& c, Emit& e, DenseMlpWeights* w, DenseMlpGrads* g) {
  visit_swiglu(c, e, "mlp", c.intermediate_size, w, g);
}

void visit_moe(const ModelConfig& c, Emit& e, MoeWeights* w, MoeGrads* g) {
  const int64_t H = c.hidden_size, I = c.moe_intermediate_size, E = c.num_experts;
  if (w) w->experts.resize(size_t(E));
  if (g) g->experts.resize(size_t(E));
  e.linear("mlp.gate", "gate", E, H, false, w ? &w->gate : nullptr, g ? &g->gate : nullptr);
  for (int64_t x = 0; x < E; ++x) {
    DenseMlpWeights* W = w ? &w->experts[size_t(x)] : nullptr;
    DenseMlpGrads* G = g ? &g->experts[size_t(x)] : nullptr;
    const std::string p = fmt::format("mlp.experts.{}.", x);
    e.linear(p + "gate_proj", "gate_proj", I, H, false, W ? &W->gate_proj : nullptr,
             G ? &G->gate_proj : nullptr);
    e.linear(p + "up_proj", "up_proj", I, H, false, W ? &W->up_proj : nullptr,
             G ? &G->up_proj : nullptr);
    e.linear(p + "down_proj", "down_proj", H, I, false, W ? &W->down_proj : nullptr,
             G ? &G->down_proj : nullptr);
  }
  if (c.shared_expert_intermediate_size > 0) {
    visit_swiglu(c, e, "mlp.shared_expert", c.shared_expert_intermediate_size,
                 w ? &w->shared_expert : nullptr, g ? &g->shared_expert : nullptr);
    e.linear("mlp.shared_expert_gate", "shared_expert_gate", 1, H, false,
             w ? &w->shared_expert_gate : nullptr, g ? &g->shared_expert_gate : nullptr);
  }
}

}  // namespace

std::vector<LayerKind> layer_kinds(const ModelConfig& c) {
  std::vector<LayerKind> kinds(size_t(c.num_hidden_layers), LayerKind{});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    if (c.is_moe_layer(i)) kinds[size_t(i)].mlp = MlpKind::kMoe;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    if (c.is_linear_layer(i)) kinds[size_t(i)].mixer = MixerKind::kLinearAttention;
  return kinds;
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
  const std::string& P = c.weight_prefix;
  const WeightKind norm = c.zero_centered_norms ? WeightKind::kNormZeroCentered : WeightKind::kNorm;
  top.tensor(P + "embed_tokens.weight", {V, H}, WeightKind::kEmbedding,
             w ? &w->embed_tokens : nullptr, g ? &g->embed_tokens : nullptr);
  for (size_t i = 0; i < kinds.size(); ++i) {
    LayerWeights* L = w ? &w->layers[i] : nullptr;
    LayerGrads* G = g ? &g->layers[i] : nullptr;
    Emit e{out, fmt::format("{}layers.{}.", P, i), int64_t(i)};
    e.tensor("input_layernorm.weight", {H}, norm, L ? &L->input_layernorm : nullptr,
             G ? &G->input_layernorm : nullptr);
    switch (kinds[i].mixer) {
      case MixerKind::kFullAttention:
        visit_attention(c, e, L ? &L->attn : nullptr, G ? &G->attn : nullptr);
        break;
      case MixerKind::kLinearAttention:
        visit_linear_attention(c, e, L ? &L->linear_attn : nullptr, G ? &G->linear_attn : nullptr);
        break;
    }
    e.tensor("post_attention_layernorm.weight", {H}, norm,
             L ? &L->post_attention_layernorm : nullptr,
             G ? &G->post_attention_layernorm : nullptr);
    switch (kinds[i].mlp) {
      case MlpKind::kDense:
        visit_dense_mlp(c, e, L ? &L->mlp : nullptr, G ? &G->mlp : nullptr);
        break;
      case MlpKind::kMoe:
        visit_moe(c, e, L ? &L->moe : nullptr, G ? &G->moe : nullptr);
        break;
    }
  }
  top.tensor(P + "norm.weight", {H}, norm, w ? &w->norm : nullptr, g ? &g->norm : nullptr);
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

void split_fused_experts(const ModelConfig& c, std::map<std::string, Tensor>& weights) {
  if (!c.moe()) return;
  const int64_t H = c.hidden_size, I = c.moe_intermediate_size, E = c.num_experts;
  const std::vector<LayerKind> kinds = layer_kinds(c);
  for (size_t l = 0; l < kinds.size(); ++l) {
    if (kinds[l].mlp != MlpKind::kMoe) continue;
    const std::string p = fmt::format("{}layers.{}.mlp.experts.", c.weight_prefix, l);
    auto take = [&](const std::string& name, Shape want) -> Tensor {
      auto it = weights.find(p + name);
      if (it == weights.end()) return Tensor();
      if (it->second.shape() != want)
        throw Error(fmt::format("model weight {}{} has shape {}, expected {}", p, name,
                                shape_str(it->second.shape()), shape_str(want)));
      Tensor t = it->second;
      weights.erase(it);
      return t;
    };
    Tensor gate_up = take("gate_up_proj", {E, 2 * I, H});
    Tensor down = take("down_proj", {E, H, I});
    if (!gate_up.defined() && !down.defined()) continue;
    if (!gate_up.defined() || !down.defined())
      throw Error(
          fmt::format("layer {} stores only one of {}gate_up_proj and {}down_proj", l, p, p));
    if (weights.count(p + "0.gate_proj.weight"))
      throw Error(
          fmt::format("layer {} stores its experts both fused ({}gate_up_proj) and per "
                      "expert ({}0.gate_proj.weight)",
                      l, p, p));
    for (int64_t e = 0; e < E; ++e) {
      Tensor gu = gate_up.slice(e, e + 1).view({2 * I, H});
      weights[fmt::format("{}{}.gate_proj.weight", p, e)] = gu.slice(0, I);
      weights[fmt::format("{}{}.up_proj.weight", p, e)] = gu.slice(I, 2 * I);
      weights[fmt::format("{}{}.down_proj.weight", p, e)] = down.slice(e, e + 1).view({H, I});
    }
  }
}

int64_t count_parameters(const ModelConfig& c) {
  int64_t n = 0;
  for (const auto& s : model_weight_specs(c)) n += shape_numel(s.shape);
  return n;
}

}  // namespace swiftlet
