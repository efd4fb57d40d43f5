#pragma once
// The decoder-only transformer shared by Llama, Qwen2 and Qwen3 (shapes are data: ModelConfig).
// One code path serves generation, evaluation and serving: a forward step takes the new tokens of
// several sequences packed into one batch, each appending to its own KV cache.
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "backend/device.h"
#include "model/config.h"
#include "model/objective.h"
#include "model/weights.h"
#include "ops/linear.h"

namespace swiftlet {

// One sequence's decode state, per layer, owned by the cache: a full-attention layer keeps its
// keys and values [capacity, num_kv_heads, head_dim] in the model's kv_dtype(); a linear-attention
// layer keeps its constant-size state, f32: the last K-1 raw in_proj_qkv outputs conv [K-1, C]
// and the delta-rule state ssm [HV, dk, dv] (both zero at the start).
struct LayerState {
  Tensor k, v;
  Tensor conv, ssm;
};
struct DecodeCache {
  std::vector<LayerState> layers;
  int64_t length = 0;    // tokens held
  int64_t capacity = 0;  // tokens the attention layers have room for
};

// One sequence's share of a batched forward step.
struct SequenceStep {
  std::span<const int32_t> tokens;  // new tokens, at positions cache->length ...
  DecodeCache* cache = nullptr;
  bool all_logits = false;  // return logits for every new token, not just the last
};

// A packed training batch: several samples one after another, attention never crossing samples.
struct TrainBatch {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> targets;    // next-token target per position; -100: no loss
  std::vector<int32_t> positions;  // restart at 0 in every sample
  std::vector<std::pair<int64_t, int64_t>> samples;  // (first row, length)
};

struct LossStats {
  double loss_sum = 0;  // sum of per-token cross-entropy over target tokens
  int64_t tokens = 0;   // target tokens
  int64_t correct = 0;  // argmax == target
};

struct TrainStepOptions {
  float grad_scale = 1.0f;  // d(loss)/d(token loss): 1 / tokens of the whole optimizer step
  bool gradient_checkpointing = true;  // keep only layer inputs; recompute the layer in backward
  float lora_dropout = 0.0f;
  uint64_t dropout_seed = 0;
  int64_t loss_chunk = 1024;  // rows of logits materialised at once by the fused LM-head loss
  // MoE models: this batch's load-balancing loss enters the step's loss as
  // router_aux_weight * aux (HF's router_aux_loss_coef times the batch's share of the step).
  float router_aux_weight = 0.0f;
  // Told by backward when gradients are final for this batch: with l = num_hidden_layers the head
  // and final norm, then each layer l after its backward (every weight of layers >= l), and
  // l = -1 after the embedding (all of them). Data parallelism starts bucket all-reduces here.
  std::function<void(int64_t l)> on_grads_ready;
};

// Where the weights of one part of the model are while it is not computing. A trainer that shards
// parameters over ranks (ZeRO-3, FSDP's full_shard) keeps only its slice of each and gathers a
// part's weights when the model announces it: every read of a part's weights lies between
// acquire(unit) and the matching release(unit), and acquisitions nest (backward's recompute
// acquires a layer its backward already holds). Units: -1 the embedding, 0..L-1 the decoder layers,
// L the final norm and the head (LM head or score).
class WeightResidency {
 public:
  virtual ~WeightResidency() = default;
  virtual void acquire(int64_t unit) = 0;  // the unit's weight tensors are valid until release
  virtual void release(int64_t unit) = 0;
};

// "bfloat16" | "float16" | "float32" (config.json / --torch_dtype names) -> DType; Error otherwise.
DType parse_torch_dtype(const std::string& name);

// inv_freq [rotary_dim / 2] (rotary_dim = head_dim * partial_rotary_factor) for the config's
// rope_theta and rope_scaling (as HF computes it).
std::vector<float> rope_inv_freq(const ModelConfig& c);

class Transformer {
 public:
  // Takes host weights by HF name (e.g. mmapped safetensors), converts floating weights to
  // `weight_dtype` when they differ, and uploads them to `device`.
  // writable: own a copy of every weight (full fine-tuning updates them in place; the default
  // may share read-only mmapped memory).
  Transformer(Device& device, ModelConfig config, const std::map<std::string, Tensor>& weights,
              DType weight_dtype, bool writable = false);

  const ModelConfig& config() const { return config_; }
  Device& device() const { return dev_; }
  ModelWeights& weights() { return w_; }
  // The weights as loaded (tensor handles, same storage): adapters that replace whole tensors
  // (modules_to_save) are undone by restoring them.
  void restore_base_weights() { w_ = base_w_; }
  DType weight_dtype() const { return weight_dtype_; }
  // Keys and values in KV caches: the weights' dtype when it is bf16 or f16 (as a Hugging Face
  // model loaded in that dtype keeps them), else f32.
  DType kv_dtype() const { return weight_dtype_ == DType::kF32 ? DType::kF32 : weight_dtype_; }
  // After the trainer moved weights into its own buffers: the current weights become the ones
  // restore_base_weights() returns to.
  void keep_current_weights() { base_w_ = w_; }
  // The weights restore_base_weights() returns to: a trainer that keeps the frozen base sharded
  // (ZeRO-3 with LoRA) re-points their tensors as it gathers and frees them, in both these and
  // weights(), leaving the LoRA pointers of weights() as they are.
  ModelWeights& base_weights() { return base_w_; }
  // Null (the default): every weight is always resident.
  void set_weight_residency(WeightResidency* r) { residency_ = r; }

  // Holds every unit's weights for its scope. Generation makes as many forwards as its longest
  // completion needs, which differs between ranks that gather weights together, so it takes the
  // whole model once (as DeepSpeed ZeRO-3 models are gathered for TRL's generation).
  class WholeWeights {
   public:
    explicit WholeWeights(Transformer& m)
        : r_(m.residency_), last_(int64_t(m.w_.layers.size())) {
      if (r_)
        for (int64_t u = -1; u <= last_; ++u) r_->acquire(u);
    }
    ~WholeWeights() {
      if (r_)
        for (int64_t u = last_; u >= -1; --u) r_->release(u);
    }
    WholeWeights(const WholeWeights&) = delete;
    WholeWeights& operator=(const WholeWeights&) = delete;

   private:
    WeightResidency* r_;
    int64_t last_;
  };

  DecodeCache new_cache(int64_t capacity) const;
  // Grows a cache to hold at least `capacity` tokens (copying what it holds).
  void reserve(DecodeCache& cache, int64_t capacity) const;

  // Runs the new tokens of every sequence, appending their keys/values to the caches. Returns host
  // f32 logits: one row per sequence (its last token), or one per token where all_logits is set,
  // in the order of `seqs`.
  Tensor forward(std::span<SequenceStep> seqs);

  // Logits [T, V] of a whole sequence from an empty cache (tests, scoring).
  Tensor logits(std::span<const int32_t> tokens);

  // Training on a packed batch: forward (keeping what backward needs), the head handing the
  // objective its log-probs / hidden states, and the shared backward; gradients accumulate into
  // `grads` (frozen parts undefined). Every objective (SFT, DPO, GRPO, a reward head) goes here.
  void train_step(const TrainBatch& batch, ModelGrads& grads, const TrainStepOptions& opt,
                  Objective& objective);
  // Forward without keeping activations, the head without gradients: evaluation, reference
  // log-probs. `objective.chunk()` sees every chunk with an empty dlogp.
  void evaluate(const TrainBatch& batch, Objective& objective, int64_t loss_chunk = 1024);

  // Mean cross-entropy (SFT/PT) with opt.grad_scale: the loss statistics of the batch.
  LossStats train_step(const TrainBatch& batch, ModelGrads& grads, const TrainStepOptions& opt);
  LossStats eval_loss(const TrainBatch& batch, int64_t loss_chunk = 1024);
  // The load-balancing loss of the last train_step's batch (HF's aux loss, before its
  // coefficient): E * sum_e f_e P_e over every MoE layer's tokens; 0 for models without experts.
  double router_aux_loss() const { return router_aux_loss_; }

 private:
  Device& dev_;
  ModelConfig config_;
  DType weight_dtype_;
  ModelWeights w_;
  ModelWeights base_w_;
  Tensor inv_freq_;  // [D/2] f32 on the device
  double router_aux_loss_ = 0;
  WeightResidency* residency_ = nullptr;

  // Holds a unit's weights for its scope (see WeightResidency).
  class UnitUse {
   public:
    UnitUse(WeightResidency* r, int64_t unit) : r_(r), unit_(unit) {
      if (r_) r_->acquire(unit_);
    }
    ~UnitUse() {
      if (r_) r_->release(unit_);
    }
    UnitUse(const UnitUse&) = delete;
    UnitUse& operator=(const UnitUse&) = delete;

   private:
    WeightResidency* r_;
    int64_t unit_;
  };

  struct AttentionActs;
  struct LinearAttentionActs;
  struct DenseMlpActs;
  struct MoeActs;
  struct LayerActs;
  struct BatchCtx;
  struct Activations;
  // A decoder layer: out = x + mixer(norm(x)); out += mlp(norm(out)), each part by its kind.
  void layer_forward(size_t l, const BatchCtx& b, const Tensor& x, LayerActs& a, const Tensor& out,
                     bool save, const TrainStepOptions& opt);
  void layer_backward(size_t l, const BatchCtx& b, LayerActs& a, const Tensor& dy, const Tensor& dx,
                      LayerGrads& g, const TrainStepOptions& opt);
  // Full attention (attention_mixer.cc): out = o_proj(attention(rope(q), rope(k), v)) of h.
  void attention_forward(size_t l, const BatchCtx& b, const Tensor& h, AttentionActs& a,
                         const Tensor& out, bool save, const TrainStepOptions& opt);
  void attention_backward(size_t l, const BatchCtx& b, AttentionActs& a, const Tensor& h,
                          const Tensor& dout, const Tensor& dh, AttentionGrads& g,
                          const TrainStepOptions& opt);
  // Gated DeltaNet (linear_attention_mixer.cc): causal conv + SiLU over the q|k|v projection,
  // L2-normalised q/k, the gated delta rule, gated RMSNorm, out_proj; carries each sequence's conv
  // and recurrent state in its cache (batch mode: every packed sample starts from zero state).
  void linear_attention_forward(size_t l, const BatchCtx& b, const Tensor& h,
                                LinearAttentionActs& a, const Tensor& out, bool save,
                                const TrainStepOptions& opt);
  void linear_attention_backward(size_t l, const BatchCtx& b, LinearAttentionActs& a,
                                 const Tensor& h, const Tensor& dout, const Tensor& dh,
                                 LinearAttentionGrads& g, const TrainStepOptions& opt);
  // Its input projections q|k|v [T, C] (the conv's input), z [T, HV dv], b and a [T, HV], and
  // their backward (adds to dh); Qwen3-Next's fused in_proj_qkvz / in_proj_ba are reordered into
  // the same layout.
  void linear_attention_inputs(size_t l, const Tensor& h, const Tensor& qkv, const Tensor& z,
                               const Tensor& b, const Tensor& a, const TrainStepOptions& opt);
  void linear_attention_inputs_backward(size_t l, const Tensor& h, const Tensor& dqkv,
                                        const Tensor& dz, const Tensor& db, const Tensor& da,
                                        const Tensor& dh, LinearAttentionGrads& g,
                                        const TrainStepOptions& opt);
  // A norm's scale as applied: w, or (1 + w) for Qwen3.5's zero-centred norms (f32 copy).
  Tensor norm_scale(const Tensor& w);
  // Dense SwiGLU MLP (dense_mlp.cc): out = down(silu(gate(h)) * up(h)); swiglu_block_* run
  // such a block of any width with the dropout seeds of its three projections (the dense MLP, the
  // shared expert of a MoE block).
  struct SwigluSeeds {
    uint64_t gate, up, down;
  };
  void swiglu_block_forward(const DenseMlpWeights& W, int64_t width, const Tensor& h,
                            DenseMlpActs& a, const Tensor& out, float p, const SwigluSeeds& seeds);
  void swiglu_block_backward(const DenseMlpWeights& W, int64_t width, DenseMlpActs& a,
                             const Tensor& h, const Tensor& dout, const Tensor& dh,
                             DenseMlpGrads& g, float p, const SwigluSeeds& seeds);
  void dense_mlp_forward(size_t l, const Tensor& h, DenseMlpActs& a, const Tensor& out,
                         const TrainStepOptions& opt);
  void dense_mlp_backward(size_t l, DenseMlpActs& a, const Tensor& h, const Tensor& dout,
                          const Tensor& dh, DenseMlpGrads& g, const TrainStepOptions& opt);
  // Sparse MoE block (moe_mlp.cc): out = sum over the top-k experts e of token t of
  // w[t, e] * expert_e(h[t]), computed grouped by expert.
  void moe_forward(size_t l, const Tensor& h, MoeActs& a, const Tensor& out,
                   const TrainStepOptions& opt);
  void moe_backward(size_t l, const BatchCtx& b, MoeActs& a, const Tensor& h, const Tensor& dout,
                    const Tensor& dh, MoeGrads& g, const TrainStepOptions& opt);
  // Embedding and every layer without keeping activations (generation, evaluation): the final
  // residual stream.
  Tensor forward_no_save(const BatchCtx& b);
  // The three parts of train_step (transformer_train.cc).
  void forward_keep(const BatchCtx& b, Activations& acts, const TrainStepOptions& opt);
  void head(const Tensor& x, const BatchCtx& b, const Tensor& dx, ModelGrads* grads,
            Objective& objective, int64_t loss_chunk);
  void backward(const BatchCtx& b, Activations& acts, const Tensor& dy, ModelGrads& grads,
                const TrainStepOptions& opt);
  BatchCtx train_ctx(const TrainBatch& batch);
  // The load-balancing loss of a forward's routing, and d (weight * aux) / d p per expert into
  // dprob (left empty when weight is 0).
  double router_aux(const Activations& acts, float weight, std::vector<float>& dprob) const;
  Tensor f32_copy(const Tensor& t);
};

}  // namespace swiftlet
