// The full-attention token mixer: q/k/v projections, Qwen3's per-head q/k RMSNorm, rotary
// embedding, causal grouped-query attention (over each sequence's cache in generation, within each
// packed sample in training), o_proj.
#include <cmath>

#include "model/transformer_internal.h"

namespace swiftlet {

void Transformer::attention_forward(size_t l, const BatchCtx& b, const Tensor& h, AttentionActs& a,
                                    const Tensor& out, bool save, const TrainStepOptions& opt) {
  const ModelConfig& c = config_;
  const AttentionWeights& W = w_.layers[l].attn;
  const int64_t T = b.T, D = c.head_dim, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const float eps = float(c.rms_norm_eps), p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;
  auto f32 = [&](Shape s) { return dev_.empty(s, DType::kF32); };

  a.q = f32({T, Hq * D});
  a.k = f32({T, Hkv * D});
  a.v = f32({T, Hkv * D});
  a.gate = Tensor();  // Qwen3.5: q_proj rows interleave per head [query D | gate D]
  a.gated = Tensor();
  if (c.attn_output_gate) {
    Tensor qg = f32({T, 2 * Hq * D});
    linear_forward(dev_, qg, h, W.q_proj, p, projection_seed(seed, l, kProjQ));
    a.gate = f32({T, Hq * D});
    const Tensor parts[] = {a.q.view({T * Hq, D}), a.gate.view({T * Hq, D})};
    dev_.split_columns(parts, qg.view({T * Hq, 2 * D}));
  } else {
    linear_forward(dev_, a.q, h, W.q_proj, p, projection_seed(seed, l, kProjQ));
  }
  linear_forward(dev_, a.k, h, W.k_proj, p, projection_seed(seed, l, kProjK));
  linear_forward(dev_, a.v, h, W.v_proj, p, projection_seed(seed, l, kProjV));
  a.qr = a.q;
  a.kr = a.k;
  if (c.qk_norm) {  // Qwen3: RMSNorm over each head's vector before the rotation
    a.qr = f32({T, Hq * D});
    a.kr = f32({T, Hkv * D});
    a.rstd_q = save ? f32({T * Hq}) : Tensor();
    a.rstd_k = save ? f32({T * Hkv}) : Tensor();
    dev_.rmsnorm_forward(a.qr.view({T * Hq, D}), a.rstd_q, a.q.view({T * Hq, D}),
                         norm_scale(W.q_norm), eps);
    dev_.rmsnorm_forward(a.kr.view({T * Hkv, D}), a.rstd_k, a.k.view({T * Hkv, D}),
                         norm_scale(W.k_norm), eps);
  }
  dev_.rope_forward(a.qr.view({T, Hq, D}), b.positions, inv_freq_, 1.0f);
  dev_.rope_forward(a.kr.view({T, Hkv, D}), b.positions, inv_freq_, 1.0f);

  std::vector<AttnSegment> segs;
  if (!b.seqs.empty()) {  // cache mode: append, then attend over the whole cache
    for (size_t s = 0; s < b.seqs.size(); ++s) {
      DecodeCache& cache = *b.seqs[s].cache;
      LayerState& st = cache.layers[l];
      const int64_t n = int64_t(b.seqs[s].tokens.size()), o = b.offsets[s];
      dev_.copy(st.k.slice(cache.length, cache.length + n), a.kr.slice(o, o + n).view({n, Hkv, D}));
      dev_.copy(st.v.slice(cache.length, cache.length + n), a.v.slice(o, o + n).view({n, Hkv, D}));
      segs.push_back({o, n, cache.length + n, st.k, st.v, {}, {}});
    }
  } else {
    for (const auto& [first, len] : b.samples)
      segs.push_back({first,
                      len,
                      len,
                      a.kr.slice(first, first + len).view({len, Hkv, D}),
                      a.v.slice(first, first + len).view({len, Hkv, D}),
                      {},
                      {}});
  }
  a.att = f32({T, Hq * D});
  a.lse = save ? f32({T, Hq}) : Tensor();
  dev_.attention_forward(a.att.view({T, Hq, D}), a.lse, a.qr.view({T, Hq, D}), segs,
                         1.0f / std::sqrt(float(D)));
  Tensor o_in = a.att;
  if (a.gate.defined()) {  // o * sigmoid(gate); backward needs att itself as well
    a.gated = save ? f32({T, Hq * D}) : a.att;
    dev_.mul_sigmoid(a.gated, a.att, a.gate);
    o_in = a.gated;
  }
  linear_forward(dev_, out, o_in, W.o_proj, p, projection_seed(seed, l, kProjO));
}

void Transformer::attention_backward(size_t l, const BatchCtx& b, AttentionActs& a, const Tensor& h,
                                     const Tensor& dout, const Tensor& dh, AttentionGrads& g,
                                     const TrainStepOptions& opt) {
  const ModelConfig& c = config_;
  const AttentionWeights& W = w_.layers[l].attn;
  const int64_t T = b.T, D = c.head_dim, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const float p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;
  auto zeros = [&](Shape s) { return dev_.zeros(s, DType::kF32); };

  Tensor d_att = zeros({T, Hq * D}), dgate;
  if (a.gate.defined()) {
    Tensor d_gated = zeros({T, Hq * D});
    linear_backward(dev_, d_gated, g.o_proj, dout, a.gated, W.o_proj, p,
                    projection_seed(seed, l, kProjO));
    dgate = zeros({T, Hq * D});
    dev_.mul_sigmoid_backward(d_att, dgate, d_gated, a.att, a.gate);
  } else {
    linear_backward(dev_, d_att, g.o_proj, dout, a.att, W.o_proj, p,
                    projection_seed(seed, l, kProjO));
  }
  Tensor dqr = zeros({T, Hq * D}), dkr = zeros({T, Hkv * D}), dv = zeros({T, Hkv * D});
  std::vector<AttnSegment> segs;
  for (const auto& [first, len] : b.samples) {
    auto rows = [&](const Tensor& t) { return t.slice(first, first + len).view({len, Hkv, D}); };
    segs.push_back({first, len, len, rows(a.kr), rows(a.v), rows(dkr), rows(dv)});
  }
  dev_.attention_backward(dqr.view({T, Hq, D}), d_att.view({T, Hq, D}), a.qr.view({T, Hq, D}),
                          a.att.view({T, Hq, D}), a.lse, segs, 1.0f / std::sqrt(float(D)));
  dev_.rope_backward(dqr.view({T, Hq, D}), b.positions, inv_freq_, 1.0f);
  dev_.rope_backward(dkr.view({T, Hkv, D}), b.positions, inv_freq_, 1.0f);
  Tensor dq = dqr, dk = dkr;
  if (c.qk_norm) {
    dq = zeros({T, Hq * D});
    dk = zeros({T, Hkv * D});
    dev_.rmsnorm_backward(dq.view({T * Hq, D}), g.q_norm, dqr.view({T * Hq, D}),
                          a.q.view({T * Hq, D}), norm_scale(W.q_norm), a.rstd_q);
    dev_.rmsnorm_backward(dk.view({T * Hkv, D}), g.k_norm, dkr.view({T * Hkv, D}),
                          a.k.view({T * Hkv, D}), norm_scale(W.k_norm), a.rstd_k);
  }
  if (dgate.defined()) {  // back to q_proj's per-head [query D | gate D] rows
    Tensor dqg = dev_.empty({T, 2 * Hq * D}, DType::kF32);
    const Tensor parts[] = {dq.view({T * Hq, D}), dgate.view({T * Hq, D})};
    dev_.concat_columns(dqg.view({T * Hq, 2 * D}), parts);
    dq = dqg;
  }
  linear_backward(dev_, dh, g.q_proj, dq, h, W.q_proj, p, projection_seed(seed, l, kProjQ));
  linear_backward(dev_, dh, g.k_proj, dk, h, W.k_proj, p, projection_seed(seed, l, kProjK));
  linear_backward(dev_, dh, g.v_proj, dv, h, W.v_proj, p, projection_seed(seed, l, kProjV));
}

}  // namespace swiftlet
