#include "ops/linear.h"

namespace swiftlet {

namespace {
// drop(x) for the LoRA branch: x itself when dropout is off.
Tensor lora_input(Device& dev, const Tensor& x, float p, uint64_t seed) {
  if (p <= 0.0f) return x;
  Tensor xd = dev.empty(x.shape(), DType::kF32);
  dev.dropout_forward(xd, x, p, seed);
  return xd;
}
}  // namespace

void linear_forward(Device& dev, const Tensor& y, const Tensor& x, const Linear& lin,
                    float lora_dropout, uint64_t dropout_seed) {
  SWIFTLET_CHECK(x.ndim() == 2 && y.ndim() == 2 && x.dim(1) == lin.in_features() &&
                     y.dim(1) == lin.out_features() && x.dim(0) == y.dim(0),
                 "linear_forward: x {} y {} weight {}", x.describe(), y.describe(),
                 lin.weight.describe());
  dev.gemm(x, false, lin.weight, true, y);
  if (lin.bias.defined()) dev.add_bias(y, lin.bias);
  if (!lin.lora_rows.empty()) {
    for (const LoraRows& r : lin.lora_rows) {  // y[rows] += s * (x[rows] A^T) B^T
      if (!r.pair || r.end <= r.begin) continue;
      Tensor xa = dev.empty({r.end - r.begin, r.pair->input_factor().dim(0)}, DType::kF32);
      dev.gemm(x.slice(r.begin, r.end), false, r.pair->input_factor(), true, xa);
      dev.gemm(xa, false, r.pair->b, true, y.slice(r.begin, r.end), r.pair->scale, 1.0f);
    }
  } else if (lin.lora) {
    Tensor xd = lora_input(dev, x, lora_dropout, dropout_seed);
    Tensor xa = dev.empty({x.dim(0), lin.lora->input_factor().dim(0)}, DType::kF32);
    dev.gemm(xd, false, lin.lora->input_factor(), true, xa);
    dev.gemm(xa, false, lin.lora->b, true, y, lin.lora->scale, 1.0f);
  }
}

void linear_backward(Device& dev, const Tensor& dx, const LinearGrads& g, const Tensor& dy,
                     const Tensor& x, const Linear& lin, float lora_dropout,
                     uint64_t dropout_seed) {
  SWIFTLET_CHECK(lin.lora_rows.empty(), "linear_backward: per-row adapters are forward only");
  SWIFTLET_CHECK(dy.ndim() == 2 && dy.dim(1) == lin.out_features() && x.dim(0) == dy.dim(0),
                 "linear_backward: dy {} x {} weight {}", dy.describe(), x.describe(),
                 lin.weight.describe());
  if (dx.defined()) dev.gemm(dy, false, lin.weight, false, dx, 1.0f, 1.0f);  // dx += dy W
  if (g.weight.defined()) dev.gemm(dy, true, x, false, g.weight, 1.0f, 1.0f);  // dW += dy^T x
  if (g.bias.defined()) dev.bias_backward(g.bias, dy);
  if (lin.lora && (g.lora_a.defined() || g.lora_b.defined() || dx.defined())) {
    const LoraPair& L = *lin.lora;
    const Tensor& A = L.input_factor();
    const int64_t n = x.dim(0), r = A.dim(0);
    Tensor xd = lora_input(dev, x, lora_dropout, dropout_seed);
    if (g.lora_b.defined()) {
      Tensor xa = dev.empty({n, r}, DType::kF32);
      dev.gemm(xd, false, A, true, xa);
      dev.gemm(dy, true, xa, false, g.lora_b, L.scale, 1.0f);  // dB += s dy^T (xd A^T)
    }
    Tensor dyb = dev.empty({n, r}, DType::kF32);
    dev.gemm(dy, false, L.b, false, dyb);  // dy B  [n, r]
    if (g.lora_a.defined()) dev.gemm(dyb, true, xd, false, g.lora_a, L.scale, 1.0f);  // dA += s (dy B)^T xd
    if (dx.defined()) {
      if (lora_dropout <= 0.0f) {
        dev.gemm(dyb, false, A, false, dx, L.scale, 1.0f);  // dx += s (dy B) A
      } else {
        Tensor dxd = dev.empty(x.shape(), DType::kF32);
        dev.gemm(dyb, false, A, false, dxd, L.scale, 0.0f);
        dev.dropout_backward(dx, dxd, lora_dropout, dropout_seed);
      }
    }
  }
}

}  // namespace swiftlet
