#include "train/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>

namespace swiftlet {

// AdamW against the formulas written out here (PyTorch's AdamW): decoupled decay, no decay on
// norms and biases, bias correction; clipping to a global norm.
TEST(AdamW, StepsMatchTheFormulasAndSkipDecayOnNormsAndBiases) {
  ThreadPool pool(1);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW opt(*dev, o);
  Tensor w = Tensor::host_from({1.0f, -2.0f}, {2}), gw = Tensor::host_from({0.5f, 0.25f}, {2});
  Tensor n = Tensor::host_from({1.0f, 1.0f}, {2}), gn = Tensor::host_from({0.5f, 0.25f}, {2});
  opt.add("model.layers.0.mlp.up_proj.weight", w, gw);
  opt.add("model.layers.0.input_layernorm.weight", n, gn);
  opt.add("model.layers.0.self_attn.q_proj.bias", Tensor::host_from({0.0f}, {1}), Tensor::host_from({1.0f}, {1}));
  EXPECT_TRUE(opt.params()[0].decay);
  EXPECT_FALSE(opt.params()[1].decay);
  EXPECT_FALSE(opt.params()[2].decay);
  const double lr = 0.01;
  double m[2] = {0, 0}, v[2] = {0, 0}, ref_w[2] = {1.0, -2.0}, ref_n[2] = {1.0, 1.0};
  const double g[2] = {0.5, 0.25};
  for (int step = 1; step <= 3; ++step) {
    opt.step(lr);
    for (int i = 0; i < 2; ++i) {
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.95 * v[i] + 0.05 * g[i] * g[i];
      const double mh = m[i] / (1 - std::pow(0.9, step)), vh = v[i] / (1 - std::pow(0.95, step));
      const double upd = mh / (std::sqrt(vh) + 1e-8);
      ref_w[i] -= lr * (upd + 0.1 * ref_w[i]);
      ref_n[i] -= lr * upd;
    }
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_NEAR(w.data<float>()[i], ref_w[i], 1e-6);
    EXPECT_NEAR(n.data<float>()[i], ref_n[i], 1e-6);
  }
  // Global norm sqrt(0.5^2 + 0.25^2 + 0.5^2 + 0.25^2 + 1) = sqrt(1.625); clipped to 0.5.
  const double norm = opt.clip(0.5);
  EXPECT_NEAR(norm, std::sqrt(1.625), 1e-6);
  EXPECT_NEAR(opt.grad_norm(), 0.5, 1e-5);
  opt.zero_grad();
  EXPECT_EQ(opt.grad_norm(), 0.0);
}

}  // namespace swiftlet
