// Training and evaluation on packed batches, in three parts: a forward that keeps what backward
// needs, the head (final norm, chunked LM head, the objective), and the shared backward.
#include "model/transformer_internal.h"

namespace swiftlet {

Transformer::BatchCtx Transformer::train_ctx(const TrainBatch& batch) {
  BatchCtx b;
  b.T = int64_t(batch.input_ids.size());
  SWIFTLET_CHECK(b.T > 0 && batch.targets.size() == batch.input_ids.size() &&
                     batch.positions.size() == batch.input_ids.size(),
                 "train batch: {} ids, {} targets, {} positions", batch.input_ids.size(),
                 batch.targets.size(), batch.positions.size());
  int64_t covered = 0;
  for (const auto& [first, len] : batch.samples) {
    SWIFTLET_CHECK(first == covered && len > 0, "train batch: samples must tile the rows");
    covered += len;
  }
  SWIFTLET_CHECK(covered == b.T, "train batch: samples cover {} of {} rows", covered, b.T);
  for (int32_t t : batch.input_ids)
    if (t < 0 || t >= config_.vocab_size)
      throw Error(fmt::format("token id {} is outside the model's vocabulary of {}", t,
                              config_.vocab_size));
  b.ids = dev_.upload(Tensor::host_from_i32(batch.input_ids, {b.T}));
  b.positions = dev_.upload(Tensor::host_from_i32(batch.positions, {b.T}));
  b.targets = dev_.upload(Tensor::host_from_i32(batch.targets, {b.T}));
  b.host_targets = batch.targets;
  b.samples = batch.samples;
  return b;
}

void Transformer::forward_keep(const BatchCtx& b, Activations& acts, const TrainStepOptions& opt) {
  const int64_t H = config_.hidden_size;
  const size_t L = w_.layers.size();
  acts.xs.assign(L + 1, Tensor());
  acts.layers.assign(opt.gradient_checkpointing ? 1 : L, LayerActs());
  acts.xs[0] = dev_.empty({b.T, H}, DType::kF32);
  {
    UnitUse use(residency_, -1);
    dev_.embedding_forward(acts.xs[0], b.ids, w_.embed_tokens);
  }
  const int64_t E = config_.num_experts;
  acts.router_picks.assign(size_t(E), 0.0);
  acts.router_prob_sum.assign(size_t(E), 0.0);
  acts.router_rows = 0;
  for (size_t l = 0; l < L; ++l) {
    acts.xs[l + 1] = dev_.empty({b.T, H}, DType::kF32);
    LayerActs& a = acts.layers[opt.gradient_checkpointing ? 0 : l];
    {
      UnitUse use(residency_, int64_t(l));
      layer_forward(l, b, acts.xs[l], a, acts.xs[l + 1], true, opt);
    }
    if (w_.layers[l].kind.mlp == MlpKind::kMoe) {
      for (int32_t e : a.moe.top) acts.router_picks[size_t(e)] += 1;
      for (int64_t t = 0; t < b.T; ++t)
        for (int64_t e = 0; e < E; ++e)
          acts.router_prob_sum[size_t(e)] += a.moe.probs[size_t(t * E + e)];
      acts.router_rows += b.T;
    }
    if (opt.gradient_checkpointing) a = LayerActs();  // keep only the layer inputs
  }
}

double Transformer::router_aux(const Activations& acts, float weight,
                               std::vector<float>& dprob) const {
  // HF's load_balancing_loss_func on the router logits of all MoE layers concatenated (N rows):
  // aux = E * sum_e f_e P_e, f_e = picks_e / N (not differentiated), P_e = sum_rows p_e / N.
  dprob.clear();
  if (acts.router_rows == 0) return 0;
  const int64_t E = config_.num_experts;
  const double N = double(acts.router_rows);
  double aux = 0;
  for (int64_t e = 0; e < E; ++e)
    aux += (acts.router_picks[size_t(e)] / N) * (acts.router_prob_sum[size_t(e)] / N);
  aux *= double(E);
  if (weight != 0.0f) {
    dprob.resize(size_t(E));
    for (int64_t e = 0; e < E; ++e)
      dprob[size_t(e)] = float(double(weight) * double(E) * (acts.router_picks[size_t(e)] / N) / N);
  }
  return aux;
}

void Transformer::backward(const BatchCtx& b, Activations& acts, const Tensor& dy_last,
                           ModelGrads& grads, const TrainStepOptions& opt) {
  const int64_t H = config_.hidden_size;
  Tensor dy = dy_last;
  if (opt.on_grads_ready) opt.on_grads_ready(int64_t(w_.layers.size()));
  for (size_t l = w_.layers.size(); l-- > 0;) {
    LayerActs& a = acts.layers[opt.gradient_checkpointing ? 0 : l];
    UnitUse use(residency_, int64_t(l));  // through the recompute and the layer's backward
    if (opt.gradient_checkpointing) {
      Tensor scratch = dev_.empty({b.T, H}, DType::kF32);
      layer_forward(l, b, acts.xs[l], a, scratch, true, opt);  // recompute what backward needs
    }
    Tensor dx = dev_.zeros({b.T, H}, DType::kF32);
    layer_backward(l, b, a, dy, dx, grads.layers[l], opt);
    a = LayerActs();
    dy = dx;
    if (opt.on_grads_ready) opt.on_grads_ready(int64_t(l));
  }
  if (grads.embed_tokens.defined()) dev_.embedding_backward(grads.embed_tokens, dy, b.ids);
  if (opt.on_grads_ready) opt.on_grads_ready(-1);
}

void Transformer::head(const Tensor& x, const BatchCtx& b, const Tensor& dx, ModelGrads* grads,
                       Objective& obj, int64_t loss_chunk) {
  const int64_t T = b.T, H = config_.hidden_size, V = config_.vocab_size;
  const float eps = float(config_.rms_norm_eps);
  UnitUse use(residency_, int64_t(w_.layers.size()));
  Tensor hn = dev_.empty({T, H}, DType::kF32);
  Tensor rstd = dev_.empty({T}, DType::kF32);
  dev_.rmsnorm_forward(hn, rstd, x, norm_scale(w_.norm), eps);
  Tensor dhn = grads ? dev_.zeros({T, H}, DType::kF32) : Tensor();

  // Runs of rows with a target, at most loss_chunk long: only they reach the LM head, so the
  // [T, V] logits never exist.
  std::vector<std::pair<int64_t, int64_t>> chunks;
  const int64_t chunk = std::max<int64_t>(1, loss_chunk);
  for (int64_t r = 0; r < T;) {
    if (b.host_targets[size_t(r)] < 0) {
      ++r;
      continue;
    }
    int64_t e = r;
    while (e < T && e - r < chunk && b.host_targets[size_t(e)] >= 0) ++e;
    chunks.emplace_back(r, e);
    r = e;
  }
  const bool grad = grads != nullptr;
  const bool fixed = grad && obj.weights_before_logprobs();
  const bool whole = grad && !fixed && obj.whole_batch();
  // The one-pass path reads the logits after the kernel: dlogits must not overwrite them then.
  const bool keep_logits = obj.wants_logits();
  const bool separate_dlogits = keep_logits && fixed;
  std::vector<float> all_dlogp(whole ? size_t(T) : 0);
  // Logits / temperature: the kernel sees the scaled logits, dh and dW take the scale once more.
  const float inv_t = 1.0f / obj.temperature();

  // logits = hn W^T of rows [r, e); with a gradient, d loss / d logp -> dlogits -> dh, dW.
  auto logits_of = [&](int64_t r, int64_t e) {
    Tensor logits = dev_.empty({e - r, V}, DType::kF32);
    dev_.gemm(hn.slice(r, e), false, w_.lm_head, true, logits, inv_t);
    return logits;
  };
  // The chunk as the objective sees it: log p(target) = -cross-entropy, and argmax hits.
  struct Seen {
    std::vector<float> logprobs;
    Tensor correct;  // host
  };
  auto seen = [&](const Tensor& loss, const Tensor& correct) {
    Tensor hl = dev_.download(loss);
    Seen s{std::vector<float>(size_t(loss.numel())), dev_.download(correct)};
    for (size_t i = 0; i < s.logprobs.size(); ++i) s.logprobs[i] = -hl.data<float>()[i];
    return s;
  };
  auto view = [&](int64_t r, int64_t e, const Seen* s, const Tensor& logits) {
    const size_t n = size_t(e - r);
    HeadChunk c{r,  e,  std::span<const int32_t>(b.host_targets).subspan(size_t(r), n),
                {}, {}, keep_logits ? logits : Tensor()};
    if (s) {
      c.logprobs = s->logprobs;
      c.correct = std::span<const float>(s->correct.data<float>(), n);
    }
    return c;
  };
  // dlogits from d loss / d log p (one kernel, per-row scales), then dh += dl W and dW += dl^T h.
  // Returns the kernel's loss and argmax hits; the logits survive when the objective reads them.
  auto backprop = [&](int64_t r, int64_t e, const Tensor& logits, std::span<const float> dlogp) {
    const int64_t n = e - r;
    Tensor scale = Tensor::host({n}, DType::kF32);
    for (int64_t i = 0; i < n; ++i)
      scale.data<float>()[i] = -dlogp[size_t(i)];  // d/d CE = -d/d logp
    Tensor loss = dev_.empty({n}, DType::kF32), correct = dev_.empty({n}, DType::kF32);
    Tensor dlogits = separate_dlogits ? dev_.empty({n, V}, DType::kF32) : logits;
    dev_.cross_entropy(loss, correct, dlogits, logits, b.targets.slice(r, e), 1.0f,
                       dev_.upload(scale));
    dev_.gemm(dlogits, false, w_.lm_head, false, dhn.slice(r, e), inv_t, 1.0f);  // dh += dl W / t
    if (grads->lm_head.defined())                                                // dW += dl^T h / t
      dev_.gemm(dlogits, true, hn.slice(r, e), false, grads->lm_head, inv_t, 1.0f);
    return std::pair{loss, correct};
  };
  auto observe = [&](int64_t r, int64_t e, const Tensor& logits, std::span<float> dlogp) {
    const int64_t n = e - r;
    Tensor loss = dev_.empty({n}, DType::kF32), correct = dev_.empty({n}, DType::kF32);
    dev_.cross_entropy(loss, correct, Tensor(), logits, b.targets.slice(r, e), 1.0f);
    const Seen s = seen(loss, correct);
    obj.chunk(view(r, e, &s, logits), dlogp);
  };

  if (obj.uses_lm_head()) {
    if (config_.seq_cls())
      throw Error(fmt::format("this objective needs an LM head, and {} has a score head instead",
                              config_.architecture),
                  "train a ...ForCausalLM model, or use --rlhf_type rm for a reward model");
    for (const auto& [r, e] : chunks) {
      const int64_t n = e - r;
      Tensor logits = logits_of(r, e);
      std::vector<float> dlogp(grad && !whole ? size_t(n) : 0, 0.0f);
      if (fixed) {
        // One pass: the gradient weights come first, the kernel writes loss and dlogits together.
        obj.fixed_grad(view(r, e, nullptr, Tensor()), dlogp);
        const auto [loss, correct] = backprop(r, e, logits, dlogp);
        const Seen s = seen(loss, correct);
        obj.chunk(view(r, e, &s, logits), {});
      } else if (grad && !whole) {
        observe(r, e, logits, dlogp);
        backprop(r, e, logits, dlogp);
      } else {
        observe(r, e, logits, {});
      }
    }
    if (whole) {
      obj.batch_grad(all_dlogp);
      for (const auto& [r, e] : chunks)  // the logits again, chunk by chunk, for the gradient
        backprop(r, e, logits_of(r, e),
                 std::span<const float>(all_dlogp).subspan(size_t(r), size_t(e - r)));
    }
  }
  obj.hidden_states(hn, dhn);
  if (grads) dev_.rmsnorm_backward(dx, grads->norm, dhn, x, norm_scale(w_.norm), rstd);
}

void Transformer::train_step(const TrainBatch& batch, ModelGrads& grads,
                             const TrainStepOptions& opt, Objective& objective) {
  BatchCtx b = train_ctx(batch);
  Activations acts;
  forward_keep(b, acts, opt);
  router_aux_loss_ = router_aux(acts, opt.router_aux_weight, b.router_aux_dprob);
  Tensor dy = dev_.zeros({b.T, config_.hidden_size}, DType::kF32);
  head(acts.xs.back(), b, dy, &grads, objective, opt.loss_chunk);
  backward(b, acts, dy, grads, opt);
}

Tensor Transformer::forward_no_save(const BatchCtx& b) {
  const int64_t H = config_.hidden_size;
  Tensor x = dev_.empty({b.T, H}, DType::kF32), y = dev_.empty({b.T, H}, DType::kF32);
  {
    UnitUse use(residency_, -1);
    dev_.embedding_forward(x, b.ids, w_.embed_tokens);
  }
  LayerActs acts;
  const TrainStepOptions no_train;
  for (size_t l = 0; l < w_.layers.size(); ++l) {
    UnitUse use(residency_, int64_t(l));
    layer_forward(l, b, x, acts, y, false, no_train);
    std::swap(x, y);
  }
  return x;
}

void Transformer::evaluate(const TrainBatch& batch, Objective& objective, int64_t loss_chunk) {
  BatchCtx b = train_ctx(batch);
  head(forward_no_save(b), b, Tensor(), nullptr, objective, loss_chunk);
}

LossStats Transformer::train_step(const TrainBatch& batch, ModelGrads& grads,
                                  const TrainStepOptions& opt) {
  CrossEntropyObjective ce(opt.grad_scale);
  train_step(batch, grads, opt, ce);
  return {ce.loss_sum, ce.tokens, ce.correct};
}

LossStats Transformer::eval_loss(const TrainBatch& batch, int64_t loss_chunk) {
  CrossEntropyObjective ce;
  evaluate(batch, ce, loss_chunk);
  return {ce.loss_sum, ce.tokens, ce.correct};
}

}  // namespace swiftlet
