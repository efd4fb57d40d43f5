// The Gated DeltaNet token mixer of Qwen3.5's linear-attention layers, forward and backward:
// q|k|v, z, b, a projections; causal depthwise conv + SiLU over q|k|v; L2-normalised q (scaled by
// dk^-1/2) and k; beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias); the gated delta rule
// per sequence; the gated RMSNorm w * rmsnorm(o) * silu(z) per value head; out_proj.
// Generation carries each sequence's conv and delta-rule state in its cache (the recurrent form
// for short steps such as decode, the chunked form for prompts of a chunk or more); training runs
// every packed sample from zero state in the chunked form, so no state crosses a sample boundary
// in forward or backward.
#include <cmath>
#include <vector>

#include "model/transformer_internal.h"

namespace swiftlet {

namespace {

constexpr int64_t kDeltaChunk = 64;  // tokens per chunk of the chunked form (HF's chunk_size)
constexpr float kL2Eps = 1e-6f;      // the l2norm's eps, inside the root (HF / FLA)

// Qwen3-Next's fused projections, grouped per key head h (r = HV / HK value heads each):
// in_proj_qkvz rows [q_h (dk) | k_h (dk) | v of h's value heads (r dv) | z of those (r dv)],
// in_proj_ba rows [b of h's value heads (r) | a of those (r)]. For every column of Qwen3.5's
// layout, q | k | v | z (head-major) and b | a, the fused output column it comes from.
std::vector<int32_t> qkvz_columns(const ModelConfig& c) {
  const int64_t HK = c.linear_num_key_heads, dk = c.linear_key_head_dim;
  const int64_t r = c.linear_num_value_heads / HK, dv = c.linear_value_head_dim;
  const int64_t group = 2 * dk + 2 * r * dv;
  std::vector<int32_t> q, k, v, z;
  for (int64_t h = 0; h < HK; ++h) {
    const int64_t base = h * group;
    for (int64_t i = 0; i < dk; ++i) q.push_back(int32_t(base + i));
    for (int64_t i = 0; i < dk; ++i) k.push_back(int32_t(base + dk + i));
    for (int64_t i = 0; i < r * dv; ++i) v.push_back(int32_t(base + 2 * dk + i));
    for (int64_t i = 0; i < r * dv; ++i) z.push_back(int32_t(base + 2 * dk + r * dv + i));
  }
  for (const auto* part : {&k, &v, &z}) q.insert(q.end(), part->begin(), part->end());
  return q;
}

std::vector<int32_t> ba_columns(const ModelConfig& c) {
  const int64_t HK = c.linear_num_key_heads, r = c.linear_num_value_heads / HK;
  std::vector<int32_t> b, a;
  for (int64_t h = 0; h < HK; ++h)
    for (int64_t j = 0; j < r; ++j) {
      b.push_back(int32_t(h * 2 * r + j));
      a.push_back(int32_t(h * 2 * r + r + j));
    }
  b.insert(b.end(), a.begin(), a.end());
  return b;
}

std::vector<int32_t> inverse(const std::vector<int32_t>& perm) {
  std::vector<int32_t> inv(perm.size());
  for (size_t j = 0; j < perm.size(); ++j) inv[size_t(perm[j])] = int32_t(j);
  return inv;
}

}  // namespace

void Transformer::linear_attention_inputs(size_t l, const Tensor& h, const Tensor& qkv,
                                          const Tensor& z, const Tensor& b, const Tensor& a,
                                          const TrainStepOptions& opt) {
  const LinearAttentionWeights& W = w_.layers[l].linear_attn;
  const float p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;
  if (!config_.linear_fused_projections) {
    linear_forward(dev_, qkv, h, W.in_proj_qkv, p, projection_seed(seed, l, kProjInQkv));
    linear_forward(dev_, z, h, W.in_proj_z, p, projection_seed(seed, l, kProjInZ));
    linear_forward(dev_, b, h, W.in_proj_b, p, projection_seed(seed, l, kProjInB));
    linear_forward(dev_, a, h, W.in_proj_a, p, projection_seed(seed, l, kProjInA));
    return;
  }
  const int64_t T = h.dim(0);
  auto reorder = [&](const Linear& proj, uint64_t proj_seed, const std::vector<int32_t>& columns,
                     const Tensor& first, const Tensor& second) {
    const int64_t n = int64_t(columns.size());
    Tensor fused = dev_.empty({T, n}, DType::kF32);
    linear_forward(dev_, fused, h, proj, p, proj_seed);
    // Each output gathers its own columns of the fused projection.
    const int64_t k = first.dim(1);
    const std::vector<int32_t> head(columns.begin(), columns.begin() + k),
        tail(columns.begin() + k, columns.end());
    dev_.gather_columns(first, fused, dev_.upload(Tensor::host_from_i32(head, {k})));
    dev_.gather_columns(second, fused, dev_.upload(Tensor::host_from_i32(tail, {n - k})));
  };
  reorder(W.in_proj_qkvz, projection_seed(seed, l, kProjInQkv), qkvz_columns(config_), qkv, z);
  reorder(W.in_proj_ba, projection_seed(seed, l, kProjInB), ba_columns(config_), b, a);
}

void Transformer::linear_attention_inputs_backward(size_t l, const Tensor& h, const Tensor& dqkv,
                                                   const Tensor& dz, const Tensor& db,
                                                   const Tensor& da, const Tensor& dh,
                                                   LinearAttentionGrads& g,
                                                   const TrainStepOptions& opt) {
  const LinearAttentionWeights& W = w_.layers[l].linear_attn;
  const float p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;
  if (!config_.linear_fused_projections) {
    linear_backward(dev_, dh, g.in_proj_qkv, dqkv, h, W.in_proj_qkv, p,
                    projection_seed(seed, l, kProjInQkv));
    linear_backward(dev_, dh, g.in_proj_z, dz, h, W.in_proj_z, p,
                    projection_seed(seed, l, kProjInZ));
    linear_backward(dev_, dh, g.in_proj_b, db, h, W.in_proj_b, p,
                    projection_seed(seed, l, kProjInB));
    linear_backward(dev_, dh, g.in_proj_a, da, h, W.in_proj_a, p,
                    projection_seed(seed, l, kProjInA));
    return;
  }
  // The reordering is a permutation of the fused output's columns: its gradient gathers with the
  // inverse permutation.
  const int64_t T = h.dim(0);
  auto unorder = [&](const Linear& proj, LinearGrads& grads, uint64_t proj_seed,
                     const std::vector<int32_t>& columns, const Tensor& first,
                     const Tensor& second) {
    const int64_t n = int64_t(columns.size());
    Tensor ordered = dev_.empty({T, n}, DType::kF32), fused = dev_.empty({T, n}, DType::kF32);
    const Tensor parts[] = {first, second};
    dev_.concat_columns(ordered, parts);
    dev_.gather_columns(fused, ordered, dev_.upload(Tensor::host_from_i32(inverse(columns), {n})));
    linear_backward(dev_, dh, grads, fused, h, proj, p, proj_seed);
  };
  unorder(W.in_proj_qkvz, g.in_proj_qkvz, projection_seed(seed, l, kProjInQkv),
          qkvz_columns(config_), dqkv, dz);
  unorder(W.in_proj_ba, g.in_proj_ba, projection_seed(seed, l, kProjInB), ba_columns(config_), db,
          da);
}

void Transformer::linear_attention_forward(size_t l, const BatchCtx& b, const Tensor& h,
                                           LinearAttentionActs& a, const Tensor& out, bool save,
                                           const TrainStepOptions& opt) {
  const ModelConfig& c = config_;
  const LinearAttentionWeights& W = w_.layers[l].linear_attn;
  const int64_t T = b.T, HK = c.linear_num_key_heads, HV = c.linear_num_value_heads;
  const int64_t dk = c.linear_key_head_dim, dv = c.linear_value_head_dim;
  const int64_t K = c.linear_conv_kernel_dim, C = 2 * HK * dk + HV * dv;
  const float p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;
  auto f32 = [&](Shape s) { return dev_.empty(s, DType::kF32); };

  a.qkv = f32({T, C});
  a.z = f32({T, HV * dv});
  a.bl = f32({T, HV});
  a.al = f32({T, HV});
  linear_attention_inputs(l, h, a.qkv, a.z, a.bl, a.al, opt);
  a.g = f32({T, HV});
  a.beta = f32({T, HV});
  dev_.gdn_gates(a.g, a.beta, a.al, a.bl, f32_copy(W.a_log), f32_copy(W.dt_bias));

  // Each sequence (cache mode) or packed sample (batch mode, from zero state): [first, first+n).
  struct Run {
    int64_t first, n;
    Tensor conv, ssm;
  };
  std::vector<Run> runs;
  if (!b.seqs.empty()) {
    for (size_t s = 0; s < b.seqs.size(); ++s) {
      LayerState& st = b.seqs[s].cache->layers[l];
      runs.push_back({b.offsets[s], int64_t(b.seqs[s].tokens.size()), st.conv, st.ssm});
    }
  } else {
    for (const auto& [first, len] : b.samples)
      runs.push_back(
          {first, len, dev_.zeros({K - 1, C}, DType::kF32), dev_.zeros({HV, dk, dv}, DType::kF32)});
  }

  const Tensor conv_w = f32_copy(W.conv1d).view({C, K});
  Tensor y = f32({T, C});
  for (const Run& r : runs)
    dev_.causal_conv1d_silu(y.slice(r.first, r.first + r.n), a.qkv.slice(r.first, r.first + r.n),
                            conv_w, r.conv);
  a.q_raw = f32({T, HK * dk});
  a.k_raw = f32({T, HK * dk});
  a.v = f32({T, HV * dv});
  const Tensor parts[] = {a.q_raw, a.k_raw, a.v};
  dev_.split_columns(parts, y);
  a.q = f32_copy(a.q_raw);
  a.k = f32_copy(a.k_raw);
  dev_.l2norm_rows(a.q.view({T * HK, dk}), kL2Eps, 1.0f / std::sqrt(float(dk)));
  dev_.l2norm_rows(a.k.view({T * HK, dk}), kL2Eps, 1.0f);

  a.o = f32({T, HV * dv});
  for (const Run& r : runs) {
    auto rows = [&](const Tensor& t, int64_t heads, int64_t d) {
      return t.slice(r.first, r.first + r.n).view({r.n, heads, d});
    };
    const Tensor o = rows(a.o, HV, dv), q = rows(a.q, HK, dk), k = rows(a.k, HK, dk),
                 v = rows(a.v, HV, dv), g = a.g.slice(r.first, r.first + r.n),
                 beta = a.beta.slice(r.first, r.first + r.n);
    if (b.seqs.empty() || r.n >= kDeltaChunk)
      dev_.gated_delta_rule_chunked(o, q, k, v, g, beta, r.ssm, kDeltaChunk);
    else
      dev_.gated_delta_rule(o, q, k, v, g, beta, r.ssm);
  }
  // Gated RMSNorm, norm before gate: norm.weight * rmsnorm(o) over dv, then * silu(z).
  a.gated = f32({T, HV * dv});
  dev_.gated_rmsnorm_forward(a.gated, a.o, a.z, f32_copy(W.norm), float(c.rms_norm_eps));
  linear_forward(dev_, out, a.gated, W.out_proj, p, projection_seed(seed, l, kProjOutProj));
  if (!save) a = LinearAttentionActs();
}

void Transformer::linear_attention_backward(size_t l, const BatchCtx& b, LinearAttentionActs& a,
                                            const Tensor& h, const Tensor& dout, const Tensor& dh,
                                            LinearAttentionGrads& g, const TrainStepOptions& opt) {
  const ModelConfig& c = config_;
  const LinearAttentionWeights& W = w_.layers[l].linear_attn;
  const int64_t T = b.T, HK = c.linear_num_key_heads, HV = c.linear_num_value_heads;
  const int64_t dk = c.linear_key_head_dim, dv = c.linear_value_head_dim;
  const int64_t K = c.linear_conv_kernel_dim, C = 2 * HK * dk + HV * dv;
  const float p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;
  auto zeros = [&](Shape s) { return dev_.zeros(s, DType::kF32); };

  Tensor d_gated = zeros({T, HV * dv});
  linear_backward(dev_, d_gated, g.out_proj, dout, a.gated, W.out_proj, p,
                  projection_seed(seed, l, kProjOutProj));
  Tensor d_o = zeros({T, HV * dv}), dz = zeros({T, HV * dv});
  dev_.gated_rmsnorm_backward(d_o, dz, g.norm, d_gated, a.o, a.z, f32_copy(W.norm),
                              float(c.rms_norm_eps));

  // The delta rule per packed sample, each from zero state.
  Tensor dq = zeros({T, HK * dk}), dk_ = zeros({T, HK * dk}), dvv = zeros({T, HV * dv});
  Tensor dg = zeros({T, HV}), dbeta = zeros({T, HV});
  const Tensor state0 = zeros({HV, dk, dv});
  for (const auto& [first, n] : b.samples) {
    auto rows = [&](const Tensor& t, int64_t heads, int64_t d) {
      return t.slice(first, first + n).view({n, heads, d});
    };
    dev_.gated_delta_rule_backward(
        rows(dq, HK, dk), rows(dk_, HK, dk), rows(dvv, HV, dv), dg.slice(first, first + n),
        dbeta.slice(first, first + n), Tensor(), rows(d_o, HV, dv), rows(a.q, HK, dk),
        rows(a.k, HK, dk), rows(a.v, HV, dv), a.g.slice(first, first + n),
        a.beta.slice(first, first + n), state0, kDeltaChunk);
  }
  // Through the l2 norms, then back to the conv output's q | k | v columns.
  Tensor dq_raw = zeros({T, HK * dk}), dk_raw = zeros({T, HK * dk});
  dev_.l2norm_rows_backward(dq_raw.view({T * HK, dk}), dq.view({T * HK, dk}),
                            a.q_raw.view({T * HK, dk}), kL2Eps, 1.0f / std::sqrt(float(dk)));
  dev_.l2norm_rows_backward(dk_raw.view({T * HK, dk}), dk_.view({T * HK, dk}),
                            a.k_raw.view({T * HK, dk}), kL2Eps, 1.0f);
  Tensor dy = dev_.empty({T, C}, DType::kF32);
  const Tensor parts[] = {dq_raw, dk_raw, dvv};
  dev_.concat_columns(dy, parts);

  const Tensor conv_w = f32_copy(W.conv1d).view({C, K});
  const Tensor dconv = g.conv1d.defined() ? g.conv1d.view({C, K}) : Tensor();
  Tensor dqkv = zeros({T, C});
  const Tensor conv0 = zeros({K - 1, C});
  for (const auto& [first, n] : b.samples)
    dev_.causal_conv1d_silu_backward(dqkv.slice(first, first + n), dconv,
                                     dy.slice(first, first + n), a.qkv.slice(first, first + n),
                                     conv_w, conv0);

  Tensor dal = zeros({T, HV}), dbl = zeros({T, HV});
  dev_.gdn_gates_backward(dal, dbl, g.a_log, g.dt_bias, dg, dbeta, a.al, a.bl, f32_copy(W.a_log),
                          f32_copy(W.dt_bias));
  linear_attention_inputs_backward(l, h, dqkv, dz, dbl, dal, dh, g, opt);
}

}  // namespace swiftlet
