#pragma once
// What one layer's forward keeps for its backward, and the batch layout both need.
#include "model/transformer.h"

namespace swiftlet {

struct Transformer::LayerActs {
  Tensor x_in;            // layer input (residual stream)
  Tensor h1, rstd1;       // input_layernorm output, its 1/rms
  Tensor q, k, v;         // projections (q, k before qk-norm)
  Tensor qr, kr;          // q, k after qk-norm and rotation (alias q, k without qk-norm)
  Tensor rstd_q, rstd_k;  // qk-norm 1/rms per (token, head)
  Tensor att, lse;        // attention output and log-sum-exp
  Tensor x_mid;           // residual after attention
  Tensor h2, rstd2;       // post_attention_layernorm output, its 1/rms
  Tensor gate, up, act;   // MLP: act = silu(gate) * up
};

struct Transformer::BatchCtx {
  int64_t T = 0;
  Tensor ids, positions;  // i32 [T] on the device
  // Cache mode (generation): each sequence's new tokens start at offsets[s].
  std::span<SequenceStep> seqs;
  std::vector<int64_t> offsets;
  // Batch mode (training): samples of the packed batch, targets per row.
  std::vector<std::pair<int64_t, int64_t>> samples;
  Tensor targets;                    // i32 [T] on the device
  std::vector<int32_t> host_targets;
};

}  // namespace swiftlet
