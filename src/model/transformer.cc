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
  const int64_t d = c.rotary_dim();
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
  for (const WeightSlot& slot : weight_slots(config_, &w_)) *slot.weight = get(slot.name);
  if (config_.tie_word_embeddings && !config_.seq_cls()) w_.lm_head = w_.embed_tokens;
  base_w_ = w_;
  std::vector<float> inv = rope_inv_freq(config_);
  inv_freq_ = dev_.upload(Tensor::host_from(inv, {int64_t(inv.size())}));
}

DecodeCache Transformer::new_cache(int64_t capacity) const {
  DecodeCache c;
  reserve(c, capacity);
  return c;
}

void Transformer::reserve(DecodeCache& cache, int64_t capacity) const {
  if (capacity <= cache.capacity) return;
  const int64_t hkv = config_.num_key_value_heads, d = config_.head_dim;
  cache.layers.resize(w_.layers.size());
  for (size_t l = 0; l < w_.layers.size(); ++l) {
    LayerState& st = cache.layers[l];
    switch (w_.layers[l].kind.mixer) {
      case MixerKind::kLinearAttention: {  // constant size: made once, zero
        if (st.ssm.defined()) break;
        const ModelConfig& c = config_;
        const int64_t C = 2 * c.linear_num_key_heads * c.linear_key_head_dim +
                          c.linear_num_value_heads * c.linear_value_head_dim;
        st.conv = dev_.zeros({c.linear_conv_kernel_dim - 1, C}, DType::kF32);
        st.ssm = dev_.zeros(
            {c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim},
            DType::kF32);
        break;
      }
      case MixerKind::kFullAttention: {  // keys and values grow with the sequence
        LayerState grown{dev_.empty({capacity, hkv, d}, kv_dtype()),
                         dev_.empty({capacity, hkv, d}, kv_dtype()), {}, {}};
        if (cache.length > 0) {
          dev_.copy(grown.k.slice(0, cache.length), st.k.slice(0, cache.length));
          dev_.copy(grown.v.slice(0, cache.length), st.v.slice(0, cache.length));
        }
        st = std::move(grown);
        break;
      }
    }
  }
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

  Tensor x = forward_no_save(b);
  for (auto& s : seqs) s.cache->length += int64_t(s.tokens.size());

  // Final norm and LM head on the rows whose logits are asked for only.
  const int64_t R = int64_t(out_rows.size());
  Tensor last = x;
  if (R != b.T) {
    last = dev_.empty({R, H}, DType::kF32);
    for (int64_t r = 0; r < R; ++r)
      dev_.copy(last.slice(r, r + 1), x.slice(out_rows[size_t(r)], out_rows[size_t(r)] + 1));
  }
  UnitUse use(residency_, int64_t(w_.layers.size()));
  Tensor normed = dev_.empty({R, H}, DType::kF32);
  dev_.rmsnorm_forward(normed, Tensor(), last, norm_scale(w_.norm), float(config_.rms_norm_eps));
  // A sequence classifier's head gives its scores instead: [R, num_labels].
  const Tensor& head = config_.seq_cls() ? w_.score : w_.lm_head;
  Tensor logits = dev_.empty({R, head.dim(0)}, DType::kF32);
  dev_.gemm(normed, false, head, true, logits);
  return dev_.download(logits);
}

Tensor Transformer::norm_scale(const Tensor& w) {
  if (!config_.zero_centered_norms) return w;
  Tensor s = dev_.empty(w.shape(), DType::kF32);
  dev_.fill(s, 1.0f);
  Tensor wf = f32_copy(w);
  dev_.add_inplace(s, wf);  // 1 + w
  return s;
}

Tensor Transformer::logits(std::span<const int32_t> tokens) {
  DecodeCache cache = new_cache(int64_t(tokens.size()));
  SequenceStep step{tokens, &cache, true};
  return forward(std::span<SequenceStep>(&step, 1));
}

}  // namespace swiftlet
