// The sparse mixture-of-experts block of Qwen3-MoE. Per token t with h = h[t]:
//   p = softmax(router(h))  (over all E experts),  S = top-k of p,
//   w_e = p_e (or p_e / sum_{S} p when norm_topk_prob),  out = sum_{e in S} w_e * expert_e(h),
//   expert_e(h) = down_e(silu(gate_e(h)) * up_e(h)).
// Qwen3.5-MoE and Qwen3-Next add a shared expert: out += sigmoid(shared_expert_gate(h)) *
// shared_expert(h) for every token.
// Tokens are grouped by expert: the (token, slot) pairs are gathered into rows sorted by expert,
// each expert runs its three projections on its own contiguous rows (no dense all-experts pass),
// and the weighted rows are scattered back. The routing (softmax, top-k over E logits per token)
// runs on the host: the group sizes decide the GEMM shapes, so they must be known there anyway.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "model/transformer_internal.h"

namespace swiftlet {

namespace {

// Softmax of every row of logits [T, E] (in f64, stored f32), its top-k (ties to the lower
// index) and their routing weights.
void route(const float* logits, int64_t T, int64_t E, int64_t k, bool norm_topk,
           std::vector<float>& probs, std::vector<int32_t>& top, std::vector<float>& weights) {
  probs.assign(size_t(T * E), 0.0f);
  top.assign(size_t(T * k), 0);
  weights.assign(size_t(T * k), 0.0f);
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* z = logits + t * E;
    float* p = probs.data() + t * E;
    const double m = *std::max_element(z, z + E);
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(double(z[e]) - m);
    for (int64_t e = 0; e < E; ++e) p[e] = float(std::exp(double(z[e]) - m) / sum);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    double picked = 0;
    for (int64_t s = 0; s < k; ++s) picked += p[order[size_t(s)]];
    for (int64_t s = 0; s < k; ++s) {
      const int32_t e = order[size_t(s)];
      top[size_t(t * k + s)] = e;
      weights[size_t(t * k + s)] = norm_topk ? float(p[e] / picked) : p[e];
    }
  }
}

// Seeds of the router's and each expert's projections (LoRA dropout masks); the shared expert
// counts as expert E and its gate as expert E + 1.
uint64_t expert_seed(uint64_t seed, size_t layer, int64_t expert, int proj) {
  return projection_seed(projection_seed(seed, layer, kProjRouter), size_t(expert), proj);
}

float sigmoid(float x) { return float(1.0 / (1.0 + std::exp(-double(x)))); }

}  // namespace

// Keeps the routing, the gathered rows and the experts' SwiGLU inputs/outputs for backward.
void Transformer::moe_forward(size_t l, const Tensor& h, MoeActs& a, const Tensor& out,
                              const TrainStepOptions& opt) {
  const MoeWeights& W = w_.layers[l].moe;
  const int64_t T = h.dim(0), H = config_.hidden_size, E = config_.num_experts,
                k = config_.num_experts_per_tok, I = config_.moe_intermediate_size, R = T * k;
  const float p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;

  Tensor logits = dev_.empty({T, E}, DType::kF32);
  linear_forward(dev_, logits, h, W.gate, p, projection_seed(seed, l, kProjRouter));
  const Tensor host_logits = dev_.download(logits);
  route(host_logits.data<float>(), T, E, k, config_.norm_topk_prob, a.probs, a.top, a.weights);

  // Rows sorted by expert (a counting sort: tokens stay in order within an expert).
  a.offsets.assign(size_t(E + 1), 0);
  for (int32_t e : a.top) ++a.offsets[size_t(e) + 1];
  for (int64_t e = 0; e < E; ++e) a.offsets[size_t(e + 1)] += a.offsets[size_t(e)];
  std::vector<int64_t> fill(a.offsets.begin(), a.offsets.end() - 1);
  std::vector<int32_t> tok(static_cast<size_t>(R));
  std::vector<float> wt(static_cast<size_t>(R));
  a.slot_of.assign(size_t(R), 0);
  for (int64_t i = 0; i < R; ++i) {
    const int64_t j = fill[size_t(a.top[size_t(i)])]++;
    tok[size_t(j)] = int32_t(i / k);
    wt[size_t(j)] = a.weights[size_t(i)];
    a.slot_of[size_t(j)] = int32_t(i);
  }
  a.perm_tok = dev_.upload(Tensor::host_from_i32(tok, {R}));
  a.perm_w = dev_.upload(Tensor::host_from(wt, {R}));

  a.xg = dev_.empty({R, H}, DType::kF32);
  dev_.embedding_forward(a.xg, a.perm_tok, h);  // gather: xg[j] = h[perm_tok[j]]
  a.gate = dev_.empty({R, I}, DType::kF32);
  a.up = dev_.empty({R, I}, DType::kF32);
  a.act = dev_.empty({R, I}, DType::kF32);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t b = a.offsets[size_t(e)], f = a.offsets[size_t(e + 1)];
    if (b == f) continue;
    const DenseMlpWeights& X = W.experts[size_t(e)];
    linear_forward(dev_, a.gate.slice(b, f), a.xg.slice(b, f), X.gate_proj, p,
                   expert_seed(seed, l, e, kProjGate));
    linear_forward(dev_, a.up.slice(b, f), a.xg.slice(b, f), X.up_proj, p,
                   expert_seed(seed, l, e, kProjUp));
  }
  dev_.swiglu_forward(a.act, a.gate, a.up);
  // down_e is linear without bias, so weighting its input weights its output: w down(a) = down(w
  // a).
  a.act_w = dev_.empty({R, I}, DType::kF32);
  dev_.scale_rows_forward(a.act_w, a.act, a.perm_w);
  Tensor yo = dev_.empty({R, H}, DType::kF32);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t b = a.offsets[size_t(e)], f = a.offsets[size_t(e + 1)];
    if (b == f) continue;
    linear_forward(dev_, yo.slice(b, f), a.act_w.slice(b, f), W.experts[size_t(e)].down_proj, p,
                   expert_seed(seed, l, e, kProjDown));
  }
  dev_.fill(out, 0.0f);
  dev_.embedding_backward(out, yo, a.perm_tok);  // scatter-add: out[perm_tok[j]] += yo[j]

  // The shared expert: out += sigmoid(shared_expert_gate(h)) * swiglu_shared(h), per token.
  if (const int64_t Is = config_.shared_expert_intermediate_size; Is > 0) {
    a.shared_y = dev_.empty({T, H}, DType::kF32);
    swiglu_block_forward(W.shared_expert, Is, h, a.shared, a.shared_y, p,
                         {expert_seed(seed, l, E, kProjGate), expert_seed(seed, l, E, kProjUp),
                          expert_seed(seed, l, E, kProjDown)});
    Tensor gate_logit = dev_.empty({T, 1}, DType::kF32);
    linear_forward(dev_, gate_logit, h, W.shared_expert_gate, p,
                   expert_seed(seed, l, E + 1, kProjRouter));
    const Tensor host_gate = dev_.download(gate_logit);
    a.shared_sig.resize(size_t(T));
    for (int64_t t = 0; t < T; ++t) a.shared_sig[size_t(t)] = sigmoid(host_gate.data<float>()[t]);
    a.shared_s = dev_.upload(Tensor::host_from(a.shared_sig, {T}));
    Tensor gated = dev_.empty({T, H}, DType::kF32);
    dev_.scale_rows_forward(gated, a.shared_y, a.shared_s);
    dev_.add_inplace(out, gated);
  }
}

void Transformer::moe_backward(size_t l, const BatchCtx& b, MoeActs& a, const Tensor& h,
                               const Tensor& dout, const Tensor& dh, MoeGrads& g,
                               const TrainStepOptions& opt) {
  const MoeWeights& W = w_.layers[l].moe;
  const int64_t T = h.dim(0), H = config_.hidden_size, E = config_.num_experts,
                k = config_.num_experts_per_tok, I = config_.moe_intermediate_size, R = T * k;
  const float p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;
  const bool frozen_experts = g.experts.empty();

  Tensor dyo = dev_.empty({R, H}, DType::kF32);
  dev_.embedding_forward(dyo, a.perm_tok, dout);  // the scatter's gradient is a gather
  Tensor d_actw = dev_.zeros({R, I}, DType::kF32);
  static const DenseMlpGrads kFrozen;
  auto grads_of = [&](int64_t e) -> const DenseMlpGrads& {
    return frozen_experts ? kFrozen : g.experts[size_t(e)];
  };
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = a.offsets[size_t(e)], r1 = a.offsets[size_t(e + 1)];
    if (r0 == r1) continue;
    linear_backward(dev_, d_actw.slice(r0, r1), grads_of(e).down_proj, dyo.slice(r0, r1),
                    a.act_w.slice(r0, r1), W.experts[size_t(e)].down_proj, p,
                    expert_seed(seed, l, e, kProjDown));
  }
  Tensor d_act = dev_.zeros({R, I}, DType::kF32), d_w = dev_.zeros({R}, DType::kF32);
  dev_.scale_rows_backward(d_act, d_w, d_actw, a.act, a.perm_w);
  Tensor d_gate = dev_.zeros({R, I}, DType::kF32), d_up = dev_.zeros({R, I}, DType::kF32);
  dev_.swiglu_backward(d_gate, d_up, d_act, a.gate, a.up);
  Tensor dxg = dev_.zeros({R, H}, DType::kF32);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = a.offsets[size_t(e)], r1 = a.offsets[size_t(e + 1)];
    if (r0 == r1) continue;
    const DenseMlpWeights& X = W.experts[size_t(e)];
    linear_backward(dev_, dxg.slice(r0, r1), grads_of(e).gate_proj, d_gate.slice(r0, r1),
                    a.xg.slice(r0, r1), X.gate_proj, p, expert_seed(seed, l, e, kProjGate));
    // LoRA on the fused gate_up parameter: up reads gate's input factor, so its gradient too.
    LinearGrads g_up = grads_of(e).up_proj;
    if (X.up_proj.lora && X.up_proj.lora->shares_a) g_up.lora_a = grads_of(e).gate_proj.lora_a;
    linear_backward(dev_, dxg.slice(r0, r1), g_up, d_up.slice(r0, r1), a.xg.slice(r0, r1),
                    X.up_proj, p, expert_seed(seed, l, e, kProjUp));
  }
  dev_.embedding_backward(dh, dxg, a.perm_tok);  // the gather's gradient is a scatter-add

  // Router: d loss / d w per (token, slot), through the renormalisation and the softmax.
  const Tensor host_dw = dev_.download(d_w);
  std::vector<double> dw(static_cast<size_t>(R));
  for (int64_t j = 0; j < R; ++j) dw[size_t(a.slot_of[size_t(j)])] = host_dw.data<float>()[j];
  const bool aux = !b.router_aux_dprob.empty();
  std::vector<float> dz(static_cast<size_t>(T * E));
  std::vector<double> dp(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* pt = a.probs.data() + t * E;
    for (int64_t e = 0; e < E; ++e) dp[size_t(e)] = aux ? b.router_aux_dprob[size_t(e)] : 0.0;
    const double* dwt = dw.data() + t * k;
    const int32_t* sel = a.top.data() + t * k;
    if (config_.norm_topk_prob) {
      // w_s = p_s / S:  d/dp_s = (dw_s - sum_j dw_j w_j) / S
      double S = 0, dot = 0;
      for (int64_t s = 0; s < k; ++s) S += pt[sel[s]];
      for (int64_t s = 0; s < k; ++s) dot += dwt[s] * a.weights[size_t(t * k + s)];
      for (int64_t s = 0; s < k; ++s) dp[size_t(sel[s])] += (dwt[s] - dot) / S;
    } else {
      for (int64_t s = 0; s < k; ++s) dp[size_t(sel[s])] += dwt[s];
    }
    // softmax: dz_e = p_e (dp_e - sum_f p_f dp_f)
    double pdp = 0;
    for (int64_t e = 0; e < E; ++e) pdp += double(pt[e]) * dp[size_t(e)];
    for (int64_t e = 0; e < E; ++e) dz[size_t(t * E + e)] = float(pt[e] * (dp[size_t(e)] - pdp));
  }
  Tensor dlogits = dev_.upload(Tensor::host_from(dz, {T, E}));
  linear_backward(dev_, dh, g.gate, dlogits, h, W.gate, p, projection_seed(seed, l, kProjRouter));

  if (const int64_t Is = config_.shared_expert_intermediate_size; Is > 0) {
    Tensor dy = dev_.zeros({T, H}, DType::kF32), ds = dev_.zeros({T}, DType::kF32);
    dev_.scale_rows_backward(dy, ds, dout, a.shared_y, a.shared_s);
    swiglu_block_backward(W.shared_expert, Is, a.shared, h, dy, dh, g.shared_expert, p,
                          {expert_seed(seed, l, E, kProjGate), expert_seed(seed, l, E, kProjUp),
                           expert_seed(seed, l, E, kProjDown)});
    const Tensor host_ds = dev_.download(ds);
    std::vector<float> dgate(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      const float s = a.shared_sig[size_t(t)];
      dgate[size_t(t)] = host_ds.data<float>()[t] * s * (1.0f - s);
    }
    linear_backward(dev_, dh, g.shared_expert_gate, dev_.upload(Tensor::host_from(dgate, {T, 1})),
                    h, W.shared_expert_gate, p, expert_seed(seed, l, E + 1, kProjRouter));
  }
}

}  // namespace swiftlet
