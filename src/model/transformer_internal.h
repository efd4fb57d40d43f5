#pragma once
// What each part of a layer's forward keeps for its backward, and the batch layout both need.
#include "model/transformer.h"

namespace swiftlet {

struct Transformer::AttentionActs {
  Tensor q, k, v;         // projections (q, k before qk-norm)
  Tensor qr, kr;          // q, k after qk-norm and rotation (alias q, k without qk-norm)
  Tensor rstd_q, rstd_k;  // qk-norm 1/rms per (token, head)
  Tensor att, lse;        // attention output and log-sum-exp
};

struct Transformer::DenseMlpActs {
  Tensor gate, up, act;  // act = silu(gate) * up
};

struct Transformer::LayerActs {
  Tensor x_in;       // layer input (residual stream)
  Tensor h1, rstd1;  // input_layernorm output, its 1/rms
  Tensor x_mid;      // residual after the mixer
  Tensor h2, rstd2;  // post_attention_layernorm output, its 1/rms
  AttentionActs attn;
  DenseMlpActs mlp;
};

// A training forward: the residual stream at every layer boundary, and each layer's activations
// unless gradient checkpointing recomputes them in backward.
struct Transformer::Activations {
  std::vector<Tensor> xs;  // xs[l]: input of layer l; xs[L]: the final residual stream
  std::vector<LayerActs> layers;
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
};

// A distinct, reproducible dropout seed per (step seed, layer, projection).
uint64_t projection_seed(uint64_t seed, size_t layer, int proj);
enum ProjectionId { kProjQ, kProjK, kProjV, kProjO, kProjGate, kProjUp, kProjDown };

}  // namespace swiftlet
