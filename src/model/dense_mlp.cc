// The dense SwiGLU MLP: down(silu(gate(h)) * up(h)).
#include "model/transformer_internal.h"

namespace swiftlet {

void Transformer::dense_mlp_forward(size_t l, const Tensor& h, DenseMlpActs& a, const Tensor& out,
                                    const TrainStepOptions& opt) {
  const DenseMlpWeights& W = w_.layers[l].mlp;
  const int64_t T = h.dim(0), I = config_.intermediate_size;
  const float p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;
  a.gate = dev_.empty({T, I}, DType::kF32);
  a.up = dev_.empty({T, I}, DType::kF32);
  linear_forward(dev_, a.gate, h, W.gate_proj, p, projection_seed(seed, l, kProjGate));
  linear_forward(dev_, a.up, h, W.up_proj, p, projection_seed(seed, l, kProjUp));
  a.act = dev_.empty({T, I}, DType::kF32);
  dev_.swiglu_forward(a.act, a.gate, a.up);
  linear_forward(dev_, out, a.act, W.down_proj, p, projection_seed(seed, l, kProjDown));
}

void Transformer::dense_mlp_backward(size_t l, DenseMlpActs& a, const Tensor& h, const Tensor& dout,
                                     const Tensor& dh, DenseMlpGrads& g,
                                     const TrainStepOptions& opt) {
  const DenseMlpWeights& W = w_.layers[l].mlp;
  const int64_t T = h.dim(0), I = config_.intermediate_size;
  const float p = opt.lora_dropout;
  const uint64_t seed = opt.dropout_seed;
  Tensor d_act = dev_.zeros({T, I}, DType::kF32);
  linear_backward(dev_, d_act, g.down_proj, dout, a.act, W.down_proj, p,
                  projection_seed(seed, l, kProjDown));
  Tensor d_gate = dev_.zeros({T, I}, DType::kF32), d_up = dev_.zeros({T, I}, DType::kF32);
  dev_.swiglu_backward(d_gate, d_up, d_act, a.gate, a.up);
  linear_backward(dev_, dh, g.gate_proj, d_gate, h, W.gate_proj, p,
                  projection_seed(seed, l, kProjGate));
  linear_backward(dev_, dh, g.up_proj, d_up, h, W.up_proj, p, projection_seed(seed, l, kProjUp));
}

}  // namespace swiftlet
