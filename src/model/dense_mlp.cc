// The dense SwiGLU MLP: down(silu(gate(h)) * up(h)); the same block is Qwen3.5-MoE's shared expert.
#include "model/transformer_internal.h"

namespace swiftlet {

void Transformer::swiglu_block_forward(const DenseMlpWeights& W, int64_t width, const Tensor& h,
                                       DenseMlpActs& a, const Tensor& out, float p,
                                       const SwigluSeeds& seeds) {
  Device& dev = dev_;
  const int64_t T = h.dim(0);
  a.gate = dev.empty({T, width}, DType::kF32);
  a.up = dev.empty({T, width}, DType::kF32);
  linear_forward(dev, a.gate, h, W.gate_proj, p, seeds.gate);
  linear_forward(dev, a.up, h, W.up_proj, p, seeds.up);
  a.act = dev.empty({T, width}, DType::kF32);
  dev.swiglu_forward(a.act, a.gate, a.up);
  linear_forward(dev, out, a.act, W.down_proj, p, seeds.down);
}

void Transformer::swiglu_block_backward(const DenseMlpWeights& W, int64_t width, DenseMlpActs& a,
                                        const Tensor& h, const Tensor& dout, const Tensor& dh,
                                        DenseMlpGrads& g, float p, const SwigluSeeds& seeds) {
  Device& dev = dev_;
  const int64_t T = h.dim(0);
  Tensor d_act = dev.zeros({T, width}, DType::kF32);
  linear_backward(dev, d_act, g.down_proj, dout, a.act, W.down_proj, p, seeds.down);
  Tensor d_gate = dev.zeros({T, width}, DType::kF32), d_up = dev.zeros({T, width}, DType::kF32);
  dev.swiglu_backward(d_gate, d_up, d_act, a.gate, a.up);
  linear_backward(dev, dh, g.gate_proj, d_gate, h, W.gate_proj, p, seeds.gate);
  linear_backward(dev, dh, g.up_proj, d_up, h, W.up_proj, p, seeds.up);
}

void Transformer::dense_mlp_forward(size_t l, const Tensor& h, DenseMlpActs& a, const Tensor& out,
                                    const TrainStepOptions& opt) {
  swiglu_block_forward(w_.layers[l].mlp, config_.intermediate_size, h, a, out, opt.lora_dropout,
                       {projection_seed(opt.dropout_seed, l, kProjGate),
                        projection_seed(opt.dropout_seed, l, kProjUp),
                        projection_seed(opt.dropout_seed, l, kProjDown)});
}

void Transformer::dense_mlp_backward(size_t l, DenseMlpActs& a, const Tensor& h, const Tensor& dout,
                                     const Tensor& dh, DenseMlpGrads& g,
                                     const TrainStepOptions& opt) {
  swiglu_block_backward(w_.layers[l].mlp, config_.intermediate_size, a, h, dout, dh, g,
                        opt.lora_dropout,
                        {projection_seed(opt.dropout_seed, l, kProjGate),
                         projection_seed(opt.dropout_seed, l, kProjUp),
                         projection_seed(opt.dropout_seed, l, kProjDown)});
}

}  // namespace swiftlet
