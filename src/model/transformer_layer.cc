// One decoder layer, forward and backward, and the fused LM-head loss. Shared by generation
// (cache mode: keys/values appended to each sequence's KV cache) and training (batch mode:
// packed samples attend within themselves).
#include <cmath>

#include "model/transformer_internal.h"

namespace swiftlet {

namespace {
// A distinct, reproducible dropout seed per (step seed, layer, projection).
uint64_t mix_seed(uint64_t seed, size_t layer, int proj) {
  uint64_t z = seed ^ (0x9e3779b97f4a7c15ull * (uint64_t(layer) * 16 + uint64_t(proj) + 1));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
enum Proj { kQ, kK, kV, kO, kGate, kUp, kDown };
}  // namespace

void Transformer::layer_forward(size_t l, const BatchCtx& b, const Tensor& x, LayerActs& a,
                                const Tensor& out, bool save, const TrainStepOptions& opt) {
  const ModelConfig& c = config_;
  const LayerWeights& L = w_.layers[l];
  const int64_t T = b.T, H = c.hidden_size, D = c.head_dim, Hq = c.num_attention_heads,
                Hkv = c.num_key_value_heads, I = c.intermediate_size;
  const float eps = float(c.rms_norm_eps), p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;
  auto f32 = [&](Shape s) { return dev_.empty(s, DType::kF32); };

  a.x_in = x;
  a.h1 = f32({T, H});
  a.rstd1 = save ? f32({T}) : Tensor();
  dev_.rmsnorm_forward(a.h1, a.rstd1, x, L.input_layernorm, eps);
  a.q = f32({T, Hq * D});
  a.k = f32({T, Hkv * D});
  a.v = f32({T, Hkv * D});
  linear_forward(dev_, a.q, a.h1, L.q_proj, p, mix_seed(seed, l, kQ));
  linear_forward(dev_, a.k, a.h1, L.k_proj, p, mix_seed(seed, l, kK));
  linear_forward(dev_, a.v, a.h1, L.v_proj, p, mix_seed(seed, l, kV));
  a.qr = a.q;
  a.kr = a.k;
  if (c.qk_norm) {  // Qwen3: RMSNorm over each head's vector before the rotation
    a.qr = f32({T, Hq * D});
    a.kr = f32({T, Hkv * D});
    a.rstd_q = save ? f32({T * Hq}) : Tensor();
    a.rstd_k = save ? f32({T * Hkv}) : Tensor();
    dev_.rmsnorm_forward(a.qr.view({T * Hq, D}), a.rstd_q, a.q.view({T * Hq, D}), L.q_norm, eps);
    dev_.rmsnorm_forward(a.kr.view({T * Hkv, D}), a.rstd_k, a.k.view({T * Hkv, D}), L.k_norm, eps);
  }
  dev_.rope_forward(a.qr.view({T, Hq, D}), b.positions, inv_freq_, 1.0f);
  dev_.rope_forward(a.kr.view({T, Hkv, D}), b.positions, inv_freq_, 1.0f);

  std::vector<AttnSegment> segs;
  if (!b.seqs.empty()) {  // cache mode: append, then attend over the whole cache
    for (size_t s = 0; s < b.seqs.size(); ++s) {
      KvCache& cache = *b.seqs[s].cache;
      const int64_t n = int64_t(b.seqs[s].tokens.size()), o = b.offsets[s];
      dev_.copy(cache.k[l].slice(cache.length, cache.length + n), a.kr.slice(o, o + n).view({n, Hkv, D}));
      dev_.copy(cache.v[l].slice(cache.length, cache.length + n), a.v.slice(o, o + n).view({n, Hkv, D}));
      segs.push_back({o, n, cache.length + n, cache.k[l], cache.v[l], {}, {}});
    }
  } else {
    for (const auto& [first, len] : b.samples)
      segs.push_back({first, len, len, a.kr.slice(first, first + len).view({len, Hkv, D}),
                      a.v.slice(first, first + len).view({len, Hkv, D}), {}, {}});
  }
  a.att = f32({T, Hq * D});
  a.lse = save ? f32({T, Hq}) : Tensor();
  dev_.attention_forward(a.att.view({T, Hq, D}), a.lse, a.qr.view({T, Hq, D}), segs,
                         1.0f / std::sqrt(float(D)));
  Tensor o = f32({T, H});
  linear_forward(dev_, o, a.att, L.o_proj, p, mix_seed(seed, l, kO));
  a.x_mid = f32({T, H});
  dev_.add(a.x_mid, x, o);  // x_mid = x + attn

  a.h2 = f32({T, H});
  a.rstd2 = save ? f32({T}) : Tensor();
  dev_.rmsnorm_forward(a.h2, a.rstd2, a.x_mid, L.post_attention_layernorm, eps);
  a.gate = f32({T, I});
  a.up = f32({T, I});
  linear_forward(dev_, a.gate, a.h2, L.gate_proj, p, mix_seed(seed, l, kGate));
  linear_forward(dev_, a.up, a.h2, L.up_proj, p, mix_seed(seed, l, kUp));
  a.act = f32({T, I});
  dev_.swiglu_forward(a.act, a.gate, a.up);
  linear_forward(dev_, o, a.act, L.down_proj, p, mix_seed(seed, l, kDown));
  dev_.add(out, a.x_mid, o);  // out = x_mid + mlp
}

void Transformer::layer_backward(size_t l, const BatchCtx& b, LayerActs& a, const Tensor& dy,
                                 const Tensor& dx, LayerGrads& g, const TrainStepOptions& opt) {
  const ModelConfig& c = config_;
  const LayerWeights& L = w_.layers[l];
  const int64_t T = b.T, H = c.hidden_size, D = c.head_dim, Hq = c.num_attention_heads,
                Hkv = c.num_key_value_heads, I = c.intermediate_size;
  const float p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;
  auto zeros = [&](Shape s) { return dev_.zeros(s, DType::kF32); };

  // out = x_mid + down(silu(gate) * up)
  Tensor d_act = zeros({T, I});
  linear_backward(dev_, d_act, g.down_proj, dy, a.act, L.down_proj, p, mix_seed(seed, l, kDown));
  Tensor d_gate = zeros({T, I}), d_up = zeros({T, I});
  dev_.swiglu_backward(d_gate, d_up, d_act, a.gate, a.up);
  Tensor dh2 = zeros({T, H});
  linear_backward(dev_, dh2, g.gate_proj, d_gate, a.h2, L.gate_proj, p, mix_seed(seed, l, kGate));
  linear_backward(dev_, dh2, g.up_proj, d_up, a.h2, L.up_proj, p, mix_seed(seed, l, kUp));
  Tensor dx_mid = f32_copy(dy);
  dev_.rmsnorm_backward(dx_mid, g.post_attention_layernorm, dh2, a.x_mid, L.post_attention_layernorm, a.rstd2);

  // x_mid = x + o_proj(attention(q, k, v))
  Tensor d_att = zeros({T, Hq * D});
  linear_backward(dev_, d_att, g.o_proj, dx_mid, a.att, L.o_proj, p, mix_seed(seed, l, kO));
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
                          a.q.view({T * Hq, D}), L.q_norm, a.rstd_q);
    dev_.rmsnorm_backward(dk.view({T * Hkv, D}), g.k_norm, dkr.view({T * Hkv, D}),
                          a.k.view({T * Hkv, D}), L.k_norm, a.rstd_k);
  }
  Tensor dh1 = zeros({T, H});
  linear_backward(dev_, dh1, g.q_proj, dq, a.h1, L.q_proj, p, mix_seed(seed, l, kQ));
  linear_backward(dev_, dh1, g.k_proj, dk, a.h1, L.k_proj, p, mix_seed(seed, l, kK));
  linear_backward(dev_, dh1, g.v_proj, dv, a.h1, L.v_proj, p, mix_seed(seed, l, kV));
  dev_.rmsnorm_backward(dx, g.input_layernorm, dh1, a.x_in, L.input_layernorm, a.rstd1);
  dev_.add_inplace(dx, dx_mid);
}

Tensor Transformer::f32_copy(const Tensor& t) {
  Tensor out = dev_.empty(t.shape(), DType::kF32);
  dev_.copy(out, t);
  return out;
}

LossStats Transformer::head_loss(const Tensor& x, const BatchCtx& b, const Tensor& dx,
                                 ModelGrads* grads, const TrainStepOptions& opt) {
  const int64_t T = b.T, H = config_.hidden_size, V = config_.vocab_size;
  const float eps = float(config_.rms_norm_eps);
  Tensor hn = dev_.empty({T, H}, DType::kF32);
  Tensor rstd = dev_.empty({T}, DType::kF32);
  dev_.rmsnorm_forward(hn, rstd, x, w_.norm, eps);
  Tensor dhn = grads ? dev_.zeros({T, H}, DType::kF32) : Tensor();
  LossStats st;
  // Only runs of rows with a target reach the LM head, in chunks: the [T, V] logits never exist.
  const int64_t chunk = std::max<int64_t>(1, opt.loss_chunk);
  int64_t r = 0;
  while (r < T) {
    if (b.host_targets[size_t(r)] < 0) {
      ++r;
      continue;
    }
    int64_t e = r;
    while (e < T && e - r < chunk && b.host_targets[size_t(e)] >= 0) ++e;
    const int64_t n = e - r;
    Tensor logits = dev_.empty({n, V}, DType::kF32);
    dev_.gemm(hn.slice(r, e), false, w_.lm_head, true, logits);
    Tensor loss = dev_.empty({n}, DType::kF32), correct = dev_.empty({n}, DType::kF32);
    dev_.cross_entropy(loss, correct, grads ? logits : Tensor(), logits, b.targets.slice(r, e),
                       opt.grad_scale);
    Tensor hl = dev_.download(loss), hc = dev_.download(correct);
    for (int64_t i = 0; i < n; ++i) {
      st.loss_sum += hl.data<float>()[i];
      st.correct += hc.data<float>()[i] > 0.5f;
    }
    st.tokens += n;
    if (grads) {
      dev_.gemm(logits, false, w_.lm_head, false, dhn.slice(r, e), 1.0f, 1.0f);  // dh += dlogits W
      if (grads->lm_head.defined())
        dev_.gemm(logits, true, hn.slice(r, e), false, grads->lm_head, 1.0f, 1.0f);  // dW += dl^T h
    }
    r = e;
  }
  if (grads) dev_.rmsnorm_backward(dx, grads->norm, dhn, x, w_.norm, rstd);
  return st;
}

}  // namespace swiftlet
