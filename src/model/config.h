#pragma once
// ModelConfig: the shape of a transformer, read from a Hugging Face config.json. Field names follow
// config.json so a reader can hold the two side by side.
#include <cstdint>
#include <string>
#include <vector>

namespace swiftlet {

enum class ModelFamily { kLlama, kQwen2, kQwen3, kQwen35 };

struct RopeScaling {
  std::string rope_type = "default";  // "default" | "linear" | "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;                  // llama3
  double high_freq_factor = 4.0;                 // llama3
  int64_t original_max_position_embeddings = 0;  // llama3
};

struct ModelConfig {
  // "Qwen3ForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM", or their
  // ...ForSequenceClassification (a `score` head [num_labels, H] instead of the LM head).
  std::string architecture;
  std::string model_type;  // config.json model_type: "qwen3", "qwen2", "llama"
  ModelFamily family = ModelFamily::kQwen3;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // defaults to hidden_size / num_attention_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double initializer_range = 0.02;  // std of random initial weights (swiftlet init)
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v bias: true for Qwen2
  bool o_proj_bias = false;     // o_proj bias too: HF Llama/Qwen3 with attention_bias (not Qwen2)
  bool qk_norm = false;         // per-head RMSNorm on q and k: Qwen3
  std::string torch_dtype = "float32";  // dtype named in config.json
  std::vector<int64_t> eos_token_id;
  int64_t bos_token_id = -1;
  int64_t num_labels = 0;  // > 0: a sequence classifier (reward model: 1)
  bool seq_cls() const { return num_labels > 0; }

  // Mixture of experts (Qwen3MoeForCausalLM): layer i has a sparse MoE block instead of the dense
  // MLP iff num_experts > 0, i is not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0.
  int64_t num_experts = 0;            // E routed experts per MoE layer (alias num_local_experts)
  int64_t num_experts_per_tok = 0;    // top-k
  int64_t moe_intermediate_size = 0;  // per-expert SwiGLU width
  bool norm_topk_prob = false;        // renormalise the k selected probabilities to sum 1
  int64_t decoder_sparse_step = 1;
  std::vector<int64_t> mlp_only_layers;
  double router_aux_loss_coef = 0.001;  // config.json's; training uses --router_aux_loss_coef
  // Qwen3.5-MoE / Qwen3-Next: every MoE block also runs one shared SwiGLU expert of this width,
  // scaled per token by sigmoid(shared_expert_gate(h)); 0 = none (Qwen3-MoE).
  int64_t shared_expert_intermediate_size = 0;
  bool moe() const { return num_experts > 0; }
  bool is_moe_layer(int64_t layer) const;

  // Qwen3.5 (hybrid attention): per layer "full_attention" or "linear_attention" (Gated DeltaNet);
  // empty means every layer is full attention.
  std::vector<std::string> layer_types;
  int64_t linear_num_key_heads = 0;    // HK
  int64_t linear_num_value_heads = 0;  // HV, a multiple of HK
  int64_t linear_key_head_dim = 0;     // dk
  int64_t linear_value_head_dim = 0;   // dv
  int64_t linear_conv_kernel_dim = 0;  // K of the causal depthwise conv
  double partial_rotary_factor = 1.0;  // fraction of head_dim that is rotated
  // Qwen3.5: q_proj also yields a per-head sigmoid gate on the attention output (rows interleaved
  // per head: query D, gate D), and every RMSNorm but the gated one scales by (1 + w).
  bool attn_output_gate = false;
  bool zero_centered_norms = false;
  // Qwen3-Next: the linear-attention layer's projections are fused per key head as in_proj_qkvz
  // and in_proj_ba (instead of Qwen3.5's in_proj_qkv, in_proj_z, in_proj_b, in_proj_a).
  bool linear_fused_projections = false;
  // Prefix of the decoder's weight names: "model." ("model.language_model." for the
  // vision-language Qwen3_5(Moe)ForConditionalGeneration, whose text part is all that runs here).
  std::string weight_prefix = "model.";
  bool is_linear_layer(int64_t layer) const {
    return !layer_types.empty() && layer_types[size_t(layer)] == "linear_attention";
  }
  int64_t rotary_dim() const { return int64_t(double(head_dim) * partial_rotary_factor); }
};

// The ...ForSequenceClassification config of a causal LM's (as AutoModelForSequenceClassification
// loads a causal checkpoint): same body, a `score` head of num_labels outputs.
ModelConfig as_sequence_classifier(const ModelConfig& causal, int64_t num_labels);

// Parse and validate a config.json text. Throws Error naming the field for unsupported models
// (unknown architecture, quantization_config, ...). `where` names the file in messages.
ModelConfig parse_model_config(const std::string& json_text, const std::string& where);
// Serialise back to a config.json text (as HF writes it).
std::string model_config_to_json(const ModelConfig& c);

}  // namespace swiftlet
