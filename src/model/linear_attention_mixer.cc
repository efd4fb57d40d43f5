// The Gated DeltaNet token mixer of Qwen3.5's linear-attention layers, forward (generation and
// evaluation): q|k|v, z, b, a projections; causal depthwise conv + SiLU over q|k|v; L2-normalised
// q (scaled by dk^-1/2) and k; beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias); the gated
// delta rule per sequence (recurrent form) carrying conv and delta-rule state in the cache; the
// gated RMSNorm w * rmsnorm(o) * silu(z) per value head; out_proj.
#include <cmath>
#include <vector>

#include "model/transformer_internal.h"

namespace swiftlet {

namespace {

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

}  // namespace

void Transformer::linear_attention_inputs(size_t l, const Tensor& h, const Tensor& qkv,
                                          const Tensor& z, const Tensor& b, const Tensor& a) {
  const LinearAttentionWeights& W = w_.layers[l].linear_attn;
  if (!config_.linear_fused_projections) {
    linear_forward(dev_, qkv, h, W.in_proj_qkv);
    linear_forward(dev_, z, h, W.in_proj_z);
    linear_forward(dev_, b, h, W.in_proj_b);
    linear_forward(dev_, a, h, W.in_proj_a);
    return;
  }
  const int64_t T = h.dim(0);
  auto reorder = [&](const Linear& proj, std::vector<int32_t> columns, const Tensor& first,
                     const Tensor& second) {
    const int64_t n = int64_t(columns.size());
    Tensor fused = dev_.empty({T, n}, DType::kF32), ordered = dev_.empty({T, n}, DType::kF32);
    linear_forward(dev_, fused, h, proj);
    dev_.gather_columns(ordered, fused, dev_.upload(Tensor::host_from_i32(columns, {n})));
    const Tensor parts[] = {first, second};
    dev_.split_columns(parts, ordered);
  };
  reorder(W.in_proj_qkvz, qkvz_columns(config_), qkv, z);
  reorder(W.in_proj_ba, ba_columns(config_), b, a);
}

void Transformer::linear_attention_forward(size_t l, const BatchCtx& b, const Tensor& h,
                                           const Tensor& out) {
  const ModelConfig& c = config_;
  const LinearAttentionWeights& W = w_.layers[l].linear_attn;
  const int64_t T = b.T, HK = c.linear_num_key_heads, HV = c.linear_num_value_heads;
  const int64_t dk = c.linear_key_head_dim, dv = c.linear_value_head_dim;
  const int64_t K = c.linear_conv_kernel_dim, C = 2 * HK * dk + HV * dv;
  auto f32 = [&](Shape s) { return dev_.empty(s, DType::kF32); };

  Tensor qkv = f32({T, C}), z = f32({T, HV * dv}), bl = f32({T, HV}), al = f32({T, HV});
  linear_attention_inputs(l, h, qkv, z, bl, al);
  Tensor g = f32({T, HV}), beta = f32({T, HV});
  dev_.gdn_gates(g, beta, al, bl, f32_copy(W.a_log), f32_copy(W.dt_bias));

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
    dev_.causal_conv1d_silu(y.slice(r.first, r.first + r.n), qkv.slice(r.first, r.first + r.n),
                            conv_w, r.conv);
  Tensor q = f32({T, HK * dk}), k = f32({T, HK * dk}), v = f32({T, HV * dv});
  const Tensor parts[] = {q, k, v};
  dev_.split_columns(parts, y);
  dev_.l2norm_rows(q.view({T * HK, dk}), 1e-6f, 1.0f / std::sqrt(float(dk)));
  dev_.l2norm_rows(k.view({T * HK, dk}), 1e-6f, 1.0f);

  Tensor o = f32({T, HV * dv});
  for (const Run& r : runs) {
    auto rows = [&](const Tensor& t, int64_t heads, int64_t d) {
      return t.slice(r.first, r.first + r.n).view({r.n, heads, d});
    };
    dev_.gated_delta_rule(rows(o, HV, dv), rows(q, HK, dk), rows(k, HK, dk), rows(v, HV, dv),
                          g.slice(r.first, r.first + r.n), beta.slice(r.first, r.first + r.n),
                          r.ssm);
  }
  // Gated RMSNorm, norm before gate: norm.weight * rmsnorm(o) over dv, then * silu(z).
  Tensor normed = f32({T, HV * dv});
  dev_.rmsnorm_forward(normed.view({T * HV, dv}), Tensor(), o.view({T * HV, dv}), W.norm,
                       float(c.rms_norm_eps));
  dev_.swiglu_forward(o, z, normed);  // o = silu(z) * normed
  linear_forward(dev_, out, o, W.out_proj);
}

}  // namespace swiftlet
