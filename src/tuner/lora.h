#pragma once
// LoRA adapters in PEFT's format: adapter_config.json + adapter_model.safetensors with PEFT's key
// names (base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight), so an adapter trained
// here loads in PEFT/vLLM and one trained there loads here.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/folder.h"
#include "model/transformer.h"

namespace swiftlet {

struct LoraConfig {
  int64_t rank = 8;
  double alpha = 32;
  double dropout = 0.05;
  std::vector<std::string> target_modules{"all-linear"};  // or names: q_proj v_proj ...
  // PEFT's target_parameters: LoRA on the fused expert parameters of mixture-of-experts layers
  // (mlp.experts.gate_up_proj, mlp.experts.down_proj, or one layer's full name). With it, the
  // routed experts get LoRA only this way, as on transformers 5 where they are not Linear modules.
  std::vector<std::string> target_parameters;
  bool use_rslora = false;
  // Modules trained in full and stored in the adapter (PEFT modules_to_save): embed_tokens,
  // lm_head, all-embedding, all-norm.
  std::vector<std::string> modules_to_save;
  std::string base_model_name_or_path;
  double scale() const;  // alpha / rank, or alpha / sqrt(rank) with rsLoRA
};

// The projection modules LoRA can target in this model, in weight_slots() order (dense models:
// q_proj k_proj v_proj o_proj gate_proj up_proj down_proj).
std::vector<std::string> lora_module_names(const ModelConfig& config);

class LoraAdapter {
 public:
  // New adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming_uniform(a=sqrt(5))), B = 0.
  static LoraAdapter create(Device& dev, const ModelConfig& model, const LoraConfig& cfg, Rng& rng);
  // Reads a PEFT adapter folder; refuses (Error) what it cannot apply exactly: DoRA, bias
  // training, fan_in_fan_out, modules outside the decoder projections, shapes not matching.
  static LoraAdapter load(Device& dev, const std::string& dir, const ModelConfig& model);
  // adapter_config.json + adapter_model.safetensors, written atomically.
  void save(const std::string& dir) const;

  const LoraConfig& config() const { return cfg_; }
  // The pair on module i of module_slots(config) (every layer's projections in order); nullptr
  // when not targeted.
  const LoraPair* pair(size_t module) const { return pairs_[module].get(); }
  // Points the model's linear layers at this adapter and swaps in its modules_to_save weights
  // (detach() restores the base model).
  void attach(Transformer& model) const;
  static void detach(Transformer& model);
  // Whether the model's linear layers point at this adapter's pairs.
  bool attached_to(Transformer& model) const;
  // ZeRO-3 gathers and frees the modules_to_save values (their tensors change): while this
  // adapter is attached, the model's slots follow them, and hold the base weight while they are
  // not gathered.
  void follow_modules_to_save(Transformer& model) const;
  // modules_to_save: f32 trainable copies of the model's current weights (a new adapter).
  void init_modules_to_save(Device& dev, const Transformer& model);
  bool has_modules_to_save() const { return !saved_.empty(); }
  // W += s B A on host weights by HF name (f32 math, stored back in the weight's dtype).
  void merge_into(std::map<std::string, Tensor>& host_weights) const;

  // Trainable tensors with their PEFT key names (A and B of every targeted projection, then the
  // modules_to_save weights).
  std::vector<std::pair<std::string, Tensor>> named_tensors() const;
  // The same tensors as slots, with their gradient slots in `grads` (null without grads): the
  // trainer moves them into its flat buffers and points the slots there.
  struct Trainable {
    std::string name;
    Tensor* value;
    Tensor* grad;
  };
  std::vector<Trainable> trainable(ModelGrads* grads);
  // Gradient slots for the model's grads struct (zeros, same shapes).
  void make_grads(Device& dev, ModelGrads& grads) const;
  // The gradient tensors of named_tensors(), same order and names.
  std::vector<std::pair<std::string, Tensor>> named_grads(ModelGrads& grads) const;
  void set_base_model(const std::string& path) { cfg_.base_model_name_or_path = path; }
  int64_t num_parameters() const;

 private:
  void point_modules_to_save(Transformer& model) const;
  LoraConfig cfg_;
  ModelConfig model_;
  // One per module_slots(model_) entry; null where the module is not targeted.
  std::vector<std::unique_ptr<LoraPair>> pairs_;
  std::vector<std::pair<std::string, Tensor>> saved_;  // HF weight name -> f32 tensor
  // One LoRA on a fused expert parameter of one layer. It is kept as per-expert pairs in pairs_
  // (gate and up of an expert share one input factor) and stored in PEFT's ParamWrapper layout.
  struct FusedTarget {
    int64_t layer = 0;
    bool gate_up = true;  // mlp.experts.gate_up_proj, else mlp.experts.down_proj
    std::string key;      // PEFT key stem: base_model.model.model.layers.L.mlp.experts[.base_layer]
    std::vector<size_t> gate, up, down;  // module indices, one per expert
  };
  std::vector<FusedTarget> fused_;
  static std::vector<FusedTarget> plan_fused(const LoraConfig& cfg, const ModelConfig& model);
  std::vector<std::pair<std::string, Tensor>> peft_layout(bool grads, ModelGrads* g) const;
  void load_fused(Device& dev, const FusedTarget& t, const Tensor& a, const Tensor& b);
};

// --modules_to_save names -> the HF weight names they cover (Error for unknown names, and for
// lm_head when it is tied to embed_tokens).
std::vector<std::string> resolve_modules_to_save(const std::vector<std::string>& names,
                                                 const ModelConfig& c);

// The base model of an adapter checkpoint: args.json "model" (swiftlet/ms-swift runs), else
// adapter_config.json base_model_name_or_path. Empty when neither names one; a file that is not
// valid JSON is an Error naming it.
std::string adapter_base_model(const std::string& adapter_dir);

// A base model folder made ready for an adapter: a PEFT SEQ_CLS adapter (a reward model trained
// with LoRA) needs its base as a ...ForSequenceClassification with the adapter's number of labels;
// the score head's values come from the adapter (modules_to_save), zeros until it is applied.
void prepare_base_for_adapter(ModelFolder& folder, const std::string& adapter_dir);

// "all-linear" or a list of names -> the set of module names, Error for unknown ones.
std::vector<std::string> resolve_target_modules(const std::vector<std::string>& targets,
                                                const ModelConfig& config);

}  // namespace swiftlet
