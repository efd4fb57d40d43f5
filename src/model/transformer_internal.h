#pragma once
// What each part of a layer's forward keeps for its backward, and the batch layout both need.
#include "model/transformer.h"

namespace swiftlet {

struct Transformer::AttentionActs {
  Tensor q, k, v;         // projections (q, k before qk-norm)
  Tensor qr, kr;          // q, k after qk-norm and rotation (alias q, k without qk-norm)
  Tensor rstd_q, rstd_k;  // qk-norm 1/rms per (token, head)
  Tensor att, lse;        // attention output and log-sum-exp
  Tensor gate, gated;     // Qwen3.5's output gate logits and att * sigmoid(gate) (else undefined)
};

// Gated DeltaNet: projections, gates, the conv output split (q_raw, k_raw before the l2 norms),
// the normalised q, k, the delta rule's output o and the gated norm's output (out_proj's input).
// The delta rule's per-chunk states are recomputed in backward from the zero start state.
struct Transformer::LinearAttentionActs {
  Tensor qkv, z, al, bl;  // in_proj_qkv (conv input), in_proj_z, in_proj_a, in_proj_b outputs
  Tensor g, beta;         // log decay and beta per (token, value head)
  Tensor q_raw, k_raw, q, k, v;
  Tensor o, gated;
};

struct Transformer::DenseMlpActs {
  Tensor gate, up, act;  // act = silu(gate) * up
};

// Routing of one MoE layer's tokens (host) and the expert activations, rows grouped by expert:
// row j of xg/gate/up/act is token perm_tok[j] in its slot slot_of[j] (= t * k + s).
struct Transformer::MoeActs {
  std::vector<float> probs;      // [T, E] softmax of the router logits
  std::vector<int32_t> top;      // [T, k] selected experts, by descending probability
  std::vector<float> weights;    // [T, k] their routing weights (renormalised when norm_topk_prob)
  std::vector<int64_t> offsets;  // [E + 1] expert e owns rows [offsets[e], offsets[e + 1])
  std::vector<int32_t> slot_of;  // [T k]
  Tensor perm_tok, perm_w;       // device: i32 [T k] token of each row, f32 [T k] its weight
  Tensor xg, gate, up, act, act_w;  // [T k, H], [T k, Ie] x3, act_w = weight * act
  // The shared expert (shared_expert_intermediate_size > 0): its SwiGLU activations, its output
  // y [T, H] before the gate, and the gate sigmoid(shared_expert_gate(h)) per token.
  DenseMlpActs shared;
  Tensor shared_y, shared_s;      // [T, H]; device f32 [T]
  std::vector<float> shared_sig;  // host copy of shared_s
};

struct Transformer::LayerActs {
  Tensor x_in;       // layer input (residual stream)
  Tensor h1, rstd1;  // input_layernorm output, its 1/rms
  Tensor x_mid;      // residual after the mixer
  Tensor h2, rstd2;  // post_attention_layernorm output, its 1/rms
  AttentionActs attn;
  LinearAttentionActs linear_attn;
  DenseMlpActs mlp;
  MoeActs moe;
};

// A training forward: the residual stream at every layer boundary, and each layer's activations
// unless gradient checkpointing recomputes them in backward.
struct Transformer::Activations {
  std::vector<Tensor> xs;  // xs[l]: input of layer l; xs[L]: the final residual stream
  std::vector<LayerActs> layers;
  // Over all MoE layers' tokens: (token, slot) picks and summed probabilities per expert, rows
  // counted (the load-balancing loss's f_e and P_e before division).
  std::vector<double> router_picks, router_prob_sum;
  int64_t router_rows = 0;
};

struct Transformer::BatchCtx {
  int64_t T = 0;
  Tensor ids, positions;  // i32 [T] on the device
  // Cache mode (generation): each sequence's new tokens start at offsets[s].
  std::span<SequenceStep> seqs;
  std::vector<int64_t> offsets;
  // Batch mode (training): samples of the packed batch, targets per row.
  std::vector<std::pair<int64_t, int64_t>> samples;
  Tensor targets;  // i32 [T] on the device
  std::vector<int32_t> host_targets;
  // Training with the load-balancing loss: d (weight * aux) / d p[row, e] for every MoE layer's
  // router probabilities (the same for all rows); empty without it.
  std::vector<float> router_aux_dprob;
};

// A distinct, reproducible dropout seed per (step seed, layer, projection).
uint64_t projection_seed(uint64_t seed, size_t layer, int proj);
enum ProjectionId {
  kProjQ,
  kProjK,
  kProjV,
  kProjO,
  kProjGate,
  kProjUp,
  kProjDown,
  kProjRouter,
  kProjInQkv,
  kProjInZ,
  kProjInB,
  kProjInA,
  kProjOutProj
};

}  // namespace swiftlet
