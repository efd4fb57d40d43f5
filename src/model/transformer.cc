#include "model/transformer.h"

#include <cmath>
#include <numbers>

#include "model/transformer_internal.h"

namespace swiftlet {

namespace {

// Converts a host tensor to `dtype` when it is a float tensor of another dtype.
Tensor host_as(const Tensor& t, DType dtype) {
  if (t.dtype() == dtype || !dtype_is_float(t.dtype())) return t;
  Tensor out = Tensor::host(t.shape(), dtype);
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) out.set_f32(i, t.item_f32(i));
  return out;
}

}  // namespace

DType parse_torch_dtype(const std::string& name) {
  if (name == "bfloat16" || name == "bf16") return DType::kBF16;
  if (name == "float16" || name == "fp16" || name == "half") return DType::kF16;
  if (name == "float32" || name == "fp32" || name == "float") return DType::kF32;
  throw Error(fmt::format("--torch_dtype {} is not supported", name),
              "use bfloat16, float16 or float32");
}

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int64_t d = c.head_dim;
  std::vector<float> inv(size_t(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) {
    // HF: 1 / base ** (arange(0, d, 2).float() / d), in f32
    float expo = float(2 * i) / float(d);
    inv[size_t(i)] = 1.0f / std::pow(float(c.rope_theta), expo);
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.rope_type == "linear") {
    for (auto& f : inv) f = float(f / s.factor);
  } else if (s.rope_type == "llama3") {
    // Llama 3.1: keep high frequencies, divide low ones by factor, blend in between.
    const double old_len = double(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    for (auto& f : inv) {
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f = float(f / s.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = float((1 - smooth) * f / s.factor + smooth * f);
      }
    }
  }
  return inv;
}

Transformer::Transformer(Device& device, ModelConfig config,
                         const std::map<std::string, Tensor>& weights, DType weight_dtype,
                         bool writable)
    : dev_(device), config_(std::move(config)), weight_dtype_(weight_dtype) {
  auto get = [&](const std::string& name) -> Tensor {
    auto it = weights.find(name);
    if (it == weights.end()) throw Error(fmt::format("model weight {} is missing", name));
    Tensor h = host_as(it->second, weight_dtype_);
    Tensor u = dev_.upload(h);
    if (writable && u.raw_ptr() == it->second.raw_ptr()) {  // shared with the caller's tensor
      Tensor d = dev_.empty(h.shape(), h.dtype());
      dev_.copy(d, u);
      return d;
    }
    return u;
  };
  auto linear = [&](const std::string& prefix, bool bias) {
    Linear l;
    l.weight = get(prefix + ".weight");
    if (bias) l.bias = get(prefix + ".bias");
    return l;
  };
  const bool qkv_bias = config_.attention_bias;
  w_.embed_tokens = get("model.embed_tokens.weight");
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    LayerWeights L;
    L.input_layernorm = get(p + "input_layernorm.weight");
    L.post_attention_layernorm = get(p + "post_attention_layernorm.weight");
    if (config_.qk_norm) {
      L.q_norm = get(p + "self_attn.q_norm.weight");
      L.k_norm = get(p + "self_attn.k_norm.weight");
    }
    L.q_proj = linear(p + "self_attn.q_proj", qkv_bias);
    L.k_proj = linear(p + "self_attn.k_proj", qkv_bias);
    L.v_proj = linear(p + "self_attn.v_proj", qkv_bias);
    L.o_proj = linear(p + "self_attn.o_proj", config_.o_proj_bias);
    L.gate_proj = linear(p + "mlp.gate_proj", false);
    L.up_proj = linear(p + "mlp.up_proj", false);
    L.down_proj = linear(p + "mlp.down_proj", false);
    w_.layers.push_back(std::move(L));
  }
  w_.norm = get("model.norm.weight");
  w_.lm_head = config_.tie_word_embeddings ? w_.embed_tokens : get("lm_head.weight");
  base_w_ = w_;
  std::vector<float> inv = rope_inv_freq(config_);
  inv_freq_ = dev_.upload(Tensor::host_from(inv, {int64_t(inv.size())}));
}

std::vector<NamedSlot> named_slots(const ModelConfig& c, ModelWeights& w, ModelGrads& g) {
  std::vector<NamedSlot> out;
  g.layers.resize(w.layers.size());
  out.push_back({"model.embed_tokens.weight", &w.embed_tokens, &g.embed_tokens});
  for (size_t i = 0; i < w.layers.size(); ++i) {
    LayerWeights& L = w.layers[i];
    LayerGrads& G = g.layers[i];
    const std::string p = fmt::format("model.layers.{}.", i);
    out.push_back({p + "input_layernorm.weight", &L.input_layernorm, &G.input_layernorm});
    auto lin = [&](const std::string& name, Linear& l, LinearGrads& lg) {
      out.push_back({p + name + ".weight", &l.weight, &lg.weight});
      if (l.bias.defined()) out.push_back({p + name + ".bias", &l.bias, &lg.bias});
    };
    lin("self_attn.q_proj", L.q_proj, G.q_proj);
    lin("self_attn.k_proj", L.k_proj, G.k_proj);
    lin("self_attn.v_proj", L.v_proj, G.v_proj);
    lin("self_attn.o_proj", L.o_proj, G.o_proj);
    if (c.qk_norm) {
      out.push_back({p + "self_attn.q_norm.weight", &L.q_norm, &G.q_norm});
      out.push_back({p + "self_attn.k_norm.weight", &L.k_norm, &G.k_norm});
    }
    out.push_back({p + "post_attention_layernorm.weight", &L.post_attention_layernorm,
                   &G.post_attention_layernorm});
    lin("mlp.gate_proj", L.gate_proj, G.gate_proj);
    lin("mlp.up_proj", L.up_proj, G.up_proj);
    lin("mlp.down_proj", L.down_proj, G.down_proj);
  }
  out.push_back({"model.norm.weight", &w.norm, &g.norm});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", &w.lm_head, &g.lm_head});
  return out;
}

KvCache Transformer::new_cache(int64_t capacity) const {
  KvCache c;
  reserve(c, capacity);
  return c;
}

void Transformer::reserve(KvCache& cache, int64_t capacity) const {
  if (capacity <= cache.capacity) return;
  const int64_t hkv = config_.num_key_value_heads, d = config_.head_dim;
  const size_t layers = size_t(config_.num_hidden_layers);
  std::vector<Tensor> k(layers), v(layers);
  for (size_t l = 0; l < layers; ++l) {
    k[l] = dev_.empty({capacity, hkv, d}, kv_dtype());
    v[l] = dev_.empty({capacity, hkv, d}, kv_dtype());
    if (cache.length > 0) {
      dev_.copy(k[l].slice(0, cache.length), cache.k[l].slice(0, cache.length));
      dev_.copy(v[l].slice(0, cache.length), cache.v[l].slice(0, cache.length));
    }
  }
  cache.k = std::move(k);
  cache.v = std::move(v);
  cache.capacity = capacity;
}

Tensor Transformer::forward(std::span<SequenceStep> seqs) {
  const int64_t H = config_.hidden_size, V = config_.vocab_size;
  // Pack the new tokens of all sequences; positions continue each cache.
  BatchCtx b;
  b.seqs = seqs;
  std::vector<int32_t> ids, pos, out_rows;  // out_rows: rows whose logits are returned
  for (auto& s : seqs) {
    SWIFTLET_CHECK(s.cache && !s.tokens.empty(), "forward: a sequence needs a cache and tokens");
    const int64_t n = int64_t(s.tokens.size());
    if (s.cache->length + n > s.cache->capacity)
      reserve(*s.cache, std::max(s.cache->length + n, 2 * s.cache->capacity));
    b.offsets.push_back(int64_t(ids.size()));
    for (int64_t i = 0; i < n; ++i) {
      const int32_t t = s.tokens[size_t(i)];
      if (t < 0 || t >= V)
        throw Error(fmt::format("token id {} is outside the model's vocabulary of {}", t, V));
      ids.push_back(t);
      pos.push_back(int32_t(s.cache->length + i));
      if (s.all_logits || i == n - 1) out_rows.push_back(int32_t(b.offsets.back() + i));
    }
  }
  b.T = int64_t(ids.size());
  b.ids = dev_.upload(Tensor::host_from_i32(ids, {b.T}));
  b.positions = dev_.upload(Tensor::host_from_i32(pos, {b.T}));

  Tensor x = dev_.empty({b.T, H}, DType::kF32), y = dev_.empty({b.T, H}, DType::kF32);
  dev_.embedding_forward(x, b.ids, w_.embed_tokens);
  LayerActs acts;
  TrainStepOptions no_train;
  for (size_t l = 0; l < w_.layers.size(); ++l) {
    layer_forward(l, b, x, acts, y, false, no_train);
    std::swap(x, y);
  }
  for (auto& s : seqs) s.cache->length += int64_t(s.tokens.size());

  // Final norm and LM head on the rows whose logits are asked for only.
  const int64_t R = int64_t(out_rows.size());
  Tensor last = x;
  if (R != b.T) {
    last = dev_.empty({R, H}, DType::kF32);
    for (int64_t r = 0; r < R; ++r)
      dev_.copy(last.slice(r, r + 1), x.slice(out_rows[size_t(r)], out_rows[size_t(r)] + 1));
  }
  Tensor normed = dev_.empty({R, H}, DType::kF32);
  dev_.rmsnorm_forward(normed, Tensor(), last, w_.norm, float(config_.rms_norm_eps));
  Tensor logits = dev_.empty({R, V}, DType::kF32);
  dev_.gemm(normed, false, w_.lm_head, true, logits);
  return dev_.download(logits);
}

Tensor Transformer::logits(std::span<const int32_t> tokens) {
  KvCache cache = new_cache(int64_t(tokens.size()));
  SequenceStep step{tokens, &cache, true};
  return forward(std::span<SequenceStep>(&step, 1));
}

}  // namespace swiftlet

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

LossStats Transformer::train_step(const TrainBatch& batch, ModelGrads& grads,
                                  const TrainStepOptions& opt) {
  BatchCtx b = train_ctx(batch);
  const int64_t H = config_.hidden_size;
  const size_t L = w_.layers.size();
  std::vector<Tensor> xs(L + 1);  // layer inputs; xs[L] is the final residual stream
  std::vector<LayerActs> acts(opt.gradient_checkpointing ? 1 : L);
  xs[0] = dev_.empty({b.T, H}, DType::kF32);
  dev_.embedding_forward(xs[0], b.ids, w_.embed_tokens);
  for (size_t l = 0; l < L; ++l) {
    xs[l + 1] = dev_.empty({b.T, H}, DType::kF32);
    LayerActs& a = acts[opt.gradient_checkpointing ? 0 : l];
    layer_forward(l, b, xs[l], a, xs[l + 1], true, opt);
    if (opt.gradient_checkpointing) a = LayerActs();  // keep only the layer inputs
  }
  Tensor dy = dev_.zeros({b.T, H}, DType::kF32);
  LossStats st = head_loss(xs[L], b, dy, &grads, opt);
  for (size_t l = L; l-- > 0;) {
    LayerActs& a = acts[opt.gradient_checkpointing ? 0 : l];
    if (opt.gradient_checkpointing) {
      Tensor scratch = dev_.empty({b.T, H}, DType::kF32);
      layer_forward(l, b, xs[l], a, scratch, true, opt);  // recompute what backward needs
    }
    Tensor dx = dev_.zeros({b.T, H}, DType::kF32);
    layer_backward(l, b, a, dy, dx, grads.layers[l], opt);
    a = LayerActs();
    dy = dx;
  }
  if (grads.embed_tokens.defined()) dev_.embedding_backward(grads.embed_tokens, dy, b.ids);
  return st;
}

LossStats Transformer::eval_loss(const TrainBatch& batch, int64_t loss_chunk) {
  BatchCtx b = train_ctx(batch);
  const int64_t H = config_.hidden_size;
  Tensor x = dev_.empty({b.T, H}, DType::kF32), y = dev_.empty({b.T, H}, DType::kF32);
  dev_.embedding_forward(x, b.ids, w_.embed_tokens);
  LayerActs acts;
  TrainStepOptions opt;
  opt.loss_chunk = loss_chunk;
  for (size_t l = 0; l < w_.layers.size(); ++l) {
    layer_forward(l, b, x, acts, y, false, opt);
    std::swap(x, y);
  }
  return head_loss(x, b, Tensor(), nullptr, opt);
}

}  // namespace swiftlet
