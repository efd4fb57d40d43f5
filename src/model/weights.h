#pragma once
// A model's weights and their gradients, and the ONE list of them (HF name, shape, weight slot,
// gradient slot). Loading, saving, initialisation, the optimizer, LoRA, export and the engine all
// walk weight_slots(), so a new weight (an expert, a router, a conv kernel) is one line in the
// visit function of its layer variant in weights.cc, and nowhere else.
//
// A decoder layer is a token mixer (full attention now; linear attention next) plus an MLP (dense
// now; mixture of experts next), each chosen per layer from the config (layer_kinds()).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "ops/linear.h"

namespace swiftlet {

enum class MixerKind { kFullAttention, kLinearAttention };
enum class MlpKind { kDense, kMoe };

struct LayerKind {
  MixerKind mixer = MixerKind::kFullAttention;
  MlpKind mlp = MlpKind::kDense;
};

// Per layer, from the config: config.json "layer_types" ("full_attention", or "linear_attention"
// for Qwen3.5's Gated DeltaNet layers); a sparse MoE block where
// config.is_moe_layer(i) (decoder_sparse_step, mlp_only_layers), else the dense MLP.
std::vector<LayerKind> layer_kinds(const ModelConfig& config);

// Full (causal, grouped-query) self-attention: q/k/v/o projections, Qwen3's per-head q/k norms.
struct AttentionWeights {
  Linear q_proj, k_proj, v_proj, o_proj;
  Tensor q_norm, k_norm;  // [head_dim], qk_norm only
};
struct AttentionGrads {
  LinearGrads q_proj, k_proj, v_proj, o_proj;
  Tensor q_norm, k_norm;
};

// Gated DeltaNet (Qwen3.5 linear attention), hub names under linear_attn.: in_proj_qkv
// [2 HK dk + HV dv, H] (q | k | v channels, head-major), in_proj_z [HV dv, H], in_proj_b and
// in_proj_a [HV, H], conv1d [C, 1, K] (depthwise, no bias), dt_bias and A_log [HV], norm [dv]
// (the gated RMSNorm's plain weight), out_proj [H, HV dv].
// Qwen3-Next stores the four input projections fused per key head h instead: in_proj_qkvz
// [2 HK dk + 2 HV dv, H] with rows [q_h | k_h | v of h's r = HV/HK value heads | z of those] and
// in_proj_ba [2 HV, H] with rows [b of h's value heads | a of those] (linear_fused_projections).
struct LinearAttentionWeights {
  Linear in_proj_qkv, in_proj_z, in_proj_b, in_proj_a, out_proj;
  Linear in_proj_qkvz, in_proj_ba;  // Qwen3-Next
  Tensor conv1d, dt_bias, a_log, norm;
};
struct LinearAttentionGrads {
  LinearGrads in_proj_qkv, in_proj_z, in_proj_b, in_proj_a, out_proj;
  LinearGrads in_proj_qkvz, in_proj_ba;
  Tensor conv1d, dt_bias, a_log, norm;
};

// SwiGLU MLP: down(silu(gate(x)) * up(x)).
struct DenseMlpWeights {
  Linear gate_proj, up_proj, down_proj;
};
struct DenseMlpGrads {
  LinearGrads gate_proj, up_proj, down_proj;
};

// Sparse mixture of experts (Qwen3-MoE): a router (`gate`, [E, H], no bias) picks the top-k of E
// SwiGLU experts of width moe_intermediate_size per token; each expert is stored as its own three
// projections (the hub's per-expert form; the fused form is split on load). Qwen3.5-MoE and
// Qwen3-Next add a shared SwiGLU expert (mlp.shared_expert, width
// shared_expert_intermediate_size) weighted per token by sigmoid(shared_expert_gate(h))
// (mlp.shared_expert_gate [1, H]).
struct MoeWeights {
  Linear gate;                           // router [E, H]
  std::vector<DenseMlpWeights> experts;  // [E]
  DenseMlpWeights shared_expert;
  Linear shared_expert_gate;
};
struct MoeGrads {
  LinearGrads gate;
  std::vector<DenseMlpGrads> experts;
  DenseMlpGrads shared_expert;
  LinearGrads shared_expert_gate;
};

struct LayerWeights {
  LayerKind kind;
  Tensor input_layernorm, post_attention_layernorm;  // [H]
  AttentionWeights attn;                             // kind.mixer == kFullAttention
  LinearAttentionWeights linear_attn;                // kind.mixer == kLinearAttention
  DenseMlpWeights mlp;                               // kind.mlp == kDense
  MoeWeights moe;                                    // kind.mlp == kMoe
};

struct ModelWeights {
  Tensor embed_tokens;  // [V, H]
  std::vector<LayerWeights> layers;
  Tensor norm;     // [H]
  Tensor lm_head;  // [V, H]; the same tensor as embed_tokens when tied; undefined for seq_cls
  Tensor score;    // [num_labels, H]: the sequence classifier's head (reward models)
};

// Gradients mirror the weights; an undefined tensor means "frozen". All f32.
struct LayerGrads {
  Tensor input_layernorm, post_attention_layernorm;
  AttentionGrads attn;
  LinearAttentionGrads linear_attn;
  DenseMlpGrads mlp;
  MoeGrads moe;
};
struct ModelGrads {
  Tensor embed_tokens;
  std::vector<LayerGrads> layers;
  Tensor norm;
  Tensor lm_head;  // the same tensor as embed_tokens when the weights are tied
  Tensor score;
};

enum class WeightKind {
  kEmbedding,         // model.embed_tokens.weight
  kLinear,            // projection matrices [out, in], lm_head
  kBias,              // q/k/v(/o) biases
  kNorm,              // RMSNorm scales (input/post-attention/final norms, q_norm/k_norm)
  kNormZeroCentered,  // Qwen3.5's RMSNorm scales applied as (1 + w); initialised to 0
  kConv,              // depthwise conv kernels (linear attention)
  kDtBias,            // linear attention's decay bias dt_bias; initialised to 1
  kALog,              // linear attention's log decay rate A_log; initialised to log U(0.01, 16)
};

// One weight of the model.
struct WeightSlot {
  std::string name;  // HF name
  Shape shape;
  WeightKind kind = WeightKind::kLinear;
  int64_t layer = -1;        // decoder layer index, -1 for embeddings, final norm and lm_head
  Tensor* weight = nullptr;  // its slot in the ModelWeights given (null when none was)
  Tensor* grad = nullptr;    // its slot in the ModelGrads given (null when none was)
  // Projection matrices of decoder layers (what LoRA targets): the module's short name
  // ("q_proj") and its Linear / LinearGrads (null when no weights / grads were given).
  std::string module;
  Linear* linear = nullptr;
  LinearGrads* linear_grads = nullptr;
  bool is_module() const { return !module.empty(); }
  // "model.layers.0.self_attn.q_proj" for "model.layers.0.self_attn.q_proj.weight"
  std::string module_path() const { return name.substr(0, name.rfind('.')); }
};
using WeightSpec = WeightSlot;

// Every weight, in one fixed order (names under config.weight_prefix, "model." here):
// model.embed_tokens.weight [V, H]; per layer i (prefix
// model.layers.i.): input_layernorm.weight [H]; the mixer's weights (attention:
// self_attn.{q,k,v}_proj.weight [Hq*D, H] / [Hkv*D, H], each followed by its .bias when
// attention_bias, self_attn.o_proj.weight [H, Hq*D] (+ .bias when o_proj_bias),
// self_attn.{q,k}_norm.weight [D] when qk_norm; q_proj is [2 Hq D, H] with the output gate;
// linear attention: linear_attn.{in_proj_qkv, in_proj_z, in_proj_b, in_proj_a}.weight,
// linear_attn.conv1d.weight, linear_attn.dt_bias, linear_attn.A_log, linear_attn.norm.weight,
// linear_attn.out_proj.weight); post_attention_layernorm.weight [H]; the MLP's
// (dense: mlp.{gate,up}_proj.weight [I, H], mlp.down_proj.weight [H, I]; MoE: the router
// mlp.gate.weight [E, H], then per expert e mlp.experts.e.{gate,up}_proj.weight [Ie, H] and
// mlp.experts.e.down_proj.weight [H, Ie]); model.norm.weight [H];
// lm_head.weight [V, H] unless tie_word_embeddings (a tied lm_head is not listed); a sequence
// classifier has score.weight [num_labels, H] instead of any LM head.
// With `w` / `g`, their layer vectors are sized (and kinds set) and the slots point into them.
std::vector<WeightSlot> weight_slots(const ModelConfig& config, ModelWeights* w = nullptr,
                                     ModelGrads* g = nullptr);
inline std::vector<WeightSpec> model_weight_specs(const ModelConfig& config) {
  return weight_slots(config);
}

// The projection-matrix slots of weight_slots() (LoRA targets), in the same order.
std::vector<WeightSlot> module_slots(const ModelConfig& config, ModelWeights* w = nullptr,
                                     ModelGrads* g = nullptr);

// A Qwen3-MoE or Qwen3.5-MoE checkpoint may store each layer's experts fused (transformers 5's
// in-memory form, and the hub's form of Qwen3.5-MoE):
// mlp.experts.gate_up_proj [E, 2 Ie, H] (rows 0..Ie-1 gate, Ie..2Ie-1 up) and
// mlp.experts.down_proj [E, H, Ie]. Replaces such tensors in `weights` by the per-expert ones
// weight_slots() names (views of the same memory); Error on a fused tensor of the wrong shape or
// on a layer holding both forms. No-op for models without experts.
void split_fused_experts(const ModelConfig& config, std::map<std::string, Tensor>& weights);

// Number of parameters (elements) of all weights of the model.
int64_t count_parameters(const ModelConfig& config);

}  // namespace swiftlet
