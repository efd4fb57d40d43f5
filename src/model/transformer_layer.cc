// One decoder layer: pre-norm residual blocks around a token mixer and an MLP, each dispatched by
// the layer's kind. Shared by generation (cache mode: keys/values appended to each sequence's
// cache) and training (batch mode: packed samples attend within themselves).
#include "model/transformer_internal.h"

namespace swiftlet {

uint64_t projection_seed(uint64_t seed, size_t layer, int proj) {
  uint64_t z = seed ^ (0x9e3779b97f4a7c15ull * (uint64_t(layer) * 16 + uint64_t(proj) + 1));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void Transformer::layer_forward(size_t l, const BatchCtx& b, const Tensor& x, LayerActs& a,
                                const Tensor& out, bool save, const TrainStepOptions& opt) {
  const LayerWeights& L = w_.layers[l];
  const int64_t T = b.T, H = config_.hidden_size;
  const float eps = float(config_.rms_norm_eps);
  auto f32 = [&](Shape s) { return dev_.empty(s, DType::kF32); };

  a.x_in = x;
  a.h1 = f32({T, H});
  a.rstd1 = save ? f32({T}) : Tensor();
  dev_.rmsnorm_forward(a.h1, a.rstd1, x, norm_scale(L.input_layernorm), eps);
  Tensor o = f32({T, H});
  switch (L.kind.mixer) {
    case MixerKind::kFullAttention:
      attention_forward(l, b, a.h1, a.attn, o, save, opt);
      break;
    case MixerKind::kLinearAttention:
      linear_attention_forward(l, b, a.h1, a.linear_attn, o, save, opt);
      break;
  }
  a.x_mid = f32({T, H});
  dev_.add(a.x_mid, x, o);  // x_mid = x + mixer

  a.h2 = f32({T, H});
  a.rstd2 = save ? f32({T}) : Tensor();
  dev_.rmsnorm_forward(a.h2, a.rstd2, a.x_mid, norm_scale(L.post_attention_layernorm), eps);
  switch (L.kind.mlp) {
    case MlpKind::kDense:
      dense_mlp_forward(l, a.h2, a.mlp, o, opt);
      break;
    case MlpKind::kMoe:
      moe_forward(l, a.h2, a.moe, o, opt);
      break;
  }
  dev_.add(out, a.x_mid, o);  // out = x_mid + mlp
}

void Transformer::layer_backward(size_t l, const BatchCtx& b, LayerActs& a, const Tensor& dy,
                                 const Tensor& dx, LayerGrads& g, const TrainStepOptions& opt) {
  const LayerWeights& L = w_.layers[l];
  const int64_t T = b.T, H = config_.hidden_size;

  // out = x_mid + mlp(h2)
  Tensor dh2 = dev_.zeros({T, H}, DType::kF32);
  switch (L.kind.mlp) {
    case MlpKind::kDense:
      dense_mlp_backward(l, a.mlp, a.h2, dy, dh2, g.mlp, opt);
      break;
    case MlpKind::kMoe:
      moe_backward(l, b, a.moe, a.h2, dy, dh2, g.moe, opt);
      break;
  }
  Tensor dx_mid = f32_copy(dy);
  // A zero-centred norm applies (1 + w): dx needs that scale, dw is the same as for w.
  dev_.rmsnorm_backward(dx_mid, g.post_attention_layernorm, dh2, a.x_mid,
                        norm_scale(L.post_attention_layernorm), a.rstd2);

  // x_mid = x + mixer(h1)
  Tensor dh1 = dev_.zeros({T, H}, DType::kF32);
  switch (L.kind.mixer) {
    case MixerKind::kFullAttention:
      attention_backward(l, b, a.attn, a.h1, dx_mid, dh1, g.attn, opt);
      break;
    case MixerKind::kLinearAttention:
      linear_attention_backward(l, b, a.linear_attn, a.h1, dx_mid, dh1, g.linear_attn, opt);
      break;
  }
  dev_.rmsnorm_backward(dx, g.input_layernorm, dh1, a.x_in, norm_scale(L.input_layernorm), a.rstd1);
  dev_.add_inplace(dx, dx_mid);
}

Tensor Transformer::f32_copy(const Tensor& t) {
  Tensor out = dev_.empty(t.shape(), DType::kF32);
  dev_.copy(out, t);
  return out;
}

}  // namespace swiftlet
