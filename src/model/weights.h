#pragma once
// The one list of a model's weights (HF names and shapes), driven by ModelConfig. Loading, saving,
// initialisation, the optimizer, LoRA and export all walk this list, so a new weight is added here
// and nowhere else.
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"

namespace swiftlet {

enum class WeightKind {
  kEmbedding,  // model.embed_tokens.weight
  kLinear,     // projection matrices [out, in], lm_head
  kBias,       // q/k/v(/o) biases
  kNorm,       // RMSNorm scales (input/post-attention/final norms, q_norm/k_norm)
};

struct WeightSpec {
  std::string name;
  Shape shape;
  WeightKind kind = WeightKind::kLinear;
  int64_t layer = -1;  // decoder layer index, -1 for embeddings, final norm and lm_head
};

// In HF order: model.embed_tokens.weight [V, H]; per layer i (prefix model.layers.i.):
// input_layernorm.weight [H], self_attn.{q,k,v}_proj.weight [Hq*D, H] / [Hkv*D, H] (+ .bias when
// attention_bias), self_attn.o_proj.weight [H, Hq*D] (+ .bias when o_proj_bias),
// self_attn.{q,k}_norm.weight [D] (qk_norm), post_attention_layernorm.weight [H],
// mlp.{gate,up}_proj.weight [I, H], mlp.down_proj.weight [H, I]; model.norm.weight [H];
// lm_head.weight [V, H] unless tie_word_embeddings.
std::vector<WeightSpec> model_weight_specs(const ModelConfig& config);

// Number of parameters (elements) of all weights of the model.
int64_t count_parameters(const ModelConfig& config);

}  // namespace swiftlet
