#pragma once
// Linear layer y = x W^T + b, with an optional LoRA adapter: y += s * (drop(x) A^T) B^T.
#include <span>

#include "backend/device.h"

namespace swiftlet {

// A low-rank adapter on one linear layer (PEFT's LoRA): delta W = scale * B A.
struct LoraPair {
  Tensor a;  // lora_A [rank, in] f32 (unused when shares_a is set)
  Tensor b;  // lora_B [out, rank] f32
  float scale = 1.0f;  // lora_alpha / rank (or / sqrt(rank) with rsLoRA)
  // PEFT's LoRA on a fused gate_up expert parameter gives an expert's gate and up projections one
  // input-side factor: the up pair reads the gate pair's A, and the caller accumulates its
  // gradient into the gate pair's slot.
  const LoraPair* shares_a = nullptr;
  const Tensor& input_factor() const { return shares_a ? shares_a->a : a; }
};

// Rows [begin, end) of a batch that use `pair` (serving: requests on different adapters share
// one forward).
struct LoraRows {
  int64_t begin = 0, end = 0;
  const LoraPair* pair = nullptr;
};

struct Linear {
  Tensor weight;  // [out, in], f32/bf16/f16
  Tensor bias;    // [out] or undefined
  const LoraPair* lora = nullptr;  // optional adapter, owned elsewhere
  // Forward only: per-row adapters instead of `lora` when not empty (rows not covered get none).
  std::span<const LoraRows> lora_rows;
  int64_t out_features() const { return weight.dim(0); }
  int64_t in_features() const { return weight.dim(1); }
};

// Gradients of one linear layer; undefined tensors are frozen (not computed).
struct LinearGrads {
  Tensor weight, bias;
  Tensor lora_a, lora_b;
};

// y [N, out] = x [N, in] W^T + b + s * (drop(x) A^T) B^T. The LoRA dropout mask is drawn from
// `dropout_seed` so the backward (or a checkpoint recompute) sees the same mask.
void linear_forward(Device& dev, const Tensor& y, const Tensor& x, const Linear& lin,
                    float lora_dropout = 0.0f, uint64_t dropout_seed = 0);

// Accumulates: dx += dy W + s * drop'((dy B) A);  dW += dy^T x;  db += sum_rows dy;
//              dB += s * dy^T (drop(x) A^T);  dA += s * (dy B)^T drop(x).
// dx may be undefined (input needs no gradient).
void linear_backward(Device& dev, const Tensor& dx, const LinearGrads& g, const Tensor& dy,
                     const Tensor& x, const Linear& lin, float lora_dropout = 0.0f,
                     uint64_t dropout_seed = 0);

}  // namespace swiftlet
